"""raytfnode on a Ray cluster of several machines (raylets on this host, ``multinode_cluster`` in conftest).

Machine 0 is the head, where the driver runs; it has no ``tf`` resource, so TF
nodes (which ask for ``{'tf': 1}``) never land there. Machines 1 and 2 declare
2 GPUs each, machine 3 none. Every test checks the Ray node id of what it
placed (``cluster.cluster_info[i]['node_id']`` against the fixture's ids), not
just that it ran. Tests that remove a machine add their own extra raylet first,
so the shared machines stay for the tests after them.

TensorFlow starts only in the nodes that train (``import_tensorflow=False``
everywhere else). Nodes report through JSON files in ``tmp_path``: every
raylet runs on this host.
"""
import glob
import os
import sys
import textwrap
import threading
import time
import uuid

import numpy as np
import pytest
import ray
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle
from ray.data import DataContext
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import (TF_RESOURCE, _running_sparks, _start_local_spark, _stop_spark, assert_no_leftovers,
                      machine_resource)
import node_reports
from node_reports import read_node_reports, write_node_report
from raytfnode import TFCluster, logs
from raytfnode.bridges.raydata import block_copies
from raytfnode.errors import BadInputError, NodeError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(300)]

SPARK = TFCluster.InputMode.SPARK
TF_NODE = {TF_RESOURCE: 1}
DIGITS_FEATURES = 64


# ---------------------------------------------------------------- helpers


def _node_machines(machines, cluster):
    """Machine index of every TF node, from the Ray node ids the nodes reported at start."""
    return [machines.machine_of(info["node_id"]) for info in cluster.cluster_info]


def _actors_by_machine(machines, name_prefix, states=("ALIVE",)):
    """``{machine index: [actor names]}`` of the live actors whose name starts with ``name_prefix``."""
    found = {}
    for actor in ray._private.state.actors().values():
        if (actor.get("Name") or "").startswith(name_prefix) and actor["State"] in states:
            found.setdefault(machines.machine_of(actor["Address"]["NodeID"]), []).append(actor["Name"])
    return found


@pytest.fixture
def machines(multinode_cluster):
    """The shared cluster; after the test, nothing of a raytfnode cluster is left on any machine."""
    yield multinode_cluster
    assert_no_leftovers(timeout=30)
    assert _actors_by_machine(multinode_cluster, "raytfnode-") == {}


def _where(args, ctx):
    """Reports where this node runs: its Ray node id, GPUs and CUDA_VISIBLE_DEVICES."""
    write_node_report(args["out"], ctx, {
        "node_id": ray.get_runtime_context().get_node_id(),
        "gpu_ids": ctx.gpu_ids,
        "ray_gpu_ids": [str(g) for g in ray.get_gpu_ids()],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    })


def _run_where(tmp_path, num_executors, num_ps=0, **kwargs):
    kwargs.setdefault("resources", TF_NODE)
    cluster = TFCluster.run(None, _where, {"out": str(tmp_path)}, num_executors, num_ps, import_tensorflow=False,
                            reservation_timeout=120, **kwargs)
    cluster.shutdown(grace_secs=5)
    reports = read_node_reports(tmp_path)
    for (job, index), info in zip(cluster.roles, cluster.cluster_info):
        assert reports["{}:{}".format(job, index)]["node_id"] == info["node_id"]
    return cluster, reports


# ------------------------------------------------------------ 1. placement


def test_gpu_nodes_land_on_gpu_machines_with_their_own_gpus_and_role_resources_pin_ps_and_chief(machines, tmp_path):
    # chief and 3 workers ask for one GPU each (the 4 declared GPUs are on machines 1 and 2); the ps asks for
    # none and is pinned to the CPU-only machine 3, the chief to machine 2
    pins = {"ps": {"num_gpus": 0, "resources": {TF_RESOURCE: 1, machine_resource(3): 1}},
            "chief": {"resources": {TF_RESOURCE: 1, machine_resource(2): 1}}}
    cluster, reports = _run_where(tmp_path, 5, num_ps=1, master_node="chief", num_gpus=1, role_resources=pins)
    where = {"{}:{}".format(job, index): machine
             for (job, index), machine in zip(cluster.roles, _node_machines(machines, cluster))}
    assert where.pop("ps:0") == 3 and where["chief:0"] == 2
    assert reports["ps:0"]["gpu_ids"] == [] and reports["ps:0"]["cuda_visible_devices"] == ""
    assert sorted(where.values()) == [1, 1, 2, 2], where
    gpus_of_machine = {}
    for name, machine in where.items():
        report = reports[name]
        assert len(report["gpu_ids"]) == 1 and report["gpu_ids"] == report["ray_gpu_ids"], report
        assert report["cuda_visible_devices"] == report["gpu_ids"][0]
        gpus_of_machine.setdefault(machine, []).append(report["gpu_ids"][0])
    for machine, gpu_ids in gpus_of_machine.items():   # two nodes on one machine never share a GPU
        assert sorted(gpu_ids) == ["0", "1"], (machine, gpu_ids)


