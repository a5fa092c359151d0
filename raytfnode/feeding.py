"""The producer side of feeding: one partition into the TF nodes' queues.

Bridges (Spark, Ray Data, the driver itself) call these functions wherever a
partition is iterated: in a Spark Python worker, a Ray task or the driver.
They know nothing of TensorFlow; they cut rows into chunks, put each chunk
into the object store once, and hand its ref to a queue actor.

A :class:`FeedTarget` says where to feed. It holds actor names, not handles,
so it pickles into a Spark closure that runs in a process which has not
connected to Ray yet.
"""
import dataclasses
import itertools
import logging
import threading

import ray

from .chunks import DEFAULT_CHUNK_BYTES, DEFAULT_CHUNK_ROWS, chunk_rows
from .errors import BadInputError, FeedError
from .guard import GuardedHandle
from .refs import discard
from .stored import StoredRows, StoredRun
from .worker_ray import connect_worker

logger = logging.getLogger(__name__)

MAX_PUTS_IN_FLIGHT = 4
# a failed feed's calls still in flight are read this long: a failure wakes every waiting call (the queue
# records it), so they end quickly
DISCARD_SECONDS = 5.0


@dataclasses.dataclass(frozen=True)
class FeedTarget:
    """Where one feed (a ``train`` or ``inference`` call) goes.

    Attributes:
      :namespace: the cluster's Ray namespace.
      :ray_address: GCS address for processes that must connect first (Spark workers).
      :queue_names: actor names of the fed nodes' queue actors, in slot order.
      :node_names: the fed nodes' names (``'worker:0'``), in slot order.
      :coordinator_name: actor name of the cluster's coordinator.
      :qname: the queue to feed (``'input'`` by default).
      :feed_id: unique id of this feed.
      :feed_timeout: seconds a producer waits on a node that makes no progress.
      :chunk_bytes: target size of a chunk.
      :chunk_rows: largest number of rows in a chunk.
      :auth_mode: the driver's ``RAY_AUTH_MODE`` (``'token'`` when its ``ray.init()`` started the
        cluster with token authentication), for processes that did not inherit it.
      :slot_machines: the Ray node id of each fed node, in slot order (for data locality).
      :data_locality: plan stored blocks' rows onto nodes on the blocks' machines.
      :secret: the cluster's secret, without which its queue actors and coordinator answer nothing
        (never printed: not in the repr).
      :directory_name: for a lazy feed that may outlive a restart: the cluster's directory actor, which
        names the current attempt's queue actors and coordinator (``queue_names`` and
        ``coordinator_name`` are then those of the attempt that made the target).
    """

    namespace: str
    ray_address: str
    queue_names: tuple
    node_names: tuple
    coordinator_name: str
    qname: str
    feed_id: str
    feed_timeout: float = 600.0
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    auth_mode: str = None
    slot_machines: tuple = ()
    data_locality: bool = True
    secret: bytes = dataclasses.field(default=None, repr=False)
    directory_name: str = None


_lock = threading.Lock()
_handles = {}


def connect(target, where=None):
    """Connects this process to Ray (once) and returns ``(coordinator, [queue actors])``.

    ``where`` (``'partition 3'``) names the caller's data in a failure to connect.
    """
    with _lock:
        connect_worker(target.ray_address, target.namespace, target.auth_mode, where)
        coordinator_name, queue_names = target.coordinator_name, target.queue_names
        if target.directory_name:   # the current attempt's actors, after any restart
            directory = GuardedHandle(ray.get_actor(target.directory_name, namespace=target.namespace),
                                      target.secret)
            _, queue_names, coordinator_name = ray.get(directory.current_actors.remote())
        key = (target.namespace, coordinator_name, tuple(queue_names))
        if key not in _handles:
            coordinator = GuardedHandle(ray.get_actor(coordinator_name, namespace=target.namespace), target.secret)
            queues = [GuardedHandle(ray.get_actor(name, namespace=target.namespace), target.secret)
                      for name in queue_names]
            _handles.clear()
            _handles[key] = (coordinator, queues)
        return _handles[key]


def _reporting_bad_input(chunks, coordinator, feed_id):
    """Passes ``chunks`` through; a ``BadInputError`` is also recorded with the coordinator before it propagates."""
    try:
        yield from chunks
    except BadInputError as exc:
        ray.get(coordinator.record_bad_input.remote(feed_id, str(exc)))
        raise


