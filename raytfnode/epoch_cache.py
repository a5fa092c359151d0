"""The epoch cache: a node's rows of one training epoch, kept in the object store to feed later epochs.

Training from Spark runs one Spark job per epoch. Every epoch after the first
reads the source again, cuts the same chunks and puts them again, and on a
small cluster that work competes with TensorFlow for the same cores; between
two jobs the nodes also wait for Spark to start the next one. When an epoch
fits, each node's queue actor keeps a copy of the chunks it was fed in the
first epoch, owned by the queue actor itself (a Spark worker's objects die with
the worker), and the later epochs are fed from those copies, in a new order
each epoch, without Spark. The queue actors run on the driver's machine, so the
copies are in its object store, and a node on another machine pulls them as it
pulls a producer's chunks.

This module holds the bookkeeping, free of Ray: what one queue keeps
(:class:`LaneCache`), the order of a replayed epoch (:func:`replay_order`) and
how many bytes each node may keep (:func:`node_budgets`).
"""
import random

#: the share of a machine's object store that the epoch caches kept on it may take together
CACHE_SHARE_OF_STORE = 0.25


class LaneCache:
    """What one queue keeps of one epoch of one feed: chunk key -> ``(box, rows, nbytes)``.

    It fills while the epoch is fed (:meth:`begin_copy`, :meth:`add`), stops
    keeping anything once the epoch outgrows ``budget`` bytes or a chunk cannot
    be kept (:meth:`give_up`), and is complete when every chunk of the epoch was
    kept (:meth:`complete`). Chunks are listed in the order they were queued.
    """

    def __init__(self, feed_id, epoch, budget):
        self.feed_id = feed_id
        self.epoch = epoch
        self.budget = int(budget)
        self.chunks = {}        # chunk key -> (box, rows, nbytes), in queue order
        self.copying = 0        # copies started and not finished
        self.nbytes = 0         # bytes kept and being copied
        self.why_not = None     # why this epoch cannot be replayed, once known

    def wants(self, feed_id, key):
        """Whether a chunk queued with ``key`` belongs to the epoch being kept."""
        return self.why_not is None and feed_id == self.feed_id and key[1] == self.epoch

    def begin_copy(self, key, nbytes):
        """Counts a chunk about to be copied; ``False`` (and the cache gives up) when it would outgrow the budget."""
        if self.nbytes + nbytes > self.budget:
            self.give_up("the epoch is larger than the cache's {} bytes per node".format(self.budget))
            return False
        self.nbytes += nbytes
        self.copying += 1
        self.chunks[key] = None   # keeps the queue order; filled by add()
        return True

    def add(self, key, box, rows, nbytes):
        """The copy of ``key`` is done: ``box`` holds the queue actor's own ref."""
        self.copying -= 1
        if self.why_not is None:
            self.chunks[key] = (box, rows, nbytes)

    def copy_failed(self, key, reason):
        self.copying -= 1
        self.give_up("chunk {} could not be copied: {}".format(key, reason))

    def give_up(self, reason):
        """Drops what was kept; the epoch will be fed from its source again."""
        if self.why_not is None:
            self.why_not = reason
        self.chunks.clear()
        self.nbytes = 0

    def complete(self):
        """Whether every chunk of the epoch is kept (call once no copy is running)."""
        return self.why_not is None and self.copying == 0 and all(v is not None for v in self.chunks.values())

    @property
    def rows(self):
        return sum(value[1] for value in self.chunks.values() if value is not None)


def replay_order(count, feed_id, epoch):
    """The order (a permutation of ``range(count)``) in which replayed epoch ``epoch`` feeds the kept chunks.

    A new order every epoch, the same for the same feed and epoch (a restarted
    attempt that replays an epoch again sees it in the same order).
    """
    order = list(range(count))
    random.Random("{}:{}".format(feed_id, epoch)).shuffle(order)
    return order


def node_budgets(slot_machines, store_bytes, limit=None, share=CACHE_SHARE_OF_STORE):
    """Bytes each fed node's epoch cache may hold, in slot order.

    Args:
      :slot_machines: the Ray node id of the machine holding each fed node's copies, in slot order.
      :store_bytes: ``{Ray node id: object store bytes}`` of the cluster's machines.
      :limit: ``train(epoch_cache_bytes=...)``: ``None`` shares ``share`` of each machine's object
        store among the fed nodes on it; ``0`` turns the cache off; a number is every node's budget.
      :share: the share of a machine's object store that its nodes' caches take together.
    """
    if limit is not None:
        return [max(0, int(limit))] * len(slot_machines)
    sharing = {}
    for machine in slot_machines:
        sharing[machine] = sharing.get(machine, 0) + 1
    return [int(store_bytes.get(machine, 0) * share / sharing[machine]) for machine in slot_machines]
