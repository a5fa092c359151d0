"""The Spark bridge end to end: real Ray, real Spark (local mode and RayDP), real TensorFlow where needed.

Every test starts a TF cluster of Ray actors through ``TFCluster.run``, feeds it
from Spark with ``train`` or ``inference`` and checks what the nodes received
(reported through files the ``map_fun`` writes) against the input: nothing lost,
nothing duplicated, nothing left behind. The ``spark`` fixture runs each test on
Spark local mode and on RayDP.
"""
import sys

import numpy as np
import pyspark
import pytest
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle

import node_reports
from node_reports import read_node_reports, write_node_report
from raytfnode import TFCluster
from raytfnode.errors import NodeError

# The map_funs and partition functions below run in Ray actors and Spark Python
# workers, which cannot import this test module: ship it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]

SPARK = TFCluster.InputMode.SPARK


# ---------------------------------------------------------------- helpers


def _run(spark, map_fun, args, num_nodes=2, **kwargs):
    kwargs.setdefault("import_tensorflow", False)
    return TFCluster.run(spark, map_fun, args, num_nodes, 0, input_mode=SPARK, **kwargs)


def _count_rows_by_epoch(args, ctx):
    """Counts and sums the rows of every epoch with ``epoch_batches``; reports them at end of feed."""
    feed = ctx.get_data_feed(train_mode=True)
    epochs = []
    while not feed.should_stop():
        count = total = 0
        for batch in feed.epoch_batches(args["batch_size"]):
            count += len(batch)
            total += int(batch.sum())
        if count or not feed.should_stop():
            epochs.append([count, total])
    write_node_report(args["out"], ctx, {"epochs": epochs})


# --------------------------------------------------- 1. inference scenario


def _square_map_fun(args, ctx):
    """The map_fun of TensorFlowOnSpark's inference example: answer each batch with the squares."""
    from raytfnode import TFNode

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if len(batch) > 0:
            feed.batch_results([x * x for x in batch])


def test_inference_returns_lazy_rdd_with_squares_of_each_partition_in_order(spark, no_leftovers):
    rdd = spark.sparkContext.parallelize(range(1000), 10)
    inputs = [list(range(100 * i, 100 * (i + 1))) for i in range(10)]   # how parallelize slices a range
    cluster = _run(spark, _square_map_fun, None)
    try:
        results = cluster.inference(rdd)
        assert isinstance(results, pyspark.RDD)       # a Spark RDD (whose actions raytfnode watches)
        # lazy: no row moved before an action runs
        assert [s["fed_rows"] for s in ray.get([q.stats.remote() for q in cluster.queue_actors])] == [0, 0]
        parts = results.glom().collect()
    finally:
        cluster.shutdown()
    assert len(parts) == 10
    for index, (part, source) in enumerate(zip(parts, inputs)):
        assert part == [x * x for x in source], "partition {}".format(index)
    assert sum(sum(p) for p in parts) == sum(x * x for x in range(1000))


# -------------------------------------------------- 2. multi-epoch training


