"""Ray Data bridge: a Ray Dataset's blocks fed by reference, no Spark needed.

The dataset is materialized once (its blocks stay in the object store for all
epochs). Each block is checked once where it is: in the driver for blocks on
its machine, by one of a few Ray tasks per machine for the others (bad input
fails naming the block and row; one task per block would start a Ray worker
per block); the check's
answer (rows, bytes per row) is kept per block ref, since a stored block never
changes. Every epoch then feeds row ranges of the blocks by reference
(:mod:`raytfnode.stored`) from the driver: no byte of a block is copied or
moved on the way to the readers, which see its columns as views, and an epoch
costs one coordinator call and one call per node (which queues the node's
ranges and the epoch's end, and waits until they were read), whatever the
number of blocks. Small
blocks (under half a chunk) would still cost a reference each, borrowed by a
queue actor and a reader every epoch and answered by the driver that owns it:
they are joined once, by a few tasks on their own machines, into blocks of up
to four chunks (:func:`join_small_blocks`), kept while the cluster runs and
the Dataset lives, within the object-store share
``train(epoch_cache_bytes=...)`` gives. On a cluster
of several machines an epoch is planned (:mod:`raytfnode.locality`): each
block's rows go to fed nodes on the block's machine as far as the per-epoch
balance allows, so few blocks are copied between machines. The block index
plays the partition's part in chunk keys. Inference runs one task per
block, which returns the block's results as a Ray object.
"""
import collections
import threading
import weakref

import ray
from ray.exceptions import RayTaskError
from ray.experimental import get_object_locations
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..epoch_cache import CACHE_SHARE_OF_STORE
from ..errors import BadInputError
from ..feeding import feed_inference_partition, feed_stored_epoch
from ..locality import contiguous_plan, home_machines, plan_epoch
from ..queue_parts import END_EPOCH
from ..resources import object_store_bytes
from ..stored import (block_pieces, check_block, join_blocks, join_plan, joined_layout, runs_of,
                      stored_block_rows)

MAX_TASKS_IN_FLIGHT = 4
CHECK_TASKS_PER_MACHINE = 4   # blocks are checked by a few tasks per machine, never one task per block
_CHECKED_KEPT = 100000
JOINED_CHUNKS = 4
"""A joined block holds up to this many chunks' bytes: it is read as views (no copy), and each block fed
costs its own actor calls per epoch."""

_checked_lock = threading.Lock()
_checked = collections.OrderedDict()   # block ref id (bytes, not the ref: no pinning) -> (rows, bytes per row)


@ray.remote(num_cpus=0, max_retries=2)
def _check_blocks(indices, *blocks):
    return [check_block(block, "block {}".format(index)) for index, block in zip(indices, blocks)]


@ray.remote(num_cpus=0, max_retries=2)
def _join_blocks(sizes, indices, *blocks):
    """The blocks (``indices`` in the Dataset) joined as ``sizes`` says (``sizes[i]`` consecutive blocks
    each), then ``None`` (the ack)."""
    joined, at = [], 0
    for size in sizes:
        joined.append(join_blocks(blocks[at:at + size], ["block {}".format(i) for i in indices[at:at + size]]))
        at += size
    return joined + [None]


