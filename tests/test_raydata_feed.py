"""The Ray Data bridge end to end: a Ray Dataset fed to a TF cluster on Ray, no Spark.

``train`` feeds every block of the dataset as a partition; ``inference`` answers
with a Ray Dataset whose column ``result`` holds one result per input row, in
input order.
"""
import glob
import json
import os
import sys

import numpy as np
import pytest
import ray
import ray.cloudpickle

from raytfnode import TFCluster
from raytfnode.bridges.raydata import CHECK_TASKS_PER_MACHINE, check_groups
from raytfnode.errors import BadInputError, FeedError

# The map_funs below run in Ray actors, which cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

SPARK = TFCluster.InputMode.SPARK

pytestmark = pytest.mark.timeout(300)


def _write_report(out_dir, ctx, report):
    path = os.path.join(out_dir, "{}-{}.json".format(ctx.job_name, ctx.task_index))
    with open(path, "w") as f:
        json.dump(report, f)


def _read_reports(out_dir):
    reports = {}
    for path in sorted(glob.glob(os.path.join(str(out_dir), "*.json"))):
        with open(path) as f:
            reports[os.path.basename(path)[:-5]] = json.load(f)
    return reports


def _count_epochs(args, ctx):
    feed = ctx.get_data_feed()
    epochs, kinds = [], set()
    while not feed.should_stop():
        rows = total = 0
        for batch in feed.epoch_batches(50):
            kinds.add("{}:{}".format(type(batch).__name__, len(batch) if isinstance(batch, tuple) else "-"))
            ids = batch[0] if isinstance(batch, tuple) else batch
            rows += len(ids)
            total += int(ids.sum())
        if rows or not feed.should_stop():
            epochs.append([rows, total])
    _write_report(args["out"], ctx, {"epochs": epochs, "kinds": sorted(kinds)})


def test_new_blocks_are_checked_by_a_few_tasks_per_machine_each_holding_blocks_of_its_machine():
    homes = ["m1", "m2"] * 200                                   # 400 blocks on two machines
    groups = check_groups(range(400), homes)
    assert len(groups) == 2 * CHECK_TASKS_PER_MACHINE             # not one task (one Ray worker) per block
    assert sorted(i for group in groups for i in group) == list(range(400))
    assert all(len({homes[i] for i in group}) == 1 for group in groups)
    assert check_groups([3], homes) == [[3]] and check_groups([], homes) == []


# 8-byte rows: with the default 32 MiB chunks every block is small and the blocks are joined once into
# one; with chunk_bytes=4096 the 200-row blocks (1,600 bytes) join in pairs... up to 16 KiB, and with 1024
# the 27-row blocks join up to 4 KiB; with epoch_cache_bytes=0 nothing is joined and the 27-row blocks
# travel in runs of at most 4 blocks. Twice: the second train() on the same Dataset feeds its joined blocks
# again, or, not materialized, joins the blocks its new execution made. One row: a node is fed no row, and
# its epochs still end (each node's queue gets the end-of-epoch marker with its share, even an empty one)
@pytest.mark.parametrize("num_rows,num_blocks,chunk_bytes,joined_bytes,materialized", [
    (1000, 5, None, None, True), (1000, 37, None, None, False), (1000, 5, 4096, None, True),
    (1000, 37, 1024, None, True), (1000, 37, 1024, 0, True), (1, 1, None, None, True)])
