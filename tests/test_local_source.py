"""The driver-side feeding job of a list of partitions stops when the cluster cancels it.

When a node fails, the cluster cancels the running feed: the partitions that have
not started must not start, and a running one must stop at its next row instead
of feeding on until the queue actors refuse it. No Ray needed: the job runs any
function over ``(index, rows)`` on driver threads.
"""
import threading


from raytfnode.bridges.local import MAX_CONCURRENT_PARTITIONS, _Job
from raytfnode.errors import FeedError


def test_cancel_stops_the_running_partitions_at_their_next_row_and_starts_no_other():
    started, rows_read = [], []
    running = threading.Barrier(MAX_CONCURRENT_PARTITIONS + 1)
    release = threading.Event()

    def feed(index, rows):
        started.append(index)
        for row in rows:
            rows_read.append((index, row))
            if row == 0:
                running.wait(timeout=60)      # every running partition has read its first row
                release.wait(timeout=60)
        return index

    partitions = [(index, range(3)) for index in range(3 * MAX_CONCURRENT_PARTITIONS)]
    job = _Job(feed, partitions)
    outcome = {}

    def run():
        try:
            outcome["result"] = job()
        except FeedError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    running.wait(timeout=60)
    job.cancel()
    release.set()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert "partition 0: the feed was cancelled" in str(outcome["error"])
    assert sorted(started) == list(range(MAX_CONCURRENT_PARTITIONS))    # no partition started after cancel()
    assert sorted(rows_read) == [(index, 0) for index in range(MAX_CONCURRENT_PARTITIONS)]   # none read on


def test_uncancelled_job_feeds_every_partition_in_order_of_its_index():
    job = _Job(lambda index, rows: (index, list(rows)), [(index, range(index)) for index in range(6)])
    assert job() == [(index, list(range(index))) for index in range(6)]
