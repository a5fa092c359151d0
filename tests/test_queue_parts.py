"""The queue actor's parts without Ray: each concern of raytfnode.queue_parts on its own."""
import asyncio
import time

import pytest

from raytfnode.errors import ClusterStoppedError, FeedError, FeedTimeoutError, NodeError
from raytfnode.queue_parts import (CHUNK, END_EPOCH, END_FEED, ITEM, ByteBound, ChunkLedger, EntryQueue, FeedVerdicts,
                                   InferenceResults, Leases, NodeState, Signal, skip_rows, with_box)


def chunk(key, rows=10, nbytes=100, box=None, tag=None):
    return (CHUNK, key, box or ["ref-" + key], rows, tag, False, nbytes)


# ------------------------------------------------------------------ Signal

def test_signal_wakes_a_waiter_when_its_condition_became_true():
    async def scenario():
        signal, state = Signal(), {"ready": False}
        waiter = asyncio.ensure_future(signal.wait_until(lambda: state["ready"], timeout=30))
        await asyncio.sleep(0)
        assert not waiter.done()
        signal.notify()                      # a change that does not satisfy the waiter
        await asyncio.sleep(0)
        assert not waiter.done()
        state["ready"] = True
        signal.notify()
        return await waiter

    assert asyncio.run(scenario()) is True


def test_signal_wait_returns_false_after_its_timeout():
    async def scenario():
        started = time.monotonic()
        ok = await Signal().wait_until(lambda: False, timeout=0.05)
        return ok, time.monotonic() - started

    ok, waited = asyncio.run(scenario())
    assert ok is False and waited >= 0.05


def test_signal_idle_timeout_restarts_with_each_progress():
    async def scenario():
        signal, progress = Signal(), {"at": time.monotonic()}

        async def keep_progressing():
            for _ in range(4):
                await asyncio.sleep(0.05)
                progress["at"] = time.monotonic()
                signal.notify()

        feeder = asyncio.ensure_future(keep_progressing())
        started = time.monotonic()
        ok = await signal.wait_until(lambda: False, timeout=0.12, idle_since=lambda: progress["at"])
        await feeder
        return ok, time.monotonic() - started

    ok, waited = asyncio.run(scenario())
    assert ok is False
    assert waited >= 0.2 + 0.12 - 0.02        # four steps of progress, then the idle timeout


# -------------------------------------------------------------- EntryQueue

def test_entry_queue_take_stops_after_a_marker_and_put_back_restores_the_order():
    queue = EntryQueue()
    entries = [chunk("a"), (ITEM, 1), (END_EPOCH, "feed", 0), chunk("b"), (END_FEED,)]
    for entry in entries:
        queue.put(entry)
    first = queue.take(4)
    assert first == entries[:3]
    queue.put_back(first)
    assert queue.take(10) == entries[:3] and queue.take(10) == entries[3:]
    assert queue.unfinished == 5


def test_entry_queue_drop_data_keeps_markers_in_order():
    queue = EntryQueue()
    for entry in [chunk("a"), (END_EPOCH, "f", 0), (ITEM, 1), (END_FEED,)]:
        queue.put(entry)
    assert queue.drop_data() == [chunk("a"), (ITEM, 1)]
    assert queue.take(10) == [(END_EPOCH, "f", 0)]
    assert queue.take(10) == [(END_FEED,)]


def test_entry_queue_task_done_more_than_put_raises_value_error():
    queue = EntryQueue()
    queue.put((ITEM, 1))
    queue.task_done("q")
    with pytest.raises(ValueError, match="too many times on queue 'q'"):
        queue.task_done("q")


# --------------------------------------------------------------- ByteBound

def test_byte_bound_counts_each_chunk_once_until_discharged():
    bound = ByteBound(250)
    assert bound.has_room(1000)              # a queue that holds nothing takes anything
    bound.charge("a", 100)
    bound.charge("a", 100)                   # counted once
    bound.charge("b", 100)
    assert bound.bytes == 200
    assert bound.has_room(50) and not bound.has_room(51)
    assert bound.discharge("a") and not bound.discharge("a")
    assert bound.bytes == 100 and bound.has_room(150)


# ------------------------------------------------------------------ Leases

def test_leases_give_back_what_a_reader_did_not_acknowledge_in_order():
    leases = Leases()
    taken = [chunk("a"), (ITEM, 1), chunk("b"), (END_EPOCH, "f", 0)]
    leases.lend("r1", taken)
    leases.lend("r2", [chunk("c")])
    assert leases.settle("a") == chunk("a")
    assert leases.settle_items("r1", 1) == 1
    assert leases.end("r1") == [chunk("b"), (END_EPOCH, "f", 0)]
    assert leases.ended("r1") and not leases.ended("r2")
    assert leases.holding("r2") == [chunk("c")]
    assert leases.settle("b") is None        # given back: no reader holds it any more


def test_leases_settle_items_takes_the_oldest_items_and_markers_only():
    leases = Leases()
    leases.lend("r", [(ITEM, 1), chunk("a"), (END_EPOCH, "f", 0), (ITEM, 2)])
    assert leases.settle_items("r", 2) == 2
    assert leases.holding("r") == [chunk("a"), (ITEM, 2)]
    assert leases.settle_items("other", 3) == 0


