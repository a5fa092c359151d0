"""TensorFlowOnSpark 2.2.5's own unit tests, unchanged, run against raytfnode.

Their files are vendored under ``tests/original/`` (Apache-2.0, see the NOTICE
there: the PyPI sdist does not ship them). ``run_original.py`` runs them once,
in a process of its own with its own local Ray (2 CPUs, like two one-core
executors) and local-mode Spark, with ``tensorflowonspark`` aliased to
``raytfnode``; each of their tests is then one case here, failing with their
own traceback. ``test_pipeline`` is skipped, with the import error as the
reason, while ``raytfnode.pipeline`` does not import.
"""
import ast
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import subprocess_env

ORIGINAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "original")
MODULES = ["test_TFNode", "test_TFCluster", "test_TFParallel", "test_dfutil", "test_pipeline"]
RUN_TIMEOUT = 2400


def _original_test_ids():
    """``module.Class.test_name`` of every test in the vendored files (read without importing them)."""
    ids = []
    for module in MODULES:
        tree = ast.parse(open(os.path.join(ORIGINAL, module + ".py")).read())
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                ids += ["{}.{}.{}".format(module, node.name, item.name) for item in node.body
                        if isinstance(item, ast.FunctionDef) and item.name.startswith("test")]
    return ids


@pytest.fixture(scope="module")
def original_results(tmp_path_factory):
    work = tmp_path_factory.mktemp("tfos_original")
    results = str(work / "results.json")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = subprocess_env(PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    process = subprocess.run([sys.executable, os.path.join(ORIGINAL, "run_original.py"), results] + MODULES,
                             cwd=str(work), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=RUN_TIMEOUT)
    log = process.stdout.decode("utf-8", "replace")
    if not os.path.exists(results):
        pytest.fail("run_original.py wrote no results (exit code {}):\n{}".format(process.returncode, log[-6000:]))
    with open(results) as handle:
        data = json.load(handle)
    data["log"] = log
    return data


# Original tests that fail against raytfnode today for a reason outside raytfnode: what was seen and why, and
# the failure they must show (a regular expression over the original's own report). Each such case passes only
# while the original fails with exactly that failure: it fails when the original passes (its entry must go) and
# when it fails in any other way (an error of raytfnode, say).
KNOWN_FAILING = {
    "test_pipeline.PipelineTest.test_spark_saved_model": (
        "not a raytfnode defect: the test's tf.keras.optimizers.Adam(lr=0.2) trains at 0.001, since Keras 2.11+ "
        "(tf_keras here) drops the old `lr` argument with only a warning, so its 450 steps leave the linear "
        "model far from the weights (0.65, 0.99 and 1.77 seen, by the random initial weights, where the test expects "
        "4.758); the same map_fun with learning_rate=0.2 predicts 4.758 on raytfnode",
        r"AssertionError: .+ != (np\.float64\()?4\.758\)? within 2 places"),
}


@pytest.mark.parametrize("test_id", _original_test_ids())
def test_original(original_results, test_id):
    module = test_id.split(".")[0]
    outcomes = original_results["outcomes"]
    found = outcomes.get(test_id) or outcomes.get(module)
    if found is None:
        pytest.fail("{} did not run; the run's log ends with:\n{}".format(test_id, original_results["log"][-4000:]))
    if found["outcome"] == "skipped":
        pytest.skip(found["detail"])
    if test_id in KNOWN_FAILING:
        reason, failure = KNOWN_FAILING[test_id]
        assert found["outcome"] == "failed" and re.search(failure, found["detail"]), (
            "TensorFlowOnSpark's {} was expected to fail only as known ({}), but it {}:\n{}".format(
                test_id, reason, found["outcome"], found["detail"]))
        return
    assert found["outcome"] == "passed", "TensorFlowOnSpark's {} {}:\n{}".format(
        test_id, found["outcome"], found["detail"])
