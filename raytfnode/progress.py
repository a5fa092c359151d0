"""Progress of a feed on the driver: rows fed and consumed per node, and the rate.

On a terminal it is one line redrawn in place; otherwise a log line every
``log_seconds``.
"""
import logging
import sys
import time

import ray

logger = logging.getLogger(__name__)


class FeedProgress:
    """Polls the fed nodes' queue actors and reports their counters."""

    def __init__(self, queue_actors, node_names, description, interval=1.0, log_seconds=10.0, stream=None):
        self.queue_actors = queue_actors
        self.node_names = node_names
        self.description = description
        self.interval = interval
        self.log_seconds = log_seconds
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self.last_poll = 0.0
        self.last_log = self.started
        self.baseline = None
        self.drawn = False
        # the counters before this feed, asked for now but read only when a line is drawn: a short feed
        # that draws nothing waits for no answer
        self._baseline_refs = [q.stats.remote() for q in self.queue_actors]

    def _poll(self):
        try:
            if self.baseline is None:
                self.baseline = [(s["fed_rows"], s["consumed_rows"]) for s in ray.get(self._baseline_refs, timeout=2)]
            stats = ray.get([q.stats.remote() for q in self.queue_actors], timeout=2)
        except Exception:  # noqa: BLE001  (progress must never break feeding)
            return None
        counters = [(s["fed_rows"], s["consumed_rows"]) for s in stats]
        return stats, [(f - bf, c - bc) for (f, c), (bf, bc) in zip(counters, self.baseline)]

    def line(self, per_node):
        elapsed = max(time.monotonic() - self.started, 1e-6)
        total = sum(consumed for _, consumed in per_node)
        nodes = " ".join("{} fed {} consumed {}".format(n, fed, consumed)
                         for n, (fed, consumed) in zip(self.node_names, per_node))
        return "raytfnode {}: {} rows consumed ({:,.0f} rows/s) [{}]".format(
            self.description, total, total / elapsed, nodes)

    def update(self):
        now = time.monotonic()
        if now - self.last_poll < self.interval:
            return
        self.last_poll = now
        polled = self._poll()
        if polled is None:
            return
        text = self.line(polled[1])
        if self.tty:
            self.stream.write("\r" + text[:160].ljust(160))
            self.stream.flush()
            self.drawn = True
        elif now - self.last_log >= self.log_seconds:
            self.last_log = now
            logger.info(text)

    def close(self):
        shown = (self.tty and self.drawn) or time.monotonic() - self.started >= self.log_seconds
        if not shown and not logger.isEnabledFor(logging.DEBUG):
            return
        polled = self._poll()
        if polled is not None:
            text = self.line(polled[1])
            if self.tty and self.drawn:
                self.stream.write("\r" + text[:160].ljust(160) + "\n")
                self.stream.flush()
            elif time.monotonic() - self.started >= self.log_seconds:
                logger.info(text)
            else:
                logger.debug(text)