def _boxed(chunk):
    """What a queue entry carries for ``chunk``, and the bytes it counts against the queue's bound.

    A chunk is put into the object store once. Rows already stored (a Ray
    Dataset's blocks) go by reference and count 0 bytes: they hold no memory
    of their own (a reader on another node pulls a copy that Ray may evict),
    and the bridge bounds how many blocks are in flight.
    """
    if isinstance(chunk, (StoredRows, StoredRun)):
        return chunk.box(), 0
    return [ray.put(chunk)], chunk.nbytes


def _settle(calls, slots, node_names, results, limit):
    """Waits until at most ``limit`` put calls are in flight; records their outcomes."""
    while len(calls) > limit:
        ready, _ = ray.wait(calls, num_returns=len(calls) - limit)
        for ref in ready:
            index = calls.index(ref)
            calls.pop(index)
            slot, rows = slots.pop(index)
            try:
                results.append((slot, rows, ray.get(ref)))
            except BaseException:
                discard(calls, DISCARD_SECONDS)
                raise


def feed_train_partition(target, epoch, partition, rows=None, chunks=None, where=None):
    """Feeds one partition of one training epoch and waits until its rows were consumed.

    Args:
      :target: the :class:`FeedTarget`.
      :epoch: the epoch number; with ``partition`` it makes chunk keys that a
        retried attempt reproduces exactly, so no row is delivered twice.
      :partition: the partition index.
      :rows: an iterator of rows, or
      :chunks: an iterator of :class:`raytfnode.chunks.Chunk` or :class:`raytfnode.stored.StoredRows`.
      :where: what errors call the partition (default ``'partition N'``); a task that reads several
        source partitions names them.

    Returns:
      ``{'partition', 'epoch', 'rows', 'consumed', 'skipped'}``.
    """
    where = where or "partition {}".format(partition)
    coordinator, queues = connect(target, where)
    if chunks is None:
        chunks = chunk_rows(rows, target.chunk_bytes, target.chunk_rows, where)
    chunks = _reporting_bad_input(chunks, coordinator, target.feed_id)
    stats = {"partition": partition, "epoch": epoch, "rows": 0, "consumed": 0, "skipped": 0}
    keys = _put_epoch_chunks(target, epoch, partition, chunks, coordinator, queues, stats)
    _wait_consumed(target, queues, keys, where, stats)
    return stats


def _put_epoch_chunks(target, epoch, partition, chunks, coordinator, queues, stats):
    """Splits each chunk across the nodes as the coordinator says and puts the pieces into their queues.

    Counts ``rows`` and ``skipped`` into ``stats``; returns the chunk keys put into each node's queue.
    """
    keys = [[] for _ in queues]
    calls, call_slots, outcomes = [], [], []
    terminated = False   # the coordinator answers None for every chunk once a node terminated the feed
    # One chunk ahead: the coordinator's split of chunk N travels while chunk N+1 is cut, and the
    # pieces of chunk N go into the object store only once the queues took chunk N-1 (so at most one
    # chunk of this producer waits outside the queues' byte bound, and the queues' backpressure
    # reaches the producer before it copies more).
    pending = None   # (chunk key, chunk, ref of the coordinator's answer)
    for seq, chunk in itertools.chain(enumerate(chunks), [(None, None)]):
        ahead = None
        if chunk is not None:
            stats["rows"] += chunk.num_rows
            if terminated:
                stats["skipped"] += chunk.num_rows
            else:
                chunk_key = (target.feed_id, epoch, partition, seq)
                ahead = (chunk_key, chunk, coordinator.assign.remote(target.feed_id, epoch, chunk_key,
                                                                     chunk.num_rows, getattr(chunk, "slot", None)))
        if pending is not None:
            chunk_key, current, answer = pending
            counts = ray.get(answer)
            if counts is None or terminated:
                terminated = True
                stats["skipped"] += current.num_rows
            else:
                _settle(calls, call_slots, target.node_names, outcomes, 0)
                _put_split(target, queues, chunk_key, current, counts, calls, call_slots, keys)
        pending = ahead
    _settle(calls, call_slots, target.node_names, outcomes, 0)
    return keys