@pytest.mark.parametrize("strategy", ["PACK", "STRICT_PACK"])
def test_pack_strategies_put_every_node_on_one_machine(machines, tmp_path, strategy):
    cluster, _ = _run_where(tmp_path, 3, placement_strategy=strategy)
    on = _node_machines(machines, cluster)
    assert len(set(on)) == 1 and on[0] in (1, 2, 3), on


def _hold_until_done(args, ctx):
    deadline = time.monotonic() + 120
    while not os.path.exists(args["done"]) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_strict_spread_puts_each_node_on_its_own_machine_and_the_queues_and_coordinator_on_the_drivers(
        machines, tmp_path):
    done = tmp_path / "done"
    cluster = TFCluster.run(None, _hold_until_done, {"done": str(done)}, 3, 0, input_mode=SPARK,
                            resources=TF_NODE, placement_strategy="STRICT_SPREAD", import_tensorflow=False,
                            reservation_timeout=120)
    try:
        placed = _actors_by_machine(machines, "raytfnode-" + cluster.cluster_id)
    finally:
        done.write_text("done")
        cluster.shutdown()
    assert sorted(_node_machines(machines, cluster)) == [1, 2, 3]
    names = {machine: sorted(n.split(cluster.cluster_id + "-")[1] for n in actor_names)
             for machine, actor_names in placed.items()}
    # no directory: a cluster that cannot restart (max_failures=0) has only its first attempt's actors
    assert names[0] == ["coordinator", "queues-0", "queues-1", "queues-2"], names
    assert sorted(m for m in names if m != 0) == [1, 2, 3]
    assert all(names[m] and all(n.startswith("node-") for n in names[m]) for m in (1, 2, 3)), names


# --------------------------------------------- 2. training across machines


def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    ids = np.arange(len(x), dtype=np.float32)[:, None]
    return np.hstack([x, ids]), data.target.astype(np.int64)     # the row id travels as column 64


def _digit_rows():
    x, y = _digits()
    return [(x[i], y[i]) for i in range(len(x))]


def _train_then_infer(args, ctx):
    """MWMS model.fit on the 'input' feed (row ids counted per epoch), then answers the 'infer' feed in order.

    Each row's x holds the 64 pixels and, last, the row id: counted here, cut before Keras sees it.
    Inference answers ``[row id, predicted digit]`` per row.
    """
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed()
    per_epoch = []
    read_epoch = feed.epoch_chunks   # what as_dataset reads through

    def counted_epoch():
        rows, id_sum = 0, 0
        for x, y in read_epoch():
            rows += len(x)
            id_sum += int(x[:, DIGITS_FEATURES].astype(np.int64).sum())
            yield x[:, :DIGITS_FEATURES], y
        per_epoch.append([rows, id_sum])

    feed.epoch_chunks = counted_epoch
    signature = (tf.TensorSpec((None, DIGITS_FEATURES), tf.float32), tf.TensorSpec((None,), tf.int64))
    with strategy.scope():
        model = keras.Sequential([keras.Input(shape=(DIGITS_FEATURES,)), keras.layers.Dense(16, activation="relu"),
                                  keras.layers.Dense(10)])
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callbacks = []
    if args.get("started"):   # tells the driver that training runs (the machine-loss test waits for it)
        def touch(batch, logs):
            if not os.path.exists(args["started"]):
                with open(args["started"], "w") as f:
                    f.write(ctx.job_name)

        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=touch))
    history = model.fit(feed.as_dataset(64, output_signature=signature), epochs=args["epochs"], verbose=0,
                        callbacks=callbacks)
    write_node_report(args["out"], ctx, {"epochs": per_epoch, "loss": [float(v) for v in history.history["loss"]],
                                     "weights": [w.tolist() for w in model.get_weights()],
                                     "node_id": ray.get_runtime_context().get_node_id()})
    infer = ctx.get_data_feed(train_mode=False, qname_in="infer")
    while not infer.should_stop():
        batch = infer.next_batch(100)
        if len(batch) > 0:
            x = np.stack([row[0] for row in batch])
            predicted = np.argmax(model(x[:, :DIGITS_FEATURES], training=False).numpy(), axis=1)
            infer.batch_results([[int(i), int(p)] for i, p in zip(x[:, DIGITS_FEATURES], predicted)])


