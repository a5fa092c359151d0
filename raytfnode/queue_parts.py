"""The parts of a node's queue actor, one concern each, as plain Python classes.

The queue actor (:mod:`raytfnode.feed_queue`) composes these and keeps its own
methods as thin dispatch; each part can be built and tested without Ray, the
way ``asyncio.Queue`` is one small class per concern:

* :class:`Signal`: the one waiting primitive (wait until a condition holds);
* :class:`EntryQueue`: one named queue's entries and unfinished-task count;
* :class:`ByteBound`: the bytes a queue's chunks hold, from ``put`` until read;
* :class:`Leases`: what each reader took from a queue and has not acknowledged;
* :class:`ChunkLedger`: the exactly-once state of every chunk key, and the row counters;
* :class:`NodeState`: the node's state, first error, shutdown and terminate flags;
* :class:`FeedVerdicts`: feeds the driver cancelled, and feeds that timed out;
* :class:`InferenceResults`: inference results by partition, until their producer takes them.

Entries are the tuples described in :mod:`raytfnode.feed_queue`; the helpers
:func:`skip_rows` and :func:`with_box` rewrite a chunk entry that a reader gives back.
"""
import asyncio
import collections
import time

from .errors import ClusterStoppedError, FeedError, FeedTimeoutError, NodeError
from .stored import box_without

ITEM, CHUNK, END_EPOCH, END_FEED = "item", "chunk", "end_epoch", "end_feed"
MARKERS = (END_EPOCH, END_FEED)

RUNNING, TERMINATING, STOPPED, FAILED = "running", "terminating", "stopped", "failed"

QUEUED, TAKEN, DONE, SKIPPED, LOST = "queued", "taken", "done", "skipped", "lost"