def feed_stored_epoch(target, epoch, pieces, partitions, cancelled=None, end_marker=None):
    """Feeds one training epoch of rows already in the object store (a Ray Dataset's blocks) in a few calls.

    The rows need no cutting or copying, and their size is known before the
    first put, so the whole epoch goes at once: one coordinator call splits
    every piece, and one call per node queues that node's parts (a part holds
    references and counts 0 bytes against the bound) and waits until the node
    read them. When every piece is planned to one node (data locality, the
    default), the split is known before the coordinator answers: its answer
    goes to the nodes' calls as an argument, which Ray resolves on the way,
    so the epoch costs one round trip instead of three.

    Args:
      :target: the :class:`FeedTarget`.
      :epoch: the epoch number; with a piece's index it makes the piece's chunk key.
      :pieces: the :class:`raytfnode.stored.StoredRows` and :class:`raytfnode.stored.StoredRun`, in order.
      :partitions: how many blocks they cover (the source's partitions, for the report).
      :cancelled: a ``threading.Event``; once set, no more pieces are put.
      :end_marker: the end-of-epoch marker, queued on every node's queue by the same call, right after
        its share (the driver need not send it after the epoch: one round trip less per epoch).

    Returns:
      ``{'epoch', 'rows', 'consumed', 'skipped', 'partitions', 'marked_end'}``; ``marked_end``: every
      node's queue holds ``end_marker``.
    """
    where = "epoch {} of the Ray Dataset".format(epoch)
    coordinator, queues = connect(target, where)
    chunks = [((target.feed_id, epoch, index, 0), piece) for index, piece in enumerate(pieces)]
    stats = {"epoch": epoch, "rows": sum(piece.num_rows for piece in pieces), "consumed": 0, "skipped": 0,
             "partitions": partitions, "marked_end": end_marker is not None}
    markers = [end_marker] if end_marker is not None else []
    if cancelled is not None and cancelled.is_set():
        raise FeedError("{}: the feed was cancelled".format(where))
    answers = coordinator.assign_all.remote(
        target.feed_id, epoch, [(key, piece.num_rows, piece.slot) for key, piece in chunks])
    if all(piece.slot is not None for piece in pieces):
        shares = stored_shares(chunks, [[0] * piece.slot + [piece.num_rows] for piece in pieces], len(queues))
        given = answers
    else:
        given = ray.get(answers)
        shares = stored_shares(chunks, given, len(queues))
    waits = [(slot, queues[slot].put_and_wait.remote(target.qname, share, given, target.feed_timeout, markers))
             for slot, share in enumerate(shares) if share or markers]
    try:
        _gather_consumed(target, waits, where, stats)
    except BaseException:
        ready, _ = ray.wait([answers], timeout=0)
        if ready:
            ray.get(answers)   # the coordinator's own error, when it refused the epoch
        raise
    stats["skipped"] += sum(piece.num_rows for piece, counts in zip(pieces, ray.get(answers)) if counts is None)
    return stats


def stored_shares(chunks, counts, slots):
    """What each of ``slots`` nodes is fed of ``chunks`` (``[(chunk key, stored piece)]``) when piece ``i``
    is split as ``counts[i]`` says (rows per slot, in slot order; ``None``: not fed): per slot,
    ``[(i, key, box, rows)]`` for :meth:`raytfnode.feed_queue._NodeQueues.put_and_wait`.
    """
    shares = [[] for _ in range(slots)]
    for index, ((chunk_key, piece), piece_counts) in enumerate(zip(chunks, counts)):
        if piece_counts is None:
            continue
        start = 0
        for slot, count in enumerate(piece_counts):
            if count:
                shares[slot].append((index, chunk_key + (slot,), piece.slice(start, start + count).box(), count))
                start += count
    return shares


def feed_cached_epoch(target, epoch):
    """Feeds training epoch ``epoch`` from the nodes' epoch caches and waits until it was read.

    Each fed node's queue queues again the rows it kept of the first epoch (see
    :mod:`raytfnode.epoch_cache`); nothing is read from the source or copied.

    Returns:
      ``{'epoch', 'rows', 'consumed', 'skipped', 'partitions': 0, 'cached': True}``.
    """
    where = "epoch {} (fed from the epoch cache)".format(epoch)
    _, queues = connect(target, where)
    keys = ray.get([queue.replay_epoch.remote(target.qname, target.feed_id, epoch) for queue in queues])
    stats = {"epoch": epoch, "rows": 0, "consumed": 0, "skipped": 0, "partitions": 0, "cached": True}
    _wait_consumed(target, queues, keys, where, stats)
    stats["rows"] = stats["consumed"] + stats["skipped"]
    return stats


