"""One test for each documented option of ``TFCluster.run`` / ``train`` / ``inference`` / ``DataFeed`` that had none.

Each test runs the option through the public API and checks what it promises where the user would see it:
the Ray resources a node actor holds (``ctx.resources``, read inside ``map_fun``), the environment of
``map_fun``, the placement group Ray made, the machine a node landed on, the epochs a node read, the rows a
node got after a Spark task failed once and was retried, the ``element_spec`` of a ``tf.data`` dataset.
Options already proven elsewhere are not repeated here (see the issue 13 report).

Nodes report through JSON files in ``tmp_path`` (every Ray worker runs on this host). Only the
``as_dataset`` test imports TensorFlow. Tests marked ``multinode`` run last, on the simulated cluster of
several machines (``multinode_cluster`` in conftest): a placement can be wrong only where there is more
than one machine.
"""
import os
import sys
import time

import numpy as np
import pytest
import ray
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from conftest import TF_RESOURCE, assert_no_leftovers
import node_reports
from node_reports import read_node_reports, wait_for_file, write_node_report
from raytfnode import TFCluster
from raytfnode.errors import BadInputError, ReservationTimeoutError

# map_funs and partition functions run in Ray actors and Spark Python workers, which cannot import this module
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

pytestmark = pytest.mark.timeout(180)

SPARK = TFCluster.InputMode.SPARK
LOCAL_SPARK = pytest.mark.parametrize("spark", ["local"], indirect=True)
NEVER = 3600   # a reservation_timeout no test waits out: only a failure at once passes


# ---------------------------------------------------------------- helpers


