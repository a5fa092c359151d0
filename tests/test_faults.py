"""Fault-injection cases: real faults on a real local Ray cluster with real Spark.

Every case injects one failure (a raising or stalled ``map_fun``, a killed node
actor, a dying Spark task, bad input, memory pressure, load, two clusters side
by side) and asserts on what the user sees: the exception type, a message that
names the node (``worker:1``) or the partition and row, the remote traceback,
and that it arrives well before ``feed_timeout``. After every case no actor or
placement group of the cluster and no Spark job may be left behind.

FAILURES.md at the repository root lists the cases in a table.
"""
import collections
import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import ray
from py4j.protocol import Py4JJavaError
from conftest import assert_no_leftovers

from raytfnode import TFCluster, TFManager, TFNode
from raytfnode.errors import (BadInputError, ClusterStoppedError, FeedError, FeedTimeoutError, NodeError,
                              RayTFNodeError, ShutdownTimeoutError)
from raytfnode.guard import plain

pytestmark = pytest.mark.faults

LOCAL = pytest.mark.parametrize("spark", ["local"], indirect=True)
RAYDP = pytest.mark.parametrize("spark", ["raydp"], indirect=True)

FAR_BELOW = 60.0   # "well before feed_timeout=600": loose on a busy 2-core machine


# ------------------------------------------------------------------ helpers


@pytest.fixture
def clusters(ray_cluster):
    """Starts clusters for a test and makes sure each one is gone after it (even when the test failed)."""
    started = []

    def start(map_fun, num_executors=2, tf_args=None, **kwargs):
        kwargs.setdefault("input_mode", TFCluster.InputMode.SPARK)
        kwargs.setdefault("import_tensorflow", False)
        kwargs.setdefault("num_cpus", 0.5)
        kwargs.setdefault("reservation_timeout", 120)
        sc = kwargs.pop("sc", None)
        cluster = TFCluster.run(sc, map_fun, tf_args, num_executors, kwargs.pop("num_ps", 0), **kwargs)
        started.append(cluster)
        return cluster

    yield start
    for cluster in started:
        try:
            cluster.shutdown(timeout=5)
        except Exception:  # noqa: BLE001  (the test already looked at the errors it wanted)
            pass


@pytest.fixture(autouse=True)
def left_clean(request, no_leftovers):
    """Case 11: after every case, no actor or placement group of a cluster (no_leftovers) and no Spark job."""
    yield
    if "spark" in request.fixturenames:
        assert_no_spark_jobs(request.getfixturevalue("spark"))


def assert_no_spark_jobs(spark, timeout=15.0):
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + timeout
    while tracker.getActiveJobsIds():
        if time.monotonic() > deadline:
            raise AssertionError("Spark jobs still running: {}".format(tracker.getActiveJobsIds()))
        time.sleep(0.25)


