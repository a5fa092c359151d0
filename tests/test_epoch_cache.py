"""The epoch cache: later epochs fed from the nodes' copies of the first, without reading the source again.

The pure bookkeeping (:mod:`raytfnode.epoch_cache`) is tested without a
cluster; the rest trains on real Ray and Spark (local mode) and checks, through
the public API, what each node read in every epoch and how often Spark computed
the source (a Spark accumulator counts the rows the source produced).
"""
import sys

import pytest
import ray.cloudpickle
from pyspark import cloudpickle as spark_cloudpickle

import node_reports
from node_reports import read_node_reports, write_node_report
from raytfnode import TFCluster
from raytfnode.errors import BadInputError
from raytfnode.epoch_cache import LaneCache, node_budgets, replay_order

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
spark_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(node_reports)
spark_cloudpickle.register_pickle_by_value(node_reports)

LOCAL = pytest.mark.parametrize("spark", ["local"], indirect=True)


# ------------------------------------------------------------ bookkeeping


def test_lane_cache_keeps_the_chunks_of_its_epoch_in_queue_order_and_is_complete_once_copied():
    cache = LaneCache("feed", 0, budget=100)
    assert cache.wants("feed", ("feed", 0, 3, 0, 1))
    assert not cache.wants("feed", ("feed", 1, 3, 0, 1))      # another epoch
    assert not cache.wants("other", ("other", 0, 3, 0, 1))    # another feed
    assert cache.begin_copy("b", 40) and cache.begin_copy("a", 40)
    assert not cache.complete()                                # copies still running
    cache.add("a", ["ref-a"], 4, 40)
    cache.add("b", ["ref-b"], 5, 40)
    assert cache.complete() and cache.rows == 9 and cache.nbytes == 80
    assert list(cache.chunks) == ["b", "a"]


def test_lane_cache_gives_up_past_its_budget_or_on_a_failed_copy():
    cache = LaneCache("feed", 0, budget=100)
    assert cache.begin_copy("a", 60)
    assert not cache.begin_copy("b", 60)
    assert "larger than" in cache.why_not and not cache.chunks and cache.nbytes == 0
    cache.add("a", ["ref-a"], 4, 60)           # a copy that finishes after giving up keeps nothing
    assert not cache.chunks and not cache.complete()
    assert not cache.wants("feed", ("feed", 0, 1, 0, 0))

    failed = LaneCache("feed", 0, budget=100)
    assert failed.begin_copy("a", 10)
    failed.copy_failed("a", "OwnerDiedError")
    assert failed.copying == 0 and not failed.complete() and "OwnerDiedError" in failed.why_not


def test_replay_order_is_a_new_permutation_each_epoch_and_the_same_for_the_same_epoch():
    orders = [replay_order(20, "feed", epoch) for epoch in range(1, 4)]
    assert all(sorted(order) == list(range(20)) for order in orders)
    assert len({tuple(order) for order in orders}) == 3
    assert replay_order(20, "feed", 2) == orders[1]
    assert replay_order(0, "feed", 1) == []


def test_node_budgets_share_a_quarter_of_each_machines_store_among_its_nodes():
    stores = {"m1": 8 << 30, "m2": 2 << 30}
    assert node_budgets(["m1", "m1", "m2"], stores) == [1 << 30, 1 << 30, 512 << 20]
    assert node_budgets(["m1", "m3"], stores) == [2 << 30, 0]      # a machine of unknown size: no cache
    assert node_budgets(["m1", "m2"], stores, limit=0) == [0, 0]
    assert node_budgets(["m1", "m2"], stores, limit=1000) == [1000, 1000]


# ------------------------------------------------------- on a real cluster


def _record_rows_by_epoch(args, ctx):
    """Reports the rows every epoch handed this node, in the order it read them."""
    feed = ctx.get_data_feed(train_mode=True)
    epochs = []
    while not feed.should_stop():
        rows = []
        for batch in feed.epoch_batches(50):
            first_column = batch[0] if isinstance(batch, tuple) else batch   # a DataFrame's rows: (id, x)
            rows.extend(int(value) for value in first_column)
        if rows or not feed.should_stop():
            epochs.append(rows)
    write_node_report(args, ctx, {"epochs": epochs})