def test_anonymous_reader_never_ends():
    leases = Leases()
    leases.lend(None, [chunk("a")])
    assert not leases.ended(None)
    assert leases.settle("a") == chunk("a")


# ----------------------------------------------------- rewriting entries

def test_skip_rows_leaves_the_rows_handed_out_behind():
    plain = chunk("a", rows=10, box=["ref"])
    rest = skip_rows(plain, 4)
    assert rest[2] == ["ref", 4, 10] and rest[3] == 6 and rest[6] == plain[6]
    stored = chunk("b", rows=10, box=["block", 100, 110])
    assert skip_rows(stored, 3)[2] == ["block", 103, 110]
    assert skip_rows(skip_rows(plain, 4), 2)[2] == ["ref", 6, 10]
    assert skip_rows(plain, 0) is plain
    run = chunk("c", rows=12, box=[["b0", "b1"], [0, 4], [5, 11]])     # a StoredRun of 5 + 7 rows
    assert skip_rows(run, 6)[2:4] == ([["b1"], [5], [11]], 6)


def test_with_box_reads_a_retried_copy_from_where_the_entry_was():
    partly_read = skip_rows(chunk("a", rows=10, box=["first"]), 4)
    assert with_box(partly_read, ["retry"], 10)[2:4] == (["retry", 4, 10], 6)
    assert with_box(chunk("a", rows=10, box=["first"]), ["retry"], 10)[2:4] == (["retry"], 10)


# ------------------------------------------------------------- ChunkLedger

def test_ledger_follows_a_key_from_queued_to_done_and_summarizes():
    ledger = ChunkLedger()
    for key, rows in (("a", 10), ("b", 5), ("c", 7)):
        ledger.queued(key, rows)
    assert ledger.fed_rows == 22
    ledger.taken("a")
    ledger.done("a")
    ledger.skipped("b")
    assert not ledger.settled(["a", "b", "c"]) and ledger.unread(["a", "b", "c"]) == ["c"]
    assert ledger.pending_rows(["a", "b", "c"]) == 7
    ledger.taken("c")
    ledger.lost("c")
    assert ledger.fed_rows == 15
    assert ledger.settled(["a", "b", "c"])
    assert ledger.summary(["a", "b", "c"]) == {"consumed": 10, "skipped": 5, "lost": ["c"]}


def test_ledger_done_drops_a_waiting_replacement_and_skipped_counts_new_keys():
    ledger = ChunkLedger()
    ledger.queued("a", 3)
    ledger.taken("a")
    ledger.replacement["a"] = ["retry"]
    ledger.done("a")
    assert "a" not in ledger.replacement
    ledger.skipped("late", 8)
    assert ledger.state("late") == "skipped" and ledger.rows("late") == 8 and ledger.skipped_rows == 8


# --------------------------------------------------------------- NodeState

def test_node_state_keeps_the_first_error_and_raises_it_as_node_error():
    node = NodeState("worker:1")
    node.fail("first", "tb")
    node.fail("second")
    with pytest.raises(NodeError) as info:
        node.raise_if_failed()
    assert (info.value.job_name, info.value.task_index, info.value.message) == ("worker", 1, "first")
    assert node.state == "failed" and node.over


def test_node_state_finished_map_fun_refuses_more_rows_unless_terminated():
    node = NodeState("chief:0")
    node.finish()
    assert node.state == "stopped"
    with pytest.raises(FeedError, match="returned while 5 more rows"):
        node.raise_if_stopped(5)
    node.terminate()
    node.raise_if_stopped(5)
    node.close()
    with pytest.raises(ClusterStoppedError, match="chief:0"):
        node.raise_if_closed_for_reader()


# ------------------------------------------------- feeds and inference

def test_feed_verdicts_cancel_once_and_remember_the_first_timeout():
    verdicts = FeedVerdicts("worker:0")
    verdicts.cancel("f1", "node chief:0 failed")
    verdicts.cancel("f1", "later reason")
    with pytest.raises(FeedError, match="feed f1 to node worker:0 was cancelled: node chief:0 failed"):
        verdicts.raise_if_cancelled("f1")
    verdicts.raise_if_cancelled("f2")
    assert isinstance(verdicts.timed_out("f2", "first"), FeedTimeoutError)
    verdicts.timed_out("f2", "second")
    assert verdicts.timeout_of("f2") == "first" and verdicts.timeout_of("f1") is None


def test_inference_results_come_back_in_chunk_order_once():
    results = InferenceResults()
    results.put(("f", 3), 1, ["b"])
    results.put(("f", 3), 0, ["a"])
    assert results.count(("f", 3)) == 2
    assert results.pop(("f", 3), 2) == [["a"], ["b"]]
    assert results.count(("f", 3)) == 0


def test_leases_count_acknowledgements_until_the_reader_ended():
    leases = Leases()
    leases.heard("r")
    leases.heard("r")
    leases.heard(None)                       # the anonymous reader is not counted
    assert leases.heard_from("r") == 2 and leases.heard_from(None) == 0
    leases.end("r")
    leases.heard("r")                        # late: after the give-back
    assert leases.heard_from("r") == 0