def _report_placement(args, ctx):
    """Reports the Ray resources this node holds, its Ray node and placement group, and chosen env vars."""
    group = ray.util.get_current_placement_group()
    write_node_report(args["out"], ctx, {
        "resources": ctx.resources,
        "assigned": ray.get_runtime_context().get_assigned_resources(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "placement_group": group.id.hex() if group else None,
        "environ": {name: os.environ.get(name) for name in args.get("env_names", ())},
    })


def _run(map_fun, args, num_executors, num_ps=0, sc=None, **kwargs):
    kwargs.setdefault("import_tensorflow", False)
    kwargs.setdefault("num_cpus", 0.5)
    kwargs.setdefault("reservation_timeout", 120)
    kwargs.setdefault("progress", False)
    return TFCluster.run(sc, map_fun, args, num_executors, num_ps, **kwargs)


# ------------------------------------------------------------ run(resources=, memory=)


def test_a_custom_resource_that_no_ray_node_has_fails_at_once_naming_the_node_and_the_resource(
        ray_cluster, no_leftovers):
    with pytest.raises(ReservationTimeoutError) as info:
        _run(_report_placement, {"out": "/nonexistent"}, 2, resources={"tpu-slice": 1}, reservation_timeout=NEVER)
    text = str(info.value)
    assert "worker:0 asks for tpu-slice=1" in text and "largest Ray node has 0" in text, text


def test_memory_is_part_of_the_resources_every_node_actor_holds(ray_cluster, no_leftovers, tmp_path):
    memory = 96 << 20
    cluster = _run(_report_placement, {"out": str(tmp_path)}, 2, memory=memory)
    cluster.shutdown()
    reports = read_node_reports(tmp_path)
    assert sorted(reports) == ["worker:0", "worker:1"]
    for name, report in reports.items():
        assert report["assigned"].get("memory") == memory, (name, report["assigned"])
        assert report["resources"] == report["assigned"], name      # ctx.resources says the same
    assert [info["resources"].get("memory") for info in cluster.cluster_info] == [memory, memory]


def test_memory_more_than_any_ray_node_has_fails_at_once_naming_memory(ray_cluster, no_leftovers):
    too_much = 1 << 50   # 1 PiB
    with pytest.raises(ReservationTimeoutError) as info:
        _run(_report_placement, {"out": "/nonexistent"}, 1, memory=too_much, reservation_timeout=NEVER)
    assert "asks for memory={:g}".format(too_much) in str(info.value), str(info.value)


# ------------------------------------------------------------ run(env_vars=)


def test_env_vars_are_in_the_environment_of_every_map_fun_beside_runtime_env_env_vars(
        ray_cluster, no_leftovers, tmp_path):
    names = ("RAYTFNODE_OPTION_FROM_ENV_VARS", "RAYTFNODE_OPTION_FROM_RUNTIME_ENV")
    assert not any(name in os.environ for name in names)   # not inherited from this driver
    cluster = _run(_report_placement, {"out": str(tmp_path), "env_names": names}, 2,
                   env_vars={names[0]: "set by env_vars"}, runtime_env={"env_vars": {names[1]: "set by runtime_env"}})
    cluster.shutdown()
    reports = read_node_reports(tmp_path)
    assert sorted(reports) == ["worker:0", "worker:1"]
    for report in reports.values():
        assert report["environ"] == {names[0]: "set by env_vars", names[1]: "set by runtime_env"}, report


# ------------------------------------------------------------ run(placement_strategy=)


@pytest.mark.parametrize("strategy", ["PACK", "STRICT_PACK"])
def test_pack_strategies_place_every_node_in_one_placement_group_of_that_strategy_removed_at_shutdown(
        ray_cluster, no_leftovers, tmp_path, strategy):
    cluster = _run(_report_placement, {"out": str(tmp_path)}, 2, num_ps=1, placement_strategy=strategy)
    try:
        group = cluster.placement_group
        table = ray.util.placement_group_table(group)
    finally:
        cluster.shutdown(grace_secs=5)
    assert table["strategy"] == strategy and table["state"] == "CREATED", table
    assert table["name"] == "raytfnode-" + cluster.cluster_id
    assert sorted(bundle["CPU"] for bundle in table["bundles"].values()) == [0.5, 0.5]
    reports = read_node_reports(tmp_path)
    assert sorted(reports) == ["ps:0", "worker:0"]
    assert [r["placement_group"] for r in reports.values()] == [group.id.hex()] * 2
    assert ray.util.placement_group_table(group)["state"] == "REMOVED"


def test_strict_spread_of_two_nodes_on_a_one_machine_ray_fails_at_once_naming_the_strategy(
        ray_cluster, no_leftovers):
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1
    with pytest.raises(ReservationTimeoutError) as info:
        _run(_report_placement, {"out": "/nonexistent"}, 2, placement_strategy="STRICT_SPREAD",
             reservation_timeout=NEVER)
    text = str(info.value)
    assert "placement_strategy='STRICT_SPREAD'" in text and "only 1 of the 1 alive Ray nodes" in text, text


def test_driver_ps_nodes_with_a_placement_strategy_keeps_the_ps_out_of_the_group_that_places_the_others(
        ray_cluster, no_leftovers, tmp_path):
    cluster = _run(_report_placement, {"out": str(tmp_path)}, 3, num_ps=1, placement_strategy="PACK",
                   driver_ps_nodes=True)
    try:
        table = ray.util.placement_group_table(cluster.placement_group)
    finally:
        cluster.shutdown(grace_secs=5)
    assert len(table["bundles"]) == 2, table          # the two workers; the ps is pinned, not bundled
    reports = read_node_reports(tmp_path)
    assert reports["ps:0"]["placement_group"] is None, reports["ps:0"]
    assert {reports[name]["placement_group"] for name in ("worker:0", "worker:1")} == {table["placement_group_id"]}
    assert reports["ps:0"]["node_id"] == ray.get_runtime_context().get_node_id()


# ------------------------------------------------------------ train(num_epochs=0)


def _count_epochs(args, ctx):
    """Reads the feed epoch by epoch (``epoch_batches``); reports the rows and row sum of every epoch."""
    feed = ctx.get_data_feed()
    epochs = []
    while not feed.should_stop():
        rows = total = 0
        for batch in feed.epoch_batches(16):
            rows += len(batch)
            total += int(batch.sum())
        if feed.end_of_epoch():
            epochs.append([rows, total])
    write_node_report(args["out"], ctx, {"epochs": epochs})


def test_train_with_num_epochs_0_feeds_every_row_ten_times_as_tensorflowonspark_did(
        ray_cluster, no_leftovers, tmp_path):
    # train()'s docstring: "num_epochs: number of times to feed the data; 0 keeps TensorFlowOnSpark's default of 10"
    partitions = [list(range(0, 30)), list(range(30, 47)), list(range(47, 50))]
    cluster = _run(_count_epochs, {"out": str(tmp_path)}, 2, input_mode=SPARK)
    try:
        report = cluster.train(partitions, num_epochs=0, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert report["epochs"] == 10 and report["rows"] == report["consumed"] == 500, report
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    assert [len(n["epochs"]) for n in nodes.values()] == [10, 10]
    for epoch in range(10):   # each epoch: every row once, the nodes level
        rows = [n["epochs"][epoch][0] for n in nodes.values()]
        assert sorted(rows) == [25, 25], (epoch, rows)
        assert sum(n["epochs"][epoch][1] for n in nodes.values()) == sum(range(50))


# ------------------------------------------------------------ DataFeed.as_dataset(output_signature=)


def _dataset_with_signature(args, ctx):
    """Builds the dataset from a given signature before any row is fed, then reads it once per epoch."""
    import tensorflow as tf

    feed = ctx.get_data_feed()
    signature = (tf.TensorSpec(shape=(None, None), dtype=tf.float32), tf.TensorSpec(shape=(None,), dtype=tf.int64))
    dataset = feed.as_dataset(8, output_signature=signature)
    with open(args["built"], "w") as f:   # train() has not been called yet: nothing was read off the feed
        f.write("built")
    epochs = []
    for _ in range(args["epochs"]):
        rows, feature_sum, label_sum, widths = 0, 0.0, 0, set()
        for features, labels in dataset:
            rows += int(features.shape[0])
            widths.add(int(features.shape[1]))
            feature_sum += float(tf.reduce_sum(features))
            label_sum += int(tf.reduce_sum(labels))
        epochs.append({"rows": rows, "feature_sum": feature_sum, "label_sum": label_sum, "widths": sorted(widths)})
    write_node_report(args["out"], ctx, {
        "element_spec": [[spec.shape.as_list(), spec.dtype.name] for spec in dataset.element_spec],
        "epochs": epochs})


def test_as_dataset_with_output_signature_is_built_before_data_arrives_and_keeps_the_given_signature(
        ray_cluster, no_leftovers, tmp_path):
    rows = [(np.array([i, 0.5, -1.0], dtype=np.float32), i % 5) for i in range(40)]
    built = str(tmp_path / "built")
    out = tmp_path / "reports"
    out.mkdir()
    cluster = _run(_dataset_with_signature, {"out": str(out), "built": built, "epochs": 2}, 1, input_mode=SPARK,
                   num_cpus=1)
    try:
        # without output_signature, as_dataset() reads the shapes off the first chunk and so waits for data
        wait_for_file(built)
        report = cluster.train([rows[:25], rows[25:]], num_epochs=2, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert report["rows"] == report["consumed"] == 80, report
    node = read_node_reports(out)["worker:0"]
    # the given signature, not the one read off the data (which would be [None, 3] float32, [None] int64)
    assert node["element_spec"] == [[[None, None], "float32"], [[None], "int64"]], node["element_spec"]
    expected = {"rows": 40, "feature_sum": float(sum(range(40)) + 40 * (0.5 - 1.0)),
                "label_sum": sum(i % 5 for i in range(40)), "widths": [3]}
    assert node["epochs"] == [expected, expected], node["epochs"]


@pytest.mark.parametrize("batch_size", [0, -8, 2.5, True])
def test_as_dataset_rejects_a_batch_size_that_is_not_a_positive_integer_before_reading(batch_size):
    from raytfnode.tfdata import feed_dataset
    with pytest.raises(BadInputError, match="batch_size must be a positive integer"):
        feed_dataset(None, batch_size)   # no feed is touched: the check comes first


def _dataset_batch_sizes(args, ctx):
    """Reads ``as_dataset(8)`` once per epoch: the size of every batch and the rows' first values."""
    feed = ctx.get_data_feed()
    dataset = feed.as_dataset(8)
    epochs = []
    for _ in range(args["epochs"]):
        sizes, values = [], []
        for features, labels in dataset:
            sizes.append(int(features.shape[0]))
            values.extend(float(v) for v in features.numpy()[:, 0])
        epochs.append({"sizes": sizes, "values": sorted(values)})
    write_node_report(args["out"], ctx, {
        "element_spec": [[spec.shape.as_list(), spec.dtype.name] for spec in dataset.element_spec],
        "epochs": epochs})


def test_as_dataset_cuts_full_batches_across_chunk_boundaries_and_one_short_batch_per_epoch(
        ray_cluster, no_leftovers, tmp_path):
    rows = [(np.array([i, 0.5, -1.0], dtype=np.float32), i % 5) for i in range(62)]
    # 4 passes over 2 fed epochs: the passes after the end of the feed are empty, and do not wait
    cluster = _run(_dataset_batch_sizes, {"out": str(tmp_path), "epochs": 4}, 1, input_mode=SPARK, num_cpus=1,
                   chunk_bytes=200)   # 10 rows of 20 bytes a chunk: batches of 8 must span chunks
    try:
        report = cluster.train([rows[:37], rows[37:]], num_epochs=2, feed_timeout=120)
    finally:
        cluster.shutdown(timeout=60)
    assert report["rows"] == report["consumed"] == 124, report
    node = read_node_reports(tmp_path)["worker:0"]
    assert node["element_spec"] == [[[None, 3], "float32"], [[None], "int64"]], node["element_spec"]
    expected = {"sizes": [8] * 7 + [6], "values": [float(i) for i in range(62)]}
    empty = {"sizes": [], "values": []}
    assert node["epochs"] == [expected, expected, empty, empty], node["epochs"]


# ------------------------------------------------------------ a Spark task that fails once is retried


READ_BEFORE_FAILURE = "a node had read rows of this partition when the attempt failed"


def _fail_first_attempt(partition, position, marker_dir, pad=0):
    """A partition function: the first attempt of partition ``partition`` fails after ``position`` rows.

    Before it raises, it waits until a node has read rows of the partition (the file ``node-read`` that the
    map_fun writes), so the retried attempt puts chunks that a node has consumed already; the marker it
    writes says whether that happened. ``pad`` > 0 yields ``(value, 'x' * pad)`` rows (for a DataFrame:
    big rows push Spark's buffers between the partition and the feed along).
    """
    def rows(index, values):
        from pyspark import TaskContext

        context = TaskContext.get()
        first_attempt = context.attemptNumber() == 0
        for i, value in enumerate(values):
            if index == partition and first_attempt and i == position:
                read = os.path.join(marker_dir, "node-read")
                deadline = time.monotonic() + 60
                while not os.path.exists(read) and time.monotonic() < deadline:
                    time.sleep(0.05)
                with open(os.path.join(marker_dir, "failed-partition-{}".format(index)), "w") as f:
                    f.write(READ_BEFORE_FAILURE if os.path.exists(read) else "no node read rows of this partition")
                raise RuntimeError("injected failure of partition {} after {} rows".format(index, i))
            yield (value, "x" * pad) if pad else value
    return rows


def _says_it_read(args, values):
    """Writes ``node-read`` once ``values`` hold a row of the failing partition."""
    low, high = args["failing_rows"]
    if not os.path.exists(args["read"]) and any(low <= v < high for v in values):
        with open(args["read"], "w") as f:
            f.write("read")


def _record_values(args, ctx):
    """Reads the whole training feed (DataFrame rows are tuples) and reports every value it got."""
    feed = ctx.get_data_feed()
    values = []
    while not feed.should_stop():
        batch = [int(row[0]) for row in feed.next_batch(64)]
        values.extend(batch)
        _says_it_read(args, batch)
    write_node_report(args["out"], ctx, {"values": values})


@LOCAL_SPARK
def test_dataframe_feeding_task_that_fails_once_is_retried_and_every_row_is_fed_exactly_once(
        spark, no_leftovers, tmp_path):
    num_rows, partitions = 4000, 4
    out, markers = tmp_path / "nodes", tmp_path / "markers"
    out.mkdir()
    markers.mkdir()
    rdd = spark.sparkContext.parallelize(range(num_rows), partitions).mapPartitionsWithIndex(
        _fail_first_attempt(2, 600, str(markers), pad=1000))          # partition 2: rows 2000..2999
    df = spark.createDataFrame(rdd, "v long, pad string")
    # Arrow batches of 20 rows, 16 kB chunks (about 16 rows): rows reach the feed while the partition is read
    batch_key = "spark.sql.execution.arrow.maxRecordsPerBatch"
    previous = spark.conf.get(batch_key, None)
    spark.conf.set(batch_key, "20")
    args = {"out": str(out), "read": str(markers / "node-read"), "failing_rows": [2000, 3000]}
    cluster = _run(_record_values, args, 2, sc=spark, input_mode=SPARK, chunk_bytes=16 << 10)
    try:
        report = cluster.train(df, num_epochs=1, feed_timeout=120)
    finally:
        cluster.shutdown()
        if previous is None:
            spark.conf.unset(batch_key)
        else:
            spark.conf.set(batch_key, previous)
    # the first attempt failed after a node had consumed some of its rows, and the retry fed them all again
    assert (markers / "failed-partition-2").read_text() == READ_BEFORE_FAILURE
    assert report["rows"] == report["consumed"] == num_rows, report
    nodes = read_node_reports(out)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    values = nodes["worker:0"]["values"] + nodes["worker:1"]["values"]
    assert sorted(values) == list(range(num_rows)), "a row was fed twice or never"
    assert abs(len(nodes["worker:0"]["values"]) - len(nodes["worker:1"]["values"])) <= 1


def _double_and_record(args, ctx):
    """Answers inference with 2 * value and reports every value it answered."""
    feed = ctx.get_data_feed(train_mode=False)
    values = []
    while not feed.should_stop():
        batch = feed.next_batch(50)
        if batch:
            feed.batch_results([2 * v for v in batch])
            values.extend(int(v) for v in batch)
            _says_it_read(args, batch)   # after batch_results: the chunks read to the end are answered
    write_node_report(args["out"], ctx, {"values": values})


@LOCAL_SPARK
def test_inference_task_that_fails_once_is_retried_and_every_row_is_answered_exactly_once_in_order(
        spark, no_leftovers, tmp_path):
    num_rows = 4000
    out, markers = tmp_path / "nodes", tmp_path / "markers"
    out.mkdir()
    markers.mkdir()
    # partition 1 (rows 1000..1999, answered by worker:1) fails after 600 rows: its first chunks of 128 rows
    # went to the node's queue (same Python worker, no buffer between) and the node answered some of them
    rdd = spark.sparkContext.parallelize(range(num_rows), 4).mapPartitionsWithIndex(
        _fail_first_attempt(1, 600, str(markers)))
    args = {"out": str(out), "read": str(markers / "node-read"), "failing_rows": [1000, 2000]}
    cluster = _run(_double_and_record, args, 2, sc=spark, input_mode=SPARK, chunk_bytes=1024)
    try:
        results = cluster.inference(rdd, feed_timeout=60).collect()
    finally:
        cluster.shutdown()
    assert (markers / "failed-partition-1").read_text() == READ_BEFORE_FAILURE
    assert results == [2 * v for v in range(num_rows)]
    nodes = read_node_reports(out)
    answered = nodes["worker:0"]["values"] + nodes["worker:1"]["values"]
    assert sorted(answered) == list(range(num_rows)), "a row was answered twice or never"
    assert sorted(nodes["worker:1"]["values"]) == list(range(1000, 2000)) + list(range(3000, 4000))


# ------------------------------------------------------------ many machines: resources=, driver_ps_nodes=


@pytest.fixture
def machines(multinode_cluster):
    yield multinode_cluster
    assert_no_leftovers(timeout=30)


@pytest.mark.multinode
@pytest.mark.timeout(300)
def test_custom_resources_are_held_by_every_node_actor_and_keep_the_nodes_off_machines_without_them(
        machines, tmp_path):
    # the driver's machine (0) has CPUs but no 'tf': without the resource the scheduler prefers it
    cluster = _run(_report_placement, {"out": str(tmp_path)}, 3, resources={TF_RESOURCE: 1})
    cluster.shutdown()
    reports = read_node_reports(tmp_path)
    assert sorted(reports) == ["worker:0", "worker:1", "worker:2"]
    for name, report in reports.items():
        assert report["assigned"].get(TF_RESOURCE) == 1 and report["assigned"].get("CPU") == 0.5, (name, report)
        assert machines.machine_of(report["node_id"]) in (1, 2, 3), (name, report["node_id"])


@pytest.mark.multinode
def test_driver_ps_nodes_with_a_ps_request_the_drivers_machine_cannot_hold_fails_at_once(machines):
    # every node asks for 'tf', which the TF machines have and the driver's machine (0) has not
    with pytest.raises(ReservationTimeoutError, match=r"driver_ps_nodes=True pins ps:0 to the driver's machine, "
                                                      r"which has tf=0"):
        _run(_report_placement, {"out": "/nonexistent"}, 3, num_ps=1, resources={TF_RESOURCE: 1},
             driver_ps_nodes=True, reservation_timeout=NEVER)


@ray.remote
class _Hold:
    """Holds CPUs of a machine while a test runs."""

    def ready(self):
        return True


@pytest.mark.multinode
@pytest.mark.timeout(300)
def test_driver_ps_nodes_puts_the_ps_on_the_drivers_machine_where_the_scheduler_would_place_it_elsewhere(
        machines, tmp_path):
    head = machines.node_ids[0]
    # 3.5 of the driver's 4 CPUs in use: Ray's scheduler then sends a 0.5-CPU ps to an idle machine
    hold = _Hold.options(num_cpus=3.5, scheduling_strategy=NodeAffinitySchedulingStrategy(head, soft=False)).remote()
    ray.get(hold.ready.remote(), timeout=60)
    where = {}
    try:
        for pinned in (False, True):
            out = tmp_path / "pinned-{}".format(pinned)
            out.mkdir()
            # workers need 'tf' (never on the driver's machine); the ps asks for CPU only, so it fits anywhere
            cluster = _run(_report_placement, {"out": str(out)}, 3, num_ps=1, resources={TF_RESOURCE: 1},
                           role_resources={"ps": {"resources": {}}}, driver_ps_nodes=pinned)
            cluster.shutdown(grace_secs=5)
            where[pinned] = {name: machines.machine_of(report["node_id"])
                             for name, report in read_node_reports(out).items()}
    finally:
        ray.kill(hold)
    assert where[False]["ps:0"] != 0, where      # the control: left to Ray, the ps goes elsewhere
    assert where[True]["ps:0"] == 0, where       # driver_ps_nodes=True: on the driver's machine all the same
    for placed in where.values():   # the workers hold 'tf': never on the driver's machine
        assert sorted(placed) == ["ps:0", "worker:0", "worker:1"], placed
        assert placed["worker:0"] in (1, 2, 3) and placed["worker:1"] in (1, 2, 3), placed
