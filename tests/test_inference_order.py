"""Inference over a partition whose chunks wait for room in a full queue.

A partition's last chunk is usually smaller than the others; when the queue is
near its byte bound it fits before the bigger chunks that wait ahead of it. If
it were queued first, the node would end a batch with it (a batch never spans
two partitions), answer it, and then read the earlier chunks waiting for more
rows of a partition that has no more: the producer waits for their results and
the node waits for rows, forever. The feed must keep the last chunk last.
"""
import sys

import numpy as np
import ray

from raytfnode import TFCluster

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROW_FLOATS = 256                 # 1 KiB a row
CHUNK_BYTES = 100 << 10          # about 100 rows a chunk
BATCH = 150                      # a batch spans two chunks


def _slow_sum(args, ctx):
    """Answers each row with its sum, slowly enough that the producer's puts wait for room."""
    import time

    from raytfnode import TFNode

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(args["batch"])
        if len(batch):
            time.sleep(0.02)
            feed.batch_results([np.asarray(row).sum(keepdims=True) for row in batch])


def test_small_last_chunk_of_a_partition_waiting_behind_full_queue_is_answered_last(ray_cluster, no_leftovers):
    rows_per_partition = [2050, 1730, 999]        # last chunks of 50, 30 and 99 rows
    partitions = [[np.full(ROW_FLOATS, float(p * 10000 + i), dtype=np.float32) for i in range(count)]
                  for p, count in enumerate(rows_per_partition)]
    cluster = TFCluster.run(None, _slow_sum, {"batch": BATCH}, 1, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, chunk_bytes=CHUNK_BYTES, queue_max_bytes=250 << 10)
    try:
        results = cluster.inference(partitions, feed_timeout=120)
    finally:
        cluster.shutdown(timeout=60)
    expected = [[np.float32(row.sum())] for rows in partitions for row in rows]
    got = [[np.float32(value) for value in np.ravel(row)] for part in results for row in part]
    assert got == expected
