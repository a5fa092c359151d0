"""The cluster's coordinator actor: balanced chunk assignment and the feed-wide terminate flag.

Every chunk of a training feed is split across the fed nodes so that, at any
moment of an epoch, the nodes' row counts differ by at most one row: each
node then holds the same number of rows per epoch whatever the partitioning,
and a synchronous strategy (MultiWorkerMirroredStrategy) sees every worker run
out of data at the same step. Assignments are remembered per chunk key, so a
retried producer gets the same split as its failed attempt.

Only a cluster that can be fed (``InputMode.SPARK``) has one.
"""
from .errors import BadInputError
from .guard import guarded_actor


def level_split(totals, num_rows):
    """Splits ``num_rows`` across slots, filling the emptiest first: pure water-filling.

    Args:
      :totals: rows each slot holds so far (not modified).
      :num_rows: rows to add.

    Returns:
      A list with the rows each slot gets; ``max - min`` of the new totals is at
      most one when it was at most one before.
    """
    slots = len(totals)
    counts = [0] * slots
    if not slots or num_rows <= 0:
        return counts
    order = sorted(range(slots), key=lambda i: (totals[i], i))
    filled = 0
    for k in range(1, slots + 1):
        filled += totals[order[k - 1]]
        level, extra = divmod(filled + num_rows, k)
        if k == slots or level < totals[order[k]]:
            break
    for rank, i in enumerate(order[:k]):
        counts[i] = level - totals[i] + (1 if rank < extra else 0)
    return counts


class _Coordinator:
    """Actor body: chunk assignment and the cluster-wide terminate flag."""

    def __init__(self, num_slots):
        self.num_slots = num_slots
        self.totals = {}       # (feed_id, epoch) -> rows per slot
        self.assigned = {}     # chunk key -> counts per slot
        self.terminated_by = None
        self.bad_input = {}    # feed_id -> message of the first BadInputError a producer met
        self.level_of = {}     # feed_id -> shared totals key (the micro-batches of one stream)
        self.stream_batches = {}  # stream key -> {batch id: rows fed per slot}

    def assign(self, feed_id, epoch, chunk_key, num_rows, slot=None):
        """Rows per slot for one chunk, or ``None`` once a node called terminate().

        ``slot`` gives the whole chunk to one slot: the producer follows an epoch
        plan that keeps the slots level by the epoch's end (data locality).
        """
        if chunk_key in self.assigned:
            counts = self.assigned[chunk_key]
            if sum(counts) != num_rows:
                raise self._changed_chunk(feed_id, epoch, chunk_key, sum(counts), num_rows)
            return counts
        if self.terminated_by is not None:
            return None
        totals = self.totals.setdefault(self.level_of.get(feed_id, (feed_id, epoch)), [0] * self.num_slots)
        if slot is None:
            counts = level_split(totals, num_rows)
        else:
            counts = [0] * self.num_slots
            counts[slot] = num_rows
        for i, c in enumerate(counts):
            totals[i] += c
        self.assigned[chunk_key] = counts
        return counts

    def assign_all(self, feed_id, epoch, chunks):
        """:meth:`assign` for many chunks in one call: ``chunks`` is ``[(chunk_key, num_rows, slot)]``.

        Returns their counts in order (``None`` for each once a node called terminate()).
        """
        return [self.assign(feed_id, epoch, chunk_key, num_rows, slot) for chunk_key, num_rows, slot in chunks]

    def _changed_chunk(self, feed_id, epoch, chunk_key, first_rows, rows):
        """The error for a retried producer whose chunk has another row count than its first attempt's."""
        where = "partition {}".format(chunk_key[2]) if len(chunk_key) > 3 else "chunk {}".format(chunk_key)
        message = ("{} of epoch {}: a retried task cut chunk {} with {} rows where its first attempt had {}; the "
                   "partition does not iterate the same rows each time (a random or time-dependent source), so "
                   "rows would be lost or fed twice. Make the input deterministic (for example persist() or "
                   "checkpoint the RDD/DataFrame before train())".format(where, epoch, chunk_key[-1], rows,
                                                                           first_rows))
        self.bad_input.setdefault(feed_id, message)
        return BadInputError(message)

    def share_level(self, feed_id, level_key):
        """Levels the chunks of feed ``feed_id`` together with every feed sharing ``level_key``.

        A stream feeds each micro-batch as a feed of its own (its chunk keys name the batch); sharing
        one ``level_key`` (a tuple) keeps the nodes within one row of each other over the whole stream.
        """
        self.level_of[feed_id] = tuple(level_key)

    def stream_batch(self, stream_key, batch_id):
        """Rows per slot of micro-batch ``batch_id`` of stream ``stream_key`` when it was fed whole, else ``None``."""
        return self.stream_batches.get(stream_key, {}).get(batch_id)

    def finish_stream_batch(self, stream_key, batch_id, feed_id):
        """Micro-batch ``batch_id``, fed as feed ``feed_id``, was fed whole and read: records it and forgets the feed.

        A replay of the batch (same id) is then not fed again. Returns the rows fed per slot.
        """
        counts = [0] * self.num_slots
        for key, assigned in self.assigned.items():
            if key[0] == feed_id:
                counts = [c + a for c, a in zip(counts, assigned)]
        self.stream_batches.setdefault(stream_key, {})[batch_id] = counts
        self.forget(feed_id)
        return counts

    def stream_ledger(self, stream_key):
        """The batches of stream ``stream_key`` fed whole so far: ``{batch id: rows fed per slot}``."""
        return dict(self.stream_batches.get(stream_key, {}))

    def restore_stream_ledger(self, stream_key, batches):
        """Takes over the ledger of a stream from the coordinator of an earlier attempt (a restart)."""
        self.stream_batches.setdefault(stream_key, {}).update(batches)

    def terminate(self, node_name):
        if self.terminated_by is None:
            self.terminated_by = node_name

    def terminated(self):
        """The node that called terminate() first, or ``None``."""
        return self.terminated_by

    def record_bad_input(self, feed_id, message):
        """A producer rejected the data; the driver fails the feed at once (Spark would retry the task)."""
        self.bad_input.setdefault(feed_id, message)

    def bad_input_of(self, feed_id):
        """The first bad-input message of feed ``feed_id``, or ``None``."""
        return self.bad_input.get(feed_id)

    def epoch_totals(self, feed_id, epoch):
        return list(self.totals.get((feed_id, epoch), [0] * self.num_slots))

    def forget(self, feed_id):
        """Drops the records of a finished feed."""
        for key in [k for k in self.totals if k[0] == feed_id]:
            del self.totals[key]
        for key in [k for k in self.assigned if k[0] == feed_id]:
            del self.assigned[key]
        self.bad_input.pop(feed_id, None)
        self.level_of.pop(feed_id, None)


#: the coordinator actor class: ``CoordinatorActor.options(...).remote(secret, num_slots)``, called through a
#: :class:`raytfnode.guard.GuardedHandle`
CoordinatorActor = guarded_actor(_Coordinator, num_cpus=0)