def wait_for(predicate, timeout=60.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after {} s waiting for {}".format(timeout, what))
        time.sleep(interval)


def consumed(cluster, executor_id=None):
    """Rows consumed so far, by one node or by every node."""
    actors = cluster.queue_actors if executor_id is None else [cluster.queue_actors[executor_id]]
    return sum(s["consumed_rows"] for s in ray.get([a.stats.remote() for a in actors]))


def spark_job_count(spark):
    """How many Spark jobs were ever submitted (the DAG scheduler's next job id)."""
    next_id = spark.sparkContext._jsc.sc().dagScheduler().nextJobId()   # an AtomicInteger (py4j: int)
    return next_id if isinstance(next_id, int) else next_id.get()


def assert_names(error, node):
    """The error names ``node`` (``'worker:1'``) and carries the remote traceback of its process."""
    text = str(error)
    assert node in text, text
    assert "Traceback (most recent call last)" in text, text
    assert error.remote_traceback and "Traceback" in error.remote_traceback


def record_rows(out_dir, batch_size=64, delay=0.0, pause_dir=None, pause=1.5):
    """A map_fun that reads its whole feed and writes the values it got to ``out_dir/<role><index>.json``.

    ``delay`` sleeps after each batch; each time a new file shows up in ``pause_dir`` (a feeding task
    failed), the reader stops reading for ``pause`` seconds. (A bounded pause, not "until the retry
    started": paused readers keep the other feeding tasks blocked on full queues, and those hold every
    Spark slot the retry would need.)
    """
    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        values = []
        seen = 0
        while not feed.should_stop():
            values.extend(int(v) for v in feed.next_batch(batch_size))
            if delay:
                time.sleep(delay)
            if pause_dir and len(os.listdir(pause_dir)) > seen:
                seen = len(os.listdir(pause_dir))
                time.sleep(pause)
        with open(os.path.join(out_dir, "{}{}.json".format(ctx.job_name, ctx.task_index)), "w") as f:
            json.dump(values, f)
    return map_fun


def recorded(out_dir):
    got = {}
    for name in sorted(os.listdir(out_dir)):
        if name.endswith(".json"):
            with open(os.path.join(out_dir, name)) as f:
                got[name[:-5]] = json.load(f)
    return got


# ------------------------------------------- 1. map_fun raises (before, during, after the feed)


def failing_map_fun(when, failing_index=1, train_mode=True, batch_size=32):
    """worker:<failing_index> raises ``when`` ('before' reading, 'during' the feed, 'after' it ended)."""
    def map_fun(args, ctx):
        feed = ctx.get_data_feed(train_mode=train_mode)
        fails = ctx.task_index == failing_index
        if fails and when == "before":
            raise ValueError("injected failure before reading")
        batches = 0
        while not feed.should_stop():
            batch = feed.next_batch(batch_size)
            batches += 1
            if fails and when == "during" and batches == 3:
                raise ValueError("injected failure in the middle of the feed")
            if not train_mode and batch:
                feed.batch_results([v * 2 for v in batch])
        if fails and when == "after":
            raise ValueError("injected failure after the feed ended")
    return map_fun


@RAYDP
def test_map_fun_raises_mid_feed(spark, clusters):
    cluster = clusters(failing_map_fun("during"), sc=spark, queue_max_bytes=64 << 10, chunk_bytes=8 << 10)
    rdd = spark.sparkContext.parallelize(range(200000), 8)
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        cluster.train(rdd, num_epochs=2, feed_timeout=600)
    assert time.monotonic() - started < FAR_BELOW
    assert info.value.node == "worker:1"
    assert_names(info.value, "worker:1")
    assert "injected failure in the middle of the feed" in str(info.value)
    assert_no_spark_jobs(spark)
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


def fail_one_stall_other(failing_index=1):
    """worker:<failing_index> raises after a few batches; the other node stops reading, as a worker does
    that waits in a collective for its failed peer."""
    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        if ctx.task_index != failing_index:
            while True:
                time.sleep(1)
        for _ in range(3):
            feed.next_batch(16)
        raise ValueError("injected failure while the other node is stalled")
    return map_fun


def test_ray_dataset_node_error_fails_fast_while_another_node_stalls(clusters):
    """Ray Dataset blocks are fed from driver threads: when a node fails, the threads waiting on the stalled
    node must be released at once, not after feed_timeout."""
    cluster = clusters(fail_one_stall_other())
    ds = ray.data.range(20000, override_num_blocks=4).materialize()
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        cluster.train(ds, num_epochs=1, feed_timeout=600)
    elapsed = time.monotonic() - started
    assert elapsed < FAR_BELOW, elapsed
    assert_names(info.value, "worker:1")
    assert "injected failure while the other node is stalled" in str(info.value)
    with pytest.raises(NodeError, match="worker:1"):   # the failure the feed already saw, before the timeout
        cluster.shutdown(timeout=3)


@LOCAL
def test_map_fun_raises_before_reading(spark, clusters):
    cluster = clusters(failing_map_fun("before"), sc=spark)
    rdd = spark.sparkContext.parallelize(range(20000), 8)
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        cluster.train(rdd, num_epochs=1, feed_timeout=600)
    elapsed = time.monotonic() - started
    assert elapsed < FAR_BELOW, elapsed
    assert info.value.node == "worker:1"
    assert_names(info.value, "worker:1")
    assert "injected failure before reading" in info.value.remote_traceback
    assert_no_spark_jobs(spark)
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


@LOCAL
def test_map_fun_raises_after_feed_ended(spark, clusters):
    cluster = clusters(failing_map_fun("after"), sc=spark)
    report = cluster.train(spark.sparkContext.parallelize(range(1000), 4), num_epochs=1, feed_timeout=600)
    assert report["rows"] == 1000 and report["consumed"] == 1000
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        cluster.shutdown(timeout=120)
    assert time.monotonic() - started < FAR_BELOW
    assert_names(info.value, "worker:1")
    assert "injected failure after the feed ended" in info.value.remote_traceback


@LOCAL
def test_map_fun_raises_during_inference(spark, clusters):
    cluster = clusters(failing_map_fun("during", train_mode=False, batch_size=16), sc=spark,
                       chunk_bytes=2048)
    results = cluster.inference(spark.sparkContext.parallelize(range(20000), 4), feed_timeout=600)
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        results.collect()     # an action on the returned RDD runs under the cluster's watch
    assert time.monotonic() - started < FAR_BELOW
    assert info.value.node == "worker:1"
    assert_names(info.value, "worker:1")
    assert "injected failure in the middle of the feed" in str(info.value)
    assert_no_spark_jobs(spark)
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


@LOCAL
def test_a_dropped_cluster_whose_inference_failed_does_not_hold_its_cpus(spark, ray_cluster):
    """A program (TensorFlowOnSpark's own tests do this) catches a failed action and drops the cluster
    without shutdown(): the next run() must get the CPUs the dropped nodes held.

    A raised error's traceback holds the frames it passed through, and they hold the cluster: once the
    program lets go of the error, the cluster lives on in reference cycles. The cycle collector is off
    here, so only raytfnode itself can free it.
    """
    import gc

    every_cpu = ray.available_resources()["CPU"] / 2   # the two nodes take every free CPU
    gc.disable()
    try:
        cluster = TFCluster.run(spark, failing_map_fun("during", train_mode=False, batch_size=16), None, 2, 0,
                                input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False,
                                num_cpus=every_cpu, reservation_timeout=120, chunk_bytes=2048)
        results = cluster.inference(spark.sparkContext.parallelize(range(20000), 4), feed_timeout=600)
        with pytest.raises(NodeError) as info:
            results.collect()
        assert info.value.node == "worker:1"
        del cluster, results, info
        started = time.monotonic()
        following = TFCluster.run(spark, lambda args, ctx: None, None, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                                  import_tensorflow=False, num_cpus=every_cpu, reservation_timeout=60)
        assert time.monotonic() - started < FAR_BELOW
        following.shutdown(timeout=60)
    finally:
        gc.enable()
    assert_no_leftovers()


def echo_reader(batch_size=16):
    """An inference map_fun that answers every row with its double until the feed ends."""
    def map_fun(args, ctx):
        feed = ctx.get_data_feed(train_mode=False)
        while not feed.should_stop():
            batch = feed.next_batch(batch_size)
            if batch:
                time.sleep(0.01)
                feed.batch_results([v * 2 for v in batch])
    return map_fun


@LOCAL
def test_node_killed_during_an_action_on_an_rdd_derived_from_inference_fails_within_seconds(spark, clusters):
    """No driver watches a derived RDD's job: the node's queue actor sees its node die and fails its producers."""
    cluster = clusters(echo_reader(), sc=spark, chunk_bytes=2048)
    derived = cluster.inference(spark.sparkContext.parallelize(range(40000), 4), feed_timeout=600).map(lambda v: v + 1)
    assert type(derived).__name__ == "PipelinedRDD"     # a plain Spark RDD: its actions are not watched
    killed_at = []

    def kill_when_reading():
        wait_for(lambda: consumed(cluster, 1) > 500, timeout=120, what="worker:1 to read some rows")
        killed_at.append(time.monotonic())
        ray.kill(cluster.nodes[1])

    killer = threading.Thread(target=kill_when_reading, daemon=True)
    killer.start()
    with pytest.raises(Py4JJavaError) as info:    # Spark's own error, after its task retries
        derived.count()
    raised_at = time.monotonic()
    killer.join(5)
    assert killed_at, "the action failed before the node was killed: {}".format(info.value)
    assert raised_at - killed_at[0] < FAR_BELOW, raised_at - killed_at[0]
    assert "TF node worker:1 failed: its actor died" in str(info.value)
    assert "FeedTimeoutError" not in str(info.value)
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


# ----------------------------------------------------------- 2. a TF node actor dies mid-feed


def slow_reader(delay=0.02, batch_size=64):
    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        while not feed.should_stop():
            feed.next_batch(batch_size)
            time.sleep(delay)
    return map_fun


@LOCAL
@pytest.mark.parametrize("how", ["ray.kill", "SIGKILL"])
def test_node_killed_mid_feed(spark, clusters, how):
    cluster = clusters(slow_reader(), sc=spark, queue_max_bytes=32 << 10, chunk_bytes=4 << 10)
    victim = 1
    pid = cluster.cluster_info[victim]["pid"]
    killed_at = []

    def kill_when_reading():
        wait_for(lambda: consumed(cluster, victim) > 500, timeout=120, what="worker:1 to read some rows")
        killed_at.append(time.monotonic())
        if how == "ray.kill":
            ray.kill(cluster.nodes[victim])
        else:
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_reading, daemon=True)
    killer.start()
    with pytest.raises(NodeError) as info:
        cluster.train(spark.sparkContext.parallelize(range(300000), 8), num_epochs=2, feed_timeout=600)
    raised_at = time.monotonic()
    killer.join(5)
    assert killed_at, "the feed failed before the node was killed: {}".format(info.value)
    assert raised_at - killed_at[0] < 30, raised_at - killed_at[0]
    assert info.value.node == "worker:1"
    assert "TF node worker:1 failed" in str(info.value) and "died" in str(info.value)
    assert_no_spark_jobs(spark)
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


