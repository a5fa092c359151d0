"""The TF cluster on a real local Ray cluster (12 logical CPUs, 2 declared GPUs) with real TensorFlow.

Nodes report what they saw by writing JSON files into ``tmp_path`` (all nodes run on this machine); the
driver checks them. Tests that do not need TensorFlow start their nodes with ``import_tensorflow=False``.
Several facts of one 2-worker run (no chief, 1 fake GPU each, release_port=False, SPREAD placement) are
checked by separate tests that share the module fixture ``two_worker_run``, to start fewer clusters.
"""
import json
import os
import sys
import socket
import time
import types
import urllib.error
import urllib.request

import numpy as np
import pytest
import ray
import ray.cloudpickle

import node_reports
from conftest import assert_no_leftovers
from node_reports import wait_for_file
from raytfnode import TFCluster, TFNode
from raytfnode.errors import BadInputError, ClusterStoppedError, NodeError, ReservationTimeoutError

# Ray workers cannot import this test module: ship its functions by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)

pytestmark = pytest.mark.timeout(240)

NODE_WAIT_SECONDS = 300   # a node never waits longer than this for the driver (hang guard, not a check)


# ------------------------------------------------------------------ helpers


def _write_json(path, value):
    tmp = "{}.tmp-{}".format(path, os.getpid())
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _read_json(path):
    with open(path) as f:
        return json.load(f)


def _report_path(directory, ctx):
    return os.path.join(directory, "{}-{}.json".format(ctx.job_name, ctx.task_index))


# ------------------------------------------------ what a node reports


