"""DataFeed: the TensorFlow side of ``InputMode.SPARK`` feeding.

Reads chunks (not rows) from the node's queue actor, prefetches what comes
next while the caller works, and slices batches out of columnar chunks.

What a DataFeed took ahead of use is its lease at the queue actor (see
:meth:`raytfnode.feed_queue._NodeQueues.give_back`): :meth:`DataFeed.close`, the
feed's garbage collection, or another DataFeed of the same process starting
to read the same queue gives it back, so no row is stranded and no marker is
swallowed.
"""
import logging
import threading
import uuid
import weakref

import numpy as np
import ray
from ray.exceptions import ObjectLostError, OwnerDiedError, RayActorError

from .chunks import concat_chunks
from .errors import ACTOR_DEATH_CAUSES, BadInputError, ClusterStoppedError, FeedError, actor_death_message
from .feed_queue import CHUNK, END_EPOCH, END_FEED, ITEM
from .guard import plain
from .result_blocks import join_results
from .stored import chunk_of

logger = logging.getLogger(__name__)

_TAKE_ENTRIES = 4
_POLL_SECONDS = 2.0


def check_batch_size(batch_size):
    """Raises ``BadInputError`` unless ``batch_size`` is a positive integer."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise BadInputError("batch_size must be a positive integer, got {!r}".format(batch_size))


class _EntryReader:
    """Pulls queue entries in small bulks, one request ahead, and starts fetching chunk objects early.

    It takes under a reader id of its own: what it took and was not
    acknowledged is its lease at the queue actor until :meth:`give_back`. It
    also holds the chunk being read (``current``: ``[entry, chunk, rows handed
    out]``), so a give-back knows which rows were used. It holds no reference
    to its ``DataFeed``, so the feed's finalizer can give back through it.
    """

    def __init__(self, actor, qname):
        self._actor = actor
        self._qname = qname
        self.reader_id = uuid.uuid4().hex
        self.leased = False     # took anything (or asked to) since the last give-back
        self.told = 0           # acknowledgements sent under reader_id
        self._buffer = []
        self._ahead = None
        self.current = None

    def _request(self):
        self.leased = True
        return self._actor.take.remote(self._qname, _TAKE_ENTRIES, _POLL_SECONDS, self.reader_id)

    def next(self):
        """The next entry, waiting as long as it takes (the producer bounds its own waits)."""
        while not self._buffer:
            request = self._ahead if self._ahead is not None else self._request()
            self._ahead = None
            try:
                entries = ray.get(request)
            except RayActorError as exc:
                raise ClusterStoppedError(actor_death_message(
                    exc, "the queue actor of this node", "its cluster was shut down, or " + ACTOR_DEATH_CAUSES)) from None
            if entries:
                self._buffer.extend(entries)
                # unique: pieces of one stored block share its ref; a run of small blocks names several
                refs = list(dict.fromkeys(ref for e in entries if e[0] == CHUNK
                                          for ref in (e[2][0] if isinstance(e[2][0], list) else [e[2][0]])))
                if refs:  # start pulling the objects to this node while the caller works
                    ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=True)
                if entries[-1][0] not in (END_FEED, END_EPOCH):
                    self._ahead = self._request()
        return self._buffer.pop(0)

    def tell(self, method, *args):
        """Sends the queue actor an acknowledgement (``ack``, ``ack_items``, ...) of entries of this lease.

        Not awaited; they are counted, so a give-back first waits for those still on their way.
        """
        self.told += 1
        getattr(self._actor, method).remote(self._qname, *args, reader=self.reader_id)

    def push_back(self, entry):
        self._buffer.insert(0, entry)

    def drain(self):
        """Returns every entry taken but not handed out, including the request in flight."""
        if self._ahead is not None:
            ready, _ = ray.wait([self._ahead], timeout=_POLL_SECONDS + 5)
            if ready:
                self._buffer.extend(ray.get(ready[0]))
            self._ahead = None
        entries, self._buffer = self._buffer, []
        return entries

    def give_back(self, wait=True):
        """Gives back what this reader took and did not acknowledge; later reads start a new lease.

        Rows already handed out of a training chunk count as read; an inference
        chunk goes back whole (its answers are with the reader). With ``wait``
        the call returns once the entries are queued again; without it (a
        finalizer) nothing is awaited and a gone cluster is ignored.
        """
        read = {}
        if self.current is not None:
            entry, _, position = self.current
            if entry[4] is None and position:
                read[entry[1]] = position
        reader_id, told, self.reader_id = self.reader_id, self.told, uuid.uuid4().hex
        self._buffer, self._ahead, self.current, self.leased, self.told = [], None, None, False, 0
        if not wait:
            try:
                if ray.is_initialized():
                    self._actor.give_back.remote(self._qname, reader_id, read, told)
            except Exception:  # noqa: BLE001  (a finalizer must not raise; the cluster may be gone)
                logger.debug("could not give back the entries of a dropped DataFeed", exc_info=True)
            return
        try:
            ray.get(self._actor.give_back.remote(self._qname, reader_id, read, told))
        except (RayActorError, ClusterStoppedError):
            pass   # the cluster is gone: nothing waits for these entries any more


_holders = {}                      # (queue actor id, queue name) -> weakref of the DataFeed reading it here
_holders_lock = threading.RLock()  # reentrant: a finalizer may run while this thread holds it


def _take_over(feed):
    """Makes ``feed`` this process's reader of its queue; the one before gives back what it took."""
    with _holders_lock:
        ref = _holders.get(feed._queue_key)
        holder = ref() if ref is not None else None
        if holder is feed:
            return
        _holders[feed._queue_key] = weakref.ref(feed)
    if holder is not None:
        holder._give_back()


