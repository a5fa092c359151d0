"""A Spark source with many small partitions is fed through a few Spark tasks.

A Spark task costs about 0.1 s here before its first row, so 400 partitions of
150 rows would spend 20 s in task overhead; ``train()`` coalesces them into one
feeding task per Spark core (``raytfnode.feed_tasks``). What must not change:
every row once per epoch, the report counting the source's partitions, a
retried task delivering nothing twice, and errors naming the partitions.
"""
import sys

import numpy as np
import pytest
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle

import node_reports
from node_reports import read_node_reports, write_node_report
from raytfnode import TFCluster
from raytfnode.errors import BadInputError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

pytestmark = [pytest.mark.spark, pytest.mark.timeout(300)]


def _sum_by_epoch(args, ctx):
    """Counts and sums the rows of every epoch; reports them at the end of the feed."""
    feed = ctx.get_data_feed(train_mode=True)
    epochs = []
    while not feed.should_stop():
        count = total = 0
        for batch in feed.epoch_batches(64):
            batch = batch[0] if isinstance(batch, tuple) else batch   # a DataFrame's rows: one column
            count += len(batch)
            total += int(np.asarray(batch).sum())
        if count or not feed.should_stop():
            epochs.append([count, total])
    write_node_report(args["out"], ctx, {"epochs": epochs})


def _read_all(args, ctx):
    feed = ctx.get_data_feed(train_mode=True)
    while not feed.should_stop():
        feed.next_batch_arrays(100)


def _tasks_of_jobs_since(spark, first_job):
    """The number of tasks of each stage of the Spark jobs submitted since job id ``first_job``."""
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    next_id = sc._jsc.sc().dagScheduler().nextJobId()
    next_id = next_id if isinstance(next_id, int) else next_id.get()
    tasks = []
    for job_id in range(first_job, next_id):
        job = tracker.getJobInfo(job_id)
        for stage_id in (job.stageIds if job else []):
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                tasks.append(stage.numTasks)
    return tasks


def _next_job_id(spark):
    next_id = spark.sparkContext._jsc.sc().dagScheduler().nextJobId()
    return next_id if isinstance(next_id, int) else next_id.get()


@pytest.mark.parametrize("kind", ["dataframe", "rdd"])
def test_many_small_partitions_feed_through_one_task_per_core_each_row_once_per_epoch(spark, no_leftovers,
                                                                                       tmp_path, kind):
    num_rows, parts, epochs = 3000, 60, 2
    cores = spark.sparkContext.defaultParallelism
    assert parts > 4 * cores, "the test needs many more partitions than Spark cores"
    if kind == "dataframe":
        data = spark.range(0, num_rows, 1, parts)
    else:
        data = spark.sparkContext.parallelize(range(num_rows), parts)
    cluster = TFCluster.run(spark, _sum_by_epoch, {"out": str(tmp_path)}, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, chunk_bytes=2048)
    first_job = _next_job_id(spark)
    try:
        report = cluster.train(data, num_epochs=epochs, feed_timeout=120, epoch_cache_bytes=0)
    finally:
        cluster.shutdown(timeout=60)
    assert report["rows"] == report["consumed"] == epochs * num_rows, report
    assert report["partitions"] == epochs * parts, report       # the source's partitions, not the tasks
    assert _tasks_of_jobs_since(spark, first_job) == [cores] * epochs
    nodes = read_node_reports(tmp_path)
    for epoch in range(epochs):
        assert sum(node["epochs"][epoch][0] for node in nodes.values()) == num_rows
        assert sum(node["epochs"][epoch][1] for node in nodes.values()) == sum(range(num_rows))


@pytest.mark.parametrize("spark", ["local"], indirect=True)
def test_feed_tasks_zero_feeds_each_partition_in_its_own_task_and_a_cap_caps(spark, no_leftovers):
    data = spark.sparkContext.parallelize(range(600), 12)
    cluster = TFCluster.run(spark, _read_all, None, 1, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False)
    try:
        first_job = _next_job_id(spark)
        assert cluster.train(data, num_epochs=1, feed_timeout=120, feed_tasks=0)["consumed"] == 600
        assert _tasks_of_jobs_since(spark, first_job) == [12]
        first_job = _next_job_id(spark)
        assert cluster.train(data, num_epochs=1, feed_timeout=120, feed_tasks=3)["consumed"] == 600
        assert _tasks_of_jobs_since(spark, first_job) == [3]
        for wrong in (-1, 2.5, True):
            with pytest.raises(BadInputError, match="feed_tasks must be None"):
                cluster.train(data, num_epochs=1, feed_tasks=wrong)
        with pytest.raises(BadInputError, match="feed_tasks applies to a static Spark RDD or DataFrame"):
            cluster.train([[1, 2], [3]], num_epochs=1, feed_tasks=2)
        with pytest.raises(BadInputError, match="feed_tasks applies to a static Spark RDD or DataFrame, not to a "
                                                "stream"):
            cluster.train(spark.readStream.format("rate").load(), feed_tasks=2)
    finally:
        cluster.shutdown(timeout=60)


@pytest.mark.parametrize("spark", ["local"], indirect=True)
def test_bad_row_in_a_coalesced_feed_names_the_task_and_its_partitions(spark, no_leftovers):
    rows = [np.arange(4, dtype=np.float64) + i for i in range(2000)]
    rows[37 * 50 + 10] = np.arange(5, dtype=np.float64)    # partition 37 of 40, row 10 of it
    cluster = TFCluster.run(spark, _read_all, None, 1, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, chunk_bytes=2048)
    try:
        with pytest.raises(BadInputError) as info:
            cluster.train(spark.sparkContext.parallelize(rows, 40), num_epochs=1, feed_timeout=120)
    finally:
        cluster.shutdown(timeout=60)
    text = str(info.value)
    tasks = spark.sparkContext.defaultParallelism
    size = 40 // tasks                     # an RDD without preferred locations coalesces into even runs
    first = 37 // size * size
    assert "feeding task {} of {}, which reads partitions {}-{}".format(37 // size, tasks, first,
                                                                       first + size - 1) in text, text
    assert "(5,)" in text and "(4,)" in text, text


@pytest.mark.parametrize("spark", ["local"], indirect=True)
def test_thousands_of_partitions_are_counted_not_listed(spark, no_leftovers):
    num_rows, parts = 5000, 2500           # beyond the partitions a plan lists one by one: counted per task
    rows = list(range(num_rows))
    cluster = TFCluster.run(spark, _read_all, None, 1, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False)
    try:
        report = cluster.train(spark.sparkContext.parallelize(rows, parts), num_epochs=1, feed_timeout=120)
        assert report["consumed"] == num_rows and report["partitions"] == parts, report
        rows[4321] = "x"                   # a string among numbers
        with pytest.raises(BadInputError) as info:
            cluster.train(spark.sparkContext.parallelize(rows, parts), num_epochs=1, feed_timeout=120)
    finally:
        cluster.shutdown(timeout=60)
    tasks = spark.sparkContext.defaultParallelism
    text = str(info.value)
    assert "feeding task {} of {}, which reads {} of the source's {} partitions".format(
        4321 * tasks // num_rows, tasks, parts // tasks, parts) in text and "'x'" in text, text
