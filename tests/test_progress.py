"""The progress display of a feed, driven by real queue actors on the session's Ray.

Rows are put into two nodes' real queue actors and read back (take + ack), as a
feed and its readers do; FeedProgress polls the actors and writes to an io
stream: plain lines off a terminal, a tqdm bar redrawn in place on one.
"""
import io
import re

import numpy as np
import pytest
import ray

from raytfnode.feed_queue import NodeQueuesActor
from raytfnode.guard import GuardedHandle, new_secret, plain
from raytfnode.progress import FeedProgress, plain_line, progress_enabled

NODES = ("chief:0", "worker:0")


class TerminalStream(io.StringIO):
    """An in-memory stream that says it is a terminal, so the display draws its bar into it."""

    def isatty(self):
        return True


@pytest.fixture
def queues(ray_cluster):
    secret = new_secret()
    actors = [GuardedHandle(NodeQueuesActor.remote(secret, name, ["input"], 64 << 20, None), secret)
              for name in NODES]
    yield actors
    for actor in actors:
        ray.kill(plain(actor))


def feed_and_read(queues, rows_per_node, feed_id, serial):
    """Puts one chunk of ``rows_per_node`` rows into every node's queue and reads it, like a node."""
    for actor in queues:
        key = (feed_id, serial, 0)
        ray.get(actor.put_chunk.remote("input", key, [ray.put(np.zeros(rows_per_node))], rows_per_node,
                                       8 * rows_per_node))
        entries = ray.get(actor.take.remote("input"))
        assert [entry[1] for entry in entries] == [key]
        ray.get(actor.ack.remote("input", [key], rows_per_node))


def test_training_lines_show_epoch_totals_and_eta_once_the_epoch_size_is_known(queues):
    feed_and_read(queues, 15, "earlier", 0)        # an earlier feed's rows are not this feed's
    out = io.StringIO()
    progress = FeedProgress(queues, NODES, "train", interval=0, log_seconds=0, stream=out, num_epochs=4)
    progress.start_epoch(0)
    feed_and_read(queues, 50, "feed", 1)
    progress.update()
    progress.end_epoch(100)
    progress.start_epoch(1)
    feed_and_read(queues, 25, "feed", 2)
    progress.update()
    progress.close()
    first, second, last = out.getvalue().splitlines()
    assert first.startswith("raytfnode train: epoch 1/4, 100 rows consumed, 100 fed, ")
    assert "ETA" not in first                       # the total is not known during the first epoch
    assert second.startswith("raytfnode train: epoch 2/4, 150 of 400 rows consumed (38%), 150 fed, ")
    assert re.search(r" rows/s, \d\d:\d\d elapsed, ETA \d\d:\d\d$", second), second
    assert last.startswith("raytfnode train: epoch 2/4, 150 of 400 rows consumed (38%)")


def test_terminal_gets_one_bar_redrawn_in_place(queues):
    out = TerminalStream()
    progress = FeedProgress(queues, NODES, "train", interval=0, stream=out, num_epochs=2)
    progress.start_epoch(0)
    feed_and_read(queues, 40, "feed", 1)
    progress.update()
    progress.end_epoch(80)
    progress.start_epoch(1)
    feed_and_read(queues, 20, "feed", 2)
    progress.update()
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1                    # one line, redrawn with \r, ended once
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith("raytfnode train epoch 2/2:  75%"), final
    assert "120/160" in final and "fed 120" in final and "rows/s" in final
    assert "raytfnode train epoch 1/2: 80" in text  # the first draw, before the total was known


def test_feed_shorter_than_log_seconds_off_a_terminal_prints_nothing(queues):
    out = io.StringIO()
    progress = FeedProgress(queues, NODES, "inference", interval=0, stream=out, log_seconds=3600)
    feed_and_read(queues, 10, "feed", 1)
    progress.update()
    progress.close()
    assert out.getvalue() == ""


def test_switched_off_shows_nothing(queues):
    out = TerminalStream()
    progress = FeedProgress(queues, NODES, "train", interval=0, log_seconds=0, stream=out, num_epochs=1,
                            enabled=False)
    progress.start_epoch(0)
    feed_and_read(queues, 10, "feed", 1)
    progress.update()
    progress.close()
    assert out.getvalue() == ""


def test_switch_from_argument_then_environment():
    assert progress_enabled(None, {}) is True
    assert progress_enabled(None, {"RAYTFNODE_PROGRESS": "0"}) is False
    assert progress_enabled(True, {"RAYTFNODE_PROGRESS": "0"}) is True
    assert progress_enabled(False, {}) is False


def test_plain_line_for_inference_has_no_epoch_or_eta():
    assert plain_line("inference", 1200, 1500, 4.0) == (
        "raytfnode inference: 1,200 rows consumed, 1,500 fed, 300 rows/s, 00:04 elapsed")