def _try_bind(port):
    import socket

    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)  # no SO_REUSEADDR: conflicts with a bound socket
    try:
        probe.bind(("", port))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _report_node(args, ctx):
    """Writes what this node sees (environment, context, GPUs, reserved port, placement group) to a file."""
    port = int(ctx.cluster_spec[ctx.job_name][ctx.task_index].rsplit(":", 1)[1])
    sock = ctx.tmp_socket
    report = {
        "tf_config": json.loads(os.environ["TF_CONFIG"]),
        "executor_id": ctx.executor_id,
        "worker_num": ctx.worker_num,
        "job_name": ctx.job_name,
        "task_index": ctx.task_index,
        "cluster_spec": ctx.cluster_spec,
        "num_workers": ctx.num_workers,
        "defaultFS": ctx.defaultFS,
        "working_dir": ctx.working_dir,
        "absolute": ctx.absolute_path("model"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_ids": ctx.gpu_ids,
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "resources": ctx.resources,
        "spec_port": port,
        "held_at_start": sock is not None and sock.fileno() != -1,
    }
    group = ray.util.get_current_placement_group()
    report["placement_group"] = group.id.hex() if group else None
    if sock is not None:
        report["socket_port"] = sock.getsockname()[1]
        report["bind_while_held"] = _try_bind(port)
    ctx.release_port()
    report["tmp_socket_after_release"] = ctx.tmp_socket is None
    report["socket_closed_after_release"] = sock is None or sock.fileno() == -1
    report["bind_after_release"] = _try_bind(port)
    TFNode.release_port(ctx)  # a second release is harmless
    _write_json(_report_path(args["dir"], ctx), report)


def _reports(directory, node_roles):
    return [_read_json(os.path.join(directory, "{}-{}.json".format(job, index))) for job, index in node_roles]


def _check_tf_config_and_spec(reports, node_roles, cluster_info, cluster_spec, status, working_dir):
    addresses = ["{}:{}".format(info["host"], info["port"]) for info in cluster_info]
    assert len(set(addresses)) == len(node_roles)
    expected_spec = {}
    for (job_name, _), address in zip(node_roles, addresses):
        expected_spec.setdefault(job_name, []).append(address)
    assert cluster_spec == expected_spec
    assert list(cluster_spec) == list(dict.fromkeys(job for job, _ in node_roles))
    num_fed = sum(1 for job, _ in node_roles if job in ("chief", "master", "worker"))
    training_cluster = {job: addrs for job, addrs in expected_spec.items() if job != "evaluator"}
    for executor_id, ((job_name, task_index), report) in enumerate(zip(node_roles, reports)):
        assert report["tf_config"]["task"] == {"type": job_name, "index": task_index}
        assert report["tf_config"]["cluster"] == training_cluster
        assert "evaluator" not in report["tf_config"]["cluster"]
        assert report["executor_id"] == report["worker_num"] == executor_id
        assert (report["job_name"], report["task_index"]) == (job_name, task_index)
        assert report["cluster_spec"] == expected_spec
        assert list(report["cluster_spec"]) == list(expected_spec)
        assert report["num_workers"] == num_fed
        assert report["defaultFS"] == "file://"
        assert report["working_dir"] == working_dir
        assert report["absolute"] == "file://{}/model".format(working_dir)
        assert status[executor_id]["env_tf_config"] == report["tf_config"]


# --------------------------------------- ps + chief + evaluator + workers


def test_every_node_gets_tf_config_and_the_cluster_spec_in_task_order_with_ps_chief_evaluator(
        ray_cluster, no_leftovers, tmp_path):
    node_roles = [("ps", 0), ("chief", 0), ("evaluator", 0), ("worker", 0), ("worker", 1)]
    cluster = TFCluster.run(None, _report_node, {"dir": str(tmp_path)}, 5, 1, master_node="chief", eval_node=True,
                            import_tensorflow=False, working_dir=str(tmp_path), reservation_timeout=120)
    try:
        assert [tuple(r) for r in cluster.roles] == node_roles
        status = cluster.node_status()
        assert cluster.tensorboard_url() is None   # tensorboard=False
    finally:
        cluster.shutdown(grace_secs=30)
    reports = _reports(tmp_path, node_roles)
    _check_tf_config_and_spec(reports, node_roles, cluster.cluster_info, cluster.cluster_spec, status, str(tmp_path))
    for report in reports:  # release_port=True (the default): the port is free before map_fun starts
        assert report["held_at_start"] is False
        assert report["bind_after_release"] is True
        assert report["gpu_ids"] == [] and report["cuda_visible_devices"] == ""


# ------------- one 2-worker run: no chief, 1 fake GPU each, release_port=False, SPREAD


@pytest.fixture(scope="module")
def two_worker_run(ray_cluster, tmp_path_factory):
    """Runs 2 workers (no ps, no chief) with num_gpus=1, release_port=False, placement_strategy='SPREAD'."""
    directory = str(tmp_path_factory.mktemp("two-worker-run"))
    cluster = TFCluster.run(None, _report_node, {"dir": directory}, 2, 0, num_gpus=1, release_port=False,
                            placement_strategy="SPREAD", import_tensorflow=False, working_dir=directory,
                            reservation_timeout=120)
    try:
        group = cluster.placement_group
        group_while_running = ray.util.placement_group_table(group) if group is not None else None
        status = cluster.node_status()
    finally:
        cluster.shutdown()
    try:
        assert_no_leftovers(timeout=30)
        leftovers = None
    except AssertionError as exc:
        leftovers = str(exc)
    node_roles = [("worker", 0), ("worker", 1)]
    return types.SimpleNamespace(
        cluster=cluster, node_roles=node_roles, reports=_reports(directory, node_roles), status=status,
        directory=directory, group=group, group_while_running=group_while_running,
        group_after_shutdown=ray.util.placement_group_table(group) if group is not None else None,
        leftovers_after_shutdown=leftovers)


def test_tf_config_and_cluster_spec_are_set_on_every_node_of_a_cluster_without_chief(two_worker_run, no_leftovers):
    run = two_worker_run
    assert [tuple(r) for r in run.cluster.roles] == run.node_roles
    assert list(run.cluster.cluster_spec) == ["worker"]
    _check_tf_config_and_spec(run.reports, run.node_roles, run.cluster.cluster_info, run.cluster.cluster_spec,
                              run.status, run.directory)


def test_two_nodes_with_one_declared_gpu_each_see_distinct_cuda_visible_devices_and_gpu_ids(
        two_worker_run, no_leftovers):
    seen = []
    for report, info in zip(two_worker_run.reports, two_worker_run.cluster.cluster_info):
        assert len(report["gpu_ids"]) == 1
        assert report["cuda_visible_devices"] == report["gpu_ids"][0]
        assert report["ray_gpu_ids"] == report["gpu_ids"]
        assert info["gpu_ids"] == report["gpu_ids"]
        assert report["resources"].get("GPU") == 1
        seen.append(report["gpu_ids"][0])
    assert sorted(seen) == ["0", "1"]
    assert sorted(s["cuda_visible_devices"] for s in two_worker_run.status) == ["0", "1"]


def test_release_port_false_keeps_ctx_tmp_socket_open_until_ctx_release_port(two_worker_run, no_leftovers):
    for report in two_worker_run.reports:
        assert report["held_at_start"] is True
        assert report["socket_port"] == report["spec_port"]
        assert report["bind_while_held"] is False       # the reserved port is taken while the socket is open
        assert report["tmp_socket_after_release"] is True
        assert report["socket_closed_after_release"] is True
        assert report["bind_after_release"] is True     # ...and free after ctx.release_port()


def test_spread_placement_strategy_places_the_nodes_in_its_group_and_removes_it(two_worker_run, no_leftovers):
    run = two_worker_run
    assert run.group is not None
    assert run.group_while_running["state"] == "CREATED"
    assert run.group_while_running["strategy"] == "SPREAD"
    assert run.group_while_running["name"] == "raytfnode-" + run.cluster.cluster_id
    assert len(run.group_while_running["bundles"]) == 2
    assert all(bundle.get("GPU") == 1 for bundle in run.group_while_running["bundles"].values())
    assert [r["placement_group"] for r in run.reports] == [run.group.id.hex()] * 2
    assert run.group_after_shutdown["state"] == "REMOVED"
    assert run.cluster.placement_group is None


def test_no_raytfnode_actor_or_placement_group_remains_after_shutdown(two_worker_run, no_leftovers):
    assert two_worker_run.leftovers_after_shutdown is None


# --------------------------------------------------- infeasible requests


def test_more_gpus_per_node_than_any_ray_node_has_fails_at_once_naming_gpu(ray_cluster, no_leftovers):
    # reservation_timeout is far longer than this test's timeout: only an immediate failure passes
    with pytest.raises(ReservationTimeoutError) as info:
        TFCluster.run(None, _report_node, {"dir": "/nonexistent"}, 1, 0, num_gpus=3,
                      import_tensorflow=False, reservation_timeout=3600)
    text = str(info.value)
    assert "GPU=3" in text
    assert "worker:0" in text and "has 2" in text


def test_more_gpus_in_all_than_the_cluster_has_fails_at_once_naming_gpu(ray_cluster, no_leftovers):
    with pytest.raises(ReservationTimeoutError) as info:
        TFCluster.run(None, _report_node, {"dir": "/nonexistent"}, 3, 0, num_gpus=1,
                      import_tensorflow=False, reservation_timeout=3600)
    text = str(info.value)
    assert "GPU=3" in text
    assert "has 2" in text


# ---------------------------------------------------------- node failures


def _explode(task_index):
    raise ValueError("boom from worker {}".format(task_index))


def _fail_on_worker_1(args, ctx):
    if ctx.job_name == "worker" and ctx.task_index == 1:
        _explode(ctx.task_index)


def test_map_fun_exception_is_reraised_by_shutdown_as_node_error_with_remote_traceback(ray_cluster, no_leftovers):
    cluster = TFCluster.run(None, _fail_on_worker_1, None, 2, 0, import_tensorflow=False,
                            reservation_timeout=120)
    with pytest.raises(NodeError) as info:
        cluster.shutdown()
    err = info.value
    assert (err.job_name, err.task_index) == ("worker", 1)
    assert err.node == "worker:1"
    assert "worker:1" in str(err)
    assert "ValueError: boom from worker 1" in str(err)
    assert err.remote_traceback is not None
    assert "Traceback (most recent call last)" in err.remote_traceback
    assert "_explode" in err.remote_traceback and "_fail_on_worker_1" in err.remote_traceback
    assert "boom from worker 1" in err.remote_traceback
    assert err.remote_traceback.rstrip() in str(err)
    # the cluster is stopped: a second shutdown is a no-op, status calls fail clearly
    assert cluster.shutdown() is None
    with pytest.raises(ClusterStoppedError):
        cluster.node_status()


# ------------------------------------------------------------- tensorboard


def _wait_for_done(args, ctx):
    wait_for_file(args["done"], NODE_WAIT_SECONDS)


def test_tensorboard_url_answers_http_200_while_the_cluster_runs(ray_cluster, no_leftovers, tmp_path):
    done = tmp_path / "done"
    cluster = TFCluster.run(None, _wait_for_done, {"done": str(done)}, 1, 0, tensorboard=True,
                            log_dir=str(tmp_path / "tb"), import_tensorflow=False, reservation_timeout=120)
    try:
        url = cluster.tensorboard_url()
        assert url and url.startswith("http://127.0.0.1:")   # no authentication: loopback only by default
        with urllib.request.urlopen(url, timeout=60) as response:
            assert response.status == 200
            assert response.read(1 << 16)
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):   # not on the machine's network address
            socket.create_connection((ray.util.get_node_ip_address(), port), timeout=5).close()
    finally:
        done.touch()
        cluster.shutdown()
    assert os.path.isdir(tmp_path / "tb")
    with pytest.raises(urllib.error.URLError):   # TensorBoard was stopped with the cluster
        urllib.request.urlopen(url, timeout=10)