def check_groups(indices, homes, per_machine=CHECK_TASKS_PER_MACHINE):
    """Splits the block ``indices`` into the groups one check task each takes: the blocks of one machine
    (``homes[i]``, the machine holding block ``i``), in at most ``per_machine`` runs per machine.

    >>> check_groups([0, 1, 2, 3, 4], ["m1", "m2", "m1", "m1", "m2"], per_machine=2)
    [[0, 2], [3], [1], [4]]
    """
    by_machine = collections.defaultdict(list)
    for index in indices:
        by_machine[homes[index]].append(index)
    groups = []
    for machine_indices in by_machine.values():
        size = -(-len(machine_indices) // per_machine)
        groups.extend(machine_indices[start:start + size] for start in range(0, len(machine_indices), size))
    return groups


def _get_raising_bad_input(refs):
    """``ray.get(refs)``; a task's ``BadInputError`` is raised as itself (its message names the block)."""
    try:
        return ray.get(refs)
    except RayTaskError as exc:
        if isinstance(exc.cause, BadInputError):
            raise BadInputError(str(exc.cause)) from None
        raise


def on_machine(machine):
    """The scheduling strategy of a task that reads blocks of ``machine`` (``None``: unknown): there if it
    can run there (Ray's own placement by arguments was seen to send some elsewhere)."""
    return NodeAffinitySchedulingStrategy(machine, soft=True) if machine else "DEFAULT"


def _block_layouts(blocks):
    """``(rows, bytes per row)`` of every block; blocks not seen before are checked where they are: those
    on this process's machine here (their columns are read as views of the local object store, and no
    Ray worker has to start for them: one took about half a second on 2 cores), the others by a few
    Ray tasks per machine, each on the machine holding its blocks."""
    ids = [ref.binary() for ref in blocks]
    with _checked_lock:
        missing = [i for i, key in enumerate(ids) if key not in _checked]
    if missing:
        homes = block_machines(blocks)
        here = ray.get_runtime_context().get_node_id()
        local = [i for i in missing if homes[i] == here]
        groups = check_groups([i for i in missing if homes[i] != here], homes)
        checks = [_check_blocks.options(scheduling_strategy=on_machine(homes[group[0]])).remote(
            group, *[blocks[i] for i in group]) for group in groups]
        local_answers = [check_block(ray.get(blocks[i]), "block {}".format(i)) for i in local]  # tasks run meanwhile
        groups.append(local)
        answers = _get_raising_bad_input(checks) + [local_answers]
        with _checked_lock:
            for group, group_answers in zip(groups, answers):
                for i, answer in zip(group, group_answers):
                    _checked[ids[i]] = answer
            while len(_checked) > _CHECKED_KEPT:
                _checked.popitem(last=False)
    with _checked_lock:
        return [_checked[key] for key in ids]


def join_budgets(limit, machines):
    """Bytes the joined copies of small blocks may take on each of ``machines`` (Ray node ids, ``None``
    standing for the driver's): ``limit`` is ``train(epoch_cache_bytes=...)``, ``None`` taking the
    epoch cache's share of each machine's object store, ``0`` none."""
    if limit is not None:
        return {machine: int(limit) for machine in machines}
    store_bytes = object_store_bytes()
    store_bytes[None] = store_bytes.get(ray.get_runtime_context().get_node_id(), 0)
    return {machine: int(store_bytes.get(machine, 0) * CACHE_SHARE_OF_STORE) for machine in machines}


def join_small_blocks(blocks, layouts, chunk_bytes, chunk_rows, limit=None, taken=None, reader_machines=()):
    """Joins a Dataset's small blocks once, each run by a task on the run's machine.

    A few tasks per machine (as for the check) join its blocks under half a chunk
    in runs of up to ``JOINED_CHUNKS`` chunks (:func:`raytfnode.stored.join_plan`); the joined blocks
    are the tasks' returns, owned by this process (the driver) and rebuilt from
    the blocks should their machine be lost.

    Args:
      :blocks: the Dataset's block refs, in order.
      :layouts: their ``(rows, bytes per row)``.
      :chunk_bytes, chunk_rows: the feed's chunk; a joined block has at most ``chunk_rows`` rows.
      :limit: ``train(epoch_cache_bytes=...)``: the joined bytes allowed per machine (see :func:`join_budgets`).
      :taken: ``{machine: bytes}`` of that allowance held already (other Datasets' joined blocks).
      :reader_machines: the machines of the fed nodes: a block held on several machines is joined on
        one of these (:func:`block_machines`).

    Returns:
      ``(refs, layouts, held)``: the blocks to feed, each a block as it is or a joined one, their
      ``(rows, bytes per row)``, and ``{machine: bytes}`` of the joined blocks.
    """
    homes = block_machines(blocks, reader_machines)
    budgets = {machine: budget - (taken or {}).get(machine, 0)
               for machine, budget in join_budgets(limit, set(homes)).items()}
    plan = join_plan(layouts, homes, chunk_bytes, JOINED_CHUNKS * chunk_bytes, chunk_rows, budgets)
    runs = [unit for unit in plan if len(unit) > 1]
    if not runs:
        return list(blocks), list(layouts), {}
    by_machine = collections.defaultdict(list)
    for unit in runs:
        by_machine[homes[unit[0]]].append(unit)
    joined, acks = {}, []
    for machine, machine_runs in by_machine.items():
        strategy = on_machine(machine)
        size = -(-len(machine_runs) // CHECK_TASKS_PER_MACHINE)
        for start in range(0, len(machine_runs), size):
            task_runs = machine_runs[start:start + size]
            refs = _join_blocks.options(num_returns=len(task_runs) + 1, scheduling_strategy=strategy).remote(
                [len(unit) for unit in task_runs], [i for unit in task_runs for i in unit],
                *[blocks[i] for unit in task_runs for i in unit])
            acks.append(refs[-1])
            joined.update((unit[0], ref) for unit, ref in zip(task_runs, refs))
    _get_raising_bad_input(acks)
    unit_layouts = [joined_layout([layouts[i] for i in unit]) for unit in plan]
    held = collections.Counter()
    for unit, (rows, row_bytes) in zip(plan, unit_layouts):
        if len(unit) > 1:
            held[homes[unit[0]]] += int(rows * row_bytes)
    return ([joined[unit[0]] if len(unit) > 1 else blocks[unit[0]] for unit in plan], unit_layouts, dict(held))


class JoinedBlocks:
    """What each Dataset is fed as once its small blocks are joined, per Dataset while it lives.

    Kept by the cluster (dropped at its shutdown); an entry is used again while the Dataset
    yields the same blocks and the feed has the same chunk and budget. The joined blocks of all
    live Datasets share the budget of each machine.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._entries = weakref.WeakKeyDictionary()   # Dataset -> (key, (refs, layouts, held))

    def units(self, dataset, blocks, chunk_bytes, chunk_rows, limit, reader_machines=()):
        """``(refs, layouts)`` to feed ``blocks`` (see :func:`join_small_blocks`); new blocks are checked."""
        key = (tuple(ref.binary() for ref in blocks), chunk_bytes, chunk_rows, limit)
        with self._lock:
            kept = self._entries.pop(dataset, None)   # replaced below, or put back as it is
            taken = self.held()
        if kept is not None and kept[0] == key:
            units = kept[1]
        else:
            kept = None    # the old joined blocks go now: their bytes are free for the new ones
            units = join_small_blocks(blocks, _block_layouts(blocks), chunk_bytes, chunk_rows, limit, taken,
                                      reader_machines)
        with self._lock:
            self._entries[dataset] = (key, units)
        return units[:2]

    def held(self):
        """``{machine: bytes}`` of the joined blocks kept for the live Datasets."""
        total = collections.Counter()
        with self._lock:
            for _, (_, (_, _, held)) in list(self._entries.items()):
                total.update(held)
        return dict(total)

    def clear(self):
        with self._lock:
            self._entries.clear()


class _StoredFeedJob:
    """One epoch of a Ray Dataset: checks new blocks, then feeds their row ranges in a few actor calls."""

    def __init__(self, target, epoch, blocks, units=None):
        self.target = target
        self.epoch = epoch
        self.blocks = blocks
        self.units = units      # () -> (refs, layouts) of the blocks to feed (small ones joined)
        self.cancelled = threading.Event()

    def __call__(self):
        refs, layouts = self.units() if self.units else (self.blocks, _block_layouts(self.blocks))
        plan = self._plan(refs, [rows for rows, _ in layouts])
        pieces = [piece for ref, (rows, row_bytes), ranges in zip(refs, layouts, plan)
                  for piece in block_pieces(ref, rows, row_bytes, self.target.chunk_rows, ranges)]
        # small blocks travel in runs, one queue entry per run instead of per block
        pieces = runs_of(pieces, self.target.chunk_bytes, self.target.chunk_rows)
        # the whole epoch at once, from this thread: the blocks' sizes are known, their pieces cost no
        # memory, so nothing is gained by a producer per block and every producer's round trips are lost
        return [feed_stored_epoch(self.target, self.epoch, pieces, len(self.blocks), self.cancelled,
                                  end_marker=(END_EPOCH, self.target.feed_id, self.epoch))]

    def _plan(self, refs, block_rows):
        """Per block (``refs``), the fed node reading each row range: local first on several machines,
        contiguous stretches on one; ``None`` ranges (every piece split level by the coordinator) with
        ``data_locality=False``."""
        machines = self.target.slot_machines
        if not self.target.data_locality:
            return [None] * len(block_rows)
        homes = block_machines(refs, machines) if len(set(machines)) > 1 else []
        if not any(homes):
            return contiguous_plan(block_rows, len(machines))
        return plan_epoch(block_rows, homes, machines)

    def cancel(self):
        self.cancelled.set()


def block_machines(blocks, reader_machines=()):
    """The Ray node id each block is read from (``None`` where Ray does not know it): of the machines
    holding a copy, one of ``reader_machines`` first (:func:`raytfnode.locality.home_machines`)."""
    locations = get_object_locations(list(blocks))
    return home_machines([(locations.get(ref) or {}).get("node_ids") or [] for ref in blocks], reader_machines)


def block_copies(blocks):
    """How many machines hold a copy of each block: 1 + the copies pulled to other machines."""
    locations = get_object_locations(list(blocks))
    return [len((locations.get(ref) or {}).get("node_ids") or []) for ref in blocks]


@ray.remote(num_cpus=0, max_retries=2, num_returns=2)
def _infer_block(target, index, block, block_box, run_id):
    import pandas as pd

    rows = stored_block_rows(block_box[0], block, target.chunk_rows, "block {}".format(index))
    results = list(feed_inference_partition(target, index, chunks=rows, run_id=run_id))
    column = pd.Series(results, dtype=object) if results and not _is_number(results[0]) else pd.Series(results)
    return pd.DataFrame({"result": column}), len(results)


def _is_number(value):
    import numbers

    import numpy as np
    return isinstance(value, (numbers.Number, np.number))


class _TaskJob:
    """Runs one task per block of ``indices``, a few at a time; ``cancel()`` cancels those in flight.

    ``done(index, value)`` receives each task's answer as it arrives, so a failed
    job keeps what finished.
    """

    def __init__(self, submit, indices, done):
        self.submit = submit
        self.indices = list(indices)
        self.done = done
        self.pending = []
        self.cancelled = False

    def __call__(self):
        waiting = {}
        queue = list(self.indices)
        while queue or waiting:
            while queue and len(waiting) < MAX_TASKS_IN_FLIGHT and not self.cancelled:
                index = queue.pop(0)
                waiting[self.submit(index)] = index
            if self.cancelled:
                raise RuntimeError("feeding was cancelled")
            self.pending = list(waiting)
            ready, _ = ray.wait(self.pending, num_returns=1)
            for ref in ready:
                index = waiting.pop(ref)
                self.done(index, ray.get(ref))

    def cancel(self):
        self.cancelled = True
        for ref in self.pending:
            ray.cancel(ref, force=False)


class RayDatasetSource:
    """A Ray Dataset; its blocks are the partitions."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._blocks = None
        self.joined = None        # the cluster's JoinedBlocks; None: small blocks travel in runs
        self.epoch_cache_bytes = None   # train(epoch_cache_bytes=...): the joined copies' budget

    def blocks(self):
        if self._blocks is None:
            self._blocks = self.dataset.to_arrow_refs()
        return self._blocks

    def validate(self, input_mapping):
        if input_mapping:
            columns = self.dataset.columns()
            missing = [c for c in input_mapping if c not in columns]
            if missing:
                raise BadInputError("input_mapping names column(s) {} that the Ray Dataset does not have; its "
                                    "columns are {}".format(missing, columns))

    def train_job(self, target, epoch):
        blocks = self.blocks()
        units = None
        if self.joined is not None:
            def units():
                return self.joined.units(self.dataset, blocks, target.chunk_bytes, target.chunk_rows,
                                         self.epoch_cache_bytes, target.slot_machines)
        return _StoredFeedJob(target, epoch, blocks, units)

    def inference(self, target, cluster):
        import uuid

        blocks = self.blocks()
        refs = [None] * len(blocks)
        answered = [False] * len(blocks)

        def step(target):   # after a restart, only the blocks without results run again
            run_id = uuid.uuid4().hex[:8]
            submitted = {}

            def submit(i):
                submitted[i], count = _infer_block.remote(target, i, blocks[i], [blocks[i]], run_id)
                return count

            def done(i, _count):
                refs[i] = submitted[i]
                answered[i] = True

            todo = [i for i in range(len(blocks)) if not answered[i]]
            cluster._watch(_TaskJob(submit, todo, done), target, "inference")
            return ray.data.from_pandas_refs(refs)

        return cluster._with_restarts(target, step)
