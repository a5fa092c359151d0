"""Streaming input end to end: Spark Structured Streaming and DStreams (Spark local mode), real Ray, real TF.

A stream's micro-batches are fed through the same chunked, balanced Arrow path
as a static DataFrame; these tests check what the nodes read (row ids they
write to files) against what the stream held: every row once, both workers in
every batch, nothing fed twice after a replay, results 1:1 with inputs,
bounded queues under a slow trainer, a node failure reported by name, and
nothing left running.
"""
import json
import os
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle

import node_reports
from node_reports import read_node_reports, write_node_report
from raytfnode import TFCluster
from raytfnode.errors import FeedError, NodeError, RayTFNodeError
from raytfnode.guard import plain

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

pytestmark = [pytest.mark.spark, pytest.mark.timeout(420)]
LOCAL_SPARK = pytest.mark.parametrize("spark", ["local"], indirect=True)

SPARK = TFCluster.InputMode.SPARK
DIGITS_SCHEMA = "id long, x array<double>, y long"


# ---------------------------------------------------------------- helpers


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.data / 16.0).astype(np.float64), digits.target.astype(np.int64)


def _write_rows(directory, name, ids, x, y):
    """Writes one parquet file atomically (the file source ignores names starting with '.')."""
    table = pa.table({"id": pa.array(ids, pa.int64()),
                      "x": pa.array([row.tolist() for row in x], pa.list_(pa.float64())),
                      "y": pa.array(y, pa.int64())})
    tmp = os.path.join(directory, "." + name)
    pq.write_table(table, tmp)
    os.replace(tmp, os.path.join(directory, name))


