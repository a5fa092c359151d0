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
queue, so what readers took ahead of use is inside the bound too.

Readers take ahead of use; what a reader took and has not acknowledged is its
lease (per reader id, see :class:`raytfnode.queue_parts.Leases`). ``give_back``
ends a reader's lease: its entries, markers included, go back to the front of
the queue in the order it took them, so a dropped or replaced ``DataFeed``
strands no rows and swallows no end-of-epoch marker. A chunk key
is delivered once: a retried producer that puts a key again is told
``'duplicate'`` when the key was consumed, and replaces the ref when the first
copy was not read yet (its owner may be dead). The actor is async and takes no
CPU; it composes the one-concern parts of :mod:`raytfnode.queue_parts`, and its
own methods only dispatch to them.
"""
import asyncio
import collections
import logging

import ray
from ray.exceptions import RayActorError

from .epoch_cache import LaneCache, replay_order

from .errors import FeedError, actor_death_message
from .guard import guarded_actor
from .queue_parts import (CHUNK, DONE, END_EPOCH, END_FEED, FAILED, ITEM, MARKERS, QUEUED, RUNNING, SKIPPED,
                          STOPPED, TAKEN, TERMINATING, ByteBound, ChunkLedger, EntryQueue, FeedVerdicts,
                          InferenceResults, Leases, NodeState, Signal, skip_rows, with_box)

# entry kinds and node states are defined with the parts; the queue's users import them from here
__all__ = ["CHUNK", "END_EPOCH", "END_FEED", "FAILED", "ITEM", "MARKERS", "NodeQueuesActor", "RUNNING", "STOPPED",
           "TERMINATING"]

logger = logging.getLogger(__name__)

NODE_WATCH_SECONDS = 60.0   # how long one ``join`` call on the watched node waits before it is asked again
GIVE_BACK_WAIT_SECONDS = 10.0   # how long a give-back waits for acknowledgements its reader sent before it
STATE_KEY = "state"         # the key/value store's key that holds the node's state


class _Lane:
    """One named queue's parts: its entries, its byte bound and its readers' leases."""

    __slots__ = ("queue", "bound", "leases", "cache")

    def __init__(self, max_bytes):
        self.queue = EntryQueue()
        self.bound = ByteBound(max_bytes)
        self.leases = Leases()
        self.cache = None       # the epoch cache (raytfnode.epoch_cache.LaneCache) of the feed training now


class _NodeQueues:
    """Actor body; use it through :class:`raytfnode.manager.TFManager` and :class:`raytfnode.datafeed.DataFeed`."""

    def __init__(self, node_name, queue_names, max_bytes=64 << 20, coordinator=None):
        self.node_name = node_name
        self.lanes = {name: _Lane(max_bytes) for name in queue_names}
        self.node = NodeState(node_name)
        self.values = {}             # the key/value store (mgr.get / mgr.set); 'state' is self.node.state
        self.ledger = ChunkLedger()
        self.feeds = FeedVerdicts(node_name)
        self.results = InferenceResults()
        self.signal = Signal()
        self.coordinator = coordinator
        self.reads = 0               # calls by readers (DataFeeds) to take entries: has map_fun read yet?
        self.put_outcomes = collections.Counter()   # put_chunk answers: a retried producer shows as duplicate/replaced
        self._watcher = None         # the task watching the node's actor (watch_node)

    # ---------------------------------------------------------------- helpers

    def _lane(self, name):
        try:
            return self.lanes[name]
        except KeyError:
            raise KeyError("node {} has no queue {!r}; its queues are {} (add it to TFCluster.run(queues=...))".format(
                self.node_name, name, sorted(self.lanes))) from None

    def _raise_for_feed(self, feed_id):
        self.node.raise_if_failed()
        self.feeds.raise_if_cancelled(feed_id)

    def _feed_over(self, feed_id):
        """Whether a producer of feed ``feed_id`` stops waiting: the node is over or the feed was cancelled."""
        return self.node.over or self.feeds.cancelled(feed_id)

    # ------------------------------------------------------- state and errors

    def ping(self):
        """The node's name; fails once the cluster was shut down."""
        self.node.raise_if_closed_for_reader()
        return self.node_name

    def node_importing(self):
        """The node imports TensorFlow before its ``map_fun``: ``feed_timeout`` does not count meanwhile."""
        self.node.importing()

    def node_reading(self):
        """The node's ``map_fun`` started: ``feed_timeout`` counts from now."""
        self.node.reading()
        self.signal.notify()

    async def wait_map_fun_started(self, timeout):
        """Waits up to ``timeout`` s until the node began ``map_fun`` after importing TensorFlow, or will
        not (it failed, returned or was shut down); returns whether it began.

        The other nodes wait here for the node TensorFlow makes its coordination service leader.
        """
        await self.signal.wait_until(lambda: self.node.map_fun_started or self.node.over, timeout)
        return self.node.map_fun_started

    def node_finished(self):
        """The node's ``map_fun`` returned normally: producers stop waiting on it."""
        self.node.finish()
        self.signal.notify()

    def set_error(self, message, remote_traceback=None):
        """Records the node's first error; every waiting producer fails with it."""
        self.node.fail(message, remote_traceback)
        self.signal.notify()

    def get_error(self):
        return self.node.error

    def watch_node(self, node):
        """Watches the node's actor: if it dies, the node's error is recorded and every waiting producer fails.

        The driver watches its nodes only while it runs a feed itself; producers of a
        lazy feed (an action on ``inference()``'s RDD, a stream) would otherwise wait
        ``feed_timeout`` on a node that is gone.
        """
        self._watcher = asyncio.get_running_loop().create_task(self._watch_node(node))

    async def _watch_node(self, node):
        while not self.node.over:
            try:
                outcome = await node.join.remote(NODE_WATCH_SECONDS)
            except RayActorError as exc:
                if not self.node.closed:
                    self.set_error(actor_death_message(exc))
                return
            except Exception:  # noqa: BLE001  (any other failure: the driver's own watch remains)
                logger.exception("watching node %s failed", self.node_name)
                return
            if outcome is not None:   # map_fun ended: the node itself recorded how
                return

    def cancel_feed(self, feed_id, reason):
        """The driver gave feed ``feed_id`` up (a node failed): its producers waiting here stop now."""
        self.feeds.cancel(feed_id, reason)
        self.signal.notify()

    def feed_timeout(self, feed_id):
        """The message of the first feed timeout of feed ``feed_id`` on this node, or ``None``."""
        return self.feeds.timeout_of(feed_id)

    def close(self):
        """Marks the cluster shut down: later calls by producers and DataFeeds fail clearly."""
        self.node.close()
        self.signal.notify()

    def terminate(self, name):
        """Stops feeding this node: drops queued chunks and items of ``name`` and skips chunks put later."""
        self.node.terminate()
        lane = self._lane(name)
        dropped = lane.queue.drop_data()
        dropped_rows = 0
        for entry in dropped:
            if entry[0] == CHUNK:
                self.ledger.skipped(entry[1])
                lane.bound.discharge(entry[1])
                dropped_rows += entry[3]
            else:
                dropped_rows += 1
        lane.queue.finish(len(dropped))
        self.ledger.skipped_rows += dropped_rows
        if self.coordinator is not None:
            self.coordinator.terminate.remote(self.node_name)
        self.signal.notify()
        return dropped_rows

    def stats(self, qname=None):
        """Counters for progress reports: rows fed, consumed and skipped, bytes queued, state.

        With ``qname``, also the ``input_mapping`` the node gave for that queue (``None`` until it did), so
        a feed learns both in one call.
        """
        counters = {
            "node": self.node_name,
            "state": self.node.state,
            "fed_rows": self.ledger.fed_rows,
            "consumed_rows": self.ledger.consumed_rows,
            "consumed_chunks": self.ledger.consumed_chunks,
            "skipped_rows": self.ledger.skipped_rows,
            "reads": self.reads,
            "put_outcomes": dict(self.put_outcomes),
            "queued_bytes": {name: lane.bound.bytes for name, lane in self.lanes.items()},
            "queued_entries": {name: len(lane.queue) for name, lane in self.lanes.items()},
            "error": self.node.error,
            "terminated": self.node.terminated,
        }
        if qname is not None:
            counters["input_mapping"] = self.values.get("input_mapping:" + qname)
        return counters

    # ---------------------------------------------------------- key / value

    def kv_get(self, key):
        return self.node.state if key == STATE_KEY else self.values.get(key)

    def kv_set(self, key, value):
        if key == STATE_KEY:
            self.node.state = value
        else:
            self.values[key] = value
        self.signal.notify()

    # ------------------------------------------------- stdlib-style queue API

    async def put_item(self, name, item, block=True, timeout=None):
        """Puts one plain item (the ``TFManager`` queue path). Returns False when full and not blocking."""
        self.node.raise_if_failed()
        lane = self._lane(name)
        if not block and not lane.bound.has_room():
            return False
        if block and not await self.signal.wait_until(lambda: lane.bound.has_room() or self.node.closed, timeout):
            return False
        lane.queue.put((ITEM, item) if item is not None else (END_FEED,))
        self.signal.notify()
        return True

    async def get_item(self, name, block=True, timeout=None):
        """Takes one entry: ``(True, kind, value)``, or ``(False, None, None)`` when empty.

        ``kind`` is ``ITEM`` (``value`` is the item), ``END_FEED``, or ``CHUNK`` /
        ``END_EPOCH`` (``value`` is the whole entry).
        """
        lane = self._lane(name)
        self.reads += 1
        if not len(lane.queue):
            if not block or not await self.signal.wait_until(lambda: len(lane.queue) or self.node.closed, timeout):
                return False, None, None
            self.node.raise_if_closed_for_reader()
        entry = lane.queue.get()
        self.signal.notify()
        if entry[0] == ITEM:
            return True, ITEM, entry[1]
        if entry[0] == CHUNK:
            lane.leases.lend(None, [entry])
            self.ledger.taken(entry[1])
        return True, entry[0], entry

    def task_done(self, name, count=1):
        self._lane(name).queue.task_done(name, count)
        self.signal.notify()

    async def join(self, name, timeout=None):
        queue = self._lane(name).queue
        return await self.signal.wait_until(lambda: queue.unfinished == 0, timeout)

    def qsize(self, name):
        return len(self._lane(name).queue)

    # ------------------------------------------------------------ chunk path

    async def put_chunk(self, name, key, ref_box, num_rows, nbytes, tag=None, last=False, timeout=None):
        """Queues a chunk ref (``ref_box`` is ``[ref]`` so Ray passes the ref, not the value).

        Waits while the queue holds more than ``max_bytes``. Returns ``'queued'``,
        ``'replaced'``, ``'duplicate'`` (already consumed) or ``'skipped'`` (the node
        is terminating). Raises ``NodeError`` when the node failed,
        ``FeedTimeoutError`` after ``timeout`` s without room, ``FeedError`` when
        the node's ``map_fun`` already returned.
        """
        outcome = await self._put_chunk(name, key, ref_box, num_rows, nbytes, tag, last, timeout)
        self.put_outcomes[outcome] += 1
        return outcome

    async def _put_chunk(self, name, key, ref_box, num_rows, nbytes, tag, last, timeout):
        feed_id = key[0]
        self._raise_for_feed(feed_id)
        lane = self._lane(name)
        before = self.ledger.state(key)
        answer = self._known_chunk(lane, key, ref_box, num_rows)
        if answer is not None:
            return answer
        self.node.raise_if_stopped(num_rows)
        room = await self.signal.wait_until(
            lambda: lane.bound.has_room(nbytes) or self._feed_over(feed_id) or self.node.terminated
            or self.ledger.state(key) != before, timeout, idle_since=self.node.idle_since)
        self._raise_for_feed(feed_id)
        if not room:
            raise self.feeds.timed_out(feed_id,
                "node {} took no data for {:.0f} s (feed_timeout): its queue {!r} stayed full with {} "
                "bytes; its map_fun is not reading (stuck, or waiting on another node)".format(
                    self.node_name, timeout, name, lane.bound.bytes))
        # another producer of this chunk (a retried task) may have put it while this call waited for room:
        # decide again (duplicate / replace), or the chunk would be queued twice
        answer = self._known_chunk(lane, key, ref_box, num_rows)
        if answer is not None:
            return answer
        self.node.raise_if_stopped(num_rows)
        lane.queue.put((CHUNK, key, ref_box, num_rows, tag, last, nbytes))
        lane.bound.charge(key, nbytes)
        self.ledger.queued(key, num_rows)
        if before is None and lane.cache is not None and lane.cache.wants(feed_id, key):
            self._keep(lane.cache, key, ref_box, num_rows, nbytes)
        self.signal.notify()
        return "queued" if before is None else "replaced"

    def _known_chunk(self, lane, key, ref_box, num_rows):
        """``put_chunk``'s answer for a key the ledger knows, or once terminated; ``None``: queue the chunk."""
        state = self.ledger.state(key)
        if state in (DONE, SKIPPED):
            return "duplicate"
        if state == QUEUED:
            lane.queue.replace(key, lambda entry: with_box(entry, ref_box, self.ledger.rows(key)))
            return "replaced"
        if state == TAKEN:
            self.ledger.replacement[key] = ref_box
            return "replaced"
        if self.node.terminated:
            self.ledger.skipped(key, num_rows)
            return "skipped"
        return None

    # ------------------------------------------------------------ epoch cache

    def cache_epoch(self, name, feed_id, epoch, budget):
        """Keeps a copy of the chunks of ``epoch`` of ``feed_id`` queued from now on, up to ``budget`` bytes.

        The copies are this actor's own objects, so they outlive the producers
        (Spark workers) that put the originals; :meth:`replay_epoch` feeds them
        again. See :mod:`raytfnode.epoch_cache`.
        """
        self._lane(name).cache = LaneCache(feed_id, epoch, budget)

    def _keep(self, cache, key, ref_box, num_rows, nbytes):
        if len(ref_box) != 1 or not nbytes:
            cache.give_up("rows already stored in the object store (a Ray Dataset's blocks) are fed from "
                          "their source every epoch")
        elif cache.begin_copy(key, nbytes):
            asyncio.get_running_loop().create_task(self._copy(cache, key, ref_box[0], num_rows, nbytes))

    async def _copy(self, cache, key, ref, num_rows, nbytes):
        try:
            value = await ref
            own = ray.put(value)
            del value
        except Exception as exc:  # noqa: BLE001  (the producer died first: this epoch is not kept)
            cache.copy_failed(key, "{}: {}".format(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""))
        else:
            cache.add(key, [own], num_rows, nbytes)
        self.signal.notify()

    async def cache_seal(self, name, feed_id, timeout=60.0):
        """Waits for the copies still running; returns ``{'complete', 'rows', 'bytes', 'chunks', 'why_not'}``."""
        cache = self._lane(name).cache
        if cache is None or cache.feed_id != feed_id:
            return {"complete": False, "rows": 0, "bytes": 0, "chunks": 0, "why_not": "nothing was kept"}
        if not await self.signal.wait_until(lambda: cache.copying == 0 or self.node.closed, timeout):
            cache.give_up("copying the epoch's chunks took longer than {:.0f} s".format(timeout))
        if not cache.chunks and cache.why_not is None:
            cache.give_up("the epoch fed this node no rows")
        return {"complete": cache.complete(), "rows": cache.rows, "bytes": cache.nbytes,
                "chunks": len(cache.chunks), "why_not": cache.why_not}

    def replay_epoch(self, name, feed_id, epoch):
        """Queues the kept chunks again as epoch ``epoch`` of ``feed_id``, in a new order; returns their keys.

        Kept chunks count no bytes against the queue's bound: they are in the
        object store for the whole feed anyway. Once the node terminated its feed
        they are skipped, as a producer's chunks would be.
        """
        self._raise_for_feed(feed_id)
        lane = self._lane(name)
        cache = lane.cache
        if cache is None or cache.feed_id != feed_id or not cache.complete():
            raise FeedError("node {} keeps no complete epoch of this feed to replay".format(self.node_name))
        kept = list(cache.chunks.values())
        keys = []
        for index in replay_order(len(kept), feed_id, epoch):
            box, rows, _ = kept[index]
            key = (feed_id, epoch, "cached", index)
            keys.append(key)
            if self.node.terminated:
                self.ledger.skipped(key, rows)
                continue
            lane.queue.put((CHUNK, key, box, rows, None, False, 0))
            lane.bound.charge(key, 0)
            self.ledger.queued(key, rows)
        self.signal.notify()
        return keys

    def cache_drop(self, name, feed_id):
        """Lets go of the kept chunks of ``feed_id`` (the feed ended)."""
        lane = self._lane(name)
        if lane.cache is not None and lane.cache.feed_id == feed_id:
            lane.cache = None

    def put_marker(self, name, marker):
        """Queues an end-of-epoch or end-of-feed marker (never blocked by the byte bound)."""
        self.put_markers(name, [marker])

    def put_markers(self, name, markers):
        """Queues end-of-epoch and end-of-feed markers in this order, in one call.

        This actor is async, and Ray runs an async actor's calls in no set order, even those of one
        caller: markers sent in separate calls could be queued the other way round.
        """
        lane = self._lane(name)
        for marker in markers:
            lane.queue.put(marker)
        self.signal.notify()

    async def take(self, name, max_entries=4, timeout=1.0, reader=None):
        """Takes up to ``max_entries`` entries, stopping after a marker; waits up to ``timeout`` for the first.

        The entries are ``reader``'s lease (a ``DataFeed``'s reader id; ``None``:
        anonymous) until acknowledged: a chunk by ``ack``, ``put_results``,
        ``skip`` or ``report_lost``, an item or marker by ``ack_items``.
        :meth:`give_back` returns what is left of it. A reader that gave its
        entries back takes nothing more (``[]``).
        """
        self.node.raise_if_closed_for_reader()
        self.reads += 1
        lane = self._lane(name)
        if not len(lane.queue) or lane.leases.returning:
            # while a give-back is on its way, its entries go first: wait for them
            await self.signal.wait_until(
                lambda: (len(lane.queue) and not lane.leases.returning) or self.node.closed
                or lane.leases.ended(reader), timeout)
            self.node.raise_if_closed_for_reader()
        if lane.leases.ended(reader) or lane.leases.returning:
            return []
        out = lane.queue.take(max_entries)
        for entry in out:
            if entry[0] == CHUNK:
                self.ledger.taken(entry[1])
        lane.leases.lend(reader, out)
        if out:
            self.signal.notify()
        return out

    async def give_back(self, name, reader, read_rows=None, told=0):
        """Ends ``reader``'s lease: what it took and did not acknowledge goes back to the front of ``name``.

        ``told`` is how many acknowledgements (``ack``, ``ack_items``, ...) the
        reader sent with its id; those still on their way are waited for first
        (up to ``GIVE_BACK_WAIT_SECONDS``), so nothing it used comes back.
        Entries keep the order they were taken in, markers included. ``read_rows``
        (``{chunk key: rows}``) names rows the reader handed out of a chunk it
        had not finished: they count as consumed, and the chunk goes back without
        them. A chunk goes back with a retried producer's copy when one came, and
        counts against the byte bound again until read. Returns how many entries
        went back.
        """
        if reader is None:
            raise ValueError("give_back needs the id of the reader that took the entries")
        lane = self._lane(name)
        lane.leases.returning += 1
        try:
            await self.signal.wait_until(lambda: lane.leases.heard_from(reader) >= told or self.node.closed,
                                         GIVE_BACK_WAIT_SECONDS)
        finally:
            lane.leases.returning -= 1
        read_rows = read_rows or {}
        back, rows_read, finished = [], 0, []
        for entry in lane.leases.end(reader):
            if entry[0] == CHUNK:
                key = entry[1]
                box = self.ledger.replacement.pop(key, None)
                if box is not None:
                    entry = with_box(entry, box, self.ledger.rows(key))
                read = min(read_rows.get(key, 0), entry[3])
                rows_read += read
                if read == entry[3]:      # every row was handed out: it was read
                    finished.append(key)
                    continue
                entry = skip_rows(entry, read)
                lane.bound.charge(key, entry[6])
                self.ledger.requeued(key)
            back.append(entry)
        for key in finished:
            lane.bound.discharge(key)
            self.ledger.done(key)
        lane.queue.finish(len(finished))
        lane.queue.put_back(back)
        self.ledger.count_consumed(rows_read, len(finished))
        self.signal.notify()
        return len(back)

    def ack(self, name, keys, num_rows, finish=True, reader=None):
        """The reader has read these chunks (``num_rows`` rows in all): they count as consumed.

        ``finish=False`` leaves the entries unfinished for a later ``task_done``;
        ``reader`` is the id of a reader that counts its acknowledgements (see ``give_back``).
        A chunk counts once: an acknowledgement of a chunk read already is
        ignored; one of a chunk given back meanwhile takes it out of the queue.
        """
        lane = self._lane(name)
        lane.leases.heard(reader)
        settled = [key for key in keys if self._consume(lane, key)]
        if finish:
            lane.queue.finish(len(settled))
        rows = num_rows if len(settled) == len(keys) else sum(self.ledger.rows(key) for key in settled)
        self.ledger.count_consumed(rows, len(settled))
        self.signal.notify()

    def _consume(self, lane, key):
        state = self.ledger.state(key)
        if state == TAKEN:
            lane.leases.settle(key)
        elif state == QUEUED and lane.queue.remove(key) is not None:
            pass   # given back before this (late) acknowledgement arrived: read once is read
        else:
            return False
        lane.bound.discharge(key)
        self.ledger.done(key)
        return True

    def release(self, name, keys, reader=None):
        """The reader has read these chunks but answers them later (inference): their bytes leave the bound.

        They stay in the reader's lease until their results come (``put_results``).
        """
        lane = self._lane(name)
        lane.leases.heard(reader)
        for key in keys:
            lane.bound.discharge(key)
        self.signal.notify()

    def ack_items(self, name, count, reader=None):
        """The reader consumed ``count`` plain items or markers (its oldest ones when it gives its id)."""
        lane = self._lane(name)
        lane.leases.heard(reader)
        settled = lane.leases.settle_items(reader, count)
        # a reader that gave its entries back meanwhile no longer holds them: they are queued to be read again
        lane.queue.finish(count if reader is None else settled)
        self.ledger.progress()
        self.signal.notify()

    def skip(self, name, keys):
        """Chunks a reader took but drops (``terminate``): they count as skipped. Returns their rows."""
        lane = self._lane(name)
        rows = 0
        for key in keys:
            lane.bound.discharge(key)
            if self.ledger.state(key) == TAKEN:
                entry = lane.leases.settle(key)
                self.ledger.skipped(key)
                rows += entry[3] if entry is not None else self.ledger.rows(key)
                lane.queue.finish(1)
        self.ledger.skipped_rows += rows
        self.signal.notify()
        return rows

    def report_lost(self, name, key, reader=None):
        """The reader could not fetch chunk ``key`` (its producer died): requeue a replacement when there is one."""
        lane = self._lane(name)
        lane.leases.heard(reader)
        self.signal.notify()
        if self.ledger.state(key) != TAKEN:
            return
        taken = lane.leases.settle(key)
        lane.bound.discharge(key)
        box = self.ledger.replacement.pop(key, None)
        if box is not None:
            rows = self.ledger.rows(key)
            entry = (CHUNK, key, box, rows, None, False, 0) if taken is None else with_box(taken, box, rows)
            lane.queue.put_back([entry])
            lane.bound.charge(key, entry[6])
            self.ledger.requeued(key)
        else:
            self.ledger.lost(key)
            lane.queue.finish(1)
        self.signal.notify()

    async def put_and_wait(self, name, entries, answers, timeout, markers=()):
        """Queues a node's share of an epoch of rows already in the object store, then waits until it was read.

        One call per node and epoch for a Ray Dataset, instead of a put per piece and a wait: the
        pieces count 0 bytes against the bound (they hold no memory of their own), so none waits for
        room. ``entries`` is ``[(index, key, box, num_rows)]``; ``answers`` is the coordinator's
        ``assign_all`` answer for the epoch, which Ray resolves before this call runs (the producer
        does not wait for it): an entry whose answer (``answers[index]``) is ``None``, because a node
        terminated the feed, is not queued. ``markers`` (the epoch's end) are queued right after the
        entries, in this call, so they follow them without a round trip to the driver. Returns
        :meth:`wait_consumed`'s summary of the queued ones.
        """
        keys = []
        for index, key, box, num_rows in entries:
            if answers[index] is None:
                continue
            await self.put_chunk(name, key, box, num_rows, 0, None, False, timeout)
            keys.append(key)
        if markers:
            self.put_markers(name, markers)
        if not keys:
            return {"consumed": 0, "skipped": 0, "lost": []}
        return await self.wait_consumed(keys, timeout)

    async def wait_consumed(self, keys, timeout):
        """Waits until every chunk in ``keys`` was consumed, skipped or lost (to be re-sent).

        Returns ``{'consumed': rows, 'skipped': rows, 'lost': keys}``. ``timeout``
        bounds the time without any progress on this node.
        """
        keys = list(keys)
        feed_id = keys[0][0]
        settled = await self.signal.wait_until(
            lambda: self.ledger.settled(keys) or self._feed_over(feed_id), timeout or None,
            idle_since=lambda: self.node.idle_since(self.ledger.last_progress))
        if not settled:
            raise self.feeds.timed_out(feed_id,
                "node {} consumed nothing for {:.0f} s (feed_timeout) with {} rows of this partition still "
                "unread; its map_fun is stalled (stuck, or waiting on another node)".format(
                    self.node_name, timeout, self.ledger.pending_rows(keys)))
        self._raise_for_feed(feed_id)
        unread = self.ledger.unread(keys)
        if unread:
            raise FeedError(
                "node {}'s map_fun returned with {} rows of this partition unread; read the whole feed "
                "(until DataFeed.should_stop()) or call DataFeed.terminate() before returning".format(
                    self.node_name, sum(self.ledger.rows(k) for k in unread)))
        return self.ledger.summary(keys)

    # -------------------------------------------------------- inference path

    def put_results(self, name, key, tag, seq, values, num_rows, reader=None):
        """Results for chunk ``seq`` of inference partition ``tag``; also acknowledges the chunk."""
        self._lane(name).leases.heard(reader)
        self.results.put(tag, seq, values)
        if self.ledger.state(key) != DONE:
            self.ack(name, [key], num_rows)
        else:
            self.signal.notify()

    async def take_results(self, tag, num_chunks, timeout):
        """Waits for the results of chunks ``0..num_chunks-1`` of ``tag`` and returns them in order."""
        feed_id = tag[0]
        ready = await self.signal.wait_until(
            lambda: self.results.count(tag) >= num_chunks or self._feed_over(feed_id) or self.node.terminated,
            timeout or None, idle_since=lambda: self.node.idle_since(self.ledger.last_progress))
        if not ready:
            raise self.feeds.timed_out(feed_id,
                "node {} returned no inference results for {:.0f} s (feed_timeout); {} of {} chunks of "
                "partition {} have results".format(self.node_name, timeout, self.results.count(tag),
                                                   num_chunks, tag[-1]))
        self._raise_for_feed(feed_id)
        if self.results.count(tag) < num_chunks:
            raise FeedError("node {}'s map_fun {} before returning results for partition {} ({} of {} chunks "
                            "answered); call DataFeed.batch_results for every batch it reads".format(
                                self.node_name, "terminated" if self.node.terminated else "returned", tag[-1],
                                self.results.count(tag), num_chunks))
        return self.results.pop(tag, num_chunks)


#: the queue actor class: ``NodeQueuesActor.options(...).remote(secret, node_name, queue_names, ...)``,
#: called through a :class:`raytfnode.guard.GuardedHandle` that holds the secret
NodeQueuesActor = guarded_actor(_NodeQueues, num_cpus=0, max_concurrency=1000)
"""The Ray actor class; created by :class:`raytfnode.manager.TFManager` and the cluster."""