# ------------------------------------------------- Keras MultiWorkerMirrored


def _keras_mwms_map_fun(args, ctx):
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    initial = [w.tolist() for w in model.get_weights()]
    feed = ctx.get_data_feed()
    history = model.fit(feed.as_dataset(args["global_batch"]), epochs=args["epochs"], verbose=0)
    _write_json(_report_path(args["dir"], ctx), {
        "initial": initial,
        "final": [w.tolist() for w in model.get_weights()],
        "loss": history.history["loss"],
        "replicas": strategy.num_replicas_in_sync,
    })


@pytest.mark.timeout(300)
def test_keras_multi_worker_mirrored_two_workers_end_with_identical_weights(ray_cluster, no_leftovers, tmp_path):
    rng = np.random.default_rng(0)
    true_w = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    partitions = []
    for _ in range(2):
        x = rng.normal(size=(64, 4)).astype(np.float32)
        y = x @ true_w + 0.25
        partitions.append([(x[i], np.array([y[i]], dtype=np.float32)) for i in range(64)])
    epochs = 2
    cluster = TFCluster.run(None, _keras_mwms_map_fun, {"dir": str(tmp_path), "global_batch": 16, "epochs": epochs},
                            2, 0, input_mode=TFCluster.InputMode.SPARK, reservation_timeout=180)
    try:
        report = cluster.train(partitions, num_epochs=epochs, feed_timeout=180)
        stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
    finally:
        cluster.shutdown()
    assert report["epochs"] == epochs and report["rows"] == 128 * epochs and report["consumed"] == 128 * epochs
    assert [s["consumed_rows"] for s in stats] == [64 * epochs, 64 * epochs]

    w0 = _read_json(os.path.join(tmp_path, "worker-0.json"))
    w1 = _read_json(os.path.join(tmp_path, "worker-1.json"))
    assert w0["replicas"] == w1["replicas"] == 2
    assert len(w0["loss"]) == len(w1["loss"]) == epochs
    for a, b in zip(w0["final"], w1["final"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6, atol=1e-7)
    # training happened: the weights moved and the loss went down
    moved = max(float(np.max(np.abs(np.array(f) - np.array(i)))) for f, i in zip(w0["final"], w0["initial"]))
    assert moved > 1e-3
    assert w0["loss"][-1] < w0["loss"][0]


# ------------------------------------------------- the coordination leader begins map_fun first


def _on_node_0(action):
    """Unpickled in each node's reserve(): runs ``action`` on executor 0 only (worker:0, the leader here)."""
    import ray as _ray
    if (_ray.get_runtime_context().get_actor_name() or "").endswith("-node-0"):
        if action == "slow":
            import time as _time
            _time.sleep(3.0)   # the leader starts importing TensorFlow 3 s after the other node
        elif action == "no tensorflow":
            sys.modules["tensorflow"] = None   # its import of TensorFlow fails: it never begins map_fun
    return action


class _OnNode0:
    def __init__(self, action):
        self.action = action

    def __reduce__(self):
        return _on_node_0, (self.action,)


def _record_entry(args, ctx):
    import gc
    import time
    _write_json(_report_path(args["dir"], ctx), {"entered": time.time(), "frozen": gc.get_freeze_count(),
                                                 "collecting": gc.isenabled()})


def test_other_nodes_begin_map_fun_after_the_coordination_leader(ray_cluster, no_leftovers, tmp_path):
    # MultiWorkerMirroredStrategy: a node that registers before the leader's service is up waits ~1 s
    cluster = TFCluster.run(None, _record_entry, {"dir": str(tmp_path), "on_node_0": _OnNode0("slow")}, 2, 0,
                            input_mode=TFCluster.InputMode.TENSORFLOW, reservation_timeout=180)
    cluster.shutdown(timeout=180)
    leader = _read_json(os.path.join(tmp_path, "worker-0.json"))["entered"]
    other = _read_json(os.path.join(tmp_path, "worker-1.json"))["entered"]
    # without the wait worker:1 would begin about 3 s before the leader; with it, as the leader's own
    # signal arrives (the two threads then go on at once, within a millisecond of each other)
    assert other > leader - 0.5


def test_tensorflow_imported_before_map_fun_stays_out_of_the_cycle_collectors_work(ray_cluster, no_leftovers,
                                                                                    tmp_path):
    cluster = TFCluster.run(None, _record_entry, {"dir": str(tmp_path)}, 1, 0,
                            input_mode=TFCluster.InputMode.TENSORFLOW, reservation_timeout=180)
    cluster.shutdown(timeout=180)
    entry = _read_json(os.path.join(tmp_path, "worker-0.json"))
    assert entry["frozen"] > 200_000, entry    # TensorFlow's objects: no collection examines them again
    assert entry["collecting"] is True         # the collector paused for the import only


def test_a_leader_whose_tensorflow_import_fails_is_reported_and_the_others_do_not_wait_for_it(
        ray_cluster, no_leftovers, tmp_path):
    cluster = TFCluster.run(None, _record_entry, {"dir": str(tmp_path), "on_node_0": _OnNode0("no tensorflow")},
                            2, 0, input_mode=TFCluster.InputMode.TENSORFLOW, reservation_timeout=60)
    try:
        # the other node runs map_fun once the leader failed: well within its 120 s wait for the leader
        wait_for_file(os.path.join(tmp_path, "worker-1.json"), 60)
    finally:
        with pytest.raises(NodeError) as info:
            cluster.shutdown(timeout=60)
    assert info.value.job_name == "worker" and info.value.task_index == 0
    assert "tensorflow" in str(info.value)


def _report_then_hold(args, ctx):
    ctx.mgr.set("task_index", ctx.task_index)
    wait_for_file(args["done"], NODE_WAIT_SECONDS)


def test_a_cluster_that_reads_its_own_data_starts_only_its_nodes_and_their_managers(ray_cluster, no_leftovers,
                                                                                      tmp_path):
    # InputMode.TENSORFLOW is never fed: no coordinator, and no directory even with max_failures (only a
    # feed restarts a cluster); each node keeps its queue actor, which holds ctx.mgr
    done = tmp_path / "done"
    cluster = TFCluster.run(None, _report_then_hold, {"done": str(done)}, 2, 0,
                            input_mode=TFCluster.InputMode.TENSORFLOW, import_tensorflow=False, num_cpus=0.5,
                            max_failures=1, reservation_timeout=120)
    try:
        prefix = "raytfnode-{}-".format(cluster.cluster_id)
        names = sorted(actor["name"][len(prefix):] for actor in ray.util.list_named_actors(all_namespaces=True)
                       if actor["name"].startswith(prefix))
        assert names == ["node-0", "node-1", "queues-0", "queues-1"], names
        assert cluster.coordinator is None and cluster.directory is None
        reported = None
        for _ in range(600):
            reported = ray.get([queue.kv_get.remote("task_index") for queue in cluster.queue_actors])
            if None not in reported:
                break
            time.sleep(0.1)
        assert reported == [0, 1]
        with pytest.raises(BadInputError, match="InputMode.SPARK"):
            cluster.train(list(range(10)), num_epochs=1)
    finally:
        done.write_text("done")
        cluster.shutdown(timeout=60)


# ------------------------------------------------- ps + chief + workers, TF1


def _ps_chief_worker_map_fun(args, ctx):
    import tensorflow as tf

    done = args["done"]
    if ctx.job_name != "chief":
        cluster_spec, server = ctx.start_cluster_server(num_gpus=0)
        wait_for_file(done, NODE_WAIT_SECONDS)   # keep the server up until the chief is through
        return
    try:
        cluster_spec, server = TFNode.start_cluster_server(ctx, num_gpus=0)
        v1 = tf.compat.v1
        graph = tf.Graph()
        with graph.as_default():
            with tf.device("/job:ps/task:0"):
                offset = v1.Variable(5.0, name="offset")
            with tf.device("/job:worker/task:1"):
                x = v1.placeholder(tf.float32, shape=[3], name="x")
                on_worker_1 = tf.reduce_sum(x * 2.0) + offset
            with tf.device("/job:worker/task:0"):
                on_worker_0 = on_worker_1 * 10.0
        options = v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE)
        metadata = v1.RunMetadata()
        with v1.Session(server.target, graph=graph) as sess:
            sess.run(offset.initializer)
            value1, value0 = sess.run([on_worker_1, on_worker_0], feed_dict={x: [1.0, 2.0, 3.0]},
                                      options=options, run_metadata=metadata)
        _write_json(os.path.join(args["dir"], "chief.json"), {
            "jobs": sorted(cluster_spec.jobs),
            "num_workers": cluster_spec.num_tasks("worker"),
            "target": server.target,
            "value1": float(value1),
            "value0": float(value0),
            "devices": sorted({d.device for d in metadata.step_stats.dev_stats}),
        })
    finally:
        open(done, "w").close()


