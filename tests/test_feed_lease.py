"""What a DataFeed read ahead is not stranded: a feed that is closed, dropped or replaced gives it back.

A DataFeed takes entries from its queue actor before they are asked for. These
tests stop or replace readers mid-epoch on a real queue actor (the session's
Ray, no TensorFlow) and check that the next reader sees every row exactly once,
with the end-of-epoch marker, and that a producer waiting for room is not left
to run into its feed timeout.
"""
import threading
import warnings

import numpy as np
import pytest
import ray

from raytfnode import TFManager, TFNode
from raytfnode.chunks import encode_rows
from raytfnode.errors import FeedError
from raytfnode.feed_queue import END_EPOCH, END_FEED

pytestmark = pytest.mark.timeout(300)

CHUNK_ROWS = 5
CHUNK_BYTES = 1000          # what each chunk declares to the queue's byte bound


@pytest.fixture
def mgr(ray_cluster):
    manager = TFManager.start(b"lease", ["input", "other", "output"])
    yield manager
    manager.shutdown()


@pytest.fixture
def tight_mgr(ray_cluster):
    """A manager whose queues hold two chunks: a third waits until a reader read one."""
    manager = TFManager.start(b"lease", ["input"], max_bytes=2 * CHUNK_BYTES + CHUNK_BYTES // 2)
    yield manager
    manager.shutdown()


def put_chunk(manager, serial, first_row, timeout=None):
    """Puts rows ``first_row .. first_row + CHUNK_ROWS - 1`` as one chunk, as a feeding task does."""
    chunk = encode_rows(list(range(first_row, first_row + CHUNK_ROWS)))
    key = ("feed", serial, 0)
    return ray.get(manager._actor.put_chunk.remote("input", key, [ray.put(chunk)], CHUNK_ROWS, CHUNK_BYTES,
                                                   None, False, timeout))


def put_marker(manager, marker):
    ray.get(manager._actor.put_marker.remote("input", marker))


def stats(manager):
    return ray.get(manager._actor.stats.remote())


def read_epoch(feed, batch_size=100):
    """The rows of ``feed`` up to the end of the current epoch (or feed), and whether an epoch ended."""
    rows = []
    for batch in feed.epoch_batches(batch_size):
        rows.extend(np.asarray(batch).tolist())
    return rows, feed.end_of_epoch()


def test_two_datafeeds_one_after_another_see_every_row_once_and_the_epoch_end(mgr):
    for serial in range(6):
        put_chunk(mgr, serial, serial * CHUNK_ROWS)          # epoch 0: rows 0..29
    put_marker(mgr, (END_EPOCH, "feed", 0))
    for serial in range(6, 10):
        put_chunk(mgr, serial, serial * CHUNK_ROWS)          # epoch 1: rows 30..49
    put_marker(mgr, (END_FEED,))

    first = TFNode.DataFeed(mgr)
    assert first.next_batch(7) == list(range(7))            # it took the epoch's chunks and marker ahead
    second = TFNode.DataFeed(mgr)                            # the first one is still referenced
    assert read_epoch(second) == (list(range(7, 30)), True)
    assert read_epoch(second) == (list(range(30, 50)), False)
    assert second.should_stop()
    second.close()                                           # returns once its acknowledgements arrived
    after = stats(mgr)
    assert after["consumed_rows"] == 50
    assert after["queued_bytes"]["input"] == 0 and after["queued_entries"]["input"] == 0


def test_datafeeds_used_in_turns_share_one_queue_exactly_once(mgr):
    q = mgr.get_queue("input")
    for value in range(20):
        q.put(value)
    q.put(None)
    first, second = TFNode.DataFeed(mgr), TFNode.DataFeed(mgr)
    rows = first.next_batch(2) + second.next_batch(3) + first.next_batch(4) + second.next_batch(100)
    assert rows == list(range(20))
    assert second.should_stop()


def _read_until_break(manager, close):
    """A map_fun that breaks out of its epoch loop after a few rows; returns the rows it read."""
    rows = []
    if close:
        with TFNode.DataFeed(manager) as feed:
            for batch in feed.epoch_batches(3):
                rows.extend(batch.tolist())
                if len(rows) >= 6:
                    break
        with pytest.raises(FeedError, match="closed"):
            feed.next_batch(1)
    else:
        feed = TFNode.DataFeed(manager)
        for batch in feed.epoch_batches(3):
            rows.extend(batch.tolist())
            if len(rows) >= 6:
                break
    return rows    # without close, the feed is garbage-collected here


@pytest.mark.parametrize("close", [True, False], ids=["closed", "garbage-collected"])
def test_reader_that_breaks_mid_epoch_leaves_its_rows_and_room_for_the_producer(tight_mgr, close):
    outcome = {}

    def produce():
        try:
            outcome["status"] = [put_chunk(tight_mgr, serial, serial * CHUNK_ROWS, timeout=20)
                                 for serial in range(8)]   # rows 0..39; at most two chunks fit at a time
        except Exception as exc:  # noqa: BLE001  (reported below, as the producer's Spark task would)
            outcome["error"] = exc
        finally:
            put_marker(tight_mgr, (END_EPOCH, "feed", 0))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    first_rows = _read_until_break(tight_mgr, close)
    assert first_rows == list(range(6))
    with TFNode.DataFeed(tight_mgr) as second:
        rest, epoch_ended = read_epoch(second, batch_size=4)
    producer.join(timeout=60)
    assert "error" not in outcome, "the producer waited for room until its timeout: {}".format(outcome.get("error"))
    assert outcome["status"] == ["queued"] * 8
    assert rest == list(range(6, 40)) and epoch_ended
    assert stats(tight_mgr)["consumed_rows"] == 40


def test_deprecated_module_functions_switching_queues_keep_what_they_read_ahead(mgr):
    q = mgr.get_queue("input")
    for value in range(10):
        q.put(value)
    q.put(None)
    mgr.get_queue("other").put("a")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert TFNode.next_batch(mgr, 2) == [0, 1]
        assert TFNode.next_batch(mgr, 1, qname="other") == ["a"]
        assert TFNode.next_batch(mgr, 20) == list(range(2, 10))


def test_inference_reader_closed_mid_partition_leaves_the_unanswered_chunks_to_the_next(mgr):
    tag = ("infer", 0)
    for seq in range(3):                                     # one partition: rows 0..14 in three chunks
        chunk = encode_rows(list(range(seq * CHUNK_ROWS, (seq + 1) * CHUNK_ROWS)))
        ray.get(mgr._actor.put_chunk.remote("input", ("infer", 0, seq), [ray.put(chunk)], CHUNK_ROWS,
                                            CHUNK_BYTES, tag, seq == 2))
    with TFNode.DataFeed(mgr, train_mode=False) as first:
        batch = first.next_batch(7)                          # chunk 0 and two rows of chunk 1
        first.batch_results([row * 10 for row in batch])     # answers chunk 0 only
    second = TFNode.DataFeed(mgr, train_mode=False)
    batch = second.next_batch(100)
    assert batch == list(range(5, 15))                       # chunk 1 comes back whole: its answers were lost
    second.batch_results([row * 10 for row in batch])
    results = ray.get(mgr._actor.take_results.remote(tag, 3, 60))
    assert results == [[row * 10 for row in range(seq * 5, seq * 5 + 5)] for seq in range(3)]
    assert stats(mgr)["consumed_rows"] == 15
