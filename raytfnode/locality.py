"""Data locality: which fed node reads which rows of stored blocks, so fewer bytes cross machines.

A Ray Dataset's blocks sit in the object stores of particular machines before
an epoch starts, and their sizes are known. Splitting every block across all
fed nodes (what keeps nodes level when chunks arrive one by one from Spark)
makes every reader machine pull a copy of every block. Since an epoch's blocks
are known up front, its assignment can be planned instead: each node gets
exactly its level share of the epoch's rows (within one row of every other
node, as synchronous strategies need), and within that bound every block's
rows go to nodes on the block's own machine first.

Pure: machines are opaque ids (Ray node ids), blocks are row counts.
"""


def level_targets(total_rows, num_slots):
    """Rows each of ``num_slots`` nodes reads in an epoch of ``total_rows``: equal within one row."""
    if num_slots <= 0:
        return []
    base, extra = divmod(total_rows, num_slots)
    return [base + (1 if slot < extra else 0) for slot in range(num_slots)]


def home_machines(holders, reader_machines=()):
    """The machine each block is read from, of the machines holding a copy of it.

    A block can be held on several machines (a copy pulled by an earlier reader
    or by Ray Data itself), and Ray does not say which copy is the primary: a
    machine with readers is taken first, then the lowest id, so the choice does
    not depend on the order Ray lists the copies in.

    Args:
      :holders: for each block, the machines holding a copy (empty when unknown).
      :reader_machines: the machines of the fed nodes.

    Returns:
      For each block, its machine, ``None`` for a block without a known copy.

    >>> home_machines([["head", "m3"], ["m1"], []], ["m1", "m3"])
    ['m3', 'm1', None]
    >>> home_machines([["b", "a"]])
    ['a']
    """
    readers = set(reader_machines)
    return [min(machines, key=lambda machine: (machine not in readers, machine)) if machines else None
            for machines in holders]


def plan_epoch(block_rows, block_machines, slot_machines):
    """Assigns the rows of every block to slots (fed nodes), local first, level per epoch.

    Args:
      :block_rows: rows of each block.
      :block_machines: the machine holding each block (``None`` when unknown).
      :slot_machines: the machine of each slot.

    Returns:
      For each block, a list of ``(slot, start, stop)`` row ranges covering it
      exactly once, in row order. Each slot's rows sum to its
      :func:`level_targets` share; a block is split only where a machine's
      slots have no room left for it, or to fill the slots of machines that
      hold too few rows.
    """
    targets = level_targets(sum(block_rows), len(slot_machines))
    room = list(targets)
    slots_on = {}
    for slot, machine in enumerate(slot_machines):
        slots_on.setdefault(machine, []).append(slot)
    plan = [[] for _ in block_rows]
    left = [[0, rows] for rows in block_rows]     # unassigned row range [start, stop) of each block

    def give(block, slot, count):
        start = left[block][0]
        plan[block].append((slot, start, start + count))
        left[block][0] += count
        room[slot] -= count

    # local pass: largest blocks first, each to the local slot with the most room
    for block in sorted(range(len(block_rows)), key=lambda b: -block_rows[b]):
        local = slots_on.get(block_machines[block], []) if block_machines[block] is not None else []
        while left[block][0] < left[block][1]:
            slot = max(local, key=lambda s: room[s], default=None)
            if slot is None or room[slot] <= 0:
                break
            give(block, slot, min(room[slot], left[block][1] - left[block][0]))
    # remote pass: what is left fills the slots with room, the emptiest first
    for block in range(len(block_rows)):
        while left[block][0] < left[block][1]:
            slot = max(range(len(room)), key=lambda s: room[s])
            give(block, slot, min(room[slot], left[block][1] - left[block][0]))
    for ranges in plan:
        ranges.sort(key=lambda r: r[1])
    return plan


def contiguous_plan(block_rows, num_slots):
    """Assigns an epoch's blocks, in order, to slots in contiguous stretches of their level share.

    On one machine every node reads every block locally, so the plan only
    decides how many pieces there are: each node takes whole blocks one after
    the other and at most ``num_slots - 1`` blocks are split, where a share
    ends (the blind split cuts every block into a piece per node).

    >>> contiguous_plan([3, 3, 3], 2)
    [[(0, 0, 3)], [(0, 0, 2), (1, 2, 3)], [(1, 0, 3)]]
    """
    targets = level_targets(sum(block_rows), num_slots)
    plan, slot, used = [], 0, 0
    for rows in block_rows:
        ranges, start = [], 0
        while start < rows:
            while targets[slot] - used <= 0:
                slot, used = slot + 1, 0
            count = min(targets[slot] - used, rows - start)
            ranges.append((slot, start, start + count))
            start += count
            used += count
        plan.append(ranges)
    return plan


def blind_plan(block_rows, num_slots):
    """The locality-blind assignment: every block split level across all slots (for comparison)."""
    from .coordinator import level_split

    totals = [0] * num_slots
    plan = []
    for rows in block_rows:
        counts = level_split(totals, rows)
        ranges, start = [], 0
        for slot, count in enumerate(counts):
            if count:
                ranges.append((slot, start, start + count))
                start += count
                totals[slot] += count
        plan.append(ranges)
    return plan


def cross_machine_bytes(plan, block_bytes, block_machines, slot_machines):
    """Bytes an epoch pulls across machines: a block is copied once to each other machine that reads it.

    A reader fetches a whole stored block (it reads a row range of it), and Ray
    keeps one copy per machine, so readers on the same machine share a copy.
    """
    moved = 0
    for ranges, nbytes, home in zip(plan, block_bytes, block_machines):
        readers = {slot_machines[slot] for slot, _, _ in ranges}
        moved += nbytes * len(readers - {home})
    return moved


__all__ = ["blind_plan", "contiguous_plan", "cross_machine_bytes", "level_targets", "plan_epoch"]