def _put_split(target, queues, chunk_key, chunk, counts, calls, call_slots, keys):
    """Puts ``chunk`` split as the coordinator said (``counts`` rows per slot), one call per slot that
    gets rows, without waiting; records each call, its ``(slot, rows)`` and its key per slot."""
    start = 0
    for slot, count in enumerate(counts):
        if not count:
            continue
        key = chunk_key + (slot,)
        box, nbytes = _boxed(chunk.slice(start, start + count))
        start += count
        calls.append(queues[slot].put_chunk.remote(target.qname, key, box, count, nbytes, None, False,
                                                   target.feed_timeout))
        call_slots.append((slot, count))
        keys[slot].append(key)


def _wait_consumed(target, queues, keys, where, stats):
    """Waits until each node read the chunks in ``keys``; counts ``consumed`` and ``skipped`` into ``stats``."""
    _gather_consumed(target, [(slot, queues[slot].wait_consumed.remote(slot_keys, target.feed_timeout))
                              for slot, slot_keys in enumerate(keys) if slot_keys], where, stats)


def _gather_consumed(target, waits, where, stats):
    """Reads the summaries of ``waits`` (``[(slot, ref)]`` of calls answering as ``wait_consumed``) into ``stats``."""
    try:
        for slot, ref in waits:
            summary = ray.get(ref)
            if summary["lost"]:
                raise FeedError("{}: {} chunks fed to node {} were lost with their producer and not re-sent".format(
                    where, len(summary["lost"]), target.node_names[slot]))
            stats["consumed"] += summary["consumed"]
            stats["skipped"] += summary["skipped"]
    except BaseException:
        discard([ref for _, ref in waits], DISCARD_SECONDS)
        raise



def feed_inference_partition(target, partition, rows=None, chunks=None, run_id=""):
    """Feeds one partition for inference and yields its results, in input order.

    The whole partition goes to one node (``partition % number of fed nodes``);
    results come back keyed by ``(feed, run, partition)``, so partitions that one
    node processes at the same time never mix. ``run_id`` separates two
    evaluations of the same lazy result (for Spark: the stage id).
    """
    for block in feed_inference_blocks(target, partition, rows, chunks, run_id):
        yield from block


def feed_inference_blocks(target, partition, rows=None, chunks=None, run_id=""):
    """:func:`feed_inference_partition`, yielding the results of each chunk as one block.

    A block is an array when ``map_fun`` returned arrays of one shape and dtype
    (see :mod:`raytfnode.result_blocks`), a list otherwise; iterating the blocks
    in order gives the partition's results in input order.
    """
    where = "partition {}".format(partition)
    coordinator, queues = connect(target, where)
    if chunks is None:
        chunks = chunk_rows(rows, target.chunk_bytes, target.chunk_rows, where)
    chunks = _reporting_bad_input(chunks, coordinator, target.feed_id)
    slot = partition % len(queues)
    queue = queues[slot]
    tag = (target.feed_id, run_id, partition)
    calls, call_slots, outcomes = [], [], []
    total = 0
    seq = -1
    iterator = iter(chunks)
    current = next(iterator, None)
    while current is not None:
        following = next(iterator, None)
        seq += 1
        key = tag + (seq,)
        box, nbytes = _boxed(current)
        if following is None:
            # the last chunk ends the node's batch, so it must be queued after every other: puts that wait
            # for room may be admitted in any order (a small last chunk fits first), so let them land
            _settle(calls, call_slots, target.node_names, outcomes, 0)
        calls.append(queue.put_chunk.remote(target.qname, key, box, current.num_rows, nbytes, tag,
                                            following is None, target.feed_timeout))
        call_slots.append((slot, current.num_rows))
        total += current.num_rows
        _settle(calls, call_slots, target.node_names, outcomes, MAX_PUTS_IN_FLIGHT)
        current = following
    _settle(calls, call_slots, target.node_names, outcomes, 0)
    if seq < 0:
        return
    skipped = [rows for _, rows, outcome in outcomes if outcome == "skipped"]
    if skipped:
        raise FeedError("{}: node {} terminated its feed before inference; {} rows got no result".format(
            where, target.node_names[slot], sum(skipped)))
    blocks = ray.get(queue.take_results.remote(tag, seq + 1, target.feed_timeout))
    answered = sum(len(block) for block in blocks)
    if answered != total:
        raise FeedError("{}: node {} returned {} results for {} input rows".format(
            where, target.node_names[slot], answered, total))
    yield from blocks