def dies_and_breaks_its_peer(out_dir):
    """worker:1 exits after a few batches; worker:0 reads on until that process is gone, then raises (as a
    survivor's collective does when its peer dies). worker:0's error usually reaches the feed first."""
    def gone(pid):
        """The process exited (gone, or a zombie its parent has not reaped yet)."""
        try:
            with open("/proc/{}/stat".format(pid)) as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except (FileNotFoundError, ProcessLookupError):   # reaped before the open, or between open and read
            return True

    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        pid_file = os.path.join(out_dir, "worker1.pid")
        if ctx.task_index == 1:
            with open(pid_file + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.rename(pid_file + ".tmp", pid_file)
            for _ in range(3):
                feed.next_batch(16)
            os._exit(1)
        while not os.path.exists(pid_file):
            feed.next_batch(16)
        with open(pid_file) as f:
            peer = int(f.read())
        while not gone(peer):
            time.sleep(0.005)
        raise RuntimeError("UnavailableError: the collective with worker:1 broke")
    return map_fun


def test_dead_node_is_named_before_the_survivor_whose_collective_broke(clusters, tmp_path):
    """The node that died is the root cause, also when a survivor's error reaches a producer first."""
    cluster = clusters(dies_and_breaks_its_peer(str(tmp_path)), queue_max_bytes=32 << 10, chunk_bytes=4 << 10)
    partitions = [list(range(i * 20000, (i + 1) * 20000)) for i in range(8)]
    started = time.monotonic()
    with pytest.raises(NodeError) as info:
        cluster.train(data=partitions, num_epochs=2, feed_timeout=600)
    assert time.monotonic() - started < FAR_BELOW
    assert info.value.node == "worker:1", str(info.value)
    assert "died" in info.value.message, info.value.message
    for survivor in info.value.related:   # worker:0, when its error was recorded by then
        assert survivor.node == "worker:0" and "collective with worker:1 broke" in survivor.message
    with pytest.raises(NodeError, match="worker:1"):
        cluster.shutdown(timeout=30)


# ------------------------------------- 3. a Spark task dies half-way and is retried: rows exactly once


def _fail_first_attempt(how, after_rows, marker_dir, retry_dir):
    """An RDD partition function: the first attempt of every partition fails after ``after_rows`` rows.

    The failing attempt writes ``marker_dir/<stage>-<partition>`` first; a later attempt writes
    ``retry_dir/<stage>-<partition>`` before its first row.
    """
    def fn(index, rows):
        from pyspark import TaskContext
        context = TaskContext.get()
        name = "{}-{}".format(context.stageId(), index)
        first = context.attemptNumber() == 0
        if not first:
            with open(os.path.join(retry_dir, name), "w") as f:
                f.write(str(context.attemptNumber()))
        for i, row in enumerate(rows):
            if first and i == after_rows:
                with open(os.path.join(marker_dir, name), "w") as f:
                    f.write(str(os.getpid()))
                if how == "raise":
                    raise RuntimeError("injected task failure in partition {}".format(index))
                os._exit(1)
            yield row
    return fn


@LOCAL
@pytest.mark.parametrize("how", ["raise", "exit"])
def test_spark_task_retry_delivers_rows_once(spark, clusters, tmp_path, how):
    n, partitions, epochs = 8000, 4, 1
    out, markers, retries = tmp_path / "rows", tmp_path / "failed-attempts", tmp_path / "retries"
    for directory in (out, markers, retries):
        directory.mkdir()
    # The readers keep the 16 KiB queues full and stop reading for a moment whenever an attempt fails, so
    # the failed attempt's last puts are likely to still wait for room when the retried attempt puts the
    # same chunks. Each failed attempt had put its first chunk (settled before its third was cut, well
    # before row 1000), so each retry meets at least one chunk of its failed attempt: the queue actors
    # answer those puts 'duplicate' (already read) or 'replaced' (queued, or taken: the retry's copy wins).
    cluster = clusters(record_rows(str(out), delay=0.01, pause_dir=str(markers)), sc=spark, chunk_bytes=2048,
                       queue_max_bytes=16 << 10)
    rdd = spark.sparkContext.parallelize(range(n), partitions).mapPartitionsWithIndex(
        _fail_first_attempt(how, 1000, str(markers), str(retries)))
    # feed_tasks=0: each partition in a task of its own, whose first attempt fails (a coalesced task's
    # retry reads its later partitions as a retry; the retried tasks of test_spark_feed.py and
    # test_options.py are coalesced ones, 4 partitions on 2 Spark cores)
    report = cluster.train(rdd, num_epochs=epochs, feed_timeout=600, feed_tasks=0)
    failed = sorted(os.listdir(markers))
    assert len(failed) == partitions * epochs, "not every first attempt failed: {}".format(failed)
    assert sorted(os.listdir(retries)) == failed, "a failed partition was not fed by a retry"
    outcomes = collections.Counter()
    for stats in ray.get([queue.stats.remote() for queue in cluster.queue_actors]):
        outcomes.update(stats["put_outcomes"])
    assert outcomes["duplicate"] + outcomes["replaced"] >= partitions * epochs, outcomes
    cluster.shutdown(timeout=60)
    got = recorded(str(out))
    assert sorted(got) == ["worker0", "worker1"]
    values = got["worker0"] + got["worker1"]
    assert len(values) == n * epochs, (len(values), report)
    assert sum(values) == epochs * n * (n - 1) // 2
    assert sorted(values) == sorted(list(range(n)) * epochs)
    assert abs(len(got["worker0"]) - len(got["worker1"])) <= epochs
    assert report["rows"] == n * epochs and report["consumed"] == n * epochs, report


# ------------------------------------------------------------- 4. a consumer that stalls


def stall_on(index):
    """worker:<index> never reads (sleeps forever); the others read their whole feed."""
    def map_fun(args, ctx):
        if ctx.task_index == index:
            while True:
                time.sleep(1)
        feed = ctx.get_data_feed()
        while not feed.should_stop():
            feed.next_batch(64)
    return map_fun


@LOCAL
def test_stalled_consumer_raises_feed_timeout(spark, clusters):
    cluster = clusters(stall_on(1), sc=spark, queue_max_bytes=16 << 10, chunk_bytes=2048)
    started = time.monotonic()
    with pytest.raises(FeedTimeoutError) as info:
        cluster.train(spark.sparkContext.parallelize(range(50000), 4), num_epochs=1, feed_timeout=5)
    elapsed = time.monotonic() - started
    assert "worker:1" in str(info.value) and "feed_timeout" in str(info.value), str(info.value)
    assert "worker:0" not in str(info.value)
    # Spark retries a failed task (4 attempts here), each waiting feed_timeout again: this took 54 s before
    # the driver learned to fail the feed on the first timeout a producer hits; now feed_timeout + a few s.
    print("FeedTimeoutError after {:.1f} s".format(elapsed))
    assert elapsed < 40, elapsed
    assert_no_spark_jobs(spark)
    with pytest.raises(ShutdownTimeoutError, match="worker:1"):
        cluster.shutdown(timeout=3)


@LOCAL
def test_feed_timeout_counts_from_map_fun_not_from_the_tensorflow_import(spark, clusters):
    """run() returns before the nodes import TensorFlow (seconds each); a feed started at once with a
    feed_timeout shorter than that import must wait for map_fun, not time out on a node still importing."""
    def read_all(args, ctx):
        feed = ctx.get_data_feed()
        while not feed.should_stop():
            feed.next_batch(100)

    cluster = clusters(read_all, sc=spark, import_tensorflow=True)
    # 2 s: shorter than the nodes' TensorFlow imports at once on 2 cores (3-5 s each here); once map_fun
    # reads, a pause of a node on the busy machine (the other one may still be importing) must stay under it
    report = cluster.train(spark.sparkContext.parallelize(range(2000), 4), num_epochs=1, feed_timeout=2)
    assert report["consumed"] == 2000, report
    imports = [status["import_seconds"] for status in cluster.node_status()]
    assert all(seconds is not None for seconds in imports), imports
    print("TensorFlow imports in the nodes: {} s".format(imports))
    cluster.shutdown(timeout=60)


# ------------------------------------------------ 5. DataFeed.terminate() mid-epoch on one worker


def terminate_on(index, after_batches=5):
    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        batches = 0
        while not feed.should_stop():
            feed.next_batch(64)
            time.sleep(0.005)
            batches += 1
            if ctx.task_index == index and batches == after_batches:
                feed.terminate()
                assert feed.should_stop()
    return map_fun


@RAYDP
def test_terminate_mid_epoch_skips_the_rest(spark, clusters):
    n, epochs = 200000, 3
    cluster = clusters(terminate_on(0), sc=spark, queue_max_bytes=64 << 10, chunk_bytes=8 << 10)
    started = time.monotonic()
    report = cluster.train(spark.sparkContext.parallelize(range(n), 40), num_epochs=epochs, feed_timeout=600)
    elapsed = time.monotonic() - started
    assert elapsed < FAR_BELOW, (elapsed, report)
    assert report["skipped"] > 0, report
    assert report["consumed"] < n, report
    # counted, not estimated: the epoch that was running is fed to its end (rows skipped), the others not at all
    assert report["epochs"] == 1 and report["skipped_epochs"] == epochs - 1, report
    assert report["consumed"] + report["skipped"] == report["rows"] == n, report
    with pytest.raises(FeedError, match="worker:0 called DataFeed.terminate"):   # not a silent skip of every row
        cluster.train(spark.sparkContext.parallelize(range(100), 2), num_epochs=1)
    cluster.shutdown(timeout=60)


# ---------------------------------------------------------------- 6. map_fun never returns


def never_returns():
    # a closure, so Ray pickles it by value (a module-level function of this test module would be pickled
    # by reference, and the nodes cannot import test_faults)
    def map_fun(args, ctx):
        while True:
            time.sleep(1)
    return map_fun


def test_shutdown_timeout_stops_every_actor(clusters):
    cluster = clusters(never_returns(), input_mode=TFCluster.InputMode.TENSORFLOW)
    started = time.monotonic()
    with pytest.raises(ShutdownTimeoutError) as info:
        cluster.shutdown(timeout=3)
    assert time.monotonic() - started < 30
    assert "worker:0" in str(info.value) and "worker:1" in str(info.value)
    assert isinstance(info.value, TimeoutError)
    assert_no_leftovers()
    # the cluster is gone: a second shutdown is a no-op, status calls fail clearly
    assert cluster.shutdown() is None
    with pytest.raises(ClusterStoppedError):
        cluster.node_status()
    # the driver goes on: a new cluster starts and finishes
    again = clusters(lambda args, ctx: None, num_executors=1, input_mode=TFCluster.InputMode.TENSORFLOW)
    again.shutdown(timeout=60)


# --------------------------------------------------------------------------- 7. bad input


@LOCAL
def test_input_mapping_names_missing_column(spark, clusters):
    def map_fun(args, ctx):
        feed = ctx.get_data_feed(input_mapping={"x": "features", "nope": "label"})
        ctx.mgr.set("feed_ready", True)
        while not feed.should_stop():
            feed.next_batch(16)

    cluster = clusters(map_fun, sc=spark)
    managers = [TFManager.TFManager(actor) for actor in cluster.queue_actors]
    wait_for(lambda: all(m.get("feed_ready") for m in managers), timeout=60, what="the DataFeeds")
    df = spark.createDataFrame([(float(i), i % 2) for i in range(100)], ["x", "y"])
    jobs = spark_job_count(spark)
    with pytest.raises(BadInputError) as info:
        cluster.train(df, num_epochs=1)
    assert "nope" in str(info.value) and "x" in str(info.value), str(info.value)
    assert spark_job_count(spark) == jobs, "a Spark job started for input it had to reject"
    cluster.shutdown(timeout=60)


@LOCAL
def test_array_rows_of_mixed_shapes(spark, clusters):
    rows = [np.arange(4, dtype=np.float64) + i for i in range(2000)]
    rows[1000 + 700] = np.arange(5, dtype=np.float64)   # partition 1, row 700
    cluster = clusters(slow_reader(0), sc=spark, chunk_bytes=2048)
    started = time.monotonic()
    with pytest.raises(BadInputError) as info:
        cluster.train(spark.sparkContext.parallelize(rows, 2), num_epochs=1, feed_timeout=600)
    assert time.monotonic() - started < FAR_BELOW
    text = str(info.value)
    print(text)
    assert "partition 1" in text and "row 700" in text and "(5,)" in text and "(4,)" in text, text
    assert_no_spark_jobs(spark)
    cluster.shutdown(timeout=60)


@LOCAL
def test_none_in_numeric_rdd_column(spark, clusters):
    rows = [(float(i), i) for i in range(3000)]
    rows[2000 + 123] = (None, 5)   # partition 2, row 123
    cluster = clusters(slow_reader(0), sc=spark, chunk_bytes=2048)
    with pytest.raises(BadInputError) as info:   # feed_tasks=0: each of the 3 partitions in a task of its own
        cluster.train(spark.sparkContext.parallelize(rows, 3), num_epochs=1, feed_timeout=600, feed_tasks=0)
    text = str(info.value)
    print(text)
    assert "partition 2" in text and "row 123" in text and "None" in text, text
    cluster.shutdown(timeout=60)


@RAYDP
def test_null_in_numeric_dataframe_column(spark, clusters):
    from pyspark.sql.types import DoubleType, LongType, StructField, StructType

    rows = [(float(i), i) for i in range(3000)]
    rows[1000 + 45] = (None, 7)   # partition 1, row 45
    schema = StructType([StructField("x", DoubleType(), True), StructField("y", LongType(), False)])
    df = spark.createDataFrame(spark.sparkContext.parallelize(rows, 3), schema)
    cluster = clusters(slow_reader(0), sc=spark)
    with pytest.raises(BadInputError) as info:   # feed_tasks=0: each of the 3 partitions in a task of its own
        cluster.train(df, num_epochs=1, feed_timeout=600, feed_tasks=0)
    text = str(info.value)
    print(text)
    assert "partition 1" in text and "column x" in text and "row 45" in text and "null" in text, text
    cluster.shutdown(timeout=60)


@LOCAL
def test_train_on_tensorflow_mode_cluster(spark, clusters):
    cluster = clusters(never_returns(), num_executors=1, sc=spark, input_mode=TFCluster.InputMode.TENSORFLOW)
    jobs = spark_job_count(spark)
    with pytest.raises(BadInputError, match="InputMode.TENSORFLOW"):
        cluster.train(spark.sparkContext.parallelize(range(10)), num_epochs=1)
    with pytest.raises(BadInputError, match="InputMode.TENSORFLOW"):
        cluster.inference(spark.sparkContext.parallelize(range(10)))
    assert spark_job_count(spark) == jobs
    with pytest.raises(ShutdownTimeoutError):
        cluster.shutdown(timeout=1)


def test_too_few_executors_for_the_roles(ray_cluster):
    with pytest.raises(BadInputError, match="num_executors=2 leaves no worker node") as info:
        TFCluster.run(None, never_returns(), None, 2, 2, input_mode=TFCluster.InputMode.SPARK)
    assert "at least 3" in str(info.value)
    with pytest.raises(BadInputError, match="num_executors"):
        TFCluster.run(None, never_returns(), None, 2, 1, master_node="chief", eval_node=True)



class _KillOnSight:
    """Kills the named actor whose name ends with ``suffix`` as soon as it exists (a thread polling every 5 ms)."""

    def __init__(self, suffix):
        self.suffix = suffix
        self.killed = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["name"].startswith("raytfnode-") and actor["name"].endswith(self.suffix):
                    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))
                    self.killed = actor["name"]
                    return
            time.sleep(0.005)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize("victim", ["-queues-1", "-coordinator"])