def test_ray_dataset_train_feeds_every_row_once_per_epoch(ray_cluster, no_leftovers, tmp_path, num_rows, num_blocks,
                                                          chunk_bytes, joined_bytes, materialized):
    num_epochs, calls = 2, 2
    ds = ray.data.range(num_rows, override_num_blocks=num_blocks)
    ds = ds.materialize() if materialized else ds
    options = {"chunk_bytes": chunk_bytes} if chunk_bytes else {}
    cluster = TFCluster.run(None, _count_epochs, {"out": str(tmp_path)}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False, **options)
    try:
        reports = [cluster.train(ds, num_epochs=num_epochs, feed_timeout=120, epoch_cache_bytes=joined_bytes)
                   for _ in range(calls)]
    finally:
        cluster.shutdown()
    for report in reports:
        assert report["epochs"] == num_epochs
        assert report["rows"] == report["consumed"] == num_epochs * num_rows
        assert report["partitions"] == num_epochs * ds.materialize().num_blocks()
    nodes = _read_reports(tmp_path)
    assert sorted(nodes) == ["worker-0", "worker-1"]
    for node in nodes.values():
        fed = any(rows for rows, _ in node["epochs"])
        assert node["kinds"] == (["tuple:1"] if fed else [])   # one array per column: ('id',)
        assert len(node["epochs"]) == num_epochs * calls
    for epoch in range(num_epochs * calls):
        counts = [n["epochs"][epoch][0] for n in nodes.values()]
        assert sum(counts) == num_rows and max(counts) - min(counts) <= 1, counts
        assert sum(n["epochs"][epoch][1] for n in nodes.values()) == sum(range(num_rows))


def _terminate_on_worker_0(args, ctx):
    feed = ctx.get_data_feed()
    while not feed.should_stop():
        feed.next_batch(64)
        if ctx.task_index == 0:
            feed.terminate()


@pytest.mark.parametrize("data_locality", [True, False])
def test_ray_dataset_feed_counts_the_rows_a_terminated_node_skipped_and_ends(ray_cluster, no_leftovers,
                                                                             data_locality):
    # each node's share of an epoch goes in one call that the coordinator's answer reaches on the way
    # (planned pieces) or after it (pieces split level): either way the rows worker:0 never read are counted
    num_rows, num_epochs = 20000, 3
    ds = ray.data.range(num_rows, override_num_blocks=8).materialize()
    cluster = TFCluster.run(None, _terminate_on_worker_0, {}, 2, 0, input_mode=SPARK, import_tensorflow=False,
                            data_locality=data_locality)
    try:
        report = cluster.train(ds, num_epochs=num_epochs, feed_timeout=120, epoch_cache_bytes=0)
        assert report["epochs"] == 1 and report["skipped_epochs"] == num_epochs - 1, report
        assert report["skipped"] > 0, report
        assert report["consumed"] + report["skipped"] == report["rows"] == num_rows, report
        with pytest.raises(FeedError, match="worker:0 called DataFeed.terminate"):
            cluster.train(ds, num_epochs=1)
    finally:
        cluster.shutdown()


def test_joined_blocks_of_the_live_datasets_share_each_machines_budget(ray_cluster):
    import gc

    from raytfnode.bridges.raydata import JoinedBlocks
    # 10 blocks of 100 8-byte rows: each small against 4 KiB chunks, all 8,000 bytes fit one joined block
    first, second = [ray.data.range(1000, override_num_blocks=10).materialize() for _ in range(2)]
    blocks = [first.to_arrow_refs(), second.to_arrow_refs()]
    joined = JoinedBlocks()
    refs, layouts = joined.units(first, blocks[0], 4096, 10 ** 6, 10000)
    assert len(refs) == 1 and layouts == [(1000, 8.0)] and sum(joined.held().values()) == 8000
    # (blocks this small are inlined, not in a machine's store: they count against the driver's machine)
    # 2,000 bytes are left of the machine's 10,000: two blocks are joined, the other eight are fed as they are
    refs, _ = joined.units(second, blocks[1], 4096, 10 ** 6, 10000)
    assert len(refs) == 9 and refs[1:] == blocks[1][2:]
    assert ray.get(refs[0]).columns[0].tolist() == list(range(200))
    del first, refs
    gc.collect()                        # the first Dataset is gone, and with it its joined block's bytes
    assert sum(joined.held().values()) == 1600
    refs, _ = joined.units(second, blocks[1], 4096, 10 ** 6 - 1, 10000)   # another chunk: joined again
    assert len(refs) == 1 and sum(joined.held().values()) == 8000
    joined.clear()
    assert joined.held() == {}


