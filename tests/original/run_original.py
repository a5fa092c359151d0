"""Runs TensorFlowOnSpark 2.2.5's own unit tests against raytfnode, and writes the outcome of each as JSON.

Usage: ``python tests/original/run_original.py RESULTS.json [MODULE ...]`` (run from any directory: the
tests write their artifacts, ``test_tfr`` and so on, in the working directory).

``tensorflowonspark`` and its modules are aliased to raytfnode's in ``sys.modules``, and the ``test``
module their tests import is :mod:`spark_test_on_ray`. Ray starts locally with ``RAYTFNODE_ORIGINAL_WORKERS``
CPUs (2) and no GPUs. A module whose raytfnode counterpart does not import is reported as skipped, with
the import error as the reason.
"""
import importlib
import json
import os
import sys
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
MODULES = ["test_TFNode", "test_TFCluster", "test_TFParallel", "test_dfutil", "test_pipeline"]
ALIASED = ["TFCluster", "TFNode", "TFManager", "TFParallel", "dfutil", "compat", "pipeline"]


def alias_tensorflowonspark():
    """Makes ``tensorflowonspark[.X]`` raytfnode's; returns ``{module: import error}`` of those that failed."""
    import raytfnode

    sys.modules["tensorflowonspark"] = raytfnode
    missing = {}
    for name in ALIASED:
        try:
            module = importlib.import_module("raytfnode." + name)
        except Exception as exc:  # noqa: BLE001  (reported as the reason to skip)
            missing[name] = "{}: {}".format(type(exc).__name__, exc)
            continue
        sys.modules["tensorflowonspark." + name] = module
    return missing


class _Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = {}
        self._started = {}

    def startTest(self, test):
        self._started[test.id()] = time.monotonic()
        super().startTest(test)

    def _record(self, test, outcome, detail=""):
        seconds = time.monotonic() - self._started.get(test.id(), time.monotonic())
        self.outcomes[test.id()] = {"outcome": outcome, "detail": detail, "seconds": round(seconds, 1)}

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failed", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", reason)


def _start_ray(ray, num_cpus, attempts=6):
    """Starts a local Ray; again when its raylet missed Ray's fixed 30 s start-up wait (a loaded machine)."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address="local", num_cpus=num_cpus, num_gpus=0, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
            return
        except Exception as exc:  # noqa: BLE001
            if "timed out during startup" not in str(exc) or attempt == attempts:
                raise
            print("Ray did not start (attempt {}): {}".format(attempt, exc), flush=True)
            ray.shutdown()


def main(results_path, modules):
    # the processes started from here (Ray and Spark workers, where the TF nodes import tensorflowonspark
    # themselves) find the shim package first: tensorflowonspark is raytfnode there too
    shim = os.path.join(HERE, "shim")
    os.environ["PYTHONPATH"] = os.pathsep.join([shim] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p])
    sys.path.insert(0, HERE)
    import spark_test_on_ray
    sys.modules["test"] = spark_test_on_ray      # their `import test` (not the standard library's package)
    missing = alias_tensorflowonspark()

    import ray
    _start_ray(ray, spark_test_on_ray.NUM_WORKERS)
    outcomes = {}
    try:
        for name in modules:
            if name == "test_pipeline" and "pipeline" in missing:
                outcomes[name] = {"outcome": "skipped", "seconds": 0,
                                  "detail": "raytfnode.pipeline does not import: " + missing["pipeline"]}
                continue
            try:
                module = importlib.import_module(name)
            except Exception:  # noqa: BLE001
                outcomes[name] = {"outcome": "error", "seconds": 0, "detail": traceback.format_exc()}
                continue
            suite = unittest.defaultTestLoader.loadTestsFromModule(module)
            runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=2, resultclass=_Recorder)
            result = runner.run(suite)
            outcomes.update(result.outcomes)
            with open(results_path, "w") as handle:    # partial results survive a later crash
                json.dump({"outcomes": outcomes, "missing": missing}, handle, indent=1)
    finally:
        from pyspark import SparkContext
        if SparkContext._active_spark_context is not None:
            SparkContext._active_spark_context.stop()
        ray.shutdown()
    with open(results_path, "w") as handle:
        json.dump({"outcomes": outcomes, "missing": missing}, handle, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] or MODULES)