def test_bookkeeping_actor_killed_while_the_cluster_starts_is_named(ray_cluster, victim):
    # the queue actors and the coordinator start before the nodes; one that dies before run() returns fails
    # run() with a raytfnode error naming it (not Ray's bare ActorDiedError), and nothing is left running
    started = time.monotonic()
    with _KillOnSight(victim) as killer:
        with pytest.raises(RayTFNodeError) as info:
            TFCluster.run(None, never_returns(), None, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                          import_tensorflow=False, num_cpus=0.5, reservation_timeout=120)
    assert killer.killed is not None and killer.killed in str(info.value), (killer.killed, str(info.value))
    assert "died" in str(info.value)
    if victim == "-queues-1":
        assert isinstance(info.value, NodeError) and info.value.node == "worker:1", info.value
        assert "its queue actor" in str(info.value)
    else:
        assert "failed: while the cluster started, its coordinator" in str(info.value)
    assert time.monotonic() - started < FAR_BELOW
    assert_no_leftovers()


@LOCAL
@pytest.mark.parametrize("victim,source", [("-queues-1", "partitions"), ("-coordinator", "rdd")])
def test_bookkeeping_actor_killed_mid_feed_is_named_within_seconds(spark, clusters, victim, source):
    # before, a dead coordinator surfaced as Ray's bare ActorDiedError after 7 s (from Spark: a Py4J error),
    # and a dead queue actor as worker:1's "queues are gone: its cluster was shut down"
    cluster = clusters(slow_reader(delay=0.01, batch_size=10), sc=spark if source == "rdd" else None)
    rows = [(i, float(i)) for i in range(16000)]
    data = [rows[p::8] for p in range(8)] if source == "partitions" else spark.sparkContext.parallelize(rows, 8)
    killer = threading.Timer(1.0, lambda: ray.kill(plain(
        cluster.queue_actors[1] if victim == "-queues-1" else cluster.coordinator)))
    killer.start()
    started = time.monotonic()
    with pytest.raises(RayTFNodeError) as info:
        cluster.train(data, num_epochs=3, feed_timeout=120)
    assert time.monotonic() - started < FAR_BELOW
    killer.join()
    message = str(info.value)
    if victim == "-queues-1":
        assert isinstance(info.value, NodeError) and info.value.node == "worker:1", message
        assert "its queue actor raytfnode-" in message and "-queues-1 (the node's feed queues) died" in message
        assert "killed by `ray.kill`" in message       # Ray's reason is kept
        with pytest.raises(NodeError, match="its queue actor"):   # the cause, not worker:1's consequence
            cluster.shutdown(timeout=30)
    else:
        assert not isinstance(info.value, NodeError)
        assert "its coordinator raytfnode-" in message and "died" in message, message
        cluster.shutdown(timeout=30)
    if source == "rdd":
        assert_no_spark_jobs(spark)
    assert_no_leftovers()

