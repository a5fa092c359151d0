"""The feed queues of one TF node: a Ray actor holding chunk refs, not rows.

One ``_NodeQueues`` actor per TF node holds all of the node's named queues
(``'input'``, ``'output'``, ``'error'`` and any the user adds), the node's
state (``running``, ``terminating``, ``stopped``, ``failed``), its key/value
store (the ``mgr.get``/``mgr.set`` of the documented API), its first error,
per-key consumption records and routed inference results.

Queue entries are tuples:

* ``(ITEM, value)``: a plain item, put by ``mgr.get_queue(name).put(value)``;
* ``(CHUNK, key, box, num_rows, tag, last, nbytes)``: a chunk in the object store;
  ``box`` is ``[ref]``, or ``[ref, start, stop]`` for rows of a stored block
  (see :mod:`raytfnode.stored`).
  ``key`` identifies the chunk across retries, ``tag`` names the inference
  partition the chunk belongs to (``None`` in training) and ``last`` marks the
  partition's last chunk;
* ``(END_EPOCH, feed_id, epoch)`` and ``(END_FEED,)``: markers.

Queues are bounded in bytes: a producer's ``put`` waits until its chunk fits
under ``max_bytes`` (a queue that holds nothing always takes one chunk, so a
chunk larger than the bound still moves). A chunk counts from its ``put`` until
its reader has read it (``ack`` or ``release``), not only while it waits in the
queue, so what readers took ahead of use is inside the bound too. A chunk key
is delivered once: a retried producer that puts a key again is told
``'duplicate'`` when the key was consumed, and replaces the ref when the first
copy was not read yet (its owner may be dead). The actor is async and takes no
CPU.
"""
import asyncio
import collections
import logging
import time

from ray.exceptions import RayActorError

from .errors import ClusterStoppedError, FeedError, FeedTimeoutError, NodeError, actor_death_message
from .guard import guarded_actor

logger = logging.getLogger(__name__)

ITEM, CHUNK, END_EPOCH, END_FEED = "item", "chunk", "end_epoch", "end_feed"
MARKERS = (END_EPOCH, END_FEED)

RUNNING, TERMINATING, STOPPED, FAILED = "running", "terminating", "stopped", "failed"

NODE_WATCH_SECONDS = 60.0   # how long one ``join`` call on the watched node waits before it is asked again


class _Queue:
    """One named queue: entries, the bytes it holds, and the stdlib-style unfinished-task count.

    ``bytes`` counts the chunks waiting in ``entries`` and those taken but not read yet
    (``held``: chunk key -> entry).
    """

    def __init__(self):
        self.entries = collections.deque()
        self.bytes = 0
        self.held = {}
        self.unfinished = 0

    def hold(self, entry):
        """A chunk entry leaves the queue for a reader: its bytes stay counted until :meth:`release`."""
        self.held[entry[1]] = entry

    def release(self, key):
        """The chunk ``key`` was read (or dropped): its entry, or ``None`` when it was not held."""
        entry = self.held.pop(key, None)
        if entry is not None:
            self.bytes -= entry[6]
        return entry

    def has_room(self, max_bytes, nbytes=0):
        """Whether ``nbytes`` more fit under ``max_bytes`` (a queue that holds nothing takes anything)."""
        return self.bytes + nbytes <= max_bytes or self.bytes == 0