class Signal:
    """Wakes waiters whenever something changed; each waiter re-checks its own condition.

    One per actor: every method that changes state calls :meth:`notify`, and
    every wait (room in a queue, an entry to take, chunks consumed, results)
    is :meth:`wait_until` with its condition.
    """

    def __init__(self):
        self._event = None

    def notify(self):
        """Wakes every current waiter."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait_until(self, predicate, timeout=None, idle_since=None):
        """Waits until ``predicate()`` is true; returns False when ``timeout`` s passed first.

        With ``idle_since`` (a function returning a ``time.monotonic()`` time of
        the last progress), ``timeout`` bounds the time without progress: the
        wait ends ``timeout`` s after the later of the call and that progress.
        """
        start = time.monotonic()
        while not predicate():
            remaining = None
            if timeout is not None:
                since = start if idle_since is None else max(start, idle_since())
                remaining = since + timeout - time.monotonic()
                if remaining <= 0:
                    return False
            if self._event is None:
                self._event = asyncio.Event()
            try:
                await asyncio.wait_for(self._event.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return True


class EntryQueue:
    """One named queue: its entries in order, and the stdlib-style count of unfinished tasks.

    An entry is unfinished from :meth:`put` until its reader finishes it
    (:meth:`finish`, ``task_done``), also while a reader holds it.
    """

    def __init__(self):
        self._entries = collections.deque()
        self.unfinished = 0

    def __len__(self):
        return len(self._entries)

    def put(self, entry):
        self._entries.append(entry)
        self.unfinished += 1

    def get(self):
        """The first entry (the queue must not be empty)."""
        return self._entries.popleft()

    def take(self, max_entries):
        """Up to ``max_entries`` entries from the front, stopping after a marker."""
        out = []
        while self._entries and len(out) < max_entries:
            out.append(self._entries.popleft())
            if out[-1][0] in MARKERS:
                break
        return out

    def put_back(self, entries):
        """Puts entries taken earlier back at the front, in their order."""
        self._entries.extendleft(reversed(entries))

    def replace(self, key, make):
        """Replaces the queued chunk ``key`` by ``make(entry)``; False when it is not queued."""
        for i, entry in enumerate(self._entries):
            if entry[0] == CHUNK and entry[1] == key:
                self._entries[i] = make(entry)
                return True
        return False

    def remove(self, key):
        """Removes the queued chunk ``key``: its entry, or ``None``."""
        for entry in self._entries:
            if entry[0] == CHUNK and entry[1] == key:
                self._entries.remove(entry)
                return entry
        return None

    def drop_data(self):
        """Removes every chunk and item, keeping markers in order; returns what was removed (still unfinished)."""
        kept, dropped = collections.deque(), []
        for entry in self._entries:
            (kept if entry[0] in MARKERS else dropped).append(entry)
        self._entries = kept
        return dropped

    def finish(self, count=1):
        """``count`` entries were processed (unchecked: the reader's acknowledgements)."""
        self.unfinished -= count

    def task_done(self, name, count=1):
        """As ``queue.Queue.task_done``: raises ``ValueError`` when called more times than there were entries."""
        if self.unfinished - count < 0:
            raise ValueError("task_done() called too many times on queue {!r}".format(name))
        self.unfinished -= count


class ByteBound:
    """The bytes of one queue's chunks, counted from their ``put`` until their reader read them.

    A queue that holds nothing always has room, so a chunk larger than
    ``max_bytes`` still moves.
    """

    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.bytes = 0
        self._charged = {}      # chunk key -> bytes counted

    def charge(self, key, nbytes):
        """Counts chunk ``key`` (once; a key counted already stays as it is)."""
        if key not in self._charged:
            self._charged[key] = nbytes
            self.bytes += nbytes

    def discharge(self, key):
        """Chunk ``key`` was read or dropped: its bytes leave the bound. False when it was not counted."""
        nbytes = self._charged.pop(key, None)
        if nbytes is None:
            return False
        self.bytes -= nbytes
        return True

    def has_room(self, nbytes=0):
        """Whether ``nbytes`` more fit under ``max_bytes`` (a queue that holds nothing takes anything)."""
        return self.bytes + nbytes <= self.max_bytes or self.bytes == 0


class Leases:
    """What each reader took from one queue and has not acknowledged yet, in the order it took it.

    A reader is named by an id of its own (a ``DataFeed`` makes one; ``None``
    is the anonymous reader of the older calls). A chunk's lease ends with its
    acknowledgement (:meth:`settle`); items and markers end in the order they
    were taken (:meth:`settle_items`). :meth:`end` ends a reader: its entries
    come back to be queued again, and it takes nothing more. A reader's
    acknowledgements may arrive after its give-back was sent, so they are
    counted (:meth:`heard`): the give-back waits for the count the reader sent.
    """

    def __init__(self):
        self._held = {}          # reader -> [entry, ...] in the order taken
        self._chunk_reader = {}  # chunk key -> reader holding it
        self._ended = set()      # readers that gave their entries back
        self._heard = {}         # reader -> acknowledgements received from it
        self.returning = 0       # give-backs waiting for their reader's acknowledgements

    def heard(self, reader):
        """An acknowledgement from ``reader`` arrived."""
        if reader is not None and reader not in self._ended:
            self._heard[reader] = self._heard.get(reader, 0) + 1

    def heard_from(self, reader):
        return self._heard.get(reader, 0)

    def ended(self, reader):
        """Whether ``reader`` gave its entries back (it may not take any more)."""
        return reader is not None and reader in self._ended

    def lend(self, reader, entries):
        """``reader`` took ``entries``."""
        if not entries:
            return
        self._held.setdefault(reader, []).extend(entries)
        for entry in entries:
            if entry[0] == CHUNK:
                self._chunk_reader[entry[1]] = reader

    def settle(self, key):
        """Chunk ``key`` was acknowledged (read, skipped or lost): its entry, or ``None`` when no reader held it."""
        reader = self._chunk_reader.pop(key, None)
        held = self._held.get(reader, [])
        for i, entry in enumerate(held):
            if entry[0] == CHUNK and entry[1] == key:
                del held[i]
                self._forget_if_empty(reader)
                return entry
        return None

    def settle_items(self, reader, count):
        """``reader`` used its ``count`` oldest items or markers. Returns how many it held."""
        kept, settled = [], 0
        for entry in self._held.get(reader, []):
            if entry[0] != CHUNK and settled < count:
                settled += 1
            else:
                kept.append(entry)
        if settled:
            self._held[reader] = kept
            self._forget_if_empty(reader)
        return settled

    def end(self, reader):
        """Ends ``reader``'s lease: every entry it holds, in the order taken."""
        self._ended.add(reader)
        self._heard.pop(reader, None)
        entries = self._held.pop(reader, [])
        for entry in entries:
            if entry[0] == CHUNK:
                self._chunk_reader.pop(entry[1], None)
        return entries

    def holding(self, reader):
        """The entries ``reader`` holds (a copy)."""
        return list(self._held.get(reader, []))

    def _forget_if_empty(self, reader):
        if not self._held.get(reader, True):
            del self._held[reader]


def skip_rows(entry, rows):
    """The chunk ``entry`` without its first ``rows`` rows (a reader handed those out already).

    The box names the rest (see :func:`raytfnode.stored.chunk_of`); the bytes stay counted.
    """
    if rows <= 0:
        return entry
    return entry[:2] + (box_without(entry[2], rows, entry[3]), entry[3] - rows) + entry[4:]


def with_box(entry, box, chunk_rows):
    """The chunk ``entry`` read from ``box`` (a retried producer's copy of the whole ``chunk_rows`` rows).

    Rows the entry had left behind already stay left behind.
    """
    whole = entry[:2] + (box, chunk_rows) + entry[4:]
    return skip_rows(whole, chunk_rows - entry[3])


class ChunkLedger:
    """Exactly once: the state of every chunk key this node was fed, and the row counters.

    A key is ``queued``, ``taken`` (a reader holds it), ``done`` (read),
    ``skipped`` (``terminate``) or ``lost`` (its object was gone and no retried
    producer had put it again). A retried producer's copy of a taken key waits
    in :attr:`replacement` until it is needed.
    """

    def __init__(self):
        self._state = {}         # chunk key -> state
        self._rows = {}          # chunk key -> rows
        self.replacement = {}    # chunk key -> box of a retried producer's copy, while the first copy is taken
        self.fed_rows = 0
        self.consumed_rows = 0
        self.consumed_chunks = 0
        self.skipped_rows = 0
        self.last_progress = time.monotonic()

    def state(self, key):
        return self._state.get(key)

    def rows(self, key):
        return self._rows.get(key, 0)

    def queued(self, key, rows):
        """A new chunk (or one that was lost) was queued."""
        self._state[key] = QUEUED
        self._rows[key] = rows
        self.fed_rows += rows

    def taken(self, key):
        self._state[key] = TAKEN

    def requeued(self, key):
        """A taken chunk is queued again (given back, or replaced after a loss)."""
        self._state[key] = QUEUED

    def done(self, key):
        """Chunk ``key`` was read."""
        self._state[key] = DONE
        self.replacement.pop(key, None)

    def skipped(self, key, rows=None):
        """Chunk ``key`` is skipped (the node terminated); ``rows`` for a key not queued before."""
        self._state[key] = SKIPPED
        if rows is not None:
            self._rows[key] = rows   # wait_consumed reports these rows as skipped
            self.skipped_rows += rows

    def lost(self, key):
        """Chunk ``key``'s object is gone and no copy came: its rows are to be fed again."""
        self._state[key] = LOST
        self.fed_rows -= self.rows(key)

    def count_consumed(self, rows, chunks):
        self.consumed_rows += rows
        self.consumed_chunks += chunks
        self.progress()

    def progress(self):
        """A reader acknowledged something: the node is alive."""
        self.last_progress = time.monotonic()

    def settled(self, keys):
        """Whether every key was consumed, skipped or lost."""
        return all(self._state.get(k) in (DONE, SKIPPED, LOST) for k in keys)

    def unread(self, keys):
        return [k for k in keys if self._state.get(k) in (QUEUED, TAKEN)]

    def pending_rows(self, keys):
        return sum(self.rows(k) for k in keys if self._state.get(k) not in (DONE, SKIPPED))

    def summary(self, keys):
        """``{'consumed': rows, 'skipped': rows, 'lost': keys}`` of settled ``keys``."""
        out = {"consumed": 0, "skipped": 0, "lost": []}
        for k in keys:
            state = self._state.get(k)
            if state == DONE:
                out["consumed"] += self.rows(k)
            elif state == SKIPPED:
                out["skipped"] += self.rows(k)
            else:
                out["lost"].append(k)
        return out


class NodeState:
    """The node's state (``running``, ``terminating``, ``stopped``, ``failed``), first error and flags.

    Attributes:
      :error: ``(message, remote traceback)`` of the node's first error, or ``None``.
      :closed: the cluster was shut down.
      :terminated: ``DataFeed.terminate()`` was called: later chunks are skipped.
      :finished: the node's ``map_fun`` returned.
      :map_fun_started: the node began ``map_fun`` after importing TensorFlow (:meth:`reading`).
      :clock_from: ``time.monotonic()`` from which a producer's ``feed_timeout`` counts, or ``None``
        while the node imports TensorFlow before ``map_fun`` (it cannot read yet: no clock runs).
    """

    def __init__(self, node_name):
        self.node_name = node_name
        self.state = RUNNING
        self.error = None
        self.closed = False
        self.terminated = False
        self.finished = False
        self.map_fun_started = False
        self.clock_from = time.monotonic()

    def importing(self):
        """The node imports TensorFlow before ``map_fun``: feed timeouts wait for :meth:`reading`."""
        self.clock_from = None

    def reading(self):
        """``map_fun`` runs: feed timeouts count from now."""
        self.map_fun_started = True
        self.clock_from = time.monotonic()

    def idle_since(self, last_progress=float("-inf")):
        """The time a feed timeout counts from: ``now`` while the node imports, else the later of
        ``map_fun``'s start and ``last_progress``."""
        if self.clock_from is None:
            return time.monotonic()
        return max(self.clock_from, last_progress)

    @property
    def over(self):
        """Whether nothing more will be read: the node failed or returned, or the cluster was shut down."""
        return self.error is not None or self.closed or self.finished

    def finish(self):
        self.finished = True
        if self.error is None:
            self.state = STOPPED

    def fail(self, message, remote_traceback=None):
        """Records the node's first error."""
        if self.error is None:
            self.error = (message, remote_traceback)
        self.state = FAILED

    def close(self):
        self.closed = True

    def terminate(self):
        self.state = TERMINATING
        self.terminated = True

    def raise_if_failed(self):
        """Raises ``NodeError`` when the node failed, ``ClusterStoppedError`` when its cluster was shut down."""
        if self.error is not None:
            job_name, task_index = self.node_name.rsplit(":", 1)
            raise NodeError(job_name, int(task_index), self.error[0], self.error[1])
        if self.closed:
            raise ClusterStoppedError("the cluster of node {} was shut down".format(self.node_name))

    def raise_if_closed_for_reader(self):
        if self.closed:
            raise ClusterStoppedError(
                "node {}'s cluster was shut down; a DataFeed cannot read from it".format(self.node_name))

    def raise_if_stopped(self, num_rows):
        """Raises ``FeedError`` when ``map_fun`` returned (without ``terminate``) while rows are still fed."""
        if self.finished and not self.terminated:
            raise FeedError(
                "node {}'s map_fun returned while {} more rows were being fed to it; read the whole feed "
                "(until DataFeed.should_stop()) or call DataFeed.terminate() before returning".format(
                    self.node_name, num_rows))


class FeedVerdicts:
    """Per feed id: whether the driver cancelled it (and why), and its first feed timeout."""

    def __init__(self, node_name):
        self.node_name = node_name
        self._cancelled = {}     # feed id -> why the driver gave that feed up
        self._timeouts = {}      # feed id -> message of the first FeedTimeoutError of that feed

    def cancel(self, feed_id, reason):
        self._cancelled.setdefault(feed_id, reason)

    def cancelled(self, feed_id):
        return feed_id in self._cancelled

    def raise_if_cancelled(self, feed_id):
        if feed_id in self._cancelled:
            raise FeedError("feed {} to node {} was cancelled: {}".format(
                feed_id, self.node_name, self._cancelled[feed_id]))

    def timed_out(self, feed_id, message):
        """Records a producer's feed timeout (the driver fails the feed at once) and returns the error to raise."""
        self._timeouts.setdefault(feed_id, message)
        return FeedTimeoutError(message)

    def timeout_of(self, feed_id):
        """The message of the first feed timeout of ``feed_id``, or ``None``."""
        return self._timeouts.get(feed_id)


class InferenceResults:
    """Inference results of each partition (``tag``), by chunk sequence number, until taken."""

    def __init__(self):
        self._by_tag = {}        # tag -> {seq: values}

    def put(self, tag, seq, values):
        self._by_tag.setdefault(tag, {})[seq] = values

    def count(self, tag):
        return len(self._by_tag.get(tag, {}))

    def pop(self, tag, num_chunks):
        """The results of chunks ``0..num_chunks-1`` of ``tag`` in order (all must be there); forgets ``tag``."""
        got = self._by_tag.pop(tag, {})
        return [got[i] for i in range(num_chunks)]