# ------------------------------------------------------- 8. memory stays bounded by the queues


def object_store_used():
    """Bytes of the object store (plasma) in use right now on this session's Ray cluster.

    On Ray 2.60 the raylet's store stats answer this directly and cheaply (a few ms):
    ``get_memory_info_reply(...).store_stats.object_store_bytes_used`` is what
    ``ray._private.internal_api.memory_summary(stats_only=True)`` prints as "Plasma memory
    usage". ``ray.available_resources()['object_store_memory']`` moves too, but only as often as
    resources are reported, and the state API needs the dashboard, which this session runs without.
    The address is given explicitly: other Ray instances run on this machine.
    """
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address
    state = get_state_from_address(ray.get_runtime_context().gcs_address)
    return get_memory_info_reply(state).store_stats.object_store_bytes_used


@LOCAL
def test_memory_bounded_by_queue_bytes(spark, clusters, tmp_path):
    queue_max, chunk = 1 << 20, 64 << 10
    width, rows = 1024, 2560                     # 8 KiB rows, 20 MiB in all: 10x the two queues' bound
    data_bytes = rows * width * 8

    def map_fun(args, ctx):
        feed = ctx.get_data_feed()
        count, total = 0, 0.0
        while not feed.should_stop():
            batch = feed.next_batch(8)
            count += len(batch)
            total += sum(float(row[0]) for row in batch)
            time.sleep(0.06)       # slower than the feeders: the queues stay full, backpressure holds them
        with open(os.path.join(args, "{}.json".format(ctx.task_index)), "w") as f:
            json.dump([count, total], f)

    cluster = clusters(map_fun, tf_args=str(tmp_path), sc=spark, queue_max_bytes=queue_max, chunk_bytes=chunk)
    # 2 partitions: both Spark slots feed at once, so without the byte bound nearly all 20 MiB would be
    # put before the readers are done (a feeding task ends only once its rows were read)
    rdd = spark.sparkContext.parallelize(range(rows), 2).map(lambda i: np.full(width, i, dtype=np.float64))
    baseline = object_store_used()
    samples, held, done = [], [], threading.Event()

    def sample():
        while not done.is_set():
            samples.append(object_store_used())
            # what each queue counts: chunks waiting in it and chunks its reader took but has not read yet
            held.extend(max(stats["queued_bytes"].values())
                        for stats in ray.get([q.stats.remote() for q in cluster.queue_actors]))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        report = cluster.train(rdd, num_epochs=1, feed_timeout=600)
    finally:
        done.set()
        sampler.join(5)
    cluster.shutdown(timeout=60)
    assert report["consumed"] == rows
    results = [json.load(open(os.path.join(str(tmp_path), "{}.json".format(i)))) for i in range(2)]
    assert sum(r[0] for r in results) == rows and sum(r[1] for r in results) == rows * (rows - 1) / 2
    peak = max(samples) - baseline
    # Live at once: the 2 queues' bound, which counts what each reader took ahead until it read it (+ one
    # piece each may overshoot it), a chunk in flight per Spark task and the batch each reader holds:
    # about 2.3 MiB. Objects of consumed chunks also linger up to a second (the raylet frees in batches,
    # once a second), here about 2 MiB more at ~2 MiB/s of reading. 7 MiB (35% of the data) is generous;
    # without the byte bound the feeders put most of the 20 MiB within seconds while the readers need ~10 s.
    limit = 2 * queue_max + 6 * chunk + (4.5 * 2 ** 20)
    print("object store: peak {:.1f} MiB above baseline over {} samples (limit {:.1f} MiB, data {:.0f} MiB)".format(
        peak / 2 ** 20, len(samples), limit / 2 ** 20, data_bytes / 2 ** 20))
    assert len(samples) > 20, "the feed was too quick to sample"
    assert peak > chunk, "no chunk was ever seen in the object store: the measurement is broken"
    assert peak < limit, "object store grew to {:.1f} MiB above baseline".format(peak / 2 ** 20)
    # the bound itself is strict: a chunk waits until it fits, and counts until its reader has read it
    assert 0 < max(held) <= queue_max, "a queue held {} bytes with a bound of {}".format(max(held), queue_max)


