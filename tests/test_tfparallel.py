"""TFParallel.run: independent single-node TF runs as Ray actors."""
import sys

import pytest
import ray

from raytfnode import TFParallel
from raytfnode.errors import NodeError, ReservationTimeoutError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _record(args, ctx):
    import json
    import os

    total = args["x"] + args["y"]      # TensorFlow in a run: TensorFlowOnSpark's own tests (test_tfos_original)
    with open(os.path.join(args["out"], "run-{}.json".format(ctx.worker_num)), "w") as handle:
        json.dump({"sum": int(total), "worker_num": ctx.worker_num, "executor_id": ctx.executor_id,
                   "num_workers": ctx.num_workers, "defaultFS": ctx.defaultFS, "working_dir": ctx.working_dir,
                   "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "tf_config": os.environ.get("TF_CONFIG"),
                   "pid": os.getpid()}, handle)


def _runs(out):
    import json
    import os

    return sorted((json.load(open(os.path.join(out, name))) for name in os.listdir(out)),
                  key=lambda run: run["worker_num"])


@pytest.mark.parametrize("use_barrier", [True, False])
def test_every_run_gets_its_own_context(ray_cluster, no_leftovers, tmp_path, use_barrier):
    TFParallel.run(None, _record, {"x": 1, "y": 2, "out": str(tmp_path)}, 3, use_barrier=use_barrier,
                   working_dir="/data/here")
    runs = _runs(str(tmp_path))
    assert [(r["worker_num"], r["executor_id"], r["sum"]) for r in runs] == [(0, 0, 3), (1, 1, 3), (2, 2, 3)]
    assert {(r["num_workers"], r["defaultFS"], r["working_dir"], r["tf_config"]) for r in runs} == {
        (3, "file://", "/data/here", None)}
    assert len({r["pid"] for r in runs}) == 3


def test_gpus_asked_for_are_given_to_each_run(ray_cluster, no_leftovers, tmp_path):
    TFParallel.run(None, _record, {"x": 1, "y": 2, "out": str(tmp_path)}, 2, num_gpus=1, num_cpus=0.5)
    assert sorted(r["gpus"] for r in _runs(str(tmp_path))) == ["0", "1"]


def test_barrier_the_cluster_cannot_hold_fails_at_once(ray_cluster, no_leftovers, tmp_path):
    with pytest.raises(ReservationTimeoutError, match="GPU"):
        TFParallel.run(None, _record, {"x": 1, "y": 2, "out": str(tmp_path)}, 3, num_gpus=1,
                       reservation_timeout=600)
    assert not list(tmp_path.iterdir())       # no run started


def _fail_on_one(args, ctx):
    if ctx.worker_num == 1:
        raise ValueError("run {} found no data".format(ctx.worker_num))


def test_failing_run_fails_the_call_with_its_traceback(ray_cluster, no_leftovers):
    with pytest.raises(NodeError) as caught:
        TFParallel.run(None, _fail_on_one, {}, 2)
    assert caught.value.node == "worker:1"
    assert "ValueError: run 1 found no data" in caught.value.remote_traceback
    assert "_fail_on_one" in caught.value.remote_traceback


@pytest.mark.parametrize("spark", ["local"], indirect=True)
def test_default_fs_comes_from_spark(spark, no_leftovers, tmp_path):
    TFParallel.run(spark.sparkContext, _record, {"x": 1, "y": 2, "out": str(tmp_path)}, 1)
    assert _runs(str(tmp_path))[0]["defaultFS"] == "file://"