@pytest.mark.timeout(300)
def test_chief_session_on_its_server_runs_ops_placed_on_worker_tasks(ray_cluster, no_leftovers, tmp_path):
    args = {"dir": str(tmp_path), "done": str(tmp_path / "done")}
    cluster = TFCluster.run(None, _ps_chief_worker_map_fun, args, 4, 1, master_node="chief",
                            input_mode=TFCluster.InputMode.TENSORFLOW, reservation_timeout=180)
    try:
        assert [tuple(r) for r in cluster.roles] == [("ps", 0), ("chief", 0), ("worker", 0), ("worker", 1)]
    finally:
        cluster.shutdown(grace_secs=30)
    report = _read_json(os.path.join(tmp_path, "chief.json"))
    assert report["jobs"] == ["chief", "ps", "worker"]
    assert report["num_workers"] == 2
    assert report["target"].startswith("grpc://")
    assert report["value1"] == pytest.approx(17.0)   # (1+2+3)*2 + 5
    assert report["value0"] == pytest.approx(170.0)
    assert any("/job:worker/replica:0/task:1/" in d for d in report["devices"]), report["devices"]
    assert any("/job:worker/replica:0/task:0/" in d for d in report["devices"]), report["devices"]


# -------------------------------------------------------- export_saved_model
# Exported in this process (TensorFlow is needed here anyway to load the models back): a node would
# only add a TensorFlow start-up; ctx.export_saved_model is the same function as TFNode's.