def _start_mwms(sc, tmp_path, epochs, **kwargs):
    kwargs.setdefault("num_gpus", 1)
    kwargs.setdefault("placement_strategy", "STRICT_SPREAD")
    return TFCluster.run(sc, _train_then_infer, {"out": str(tmp_path), "epochs": epochs}, 2, 0, input_mode=SPARK,
                         queues=("input", "infer", "output", "error"), resources=TF_NODE, reservation_timeout=180,
                         **kwargs)


def _check_training(reports, report, epochs, num_rows):
    assert report["epochs"] == epochs and report["rows"] == report["consumed"] == epochs * num_rows
    assert sorted(reports) == ["worker:0", "worker:1"]
    for epoch in range(epochs):
        counts = [node["epochs"][epoch][0] for node in reports.values()]
        id_sums = [node["epochs"][epoch][1] for node in reports.values()]
        assert sum(counts) == num_rows and max(counts) - min(counts) <= 1, (epoch, counts)
        assert sum(id_sums) == num_rows * (num_rows - 1) // 2, epoch     # every row id once
    first, second = reports["worker:0"], reports["worker:1"]
    assert first["node_id"] != second["node_id"]
    for a, b in zip(first["weights"], second["weights"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
    assert first["loss"][-1] < first["loss"][0]


def _check_in_order(result_parts, input_parts):
    assert len(result_parts) == len(input_parts)
    for index, (results, rows) in enumerate(zip(result_parts, input_parts)):
        assert [r[0] for r in results] == [int(row[0][DIGITS_FEATURES]) for row in rows], "partition {}".format(index)


def _train_and_infer_from_spark(sc, machines, tmp_path, epochs=2):
    rows = _digit_rows()
    rdd = sc.parallelize(rows, 6)
    input_parts = rdd.glom().collect()
    cluster = _start_mwms(sc, tmp_path, epochs)
    try:
        assert sorted(_node_machines(machines, cluster)) == [1, 2]
        report = cluster.train(rdd, num_epochs=epochs, feed_timeout=180)
        result_parts = cluster.inference(rdd, qname="infer", feed_timeout=180).glom().collect()
    finally:
        cluster.shutdown()
    _check_training(read_node_reports(tmp_path), report, epochs, len(rows))
    _check_in_order(result_parts, input_parts)
    correct = sum(1 for part in result_parts for row_id, predicted in part if predicted == int(rows[row_id][1]))
    assert correct > len(rows) // 2      # it learned: better than half right after 2 epochs


@pytest.fixture(scope="module")
def local_spark(multinode_cluster):
    """Spark local mode on the driver's machine (the head), for this module."""
    for kind in list(_running_sparks):
        _stop_spark(kind, _running_sparks.pop(kind))
    session = _start_local_spark()
    session.sparkContext.setLogLevel("ERROR")
    _running_sparks["local"] = session
    yield session
    if _running_sparks.pop("local", None) is not None:
        _stop_spark("local", session)


@pytest.mark.timeout(360)
def test_mwms_on_two_machines_fed_from_spark_local_mode_on_the_head(machines, local_spark, tmp_path):
    _train_and_infer_from_spark(local_spark.sparkContext, machines, tmp_path)


def _spark_jobs_end(sc, seconds=60):
    """The ids of Spark jobs still active after waiting up to ``seconds`` for them to end."""
    deadline = time.monotonic() + seconds
    while sc.statusTracker().getActiveJobsIds() and time.monotonic() < deadline:
        time.sleep(0.2)
    return list(sc.statusTracker().getActiveJobsIds())


def _remove_when_started(machines, node, started, removed):
    deadline = time.monotonic() + 240
    while not os.path.exists(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    removed["at"] = time.monotonic()
    machines.cluster.remove_node(node, allow_graceful=False)
    removed["done"] = time.monotonic()


@pytest.mark.timeout(360)
def test_losing_the_machine_of_a_training_node_names_that_node_first_and_cancels_the_spark_job(
        machines, local_spark, tmp_path, capfd):
    # an extra machine of its own: the shared machines stay for the tests after this one
    doomed, doomed_id = machines.add_machine(num_cpus=2, resources={"doomed": 10})
    sc = local_spark.sparkContext
    rdd = sc.parallelize(_digit_rows(), 6)
    started = str(tmp_path / "started")
    pins = {"chief": {"resources": {TF_RESOURCE: 1, machine_resource(1): 1}}, "worker": {"resources": {"doomed": 1}}}
    epochs = 40   # far more than run before the machine goes
    cluster = TFCluster.run(sc, _train_then_infer, {"out": str(tmp_path), "epochs": epochs, "started": started},
                            2, 0, master_node="chief", input_mode=SPARK, queues=("input", "infer", "output", "error"),
                            role_resources=pins, reservation_timeout=180)
    removed = {}
    remover = threading.Thread(target=_remove_when_started, args=(machines, doomed, started, removed), daemon=True)
    try:
        assert [info["node_id"] for info in cluster.cluster_info] == [machines.node_ids[1], doomed_id]
        assert [tuple(r) for r in cluster.roles] == [("chief", 0), ("worker", 0)]
        remover.start()
        with pytest.raises(NodeError) as failure:
            cluster.train(rdd, num_epochs=epochs, feed_timeout=180)
        raised_at = time.monotonic()
    finally:
        remover.join(60)
        try:
            cluster.shutdown()
        except NodeError:
            pass
        if doomed in machines.cluster.worker_nodes:
            machines.cluster.remove_node(doomed, allow_graceful=False)
    print("NodeError {:.1f} s after the machine was removed".format(raised_at - removed["at"]), file=sys.__stderr__)
    error = failure.value
    headline = str(error).splitlines()[0]
    assert error.node == "worker:0", str(error)          # the node whose machine died, not a survivor
    assert headline.startswith("TF node worker:0 failed"), headline
    related = [e.node for e in error.related]
    assert "worker:0" not in related
    assert set(related) <= {"chief:0"}
    if related:                                        # survivors' errors come after the cause
        assert str(error).index("chief:0") > str(error).index("worker:0")
    assert _spark_jobs_end(sc) == []                   # the feeding Spark job was cancelled
    captured = capfd.readouterr()
    assert "Unhandled error" not in captured.out + captured.err
    assert _actors_by_machine(machines, "raytfnode-" + cluster.cluster_id) == {}


# ----------------------------------------------------------------- RayDP


@pytest.fixture(scope="module")
def raydp_spark(multinode_cluster):
    """RayDP's Spark with its master on the head and both executors on machine 3 (no TF node there)."""
    import raydp

    for kind in list(_running_sparks):
        _stop_spark(kind, _running_sparks.pop(kind))
    for attempt in range(2):
        try:
            session = raydp.init_spark(
                "rtn-multinode-{}-{}".format(os.getpid(), attempt), num_executors=2, executor_cores=1,
                executor_memory="512MB", configs=logs.raydp_configs({
                    "spark.ray.raydp_spark_master.actor.resource." + machine_resource(0): "1",
                    "spark.ray.raydp_spark_executor.actor.resource." + machine_resource(3): "1",
                    "spark.task.maxFailures": "4", "spark.ui.enabled": "false"}))
            break
        except Exception:  # noqa: BLE001
            # Seen once in CI on a loaded host: the RayDP master's JVM broke its py4j link
            # while starting (Py4JError from startUpAppMaster, no Java exception). Show its log and retry once.
            print(_raydp_master_log_tail())
            raydp.stop_spark()
            if attempt == 1:
                raise
            time.sleep(5)
    session.sparkContext.setLogLevel("ERROR")
    _running_sparks["raydp"] = session
    yield session
    if _running_sparks.pop("raydp", None) is not None:
        _stop_spark("raydp", session)


def _raydp_master_log_tail(lines=40):
    """The last lines of the RayDP JVM logs of this Ray session (for a failed start)."""
    logs_dir = ray._private.worker._global_node.get_logs_dir_path()
    tails = []
    for path in sorted(glob.glob(os.path.join(logs_dir, "*java-worker*.log")), key=os.path.getmtime)[-3:]:
        with open(path, errors="replace") as log:
            tails.append("== {}\n{}".format(path, "".join(log.readlines()[-lines:])))
    return "\n".join(tails) or "no RayDP JVM log in {}".format(logs_dir)


def _raydp_executor_machines(machines):
    machines_of = []
    for actor in ray._private.state.actors().values():
        if "RayDPExecutor" in (actor.get("ActorClassName") or "") and actor["State"] == "ALIVE":
            machines_of.append(machines.machine_of(actor["Address"]["NodeID"]))
    return sorted(machines_of)


@pytest.mark.timeout(420)
def test_mwms_on_two_machines_fed_from_raydp_executors_on_a_third(machines, raydp_spark, tmp_path):
    sc = raydp_spark.sparkContext
    assert sc.parallelize(range(4), 2).count() == 4    # executors registered
    assert _raydp_executor_machines(machines) == [3, 3]
    _train_and_infer_from_spark(sc, machines, tmp_path)


# ------------------------------------------------------------- Ray Dataset


@ray.remote(num_cpus=0)
def _digits_block(first, count):
    import pyarrow as pa

    x, y = _digits()
    x, y = x[first:first + count], y[first:first + count]
    return pa.table({"x": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]), "y": pa.array(y)})


PAYLOAD_FLOATS = 256   # 1 KiB per row: a block of 300 rows is well above Ray's 100 KiB limit for inlined objects


@ray.remote(num_cpus=0)
def _ids_block(first, count):
    """Rows ``first..first+count-1``: an id and a payload, so the block lives in the object store, not inline."""
    import pyarrow as pa

    payload = np.zeros(count * PAYLOAD_FLOATS, dtype=np.float32)
    return pa.table({"id": pa.array(np.arange(first, first + count, dtype=np.int64)),
                     "payload": pa.FixedSizeListArray.from_arrays(pa.array(payload), PAYLOAD_FLOATS)})


def _blocks_on(make, node_ids, sizes, soft=False):
    """Blocks made by Ray tasks, block i on node ``node_ids[i]``; returns their refs (owned by the driver)."""
    refs, first = [], 0
    for node_id, size in zip(node_ids, sizes):
        strategy = NodeAffinitySchedulingStrategy(node_id, soft=soft)
        refs.append(make.options(scheduling_strategy=strategy).remote(first, size))
        first += size
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    return refs


def _dataset_on_head(machines, refs):
    """``ray.data.from_arrow_refs(refs)`` with its metadata tasks (one per block) on the head: left to
    Ray, a machine running more than half its CPUs' worth sends some elsewhere, which copies those blocks."""
    options = DataContext.get_current().execution_options
    saved = options.label_selector
    options.label_selector = {ray._raylet.RAY_NODE_ID_KEY: machines.node_ids[0]}
    try:
        return ray.data.from_arrow_refs(refs)
    finally:
        options.label_selector = saved


def _holders(refs):
    """The Ray node ids holding a copy of each object."""
    locations = ray.experimental.get_object_locations(refs)
    return [sorted(locations[ref]["node_ids"]) for ref in refs]


@pytest.mark.timeout(360)
def test_mwms_on_two_machines_fed_from_a_ray_dataset_whose_blocks_live_on_a_third(machines, tmp_path):
    x, y = _digits()
    sizes = [600, 600, len(x) - 1200]     # 600 rows of 65 float32: above the 100 KiB of inlined objects
    refs = _blocks_on(_digits_block, [machines.node_ids[3]] * len(sizes), sizes)
    assert _holders(refs) == [[machines.node_ids[3]]] * len(sizes)
    ds = ray.data.from_arrow_refs(refs)
    epochs = 2
    cluster = _start_mwms(None, tmp_path, epochs)
    try:
        assert sorted(_node_machines(machines, cluster)) == [1, 2]
        report = cluster.train(ds, num_epochs=epochs, feed_timeout=180)
        results = cluster.inference(ds, qname="infer", feed_timeout=180).take_all()
    finally:
        cluster.shutdown()
    _check_training(read_node_reports(tmp_path), report, epochs, len(x))
    assert [row["result"][0] for row in results] == list(range(len(x)))     # in input order
    assert sum(1 for row in results if row["result"][1] == y[row["result"][0]]) > len(x) // 2


def _count_ids(args, ctx):
    """Counts the rows and the sum of ids of every epoch."""
    feed = ctx.get_data_feed()
    epochs = []
    while not feed.should_stop():
        rows = total = 0
        for batch in feed.epoch_batches(100):
            ids = batch[0]
            rows += len(ids)
            total += int(ids.sum())
        if rows or not feed.should_stop():
            epochs.append([rows, total])
    write_node_report(args["out"], ctx, {"epochs": epochs})


def _check_ids_per_epoch(reports, epochs, num_rows, num_nodes):
    assert len(reports) == num_nodes
    for epoch in range(epochs):
        counts = [node["epochs"][epoch][0] for node in reports.values()]
        assert sum(counts) == num_rows and max(counts) - min(counts) <= 1, (epoch, counts)
        assert sum(node["epochs"][epoch][1] for node in reports.values()) == num_rows * (num_rows - 1) // 2


def _feed_ids(machines, tmp_path, ds, epochs, train_options=None, **kwargs):
    cluster = TFCluster.run(None, _count_ids, {"out": str(tmp_path)}, 3, 0, input_mode=SPARK, resources=TF_NODE,
                            placement_strategy="STRICT_SPREAD", import_tensorflow=False, reservation_timeout=120,
                            **kwargs)
    try:
        assert sorted(_node_machines(machines, cluster)) == [1, 2, 3]
        report = cluster.train(ds, num_epochs=epochs, feed_timeout=120, **(train_options or {}))
    finally:
        cluster.shutdown()
    return report, read_node_reports(tmp_path)


def test_data_locality_reads_blocks_on_their_own_machines_and_keeps_the_balance(machines, tmp_path):
    # 6 blocks of 300 rows, 2 on each TF machine: each machine holds exactly its nodes' share. The blocks
    # (2,400 bytes) are fed as pieces of their own with 4 KiB chunks; with the default 32 MiB chunks they
    # would travel in one run of small blocks, which the blind split cuts into contiguous thirds anyway.
    # The Dataset's metadata tasks run on the head, which then holds a copy of every block too: copies
    # are counted on the TF machines
    homes = [machines.node_ids[m] for m in (1, 2, 3, 1, 2, 3)]
    sizes = [300] * 6
    tf_machines = set(machines.node_ids[1:4])
    copies = {}
    for locality in (False, True):
        refs = _blocks_on(_ids_block, homes, sizes)
        assert _holders(refs) == [[home] for home in homes]
        out = tmp_path / str(locality)
        out.mkdir()
        report, reports = _feed_ids(machines, out, _dataset_on_head(machines, refs), 2, data_locality=locality,
                                    chunk_bytes=4096)
        assert report["rows"] == report["consumed"] == 2 * sum(sizes)
        _check_ids_per_epoch(reports, 2, sum(sizes), 3)
        holders = _holders(refs)
        assert block_copies(refs) == [len(nodes) for nodes in holders]   # raytfnode's count: machines holding each
        copies[locality] = sum(len(tf_machines.intersection(nodes)) - 1 for nodes in holders)
    print("copies of blocks on other machines: blind {}, locality-aware {}".format(copies[False], copies[True]),
          file=sys.__stderr__)
    assert copies[False] >= len(sizes)         # blind: every block is read on more than its own machine
    assert copies[True] * 4 <= copies[False]


def test_small_blocks_are_joined_on_their_own_machines_and_never_copied(machines, tmp_path):
    # 12 blocks of 300 KiB: 6 on machine 1, 4 on 2, 2 on 3, small against 32 MiB chunks. Each machine joins
    # its own; the balance (1,200 rows per node) has machine 3's node read part of machine 1's joined
    # block, so that block is copied, never an original. Fed as they are (epoch_cache_bytes=0), two of
    # machine 1's blocks are read on machine 3. The Dataset's metadata tasks run on the head (the driver's
    # machine, no TF node), so every block is held there too: a block held on two machines is joined on the
    # one with readers, whichever copy Ray lists first. Copies are counted on the TF machines.
    homes = [machines.node_ids[m] for m in (1, 1, 2, 1, 2, 3, 1, 2, 1, 3, 2, 1)]
    sizes = [300] * 12
    tf_machines = set(machines.node_ids[1:4])
    copies = {}
    for joined_bytes in (None, 0):
        refs = _blocks_on(_ids_block, homes, sizes)
        ds = _dataset_on_head(machines, refs)
        before = _holders(refs)
        out = tmp_path / str(joined_bytes)
        out.mkdir()
        report, reports = _feed_ids(machines, out, ds, 2, train_options={"epoch_cache_bytes": joined_bytes})
        assert report["rows"] == report["consumed"] == 2 * sum(sizes)
        _check_ids_per_epoch(reports, 2, sum(sizes), 3)
        copies[joined_bytes] = {(index, machines.node_ids.index(node)) for index, (now, then)
                                in enumerate(zip(_holders(refs), before)) for node in set(now) - set(then)
                                if node in tf_machines}
    assert not copies[None] and len(copies[0]) >= 2, copies      # (block, machine) of each new copy


def test_losing_a_machine_that_holds_only_dataset_blocks_is_recovered_with_every_row_once(machines, tmp_path):
    doomed, doomed_id = machines.add_machine(num_cpus=1, resources={"doomed-data": 10})
    try:
        sizes = [250] * 4
        refs = _blocks_on(_ids_block, [doomed_id] * len(sizes), sizes, soft=True)   # soft: rebuilt elsewhere
        assert _holders(refs) == [[doomed_id]] * len(sizes)
        ds = ray.data.from_arrow_refs(refs)
    finally:
        machines.cluster.remove_node(doomed, allow_graceful=False)
    report, reports = _feed_ids(machines, tmp_path, ds, 2)
    assert report["rows"] == report["consumed"] == 2 * sum(sizes)
    _check_ids_per_epoch(reports, 2, sum(sizes), 3)
    assert all(doomed_id not in holders and holders for holders in _holders(refs))   # rebuilt from lineage


# ------------------------------------------------------------- user code


def _user_package(root, name):
    """Writes a package ``name`` under ``root`` whose map_fun reports the file it was imported from.

    On the nodes (``RTN_TEST_TOP_LEVEL_TF_KERAS`` set) the package imports ``tf_keras`` at its top,
    before TensorFlow, as Keras programs do: TensorFlow's own import loads ``tf_keras`` too, so
    the node must load the package before it starts importing TensorFlow, never both at once.
    """
    package = root / name
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(textwrap.dedent("""
        import json
        import os

        if os.environ.get("RTN_TEST_TOP_LEVEL_TF_KERAS"):
            import tf_keras


        def map_fun(args, ctx):
            report = {"node": "{}:{}".format(ctx.job_name, ctx.task_index), "file": __file__}
            if os.environ.get("RTN_TEST_TOP_LEVEL_TF_KERAS"):
                import tensorflow as tf
                report["dense_units"] = tf_keras.layers.Dense(3)(tf.zeros([1, 2])).shape[-1]
            path = os.path.join(args["out"], "{}-{}.json".format(ctx.job_name, ctx.task_index))
            with open(path, "w") as f:
                json.dump(report, f)
    """))
    return package


def test_map_fun_of_a_module_the_machines_lack_fails_naming_it_and_runs_with_runtime_env_py_modules(
        machines, tmp_path):
    import importlib

    name = "rtn_user_code_{}".format(uuid.uuid4().hex[:8])
    root = tmp_path / "user-code"          # outside the driver script's directory and Ray's worker path
    package = _user_package(root, name)
    sys.path.insert(0, str(root))
    try:
        module = importlib.import_module(name)
        with pytest.raises(BadInputError, match="cannot import module") as failure:
            TFCluster.run(None, module.map_fun, {"out": str(tmp_path)}, 2, 0, resources=TF_NODE,
                          placement_strategy="STRICT_SPREAD", import_tensorflow=False, reservation_timeout=120)
        assert name in str(failure.value) and "runtime_env" in str(failure.value), str(failure.value)
        assert_no_leftovers(timeout=30)
        out = tmp_path / "out"
        out.mkdir()
        cluster = TFCluster.run(None, module.map_fun, {"out": str(out)}, 2, 0, resources=TF_NODE,
                                placement_strategy="STRICT_SPREAD", import_tensorflow=True,
                                reservation_timeout=120, runtime_env={"py_modules": [str(package)]},
                                env_vars={"RTN_TEST_TOP_LEVEL_TF_KERAS": "1"})
        cluster.shutdown()
    finally:
        sys.path.remove(str(root))
        sys.modules.pop(name, None)
    reports = read_node_reports(out)
    assert sorted(reports) == ["worker:0", "worker:1"]
    assert len({info["node_id"] for info in cluster.cluster_info}) == 2
    for report in reports.values():    # imported from the copy Ray shipped, not from the driver's directory
        assert not report["file"].startswith(str(root)), report["file"]
        assert report["dense_units"] == 3, report
