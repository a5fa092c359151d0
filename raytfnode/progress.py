"""Progress of a feed on the driver: epoch, rows fed and consumed, rows/s and the time left.

One display per feed (a ``train()`` call, or an ``inference()`` of a Ray Dataset
or lists): the driver polls the fed nodes' queue actors for their counters.

* On a terminal it is a `tqdm <https://tqdm.github.io>`_ bar redrawn in place:
  ``raytfnode train epoch 3/10:  25%|███  | 3680/14720 [00:25<01:15, 146.03 rows/s, fed 3,800]``.
* Anywhere else (a log file, a notebook, ``ray job submit``) it prints a plain line
  every ``log_seconds`` and one when the feed ends:
  ``raytfnode train: epoch 3/10, 3,680 of 14,720 rows consumed (25%), 3,800 fed, 146 rows/s, 00:25 elapsed, ETA 01:15``.

The total, and so the percentage and the ETA, is known once the first epoch
was fed: every epoch feeds the same rows. ``progress=False`` on
``TFCluster.run``/``train`` or ``RAYTFNODE_PROGRESS=0`` turns it off.
"""
import os
import sys
import time

import ray
from tqdm import tqdm

PROGRESS_ENV = "RAYTFNODE_PROGRESS"
_OFF = ("0", "false", "no", "off")


def progress_enabled(progress=None, environ=None):
    """Whether to show progress: ``progress`` when given, else ``RAYTFNODE_PROGRESS`` (on unless ``0``)."""
    if progress is not None:
        return bool(progress)
    environ = os.environ if environ is None else environ
    return environ.get(PROGRESS_ENV, "1").strip().lower() not in _OFF


def plain_line(description, consumed, fed, elapsed, total=None, epoch=None, num_epochs=None, eta_rate=None):
    """The off-terminal progress line, e.g. ``raytfnode train: epoch 3/10, 3,680 of 14,720 rows consumed ...``.

    Args:
      :description: what is fed, ``'train'`` or ``'inference'``.
      :consumed: rows the nodes have read so far in this feed.
      :fed: rows put into the nodes' queues so far.
      :elapsed: seconds since the feed started.
      :total: rows the whole feed will consume, when known; gives the percentage and the ETA.
      :epoch, num_epochs: the current epoch (1-based) and the number of epochs, for training.
      :eta_rate: rows/s to compute the ETA with (default: the average over ``elapsed``).
    """
    parts = []
    if epoch is not None and num_epochs:
        parts.append("epoch {}/{}".format(epoch, num_epochs))
    if total:
        parts.append("{:,} of {:,} rows consumed ({:.0f}%)".format(consumed, total, 100.0 * consumed / total))
    else:
        parts.append("{:,} rows consumed".format(consumed))
    parts.append("{:,} fed".format(fed))
    rate = consumed / elapsed if elapsed > 0 else 0.0
    parts.append("{:,.0f} rows/s".format(rate))
    parts.append("{} elapsed".format(tqdm.format_interval(elapsed)))
    eta_rate = eta_rate or rate
    if total and eta_rate > 0 and consumed < total:
        parts.append("ETA {}".format(tqdm.format_interval((total - consumed) / eta_rate)))
    return "raytfnode {}: {}".format(description, ", ".join(parts))