def test_train_multi_epoch_delivers_every_row_once_per_epoch_balanced_across_workers(spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 2000, 3
    rdd = spark.sparkContext.parallelize(range(num_rows), 7)
    cluster = _run(spark, _count_rows_by_epoch, {"out": str(tmp_path), "batch_size": 37})
    try:
        report = cluster.train(rdd, num_epochs=num_epochs, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert report["epochs"] == num_epochs
    assert report["rows"] == report["consumed"] == num_epochs * num_rows
    assert report["skipped"] == 0
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    per_node = [nodes[name]["epochs"] for name in sorted(nodes)]
    assert all(len(epochs) == num_epochs for epochs in per_node), per_node
    for epoch in range(num_epochs):
        counts = [epochs[epoch][0] for epochs in per_node]
        sums = [epochs[epoch][1] for epochs in per_node]
        assert max(counts) - min(counts) <= 1, "epoch {}: {}".format(epoch, counts)
        assert sum(counts) == num_rows
        assert sum(sums) == sum(range(num_rows))
    assert sum(e[0] for epochs in per_node for e in epochs) == num_epochs * num_rows
    assert sum(e[1] for epochs in per_node for e in epochs) == num_epochs * sum(range(num_rows))


# ------------------------------------------ 3. skewed partitions under Keras

SKEWED_SIZES = (1, 3, 10, 100, 500, 999, 4000)


def _skewed_rows(partition):
    import numpy as np

    for i in range(SKEWED_SIZES[partition]):
        x = np.array([partition, i % 10, 1.0, -1.0], dtype=np.float32) / 10
        yield x, np.float32(x.sum())


def _keras_fit_map_fun(args, ctx):
    """model.fit on feed.as_dataset under MultiWorkerMirroredStrategy, no steps_per_epoch; counts rows handed out."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed()
    per_epoch = []
    read_epoch = feed.epoch_chunks   # what as_dataset reads through

    def counting_epoch_chunks():
        rows = 0
        for arrays in read_epoch():
            rows += len(arrays[0])
            yield arrays
        per_epoch.append(rows)

    feed.epoch_chunks = counting_epoch_chunks
    with strategy.scope():
        model = keras.Sequential([keras.layers.Input(shape=(4,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    history = model.fit(feed.as_dataset(64), epochs=args["epochs"], verbose=0)
    write_node_report(args["out"], ctx, {"epochs": per_epoch,
                                     "loss": [float(v) for v in history.history["loss"]],
                                     "finite": bool(np.all(np.isfinite(history.history["loss"])))})


@pytest.mark.timeout(420)
@pytest.mark.parametrize("spark", ["raydp"], indirect=True)
def test_keras_fit_on_skewed_partitions_ends_every_epoch_and_sees_every_row(spark, no_leftovers, tmp_path):
    epochs, total = 2, sum(SKEWED_SIZES)
    rdd = spark.sparkContext.parallelize(range(len(SKEWED_SIZES)), len(SKEWED_SIZES)).flatMap(_skewed_rows)
    cluster = _run(spark, _keras_fit_map_fun, {"out": str(tmp_path), "epochs": epochs}, import_tensorflow=True)
    try:
        report = cluster.train(rdd, num_epochs=epochs, feed_timeout=180)
        stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
    finally:
        cluster.shutdown()
    assert report["consumed"] == report["rows"] == epochs * total
    assert sum(s["consumed_rows"] for s in stats) == epochs * total
    assert sum(s["skipped_rows"] for s in stats) == 0
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    for node in nodes.values():
        assert len(node["loss"]) == epochs and node["finite"], node
        assert len(node["epochs"]) == epochs, node
    # rows the workers' datasets handed to Keras
    assert sum(sum(node["epochs"]) for node in nodes.values()) == epochs * total
    for epoch in range(epochs):
        counts = [node["epochs"][epoch] for node in nodes.values()]
        assert sum(counts) == total and max(counts) - min(counts) <= 1, counts


# ------------------------------------- 4. DataFrame with an array column


def _mapping_map_fun(args, ctx):
    """Reads with input_mapping and records what the batches look like."""
    feed = ctx.get_data_feed(input_mapping={"features": "x", "label": "y"})
    rows, label_sum, feature_sum, seen = 0, 0, 0.0, set()
    while not feed.should_stop():
        batch = feed.next_batch(25)
        n = len(batch["y"])
        if not n:
            continue
        x, y = batch["x"], batch["y"]
        seen.add((type(batch).__name__, tuple(sorted(batch)), str(x.dtype), x.ndim, x.shape[1:],
                  y.dtype.kind, y.ndim, len(x) == n))
        rows += n
        label_sum += int(y.sum())
        feature_sum += float(x.astype("float64").sum())
    write_node_report(args["out"], ctx, {"rows": rows, "label_sum": label_sum, "feature_sum": feature_sum,
                                     "seen": sorted(list(s) for s in seen)})


def test_dataframe_array_column_with_input_mapping_gives_2d_float32_features_and_1d_labels(
        spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 600, 2
    data = [([float(i % 7), 0.5, -2.0], i % 3) for i in range(num_rows)]
    df = spark.createDataFrame(spark.sparkContext.parallelize(data, 3), "features array<float>, label int")
    cluster = _run(spark, _mapping_map_fun, {"out": str(tmp_path)})
    try:
        report = cluster.train(df, num_epochs=num_epochs, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert report["rows"] == report["consumed"] == num_epochs * num_rows
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    for node in nodes.values():
        assert node["seen"] == [["dict", ["x", "y"], "float32", 2, [3], "i", 1, True]], node["seen"]
    assert sum(n["rows"] for n in nodes.values()) == num_epochs * num_rows
    assert sum(n["label_sum"] for n in nodes.values()) == num_epochs * sum(i % 3 for i in range(num_rows))
    expected_features = num_epochs * sum(i % 7 + 0.5 - 2.0 for i in range(num_rows))
    assert sum(n["feature_sum"] for n in nodes.values()) == pytest.approx(expected_features)


def _array_answers(args, ctx):
    """Answers each batch with arrays: one array of the batch (even batches) or a list of per-row arrays."""
    feed = ctx.get_data_feed(train_mode=False, input_mapping={"features": "x", "label": "y"})
    batches = 0
    while not feed.should_stop():
        x = feed.next_batch(7)["x"]
        if len(x):
            answers = np.stack([x.sum(axis=1), x[:, 0]], axis=1).astype(np.float64)   # (rows, 2)
            feed.batch_results(answers if batches % 2 == 0 else list(answers))
            batches += 1


def test_dataframe_inference_answered_with_arrays_gives_each_row_its_own_array_in_input_order(spark, no_leftovers):
    data = [([float(i), 1.0, 2.0], i % 3) for i in range(300)]
    df = spark.createDataFrame(spark.sparkContext.parallelize(data, 4), "features array<float>, label int")
    cluster = _run(spark, _array_answers, None)
    try:
        parts = cluster.inference(df).glom().collect()
    finally:
        cluster.shutdown()
    rows = [row for part in parts for row in part]
    assert len(parts) == 4 and len(rows) == 300
    for i, row in enumerate(rows):   # results move as blocks, yet come back one array per input row
        assert isinstance(row, np.ndarray) and row.dtype == np.float64 and row.shape == (2,), (i, row)
        assert row.tolist() == [i + 3.0, float(i)], (i, row)


# ------------------------------------ 6. a retried feeding task, no duplicates


def _fail_once_halfway(fail_partition, fail_at, marker, index, rows):
    """Yields the partition's rows; the first attempt of ``fail_partition`` dies after ``fail_at`` rows."""
    from pyspark import TaskContext

    first_attempt = TaskContext.get().attemptNumber() == 0
    for position, row in enumerate(rows):
        if index == fail_partition and first_attempt and position == fail_at:
            with open(marker, "a") as f:
                f.write("{}\n".format(position))
            raise RuntimeError("injected failure of partition {} after {} rows".format(index, position))
        yield row


def _sum_everything(args, ctx):
    feed = ctx.get_data_feed()
    rows = total = 0
    while not feed.should_stop():
        batch = feed.next_batch_arrays(100)
        if batch is not None:
            rows += len(batch)
            total += int(batch.sum())
    write_node_report(args["out"], ctx, {"rows": rows, "sum": total})


@pytest.mark.faults
@pytest.mark.parametrize("spark", ["raydp"], indirect=True)   # local mode: test_faults' test_spark_task_retry_*
def test_retried_feeding_task_after_partial_feed_delivers_each_row_exactly_once(spark, no_leftovers, tmp_path):
    import functools

    num_rows, num_epochs, chunk_bytes = 8000, 2, 1024   # 1024-byte chunks: 128 int rows each
    marker = str(tmp_path / "failures.txt")
    out = tmp_path / "nodes"
    out.mkdir()
    rdd = spark.sparkContext.parallelize(range(num_rows), 4).mapPartitionsWithIndex(
        functools.partial(_fail_once_halfway, 2, 1000, marker))   # partition 2 has 2000 rows
    cluster = _run(spark, _sum_everything, {"out": str(out)}, chunk_bytes=chunk_bytes)
    try:
        report = cluster.train(rdd, num_epochs=num_epochs, feed_timeout=120)
    finally:
        cluster.shutdown()
    with open(marker) as f:
        failures = f.read().split()
    # the first epoch's job lost partition 2 once, 7 chunks in; the second epoch came from the epoch cache,
    # which kept the first epoch's chunks once each although the retried task put some of them again
    assert failures == ["1000"]
    assert report["cached_epochs"] == num_epochs - 1, report
    assert report["rows"] == report["consumed"] == num_epochs * num_rows
    nodes = read_node_reports(out)
    assert sum(n["rows"] for n in nodes.values()) == num_epochs * num_rows
    assert sum(n["sum"] for n in nodes.values()) == num_epochs * sum(range(num_rows))


# ------------------------------------------------- 7. terminate() mid-epoch


def _terminate_after_three_batches(args, ctx):
    """worker:0 reads three batches and terminates the feed; the others read until the end of the feed."""
    feed = ctx.get_data_feed()
    rows = 0
    if ctx.task_index == 0:
        for _ in range(3):
            rows += len(feed.next_batch(10))
        feed.terminate()
        assert feed.should_stop()
    else:
        while not feed.should_stop():
            rows += len(feed.next_batch(10))
    write_node_report(args["out"], ctx, {"rows": rows})


@pytest.mark.parametrize("spark", ["local"], indirect=True)   # RayDP: test_faults' test_terminate_mid_epoch_*
def test_terminate_mid_epoch_returns_from_train_with_skipped_rows_accounted(spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 20000, 2
    rdd = spark.sparkContext.parallelize(range(num_rows), 8)
    cluster = _run(spark, _terminate_after_three_batches, {"out": str(tmp_path)}, chunk_bytes=1024,
                   queue_max_bytes=4096)
    try:
        report = cluster.train(rdd, num_epochs=num_epochs, feed_timeout=120)
        stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
    finally:
        cluster.shutdown()
    assert report["skipped"] > 0
    assert report["consumed"] + report["skipped"] == report["rows"], report
    assert sum(s["consumed_rows"] for s in stats) == report["consumed"]
    nodes = read_node_reports(tmp_path)
    assert nodes["worker:0"]["rows"] == 30
    assert sum(n["rows"] for n in nodes.values()) < num_rows


# --------------------------------------- 8. fewer results than rows read


def _short_results_map_fun(args, ctx):
    """Answers every batch with one result too few."""
    from raytfnode import TFNode

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if len(batch) > 0:
            feed.batch_results(batch[:-1])


@pytest.mark.faults
def test_inference_with_fewer_results_than_rows_fails_the_action_naming_both_lengths(spark, no_leftovers):
    rdd = spark.sparkContext.parallelize(range(100), 4)
    cluster = _run(spark, _short_results_map_fun, None)
    try:
        results = cluster.inference(rdd, feed_timeout=120)
        with pytest.raises(NodeError, match="9 results for a batch of 10 input rows") as action_error:
            results.collect()     # an action on the returned RDD runs under the cluster's watch
        assert action_error.value.node in ("worker:0", "worker:1")
    finally:
        with pytest.raises(NodeError) as shutdown_error:
            cluster.shutdown()
    error = shutdown_error.value
    assert error.node in ("worker:0", "worker:1")
    assert error.node in str(error)
    assert "BadInputError" in error.remote_traceback
    assert "9 results for a batch of 10 input rows" in str(error)


# --------------------------------------------------- 9. a validation feed


def _train_then_validation(args, ctx):
    """Reads one epoch of 'input', then one of 'validation', then both to their end of feed."""
    feeds = {"input": ctx.get_data_feed(), "validation": ctx.get_data_feed(qname_in="validation")}
    report = {}
    for name, feed in feeds.items():
        rows = total = 0
        for batch in feed.epoch_batches(32):
            rows += len(batch)
            total += int(batch.sum())
        report[name] = [rows, total]
    extra = 0
    for feed in feeds.values():
        while not feed.should_stop():
            extra += len(feed.next_batch(32))
    report["extra"] = extra
    write_node_report(args["out"], ctx, report)


def test_validation_queue_fed_by_name_reaches_the_validation_data_feed(spark, no_leftovers, tmp_path):
    sc = spark.sparkContext
    train_values, validation_values = range(1000), range(10000, 10300)
    cluster = _run(spark, _train_then_validation, {"out": str(tmp_path)},
                   queues=["input", "validation", "output", "error"])
    try:
        train_report = cluster.train(sc.parallelize(train_values, 4), num_epochs=1, feed_timeout=120)
        validation_report = cluster.train(sc.parallelize(validation_values, 3), num_epochs=1, feed_timeout=120,
                                          qname="validation")
    finally:
        cluster.shutdown()
    assert train_report["consumed"] == len(train_values)
    assert validation_report["consumed"] == len(validation_values)
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    for name, values in (("input", train_values), ("validation", validation_values)):
        assert sum(n[name][0] for n in nodes.values()) == len(values)
        assert sum(n[name][1] for n in nodes.values()) == sum(values)
    assert all(n["extra"] == 0 for n in nodes.values())