class _NodeQueues:
    """Actor body; use it through :class:`raytfnode.manager.TFManager` and :class:`raytfnode.datafeed.DataFeed`."""

    def __init__(self, node_name, queue_names, max_bytes=64 << 20, coordinator=None):
        self.node_name = node_name
        self.max_bytes = max_bytes
        self.queues = {name: _Queue() for name in queue_names}
        self.kv = {"state": RUNNING}
        self.error = None            # (message, remote traceback) of the node's first error
        self.closed = False          # the cluster was shut down
        self.terminated = False      # DataFeed.terminate() was called: later chunks are skipped
        self.finished = False        # the node's map_fun returned
        self.coordinator = coordinator
        self.key_state = {}          # chunk key -> 'queued' | 'taken' | 'done' | 'lost' | 'skipped'
        self.key_rows = {}           # chunk key -> rows
        self.replacement = {}        # chunk key -> [ref] from a retried producer, while the first copy is taken
        self.consumed_rows = 0
        self.consumed_chunks = 0
        self.skipped_rows = 0
        self.fed_rows = 0
        self.reads = 0               # calls by readers (DataFeeds) to take entries: has map_fun read yet?
        self.last_progress = time.monotonic()
        self.results = {}            # tag -> {seq: values}
        self.timeouts = {}           # feed id -> message of the first FeedTimeoutError of that feed
        self.cancelled = {}          # feed id -> why the driver gave that feed up
        self.changed = asyncio.Condition()
        self._watcher = None         # the task watching the node's actor (watch_node)

    # ---------------------------------------------------------------- helpers

    def _queue(self, name):
        try:
            return self.queues[name]
        except KeyError:
            raise KeyError("node {} has no queue {!r}; its queues are {} (add it to TFCluster.run(queues=...))".format(
                self.node_name, name, sorted(self.queues))) from None

    async def _notify(self):
        async with self.changed:
            self.changed.notify_all()

    def _raise_if_failed(self):
        if self.error is not None:
            job_name, task_index = self.node_name.rsplit(":", 1)
            raise NodeError(job_name, int(task_index), self.error[0], self.error[1])
        if self.closed:
            raise ClusterStoppedError("the cluster of node {} was shut down".format(self.node_name))

    async def _wait(self, predicate, timeout):
        """Waits until ``predicate()`` is true; returns False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        async with self.changed:
            while not predicate():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    return predicate()
        return True

    # ------------------------------------------------------- state and errors

    def ping(self):
        """The node's name; fails once the cluster was shut down."""
        self._raise_if_closed_for_reader()
        return self.node_name

    async def node_finished(self):
        """The node's ``map_fun`` returned normally: producers stop waiting on it."""
        self.finished = True
        if self.error is None:
            self.kv["state"] = STOPPED
        await self._notify()

    async def set_error(self, message, remote_traceback=None):
        """Records the node's first error; every waiting producer fails with it."""
        if self.error is None:
            self.error = (message, remote_traceback)
        self.kv["state"] = FAILED
        await self._notify()

    def get_error(self):
        return self.error

    def watch_node(self, node):
        """Watches the node's actor: if it dies, the node's error is recorded and every waiting producer fails.

        The driver watches its nodes only while it runs a feed itself; producers of a
        lazy feed (an action on ``inference()``'s RDD, a stream) would otherwise wait
        ``feed_timeout`` on a node that is gone.
        """
        self._watcher = asyncio.get_running_loop().create_task(self._watch_node(node))

    async def _watch_node(self, node):
        while not (self.closed or self.finished or self.error is not None):
            try:
                outcome = await node.join.remote(NODE_WATCH_SECONDS)
            except RayActorError as exc:
                if not self.closed:
                    await self.set_error(actor_death_message(exc))
                return
            except Exception:  # noqa: BLE001  (any other failure: the driver's own watch remains)
                logger.exception("watching node %s failed", self.node_name)
                return
            if outcome is not None:   # map_fun ended: the node itself recorded how
                return

    def _timed_out(self, feed_id, message):
        """Records a producer's feed timeout, so the driver fails the feed at once (Spark would retry)."""
        self.timeouts.setdefault(feed_id, message)
        return FeedTimeoutError(message)

    async def cancel_feed(self, feed_id, reason):
        """The driver gave feed ``feed_id`` up (a node failed): its producers waiting here stop now."""
        self.cancelled.setdefault(feed_id, reason)
        await self._notify()

    def _raise_if_cancelled(self, feed_id):
        if feed_id in self.cancelled:
            raise FeedError("feed {} to node {} was cancelled: {}".format(
                feed_id, self.node_name, self.cancelled[feed_id]))

    def feed_timeout(self, feed_id):
        """The message of the first feed timeout of feed ``feed_id`` on this node, or ``None``."""
        return self.timeouts.get(feed_id)

    async def close(self):
        """Marks the cluster shut down: later calls by producers and DataFeeds fail clearly."""
        self.closed = True
        await self._notify()

    async def terminate(self, name):
        """Stops feeding this node: drops queued chunks of ``name`` and skips chunks put later."""
        self.kv["state"] = TERMINATING
        self.terminated = True
        queue = self._queue(name)
        kept = collections.deque()
        dropped_rows = 0
        for entry in queue.entries:
            if entry[0] == CHUNK:
                self.key_state[entry[1]] = "skipped"
                dropped_rows += entry[3]
                queue.unfinished -= 1
            elif entry[0] == ITEM:
                dropped_rows += 1
                queue.unfinished -= 1
            else:
                kept.append(entry)
        queue.entries = kept
        queue.bytes = sum(entry[6] for entry in queue.held.values())
        self.skipped_rows += dropped_rows
        if self.coordinator is not None:
            self.coordinator.terminate.remote(self.node_name)
        await self._notify()
        return dropped_rows

    def stats(self):
        """Counters for progress reports: rows fed, consumed and skipped, bytes queued, state."""
        return {
            "node": self.node_name,
            "state": self.kv.get("state"),
            "fed_rows": self.fed_rows,
            "consumed_rows": self.consumed_rows,
            "consumed_chunks": self.consumed_chunks,
            "skipped_rows": self.skipped_rows,
            "reads": self.reads,
            "queued_bytes": {name: q.bytes for name, q in self.queues.items()},
            "queued_entries": {name: len(q.entries) for name, q in self.queues.items()},
            "error": self.error,
        }

    # ---------------------------------------------------------- key / value

    def kv_get(self, key):
        return self.kv.get(key)

    async def kv_set(self, key, value):
        self.kv[key] = value
        await self._notify()

    # ------------------------------------------------- stdlib-style queue API

    async def put_item(self, name, item, block=True, timeout=None):
        """Puts one plain item (the ``TFManager`` queue path). Returns False when full and not blocking."""
        self._raise_if_failed()
        queue = self._queue(name)
        if not block and not queue.has_room(self.max_bytes):
            return False
        if block and not await self._wait(lambda: queue.has_room(self.max_bytes) or self.closed, timeout):
            return False
        queue.entries.append((ITEM, item) if item is not None else (END_FEED,))
        queue.unfinished += 1
        await self._notify()
        return True

    async def get_item(self, name, block=True, timeout=None):
        """Takes one entry: ``(True, kind, value)``, or ``(False, None, None)`` when empty.

        ``kind`` is ``ITEM`` (``value`` is the item), ``END_FEED``, or ``CHUNK`` /
        ``END_EPOCH`` (``value`` is the whole entry).
        """
        queue = self._queue(name)
        self.reads += 1
        if not queue.entries:
            if not block or not await self._wait(lambda: bool(queue.entries) or self.closed, timeout):
                return False, None, None
            self._raise_if_closed_for_reader()
        entry = queue.entries.popleft()
        await self._notify()
        if entry[0] == ITEM:
            return True, ITEM, entry[1]
        if entry[0] == CHUNK:
            queue.hold(entry)
            self.key_state[entry[1]] = "taken"
        return True, entry[0], entry

    async def task_done(self, name, count=1):
        queue = self._queue(name)
        if queue.unfinished - count < 0:
            raise ValueError("task_done() called too many times on queue {!r}".format(name))
        queue.unfinished -= count
        await self._notify()

    async def join(self, name, timeout=None):
        queue = self._queue(name)
        return await self._wait(lambda: queue.unfinished == 0, timeout)

    def qsize(self, name):
        return len(self._queue(name).entries)

    # ------------------------------------------------------------ chunk path

    async def put_chunk(self, name, key, ref_box, num_rows, nbytes, tag=None, last=False, timeout=None):
        """Queues a chunk ref (``ref_box`` is ``[ref]`` so Ray passes the ref, not the value).

        Waits while the queue holds more than ``max_bytes``. Returns ``'queued'``,
        ``'replaced'``, ``'duplicate'`` (already consumed) or ``'skipped'`` (the node
        is terminating). Raises ``NodeError`` when the node failed,
        ``FeedTimeoutError`` after ``timeout`` s without room, ``FeedError`` when
        the node's ``map_fun`` already returned.
        """
        self._raise_if_failed()
        self._raise_if_cancelled(key[0])
        state = self.key_state.get(key)
        if state == "done" or state == "skipped":
            return "duplicate"
        if state == "queued":
            queue = self._queue(name)
            for i, entry in enumerate(queue.entries):
                if entry[0] == CHUNK and entry[1] == key:
                    queue.entries[i] = entry[:2] + (ref_box,) + entry[3:]
                    break
            return "replaced"
        if state == "taken":
            self.replacement[key] = ref_box
            return "replaced"
        if self.terminated:
            self.key_state[key] = "skipped"
            self.key_rows[key] = num_rows   # wait_consumed reports these rows as skipped
            self.skipped_rows += num_rows
            return "skipped"
        self._raise_if_stopped(num_rows)
        queue = self._queue(name)
        ok = await self._wait(
            lambda: queue.has_room(self.max_bytes, nbytes) or self.error is not None or key[0] in self.cancelled
            or self.closed or self.terminated or self.finished or self.key_state.get(key) != state, timeout)
        self._raise_if_failed()
        self._raise_if_cancelled(key[0])
        if not ok:
            raise self._timed_out(key[0],
                "node {} took no data for {:.0f} s (feed_timeout): its queue {!r} stayed full with {} "
                "bytes; its map_fun is not reading (stuck, or waiting on another node)".format(
                    self.node_name, timeout, name, queue.bytes))
        if self.terminated:
            self.key_state[key] = "skipped"
            self.key_rows[key] = num_rows   # wait_consumed reports these rows as skipped
            self.skipped_rows += num_rows
            return "skipped"
        self._raise_if_stopped(num_rows)
        if self.key_state.get(key) != state:
            # another producer of this chunk (a retried task) put it while this call waited for room:
            # decide again (duplicate / replace), or the chunk would be queued twice
            return await self.put_chunk(name, key, ref_box, num_rows, nbytes, tag, last, timeout)
        queue.entries.append((CHUNK, key, ref_box, num_rows, tag, last, nbytes))
        queue.bytes += nbytes
        queue.unfinished += 1
        self.key_state[key] = "queued"
        self.key_rows[key] = num_rows
        self.fed_rows += num_rows
        await self._notify()
        return "queued" if state is None else "replaced"

    def _raise_if_stopped(self, num_rows):
        if self.finished and not self.terminated:
            raise FeedError(
                "node {}'s map_fun returned while {} more rows were being fed to it; read the whole feed "
                "(until DataFeed.should_stop()) or call DataFeed.terminate() before returning".format(
                    self.node_name, num_rows))

    async def put_marker(self, name, marker):
        """Queues an end-of-epoch or end-of-feed marker (never blocked by the byte bound)."""
        queue = self._queue(name)
        queue.entries.append(marker)
        queue.unfinished += 1
        await self._notify()

    async def take(self, name, max_entries=4, timeout=1.0):
        """Takes up to ``max_entries`` entries, stopping after a marker; waits up to ``timeout`` for the first.

        Chunk entries become ``taken``: their reader must ``ack`` them after
        reading them (or ``report_lost`` when the object is gone).
        """
        self._raise_if_closed_for_reader()
        self.reads += 1
        queue = self._queue(name)
        if not queue.entries:
            await self._wait(lambda: bool(queue.entries) or self.closed, timeout)
            self._raise_if_closed_for_reader()
        out = []
        while queue.entries and len(out) < max_entries:
            entry = queue.entries.popleft()
            if entry[0] == CHUNK:
                queue.hold(entry)
                self.key_state[entry[1]] = "taken"
            out.append(entry)
            if entry[0] in MARKERS:
                break
        if out:
            await self._notify()
        return out

    def _raise_if_closed_for_reader(self):
        if self.closed:
            raise ClusterStoppedError(
                "node {}'s cluster was shut down; a DataFeed cannot read from it".format(self.node_name))

    async def ack(self, name, keys, num_rows, finish=True):
        """The reader has read these chunks (``num_rows`` rows in all): they count as consumed.

        ``finish=False`` leaves the entries unfinished for a later ``task_done``.
        """
        queue = self._queue(name)
        for key in keys:
            self.key_state[key] = "done"
            self.replacement.pop(key, None)
            queue.release(key)
        if finish:
            queue.unfinished -= len(keys)
        self.consumed_rows += num_rows
        self.consumed_chunks += len(keys)
        self.last_progress = time.monotonic()
        await self._notify()

    async def release(self, name, keys):
        """The reader has read these chunks but answers them later (inference): their bytes leave the bound."""
        queue = self._queue(name)
        for key in keys:
            queue.release(key)
        await self._notify()

    async def ack_items(self, name, count):
        """The reader consumed ``count`` plain items or markers."""
        queue = self._queue(name)
        queue.unfinished -= count
        self.last_progress = time.monotonic()
        await self._notify()

    async def skip(self, name, keys):
        """Chunks a reader took but drops (``terminate``): they count as skipped. Returns their rows."""
        queue = self._queue(name)
        rows = 0
        for key in keys:
            queue.release(key)
            if self.key_state.get(key) == "taken":
                self.key_state[key] = "skipped"
                rows += self.key_rows.get(key, 0)
                queue.unfinished -= 1
        self.skipped_rows += rows
        await self._notify()
        return rows

    async def report_lost(self, name, key):
        """The reader could not fetch chunk ``key`` (its producer died): requeue a replacement when there is one."""
        queue = self._queue(name)
        taken = queue.release(key)
        box = self.replacement.pop(key, None)
        if box is not None:
            entry = (CHUNK, key, box, self.key_rows[key], None, False, 0) if taken is None else \
                taken[:2] + (box,) + taken[3:]
            queue.entries.appendleft(entry)
            queue.bytes += entry[6]
            self.key_state[key] = "queued"
        else:
            self.key_state[key] = "lost"
            self.fed_rows -= self.key_rows.get(key, 0)
            queue.unfinished -= 1
        await self._notify()

    async def wait_consumed(self, keys, timeout):
        """Waits until every chunk in ``keys`` was consumed, skipped or lost (to be re-sent).

        Returns ``{'consumed': rows, 'skipped': rows, 'lost': keys}``. ``timeout``
        bounds the time without any progress on this node.
        """
        keys = list(keys)

        def settled():
            return all(self.key_state.get(k) in ("done", "skipped", "lost") for k in keys) \
                or self.error is not None or self.closed or self.finished or keys[0][0] in self.cancelled

        while True:
            idle_since = self.last_progress
            if await self._wait(settled, min(timeout, 5.0) if timeout else 5.0):
                break
            if timeout and time.monotonic() - max(idle_since, self.last_progress) >= timeout:
                pending = sum(self.key_rows.get(k, 0) for k in keys if self.key_state.get(k) not in ("done", "skipped"))
                raise self._timed_out(keys[0][0],
                    "node {} consumed nothing for {:.0f} s (feed_timeout) with {} rows of this partition still "
                    "unread; its map_fun is stalled (stuck, or waiting on another node)".format(
                        self.node_name, timeout, pending))
        self._raise_if_failed()
        self._raise_if_cancelled(keys[0][0])
        unread = [k for k in keys if self.key_state.get(k) in ("queued", "taken")]
        if unread:
            raise FeedError(
                "node {}'s map_fun returned with {} rows of this partition unread; read the whole feed "
                "(until DataFeed.should_stop()) or call DataFeed.terminate() before returning".format(
                    self.node_name, sum(self.key_rows.get(k, 0) for k in unread)))
        summary = {"consumed": 0, "skipped": 0, "lost": []}
        for k in keys:
            state = self.key_state.get(k)
            if state == "done":
                summary["consumed"] += self.key_rows.get(k, 0)
            elif state == "skipped":
                summary["skipped"] += self.key_rows.get(k, 0)
            else:
                summary["lost"].append(k)
        return summary

    # -------------------------------------------------------- inference path

    async def put_results(self, name, key, tag, seq, values, num_rows):
        """Results for chunk ``seq`` of inference partition ``tag``; also acknowledges the chunk."""
        self.results.setdefault(tag, {})[seq] = values
        if self.key_state.get(key) != "done":
            await self.ack(name, [key], num_rows)
        else:
            await self._notify()

    async def take_results(self, tag, num_chunks, timeout):
        """Waits for the results of chunks ``0..num_chunks-1`` of ``tag`` and returns them in order."""
        def ready():
            got = self.results.get(tag, {})
            return len(got) >= num_chunks or self.error is not None or self.closed \
                or self.finished or self.terminated or tag[0] in self.cancelled

        while True:
            idle_since = self.last_progress
            if await self._wait(ready, min(timeout, 5.0) if timeout else 5.0):
                break
            if timeout and time.monotonic() - max(idle_since, self.last_progress) >= timeout:
                raise self._timed_out(tag[0],
                    "node {} returned no inference results for {:.0f} s (feed_timeout); {} of {} chunks of "
                    "partition {} have results".format(self.node_name, timeout, len(self.results.get(tag, {})),
                                                       num_chunks, tag[-1]))
        self._raise_if_failed()
        self._raise_if_cancelled(tag[0])
        got = self.results.get(tag, {})
        if len(got) < num_chunks:
            raise FeedError("node {}'s map_fun {} before returning results for partition {} ({} of {} chunks "
                            "answered); call DataFeed.batch_results for every batch it reads".format(
                                self.node_name, "terminated" if self.terminated else "returned", tag[-1],
                                len(got), num_chunks))
        self.results.pop(tag, None)
        return [got[i] for i in range(num_chunks)]


#: the queue actor class: ``NodeQueuesActor.options(...).remote(secret, node_name, queue_names, ...)``,
#: called through a :class:`raytfnode.guard.GuardedHandle` that holds the secret
NodeQueuesActor = guarded_actor(_NodeQueues, num_cpus=0, max_concurrency=1000)
"""The Ray actor class; created by :class:`raytfnode.manager.TFManager` and the cluster."""