def test_export_saved_model_from_tf1_session_loads_and_serves_the_named_signature(tmp_path):
    import tensorflow as tf

    from raytfnode.context import TFNodeContext

    v1 = tf.compat.v1
    export_dir = str(tmp_path / "tf1")
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, 2], name="x")
        w = v1.Variable([[2.0], [3.0]], name="w")
        tf.identity(tf.matmul(x, w) + 1.0, name="y")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            returned = TFNodeContext().export_saved_model(sess, export_dir, tf.saved_model.SERVING, {
                "predict_xy": {"inputs": {"features": "x"}, "outputs": {"prediction": "y:0"},
                               "method_name": tf.saved_model.PREDICT_METHOD_NAME}})
    assert returned == export_dir

    loaded = tf.saved_model.load(export_dir, tags=["serve"])
    assert list(loaded.signatures) == ["predict_xy"]
    out = loaded.signatures["predict_xy"](features=tf.constant([[1.0, 1.0], [0.0, 2.0]]))
    assert set(out) == {"prediction"}
    np.testing.assert_allclose(out["prediction"].numpy(), [[6.0], [7.0]])   # x @ [[2], [3]] + 1


def test_export_saved_model_from_tf_keras_model_loads_and_serves_the_named_signature(tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    export_dir = str(tmp_path / "keras")
    model = keras.Sequential([
        keras.Input(shape=(3,), name="feats"),
        keras.layers.Dense(2, name="dense", kernel_initializer="ones", bias_initializer="zeros"),
    ])
    model.layers[0].set_weights([np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0]], dtype=np.float32),
                                 np.array([0.5, -0.5], dtype=np.float32)])
    TFNode.export_saved_model(model, export_dir, "serve", {
        "serving_custom": {"inputs": {"inputs": "feats"}, "outputs": {"scores": "dense"}}})

    loaded = tf.saved_model.load(export_dir)
    assert list(loaded.signatures) == ["serving_custom"]
    out = loaded.signatures["serving_custom"](inputs=tf.constant([[1.0, 2.0, 3.0]]))
    assert set(out) == {"scores"}
    np.testing.assert_allclose(out["scores"].numpy(), [[6.5, 7.5]])   # [1+2+3+0.5, 0+2+6-0.5]