# ---------------------------------------------------------------------------------- 9. load


@LOCAL
def test_load_six_workers_200_partitions(spark, clusters, tmp_path):
    n, partitions, epochs = 1000, 200, 3      # 5 rows a partition: 600 small feeding tasks
    cluster = clusters(record_rows(str(tmp_path), batch_size=256), num_executors=6, num_cpus=0.25, sc=spark)
    started = time.monotonic()
    report = cluster.train(spark.sparkContext.parallelize(range(n), partitions), num_epochs=epochs,
                           feed_timeout=600, epoch_cache_bytes=0,   # every epoch from Spark: 600 tasks,
                           feed_tasks=0)                            # each partition in its own
    print("load: {} partitions x {} epochs in {:.1f} s".format(partitions, epochs, time.monotonic() - started))
    cluster.shutdown(timeout=120)
    assert report["partitions"] == partitions * epochs and report["epochs"] == epochs, report
    assert report["rows"] == n * epochs and report["consumed"] == n * epochs and not report["skipped"], report
    got = recorded(str(tmp_path))
    assert sorted(got) == ["worker{}".format(i) for i in range(6)]
    values = [v for per_node in got.values() for v in per_node]
    assert sorted(values) == sorted(list(range(n)) * epochs)
    counts = [len(v) for v in got.values()]
    assert max(counts) - min(counts) <= epochs, counts       # each epoch balanced within one row