def _double_map_fun(args, ctx):
    feed = ctx.get_data_feed(train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(16)
        if len(batch) > 0:
            feed.batch_results([row[0] * 2 for row in batch])


def test_ray_dataset_inference_returns_ray_dataset_of_results_in_input_order(ray_cluster, no_leftovers):
    num_rows = 1000
    ds = ray.data.range(num_rows, override_num_blocks=5)
    cluster = TFCluster.run(None, _double_map_fun, None, 2, 0, input_mode=SPARK, import_tensorflow=False)
    try:
        results = cluster.inference(ds, feed_timeout=120)
        assert isinstance(results, ray.data.Dataset)
        rows = results.take_all()
    finally:
        cluster.shutdown()
    assert results.columns() == ["result"]
    assert [row["result"] for row in rows] == [2 * i for i in range(num_rows)]


def _sum_arrays(args, ctx):
    feed = ctx.get_data_feed()
    count, image_sum, label_sum = 0, 0.0, 0
    while not feed.should_stop():
        batch = feed.next_batch_arrays(64)
        if batch is None:
            break
        image, label = batch                 # one array per column, in the dataset's column order
        assert image.shape[1:] == (4, 3) and image.dtype == np.float32, image.shape
        count += len(label)
        image_sum += float(image.astype(np.float64).sum())
        label_sum += int(label.sum())
    _write_report(args["out"], ctx, {"count": count, "image_sum": image_sum, "label_sum": label_sum})


def test_ray_dataset_tensor_column_reaches_the_readers_intact(ray_cluster, no_leftovers, tmp_path):
    """Blocks go to the readers by reference: the rows they read must still be exactly the dataset's."""
    num_rows = 900
    images = np.random.default_rng(3).random((num_rows, 4, 3), dtype=np.float32)
    ds = ray.data.from_items([{"image": images[i], "label": i} for i in range(num_rows)], override_num_blocks=3)
    cluster = TFCluster.run(None, _sum_arrays, {"out": str(tmp_path)}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False)   # each block is split between the 2 nodes by row ranges
    try:
        report = cluster.train(ds, num_epochs=2, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert report["rows"] == report["consumed"] == 2 * num_rows
    nodes = _read_reports(tmp_path).values()
    assert sum(n["count"] for n in nodes) == 2 * num_rows
    assert sum(n["label_sum"] for n in nodes) == 2 * sum(range(num_rows))
    assert sum(n["image_sum"] for n in nodes) == pytest.approx(2 * float(images.astype(np.float64).sum()))


def test_ray_dataset_with_a_null_or_blocks_of_other_columns_fails_naming_the_blocks(ray_cluster, no_leftovers, tmp_path):
    import pyarrow as pa
    tables = [pa.table({"x": pa.array([1.0, 2.0, 3.0])}), pa.table({"x": pa.array([4.0, None, 6.0])})]
    ds = ray.data.from_arrow(tables)
    # small blocks are joined into one: blocks of different columns cannot be, and the error names them
    renamed = ray.data.from_arrow([tables[0], pa.table({"y": pa.array([4.0, 5.0])})])
    cluster = TFCluster.run(None, _count_epochs, {"out": str(tmp_path)}, 2, 0, input_mode=SPARK,
                            import_tensorflow=False)
    try:
        with pytest.raises(BadInputError, match=r"block 1 column x: row 1 is null"):
            cluster.train(ds, num_epochs=1, feed_timeout=120)
        with pytest.raises(BadInputError, match=r"block 0 and block 1 of the Ray Dataset have different columns: "
                                                r"x \(scalar\) against y \(scalar\)"):
            cluster.train(renamed, num_epochs=1, feed_timeout=120)
    finally:
        cluster.shutdown()