def _wait_until(condition, timeout, what):
    """Polls ``condition()`` until true; fails the test after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out after {} s waiting for {}".format(timeout, what))
        time.sleep(0.2)


def _file_stream(spark, directory, files_per_batch=1):
    return (spark.readStream.schema(DIGITS_SCHEMA).option("maxFilesPerTrigger", files_per_batch)
            .parquet(str(directory)))


def _read_ids_until_end(args, ctx):
    """Reads the feed in batches until its end; reports the ids read per epoch (end-of-epoch markers split them)."""
    feed = ctx.get_data_feed()
    epochs = []
    while not feed.should_stop():
        ids = []
        for batch in feed.epoch_batches(args.get("batch_size", 64)):
            ids.extend(batch[0].tolist())
        if ids or not feed.should_stop():
            epochs.append(ids)
    write_node_report(args["out"], ctx, {"epochs": epochs})


# ------------------------------------- 1. file stream trains 2 MWMS workers


def _mwms_stream_map_fun(args, ctx):
    """model.fit over a stream, one Keras epoch per micro-batch (epoch_per_batch=True); records the ids read."""
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = ctx.get_data_feed(input_mapping={"id": "id", "x": "x", "y": "y"})
    per_epoch = []
    read_epoch = feed.epoch_chunks   # what as_dataset reads through

    def recording_epoch_chunks():
        ids = []
        for arrays in read_epoch():
            ids.extend(arrays["id"].tolist())
            yield arrays
        per_epoch.append(ids)

    feed.epoch_chunks = recording_epoch_chunks
    with strategy.scope():
        model = keras.Sequential([keras.layers.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    dataset = feed.as_dataset(64).map(lambda d: (d["x"], d["y"]))
    history = model.fit(dataset, epochs=args["batches"], verbose=0)
    write_node_report(args["out"], ctx, {"epochs": per_epoch, "loss": [float(v) for v in history.history["loss"]]})


@pytest.mark.timeout(900)
@LOCAL_SPARK
def test_file_stream_trains_two_mwms_workers_every_row_once_both_workers_in_every_batch(spark, no_leftovers,
                                                                                          tmp_path):
    x, y = _digits()
    source = tmp_path / "in"
    source.mkdir()
    files = np.array_split(np.arange(len(y)), 3)
    _write_rows(str(source), "part-0.parquet", files[0], x[files[0]], y[files[0]])
    cluster = TFCluster.run(spark, _mwms_stream_map_fun, {"out": str(tmp_path), "batches": 3}, 2, 0,
                            input_mode=SPARK)
    try:
        feed = cluster.train(_file_stream(spark, source), checkpoint_location=str(tmp_path / "ckpt"),
                             epoch_per_batch=True)
        for number in (1, 2):   # the next file appears once the stream has fed the last one
            _wait_until(lambda: feed.progress()["batches"] >= number, 600, "micro-batch {}".format(number))
            ids = files[number]
            _write_rows(str(source), "part-{}.parquet".format(number), ids, x[ids], y[ids])
        _wait_until(lambda: feed.progress()["batches"] >= 3, 600, "micro-batch 3")
        rows_per_node = feed.rows_per_node()
        cluster.shutdown(feed)    # nodes finish their 3 epochs; the query is stopped gracefully
    finally:
        cluster.shutdown()
    assert not feed.query.isActive
    assert sum(rows_per_node.values()) == len(y)
    nodes = read_node_reports(tmp_path)
    assert sorted(nodes) == ["worker:0", "worker:1"]
    for batch, ids in enumerate(files):
        got = [nodes[name]["epochs"][batch] for name in sorted(nodes)]
        assert all(len(part) > 0 for part in got), "batch {}: rows per worker {}".format(batch, [len(g) for g in got])
        assert abs(len(got[0]) - len(got[1])) <= 1
        assert sorted(got[0] + got[1]) == sorted(ids.tolist()), "batch {}".format(batch)
    assert all(len(node["loss"]) == 3 and np.all(np.isfinite(node["loss"])) for node in nodes.values())


# ---------------------------------------- 2. replay after a forced failure


def _hold_after_rows(args, ctx):
    """Reads rows; after ``hold_after`` rows waits for a 'go' item on its output queue; reports every id read."""
    feed = ctx.get_data_feed()
    ids = []
    held = False
    while not feed.should_stop():
        batch = feed.next_batch_arrays(10)
        if batch is None:
            continue
        ids.extend(batch[0].tolist())
        if not held and len(ids) >= args["hold_after"]:
            held = True
            ctx.mgr.set("held", len(ids))
            ctx.mgr.get_queue("output").get()   # the driver fails the query meanwhile
    write_node_report(args["out"], ctx, {"ids": ids})


@LOCAL_SPARK
def test_batch_replayed_after_forced_failure_is_not_fed_twice(spark, no_leftovers, tmp_path):
    x, y = _digits()
    source = tmp_path / "in"
    source.mkdir()
    halves = np.array_split(np.arange(600), 2)
    for number, ids in enumerate(halves):
        _write_rows(str(source), "part-{}.parquet".format(number), ids, x[ids], y[ids])
    checkpoint = str(tmp_path / "ckpt")
    # 2 KiB chunks: a 300-row file becomes about 70 chunks, so the failure falls in the middle of the batch
    cluster = TFCluster.run(spark, _hold_after_rows, {"out": str(tmp_path), "hold_after": 60}, 2, 0,
                            input_mode=SPARK, import_tensorflow=False, chunk_bytes=2048)
    try:
        first = cluster.train(_file_stream(spark, source, files_per_batch=2), checkpoint_location=checkpoint)
        _wait_until(lambda: all(ray.get([q.kv_get.remote("held") for q in cluster.queue_actors])), 240,
                    "both nodes to read 60 rows")
        spark.sparkContext.cancelAllJobs()      # the forced failure: the batch's feeding job dies mid-way
        with pytest.raises(FeedError, match="stream-"):
            first.await_termination(120)
        assert first.progress()["batches"] == 0
        for queues in cluster.queue_actors:
            ray.get(queues.put_item.remote("output", "go"))
        # a restart from the checkpoint replays batch 0 (same batch id): only its unread chunks are fed
        second = cluster.train(_file_stream(spark, source, files_per_batch=2), checkpoint_location=checkpoint,
                               trigger={"availableNow": True})
        assert second.stream_key == first.stream_key
        assert second.await_termination(240)
        progress = second.progress()
        stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
        cluster.shutdown()
    finally:
        cluster.shutdown()
    assert progress["batches"] == 1 and progress["last_batch_id"] == 0
    nodes = read_node_reports(tmp_path)
    read = nodes["worker:0"]["ids"] + nodes["worker:1"]["ids"]
    assert len(read) == len(set(read)), "rows read twice: {}".format(sorted(i for i in set(read)
                                                                           if read.count(i) > 1)[:20])
    assert sorted(read) == list(range(600))
    assert sum(s["consumed_rows"] for s in stats) == 600


# --------------------------------------------------- 3. streaming inference


def _square_map_fun(args, ctx):
    from raytfnode import TFNode

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(100)
        if len(batch) > 0:
            feed.batch_results([row[0] * row[0] for row in batch])


@LOCAL_SPARK
def test_inference_on_rate_stream_returns_one_result_per_input_row(spark, no_leftovers, tmp_path):
    rate = spark.readStream.format("rate").option("rowsPerSecond", 400).option("numPartitions", 2).load()
    cluster = TFCluster.run(spark, _square_map_fun, None, 2, 0, input_mode=SPARK, import_tensorflow=False)
    query = None
    try:
        results = cluster.inference(rate.select("value"), output_schema="square long", keep_columns=["value"])
        assert results.isStreaming
        query = (results.writeStream.format("memory").queryName("squares").outputMode("append")
                 .option("checkpointLocation", str(tmp_path / "ckpt")).start())
        _wait_until(lambda: spark.sql("select count(*) from squares").first()[0] >= 1000, 240,
                    "1000 results")
        query.stop()
        rows = spark.sql("select value, square from squares").collect()
    finally:
        if query is not None:
            query.stop()
        cluster.shutdown()
    values = [row.value for row in rows]
    assert len(values) == len(set(values)), "a row was answered twice"
    assert sorted(values) == list(range(len(values)))    # the rate source counts from 0 without gaps
    assert all(row.square == row.value * row.value for row in rows)


# ---------------------------------------------------------------- 4. DStream


def _terminate_after_half(args, ctx):
    """Reads rows; worker:0 calls terminate() once it read its half of the stream; reports what it read."""
    feed = ctx.get_data_feed()
    values = []
    while not feed.should_stop():
        batch = feed.next_batch(20)
        values.extend(batch)
        if ctx.task_index == 0 and len(values) >= args["total"] // 2 and not feed.should_stop():
            feed.terminate()
    write_node_report(args["out"], ctx, {"values": values})


@LOCAL_SPARK
def test_dstream_queue_stream_trains_and_shutdown_ssc_stops_it_after_terminate(spark, no_leftovers, tmp_path):
    from pyspark.streaming import StreamingContext

    sc = spark.sparkContext
    ssc = StreamingContext(sc, 1)
    rdds = [sc.parallelize(range(100 * i, 100 * (i + 1)), 2) for i in range(4)]
    cluster = TFCluster.run(spark, _terminate_after_half, {"out": str(tmp_path), "total": 400}, 2, 0,
                            input_mode=SPARK, import_tensorflow=False)
    try:
        feed = cluster.train(ssc.queueStream(rdds))
        ssc.start()
        cluster.shutdown(ssc)       # returns once terminate() stopped the streaming context
    finally:
        cluster.shutdown()
        ssc.stop(stopSparkContext=False, stopGraceFully=False)
    assert str(ssc._jssc.getState()) == "STOPPED"
    assert "terminate()" in feed.progress()["stop_reason"]
    nodes = read_node_reports(tmp_path)
    values = nodes["worker:0"]["values"] + nodes["worker:1"]["values"]
    assert len(values) == len(set(values))
    assert sorted(values) == list(range(400))
    assert abs(len(nodes["worker:0"]["values"]) - len(nodes["worker:1"]["values"])) <= 1


# ------------------------------------------------- 5. slow trainer, bounded


def _slow_reader(args, ctx):
    """Reads 100 rows at a time with a pause (a slow trainer); reports the ids read."""
    feed = ctx.get_data_feed()
    ids = []
    while not feed.should_stop():
        batch = feed.next_batch_arrays(100)
        if batch is not None:
            ids.extend(batch[0].tolist())
            time.sleep(0.02)
    write_node_report(args["out"], ctx, {"ids": ids})


@LOCAL_SPARK
def test_slow_trainer_holds_the_query_back_queues_stay_within_their_bound_no_row_dropped(spark, no_leftovers,
                                                                                           tmp_path):
    x, y = _digits()
    source = tmp_path / "in"
    source.mkdir()
    files = np.array_split(np.arange(9000), 3)     # 528 bytes a row: each micro-batch is about 24x the bound
    for number, ids in enumerate(files):           # the source holds everything before the trainer read a row
        _write_rows(str(source), "part-{}.parquet".format(number), ids, x[ids % len(y)], y[ids % len(y)])
    queue_bound = 64 << 10
    cluster = TFCluster.run(spark, _slow_reader, {"out": str(tmp_path)}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False, queue_max_bytes=queue_bound, chunk_bytes=16 << 10)
    peak, samples, behind = 0, 0, 0
    try:
        feed = cluster.train(_file_stream(spark, source), checkpoint_location=str(tmp_path / "ckpt"),
                             trigger={"availableNow": True})
        deadline = time.monotonic() + 300
        while feed.is_active:                      # sample the queues while the stream runs
            assert time.monotonic() < deadline, "the stream did not end within 300 s"
            stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
            peak = max([peak] + [s["queued_bytes"]["input"] for s in stats])
            samples += 1
            behind += feed.progress()["batches"] < len(files) - 1   # files waiting in the source
            time.sleep(0.1)
        assert feed.await_termination(0)
        progress = feed.progress()
        cluster.shutdown()
    finally:
        cluster.shutdown()
    assert 0 < peak <= queue_bound, peak
    assert progress["batches"] == len(files) and progress["rows"] == 9000
    assert behind > 0, "the query was never held back ({} samples)".format(samples)
    nodes = read_node_reports(tmp_path)
    ids = nodes["worker:0"]["ids"] + nodes["worker:1"]["ids"]
    assert len(ids) == len(set(ids)) and sorted(ids) == list(range(9000))


# ------------------------------------------------------ 6. node failure


def _fail_on_second_batch(args, ctx):
    feed = ctx.get_data_feed()
    read = 0
    while not feed.should_stop():
        batch = feed.next_batch_arrays(50)
        read += 0 if batch is None else len(batch[0])
        if ctx.task_index == 1 and read > args["fail_after"]:
            raise ValueError("worker 1 gave up after {} rows".format(read))


@LOCAL_SPARK
def test_node_failure_mid_stream_stops_the_query_with_the_nodes_error(spark, no_leftovers, tmp_path):
    x, y = _digits()
    source = tmp_path / "in"
    source.mkdir()
    _write_rows(str(source), "part-0.parquet", np.arange(300), x[:300], y[:300])
    cluster = TFCluster.run(spark, _fail_on_second_batch, {"fail_after": 200}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False)
    try:
        feed = cluster.train(_file_stream(spark, source), checkpoint_location=str(tmp_path / "ckpt"))
        _wait_until(lambda: feed.progress()["batches"] >= 1, 240, "the first micro-batch")
        _write_rows(str(source), "part-1.parquet", np.arange(300, 600), x[300:600], y[300:600])
        with pytest.raises(NodeError, match="worker 1 gave up") as raised:
            feed.await_termination(120)
        assert raised.value.node == "worker:1"
        assert "_fail_on_second_batch" in raised.value.remote_traceback
        assert not feed.query.isActive
    finally:
        with pytest.raises(NodeError):
            cluster.shutdown()


@LOCAL_SPARK
def test_coordinator_killed_mid_stream_stops_the_query_naming_the_coordinator(spark, no_leftovers, tmp_path):
    x, y = _digits()
    source = tmp_path / "in"
    source.mkdir()
    _write_rows(str(source), "part-0.parquet", np.arange(300), x[:300], y[:300])
    cluster = TFCluster.run(spark, _fail_on_second_batch, {"fail_after": 10 ** 9}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False)
    try:
        feed = cluster.train(_file_stream(spark, source), checkpoint_location=str(tmp_path / "ckpt"))
        _wait_until(lambda: feed.progress()["batches"] >= 1, 240, "the first micro-batch")
        ray.kill(plain(cluster.coordinator))
        _write_rows(str(source), "part-1.parquet", np.arange(300, 600), x[300:600], y[300:600])
        with pytest.raises(RayTFNodeError, match="its coordinator raytfnode-.* died") as raised:
            feed.await_termination(120)
        assert not isinstance(raised.value, NodeError)
        assert not feed.query.isActive
    finally:
        cluster.shutdown()


def _ids_per_attempt(args, ctx):
    """Reads ids until the end of the feed; writes them to ``a<attempt>-<node>.json``.

    On the first attempt, worker:1's process dies once it read ``die_after`` rows.
    """
    feed = ctx.get_data_feed()
    ids = []
    while not feed.should_stop():
        batch = feed.next_batch_arrays(20)
        if batch is not None:
            ids.extend(int(v) for v in batch[0])
            if ctx.attempt == 0 and ctx.task_index == 1 and len(ids) >= args["die_after"]:
                os._exit(1)
    path = os.path.join(args["out"], "a{}-{}-{}.json".format(ctx.attempt, ctx.job_name, ctx.task_index))
    with open(path, "w") as f:
        json.dump(ids, f)


@pytest.mark.timeout(600)
@LOCAL_SPARK
def test_killed_node_mid_stream_restarts_the_cluster_and_the_stream_goes_on_without_refeeding_done_batches(
        spark, no_leftovers, tmp_path):
    x, y = _digits()
    source, out = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    _write_rows(str(source), "part-0.parquet", np.arange(300), x[:300], y[:300])
    # worker:1 gets 150 rows of each 300-row batch (leveled): it dies 40 rows into the second batch
    cluster = TFCluster.run(spark, _ids_per_attempt, {"out": str(out), "die_after": 190}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False, max_failures=1)
    try:
        feed = cluster.train(_file_stream(spark, source), checkpoint_location=str(tmp_path / "ckpt"))
        _wait_until(lambda: feed.progress()["batches"] >= 1, 240, "the first micro-batch")
        _write_rows(str(source), "part-1.parquet", np.arange(300, 600), x[300:600], y[300:600])
        _wait_until(lambda: feed.progress()["restarts"], 120, "the restart")
        assert feed.query.isActive            # the query never stopped
        _wait_until(lambda: feed.progress()["batches"] >= 2, 240, "the second micro-batch on the new nodes")
        _write_rows(str(source), "part-2.parquet", np.arange(600, 900), x[600:900], y[600:900])
        _wait_until(lambda: feed.progress()["batches"] >= 3, 240, "the third micro-batch")
        progress = feed.progress()
    finally:
        cluster.shutdown()
    restart, = progress["restarts"]
    assert restart["node"] == "worker:1" and "died" in restart["error"] and restart["attempt"] == 1, restart
    assert cluster.attempt == 1 and progress["batches"] == 3
    reread = []
    for node in ("worker-0", "worker-1"):
        with open(out / "a1-{}.json".format(node)) as f:
            reread.extend(json.load(f))
    # the batch in flight went whole to the new nodes, the later one too; the batch done before was not fed again
    assert sorted(reread) == list(range(300, 900))


# ---------------------------------------------------------------- 7. example


@pytest.mark.timeout(900)
def test_streaming_digits_example_trains_on_a_file_stream_and_scores_another(tmp_path):
    from test_examples import run_example

    output, summary = run_example("streaming_digits.py", "--files", "4", "--interval", "1", "--work_dir",
                                  str(tmp_path / "work"), cwd=tmp_path, timeout=840)
    assert summary["batches"] == "4"
    fed = dict(pair.split("=") for pair in summary["rows_per_node"].split(","))
    assert set(fed) == {"chief:0", "worker:0"}
    assert sum(int(v) for v in fed.values()) == int(summary["train_rows"])
    assert abs(int(fed["chief:0"]) - int(fed["worker:0"])) <= 1
    assert summary["scored_rows"] == summary["distinct_ids"] == summary["test_rows"]
    assert float(summary["accuracy"]) > 0.8, output[-3000:]