# ----------------------------------------------------------------------------- 10. isolation


@LOCAL
def test_two_clusters_at_once_are_isolated(spark, clusters, tmp_path):
    dirs = {name: tmp_path / name for name in "ab"}
    for d in dirs.values():
        d.mkdir()
    first = clusters(record_rows(str(dirs["a"])), sc=spark, chunk_bytes=4096)
    second = clusters(record_rows(str(dirs["b"])), sc=spark, chunk_bytes=4096)
    data = {"a": range(0, 30000), "b": range(1000000, 1020000)}
    reports, errors = {}, []

    def train(name, cluster):
        try:
            reports[name] = cluster.train(spark.sparkContext.parallelize(data[name], 6), num_epochs=2)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=train, args=("a", first)),
               threading.Thread(target=train, args=("b", second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert first.namespace != second.namespace
    first.shutdown(timeout=60)
    # the other cluster keeps working after its neighbour is gone
    reports["b2"] = second.train(spark.sparkContext.parallelize(data["b"], 3), num_epochs=1)
    second.shutdown(timeout=60)
    for name, epochs in (("a", 2), ("b", 3)):
        got = recorded(str(dirs[name]))
        values = [v for per_node in got.values() for v in per_node]
        assert sorted(values) == sorted(list(data[name]) * epochs), name

    # a DataFeed on a manager of the cluster that was shut down fails clearly instead of hanging
    outcome = []

    def read():
        try:
            outcome.append(TFNode.DataFeed(TFManager.TFManager(first.queue_actors[0], "worker:0")).next_batch(1))
        except BaseException as exc:  # noqa: BLE001
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)
    assert outcome, "a DataFeed hung on a cluster that was shut down"
    assert isinstance(outcome[0], ClusterStoppedError), repr(outcome[0])
    assert "worker:0" in str(outcome[0]) and "shut down" in str(outcome[0])