def _let_go(queue_key, feed=None):
    """Forgets the reader of ``queue_key`` when it is ``feed`` (``None``: when it was garbage-collected)."""
    with _holders_lock:
        ref = _holders.get(queue_key)
        if ref is not None and ref() is feed:
            del _holders[queue_key]


def _dropped(reader, queue_key):
    """Finalizer of a DataFeed that was garbage-collected without :meth:`DataFeed.close`."""
    _let_go(queue_key)
    if reader.leased:
        reader.give_back(wait=False)


class DataFeed:
    """This class manages the ``InputMode.SPARK`` data feeding process from the perspective of the TensorFlow application.

    Args:
      :mgr: ``TFManager`` of this node (``ctx.mgr``); any Ray task or actor holding it can build a DataFeed.
      :train_mode: boolean; ``False`` for inference, where every batch read must be answered with
        ``batch_results`` and a batch never spans two partitions.
      :qname_in: name of the queue to read (``'input'``, or another queue given to ``TFCluster.run``).
      :qname_out: name of the queue for plain-item results (compatibility path).
      :input_mapping: dictionary of input columns to tensor names; ``next_batch`` then returns a dict
        ``{tensor_name: array}`` whose entries follow the sorted column names.

    Rows: see :mod:`raytfnode.chunks` for what each row looks like after the trip
    through the object store (numpy array rows come back as read-only views).

    Read-ahead: a DataFeed takes entries from its queue before they are asked
    for. Until it uses them they are its lease; they go back to the front of
    the queue, in order and with any end-of-epoch marker, when the feed is
    closed (:meth:`close`, or the end of a ``with`` block), when it is
    garbage-collected, or when another DataFeed of the same process starts to
    read the same queue. So a ``map_fun`` may break out of its loop, or build a
    new DataFeed, and the next reader still sees every row exactly once. In
    one process, use the DataFeeds of one queue one at a time (from one
    thread); feeds in different processes read side by side.
    """

    def __init__(self, mgr, train_mode=True, qname_in="input", qname_out="output", input_mapping=None):
        self.mgr = mgr
        self.train_mode = train_mode
        self.qname_in = qname_in
        self.qname_out = qname_out
        self.done_feeding = False
        self.input_tensors = [tensor for _, tensor in sorted(input_mapping.items())] if input_mapping else None
        self._input_columns = sorted(input_mapping) if input_mapping else None
        self._actor = mgr._actor
        try:
            ray.get(self._actor.ping.remote())
        except RayActorError:
            raise ClusterStoppedError("cannot build a DataFeed on {}: its cluster was shut down".format(
                getattr(mgr, "node_name", "this manager"))) from None
        self._reader = _EntryReader(self._actor, qname_in)
        self._last_pieces = None     # pieces of the last batch read (inference answers)
        self._last_rows = 0
        self._answers = {}           # chunk key -> [entry, parts, rows answered]
        self._epoch_ended = False
        self._closed = False
        self._queue_key = (plain(self._actor)._actor_id, qname_in)
        self._finalizer = weakref.finalize(self, _dropped, self._reader, self._queue_key)
        self._finalizer.atexit = False
        if input_mapping:
            self._actor.kv_set.remote("input_mapping:" + qname_in, dict(input_mapping))
        _take_over(self)

    @property
    def _current(self):
        """The chunk being read: ``[entry, chunk, rows handed out]``, or ``None`` (held by the reader)."""
        return self._reader.current

    @_current.setter
    def _current(self, value):
        self._reader.current = value

    # ------------------------------------------------------------ the lease

    def close(self):
        """Gives back to the queue what this feed took ahead and did not use, and closes the feed.

        Entries taken ahead (rows, markers) go back to the front of the queue in
        their order; rows of a chunk already returned by a read count as read.
        Call it when a ``map_fun`` stops reading before the end of its feed
        (a ``break``, a step limit) and another reader should go on; a feed that
        is garbage-collected gives back the same way. A DataFeed is also a
        context manager that closes on exit::

          with ctx.get_data_feed() as feed:
              for batch in feed.epoch_batches(64):
                  ...

        Reading from a closed feed raises :class:`raytfnode.errors.FeedError`;
        closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        _let_go(self._queue_key, self)
        self._give_back()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    def _give_back(self):
        """The reader gives back its lease; read state that refers to given-back entries is dropped."""
        if self._reader.leased:
            self._reader.give_back()
        self._answers.clear()
        self._last_pieces = None
        self._last_rows = 0

    def _claim(self):
        """Before reading: fails when closed; takes over this process's read-ahead of the queue."""
        if self._closed:
            raise FeedError("this DataFeed of queue {!r} was closed; build a new one (ctx.get_data_feed()) to read "
                            "on".format(self.qname_in))
        _take_over(self)

    # ------------------------------------------------------------- reading

    def _fetch(self, entry):
        try:
            return chunk_of(ray.get(entry[2][0]), entry[2])
        except (ObjectLostError, OwnerDiedError):
            logger.warning("chunk %s was lost with its producer; waiting for the retried producer", entry[1])
            self._reader.tell("report_lost", entry[1])
            return None

    def _finish_chunk(self, entry):
        # a training chunk (no inference tag) counts as consumed once read, also when a TensorFlowOnSpark
        # program trains through DataFeed(mgr, False); inference chunks are acknowledged by their results
        if self.train_mode or entry[4] is None:
            self._reader.tell("ack", [entry[1]], entry[3])
        else:  # read: its bytes leave the queue's bound now, the chunk counts as consumed with its results
            self._reader.tell("release", [entry[1]])

    def _read(self, batch_size, stop_at_epoch=False):
        """Reads up to ``batch_size`` rows as pieces ``(entry, chunk, start, stop)`` or ``('item', value)``."""
        check_batch_size(batch_size)
        if not self.train_mode and self._last_pieces and any(
                piece[0] == "item" or piece[0][4] is not None for piece in self._last_pieces):
            raise BadInputError(
                "call batch_results() for the previous batch of {} rows before reading the next one "
                "(inference needs one result per input row)".format(self._last_rows))
        self._claim()
        pieces, count = [], 0
        while count < batch_size and not self.done_feeding:
            if self._current is None:
                entry = self._reader.next()
                kind = entry[0]
                if kind == END_FEED:
                    self.done_feeding = True
                    self._reader.tell("ack_items", 1)
                    break
                if kind == END_EPOCH:
                    self._reader.tell("ack_items", 1)
                    if stop_at_epoch:
                        self._epoch_ended = True
                        break
                    continue
                if kind == ITEM:
                    pieces.append(("item", entry[1]))
                    count += 1
                    self._reader.tell("ack_items", 1)
                    continue
                if not self.train_mode and pieces and pieces[-1][0] != "item" and pieces[-1][0][4] != entry[4]:
                    self._reader.push_back(entry)   # another partition: this batch ends here
                    break
                chunk = self._fetch(entry)
                if chunk is None:
                    continue
                self._check_mapping(chunk)
                self._current = [entry, chunk, 0]
            entry, chunk, position = self._current
            take = min(batch_size - count, chunk.num_rows - position)
            pieces.append((entry, chunk, position, position + take))
            count += take
            position += take
            if position == chunk.num_rows:
                self._current = None
                self._finish_chunk(entry)
                if not self.train_mode and entry[5]:
                    break  # the partition's last chunk: a batch never spans two partitions
            else:
                self._current[2] = position
        self._last_pieces = pieces if count else None
        self._last_rows = count
        return pieces, count

    def _check_mapping(self, chunk):
        if self._input_columns and chunk.names is not None:
            missing = [c for c in self._input_columns if c not in chunk.names]
            if missing:
                raise BadInputError("input_mapping names column(s) {} that the data does not have; its columns "
                                    "are {}".format(missing, list(chunk.names)))

    def next_batch(self, batch_size):
        """Gets a batch of items from the input RDD.

        If multiple tensors are provided per row in the input RDD, e.g. tuple of
        (tensor1, tensor2, ..., tensorN) and:

        * no ``input_mapping`` was provided to the DataFeed constructor, this will
          return a list of ``batch_size`` tuples, and the caller is responsible for
          separating the tensors;
        * an ``input_mapping`` was provided, this will return a dictionary of N
          tensors, with tensor names as keys and arrays of length ``batch_size`` as values.

        Note: if the end of the data is reached, this may return with fewer than
        ``batch_size`` items; in inference mode a batch also ends with its partition.

        Args:
          :batch_size: number of items to retrieve (a positive integer).

        Returns:
          A batch of items or a dictionary of tensors.
        """
        pieces, _ = self._read(batch_size)
        if self.input_tensors is not None:
            return self._as_mapping(pieces)
        rows = []
        for piece in pieces:
            if piece[0] == "item":
                rows.append(piece[1])
            else:
                _, chunk, start, stop = piece
                rows.extend(chunk.rows(start, stop))
        return rows

    def next_batch_arrays(self, batch_size, stop_at_epoch=False):
        """Array-native read: up to ``batch_size`` rows as numpy arrays, without building row objects.

        Returns a dict ``{tensor_name: array}`` with ``input_mapping``; otherwise a
        tuple with one array per column (tuple rows), or one array (single-value
        rows). Returns ``None`` when no row is left (end of feed, or with
        ``stop_at_epoch`` the end of the current epoch).
        """
        pieces, count = self._read(batch_size, stop_at_epoch)
        if not count:
            return None
        if self.input_tensors is not None:
            return self._as_mapping(pieces)
        chunk = self._merge(pieces)
        arrays = chunk.arrays()
        return arrays[0] if chunk.row_kind == "single" else arrays

    def _merge(self, pieces):
        if any(p[0] == "item" for p in pieces):
            from .chunks import encode_rows
            rows = []
            for piece in pieces:
                rows.extend([piece[1]] if piece[0] == "item" else piece[1].rows(piece[2], piece[3]))
            return encode_rows(rows)
        return concat_chunks([chunk.slice(start, stop) for _, chunk, start, stop in pieces])

    def _as_mapping(self, pieces):
        if not pieces:
            return {tensor: np.empty((0,)) for tensor in self.input_tensors}
        chunk = self._merge(pieces)
        arrays = chunk.arrays()
        out = {}
        for position, (column, tensor) in enumerate(zip(self._input_columns, self.input_tensors)):
            out[tensor] = arrays[chunk.column_index(column, position)]
        return out

    def end_of_epoch(self):
        """True once the last read stopped at an end-of-epoch marker (cleared by the next read)."""
        return self._epoch_ended

    def epoch_batches(self, batch_size):
        """Yields array batches (as ``next_batch_arrays``) until the end of the current epoch or feed."""
        return self._until_epoch_end(lambda: self.next_batch_arrays(batch_size, stop_at_epoch=True))

    def epoch_chunks(self):
        """Yields what is left of each chunk as arrays (as ``next_batch_arrays``) until the end of the epoch or feed.

        Each array batch is one chunk's rows (or the rest of a chunk a read
        began), without copying them into batches of a fixed size: the road
        for a consumer that re-batches itself, as ``as_dataset`` does.
        """
        return self._until_epoch_end(self._rest_of_chunk)

    def _rest_of_chunk(self):
        chunk = self.peek_chunk()
        rest = chunk.num_rows - self._current[2] if chunk is not None and self._current is not None else 1
        return self.next_batch_arrays(rest, stop_at_epoch=True)

    def _until_epoch_end(self, read):
        """Yields what ``read()`` returns until it returns ``None`` or an end-of-epoch marker was read."""
        self._epoch_ended = False
        while True:
            batch = read()
            if batch is None:
                return
            yield batch
            if self._epoch_ended:
                return

    def as_dataset(self, batch_size, output_signature=None):
        """A ``tf.data.Dataset`` over this feed, one pass per epoch; see :func:`raytfnode.tfdata.feed_dataset`."""
        from .tfdata import feed_dataset
        return feed_dataset(self, batch_size, output_signature)

    def peek_chunk(self):
        """The chunk the next read starts in, without consuming it (waits for data).

        Returns ``None`` when the feed is at a marker (end of epoch or feed), or its end was read.
        """
        self._claim()
        if self.done_feeding:
            return None
        if self._current is None:
            entry = self._reader.next()
            if entry[0] == ITEM:
                from .chunks import encode_rows
                self._reader.push_back(entry)
                return encode_rows([entry[1]])
            if entry[0] != CHUNK:
                self._reader.push_back(entry)
                return None
            chunk = self._fetch(entry)
            if chunk is None:
                return self.peek_chunk()
            self._check_mapping(chunk)
            self._current = [entry, chunk, 0]
        return self._current[1]

    def should_stop(self):
        """Check if the feed process was told to stop (end of feed, or a call to ``terminate``)."""
        return self.done_feeding

    # ------------------------------------------------------------- results

    def batch_results(self, results):
        """Push a batch of output results to the Spark output RDD of ``TFCluster.inference()``.

        Note: this expects a one-to-one mapping of input to output data, so the
        length of ``results`` must match the length of the batch read last.

        Args:
          :results: array of output data for the equivalent batch of input data.
        """
        pieces = self._last_pieces or []
        expected = self._last_rows if pieces else 0
        if len(results) != expected:
            raise BadInputError("batch_results got {} results for a batch of {} input rows; return exactly one "
                                "result per input row".format(len(results), expected))
        offset = 0
        for piece in pieces:
            if piece[0] == "item":
                # one at a time: the async queue actor may run concurrent puts out of order
                ray.get(self._actor.put_item.remote(self.qname_out, results[offset]))
                offset += 1
                continue
            entry, _, start, stop = piece
            count = stop - start
            if entry[4] is None:   # a training chunk: nobody waits for results
                offset += count
                continue
            answer = self._answers.setdefault(entry[1], [entry, [], 0])
            answer[1].append(results[offset:offset + count])
            answer[2] += count
            offset += count
            if answer[2] == entry[3]:
                del self._answers[entry[1]]
                values = join_results(answer[1])
                tag = entry[4]
                self._reader.tell("put_results", entry[1], tag, entry[1][-1], values, entry[3])
        self._last_pieces = None
        self._last_rows = 0

    # ---------------------------------------------------------- terminate

    def terminate(self):
        """Terminate data feeding early.

        Since TensorFlow applications can often terminate on conditions unrelated
        to the training data (e.g. steps, accuracy), this method signals the data
        feeding process to ignore any further incoming data: queued data is
        dropped and the remaining partitions are skipped quickly (``train()``
        reports them as skipped).
        """
        logger.info("terminate() invoked")
        dropped = ray.get(self._actor.terminate.remote(self.qname_in))
        unread = self._reader.drain()
        if self._current is not None:
            unread.append(self._current[0])
            self._current = None
        keys = [entry[1] for entry in unread if entry[0] == CHUNK]
        if keys:
            dropped += ray.get(self._actor.skip.remote(self.qname_in, keys))
        logger.info("dropped %d queued rows", dropped)
        self.done_feeding = True