class FeedProgress:
    """Polls the fed nodes' queue actors and shows their counters for one feed.

    Args:
      :queue_actors: the fed nodes' queue actors.
      :node_names: their names (``chief:0``, ...), in the same order.
      :description: ``'train'``, ``'inference'`` or another word for the feed.
      :interval: seconds between polls of the queue actors.
      :log_seconds: seconds between plain lines off a terminal.
      :stream: where to write (default ``sys.stderr``); a terminal gets the redrawn bar.
      :num_epochs: epochs of a training feed (see :meth:`start_epoch`).
      :enabled: ``False`` shows nothing; ``None`` follows ``RAYTFNODE_PROGRESS``.
      :baseline: the queue actors' ``stats()`` read before this feed's producers started, when the
        caller has them (else they are read here).
    """

    def __init__(self, queue_actors, node_names, description, interval=1.0, log_seconds=10.0, stream=None,
                 num_epochs=None, enabled=None, baseline=None):
        self.queue_actors = list(queue_actors)
        self.node_names = list(node_names)
        self.description = description
        self.interval = interval
        self.log_seconds = log_seconds
        self.stream = stream or sys.stderr
        self.num_epochs = num_epochs
        self.enabled = progress_enabled(enabled)
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = time.monotonic()
        self.last_poll = None
        self.last_line = self.started
        self.lines = 0
        self.epoch = None          # 1-based, while training
        self.epoch_rows = None     # rows per epoch, once the first epoch was fed
        self.size_known_at = None  # (time, consumed rows) when epoch_rows became known: the ETA's rate
                                   # starts there, after start-up (TF building its graph, Spark's first job)
        self.baseline = None
        self.counters = (0, 0)     # (fed, consumed) in this feed, at the last poll
        self.bar = None
        self.closed = False
        # the counters before this feed, read now, before its producers start: an async queue actor may
        # run a later call first, so a baseline read lazily could already hold some of this feed's rows
        self._baseline_refs = []
        if baseline is not None and all(baseline):
            self.baseline = [(s["fed_rows"], s["consumed_rows"]) for s in baseline]
        elif self.enabled:
            self._baseline_refs = [q.stats.remote() for q in self.queue_actors]
            self._read_baseline(timeout=10)

    @property
    def total(self):
        """Rows the whole feed consumes, once known (training, after its first epoch)."""
        if self.epoch_rows is not None and self.num_epochs:
            return self.epoch_rows * self.num_epochs
        return None

    def start_epoch(self, epoch):
        """A training feed starts epoch ``epoch`` (0-based)."""
        self.epoch = epoch + 1

    def end_epoch(self, epoch_rows):
        """A training epoch was fed; ``epoch_rows`` is its size (every epoch feeds the same rows)."""
        if self.epoch_rows is None and epoch_rows:
            self.epoch_rows = int(epoch_rows)
            self.size_known_at = (time.monotonic(), self.counters[1])

    def _read_baseline(self, timeout):
        try:
            stats = ray.get(self._baseline_refs, timeout=timeout)
        except Exception:  # noqa: BLE001  (progress must never break feeding; a later poll tries again)
            return
        self.baseline = [(s["fed_rows"], s["consumed_rows"]) for s in stats]

    def _poll(self):
        try:
            if self.baseline is None:
                self._read_baseline(timeout=2)
                if self.baseline is None:
                    return False
            stats = ray.get([q.stats.remote() for q in self.queue_actors], timeout=2)
        except Exception:  # noqa: BLE001  (progress must never break feeding)
            return False
        fed = sum(s["fed_rows"] - base[0] for s, base in zip(stats, self.baseline))
        consumed = sum(s["consumed_rows"] - base[1] for s, base in zip(stats, self.baseline))
        self.counters = (fed, consumed)
        return True

    def line(self, now=None):
        """The plain progress line for the counters of the last poll."""
        now = now or time.monotonic()
        fed, consumed = self.counters
        eta_rate = None
        if self.size_known_at is not None:
            since, consumed_then = self.size_known_at
            if now > since and consumed > consumed_then:
                eta_rate = (consumed - consumed_then) / (now - since)
        return plain_line(self.description, consumed, fed, now - self.started, self.total, self.epoch,
                          self.num_epochs, eta_rate)

    def _bar_description(self):
        if self.epoch is not None and self.num_epochs:
            return "raytfnode {} epoch {}/{}".format(self.description, self.epoch, self.num_epochs)
        return "raytfnode {}".format(self.description)

    def _draw(self):
        fed, consumed = self.counters
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self._bar_description(), unit=" rows", file=self.stream,
                            dynamic_ncols=True, mininterval=0, leave=True)
            # tqdm's clock is time.time(): the bar's elapsed time starts with the feed
            self.bar.start_t = self.bar.last_print_t = time.time() - (time.monotonic() - self.started)
        self.bar.total = self.total
        self.bar.set_description_str(self._bar_description(), refresh=False)
        self.bar.set_postfix_str("fed {:,}".format(fed), refresh=False)
        if consumed > self.bar.n:
            self.bar.update(consumed - self.bar.n)     # through update(): tqdm's smoothed rate gives the ETA
        self.bar.refresh()

    def _print(self, now):
        self.stream.write(self.line(now) + "\n")
        self.stream.flush()
        self.lines += 1
        self.last_line = now

    def update(self):
        """Polls (at most every ``interval`` s) and redraws the bar, or prints a line every ``log_seconds``."""
        if not self.enabled or self.closed:
            return
        now = time.monotonic()
        if self.last_poll is not None and now - self.last_poll < self.interval:
            return
        self.last_poll = now
        if not self._poll():
            return
        if self.tty:
            self._draw()
        elif now - self.last_line >= self.log_seconds:
            self._print(now)

    def close(self):
        """Shows the final counters: the bar's last state, or a last line if lines were printed or the feed was long."""
        if not self.enabled or self.closed:
            return
        self.closed = True
        now = time.monotonic()
        if self.tty:
            if self.bar is not None:
                if self._poll():
                    self._draw()
                self.bar.close()
            return
        if self.lines or now - self.started >= self.log_seconds:
            if self._poll():
                self._print(now)


__all__ = ["FeedProgress", "PROGRESS_ENV", "plain_line", "progress_enabled"]