def _train(spark, data, tmp_path, num_epochs, **train_kwargs):
    cluster = TFCluster.run(spark, _record_rows_by_epoch, str(tmp_path), 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, chunk_bytes=2048)
    try:
        report = cluster.train(data, num_epochs=num_epochs, feed_timeout=120, **train_kwargs)
    finally:
        cluster.shutdown(timeout=60)
    nodes = read_node_reports(tmp_path)
    return report, [nodes[name]["epochs"] for name in sorted(nodes)]


def _counted_rows(spark, num_rows, partitions):
    produced = spark.sparkContext.accumulator(0)

    def count(value):
        produced.add(1)
        return value

    return spark.sparkContext.parallelize(range(num_rows), partitions).map(count), produced


def _assert_every_row_once_per_epoch(per_node, num_rows, num_epochs):
    for epoch in range(num_epochs):
        rows = sorted(row for epochs in per_node for row in epochs[epoch])
        assert rows == list(range(num_rows)), "epoch {}: {} rows, {} distinct".format(epoch, len(rows), len(set(rows)))


@LOCAL
def test_later_epochs_come_from_the_cache_same_rows_per_node_new_order_source_read_once(spark, no_leftovers,
                                                                                         tmp_path):
    num_rows, num_epochs = 4000, 3
    rdd, produced = _counted_rows(spark, num_rows, 7)
    report, per_node = _train(spark, rdd, tmp_path, num_epochs)
    assert report["cached_epochs"] == num_epochs - 1 and report["epoch_cache"] is None, report
    assert report["epochs"] == num_epochs and report["rows"] == report["consumed"] == num_epochs * num_rows
    assert produced.value == num_rows          # Spark computed the source for the first epoch only
    _assert_every_row_once_per_epoch(per_node, num_rows, num_epochs)
    for epochs in per_node:
        assert sorted(epochs[1]) == sorted(epochs[2]) == sorted(epochs[0])   # each node keeps its rows
        assert epochs[1] != epochs[2]                                        # in a new order every epoch


@LOCAL
def test_epoch_cache_bytes_zero_reads_the_source_every_epoch(spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 3000, 3
    rdd, produced = _counted_rows(spark, num_rows, 5)
    report, per_node = _train(spark, rdd, tmp_path, num_epochs, epoch_cache_bytes=0)
    assert report["cached_epochs"] == 0 and "off" in report["epoch_cache"]
    assert produced.value == num_epochs * num_rows
    _assert_every_row_once_per_epoch(per_node, num_rows, num_epochs)


@LOCAL
def test_a_dataframe_epoch_larger_than_the_cache_is_fed_from_spark_every_epoch(spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 3000, 2
    df = spark.createDataFrame([(i, float(i)) for i in range(num_rows)], "id long, x double").repartition(4)
    report, per_node = _train(spark, df, tmp_path, num_epochs, epoch_cache_bytes=4096)
    assert report["cached_epochs"] == 0
    assert "larger than the cache's 4096 bytes" in report["epoch_cache"], report["epoch_cache"]
    assert report["consumed"] == num_epochs * num_rows
    _assert_every_row_once_per_epoch(per_node, num_rows, num_epochs)


@LOCAL
def test_a_dataframe_epoch_that_fits_is_replayed(spark, no_leftovers, tmp_path):
    num_rows, num_epochs = 3000, 3
    df = spark.createDataFrame([(i, float(i)) for i in range(num_rows)], "id long, x double").repartition(4)
    report, per_node = _train(spark, df, tmp_path, num_epochs)
    assert report["cached_epochs"] == num_epochs - 1, report
    _assert_every_row_once_per_epoch(per_node, num_rows, num_epochs)


def test_epoch_cache_bytes_must_be_a_byte_count(ray_cluster, tmp_path):
    cluster = TFCluster.run(None, _record_rows_by_epoch, str(tmp_path), 1, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False)
    try:
        with pytest.raises(BadInputError, match="epoch_cache_bytes must be None"):
            cluster.train([[1, 2, 3]], num_epochs=2, epoch_cache_bytes=-1)
    finally:
        cluster.shutdown(timeout=60)
