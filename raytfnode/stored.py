"""Rows already in the object store, fed by reference instead of copied.

A Ray Dataset's blocks are Arrow tables in the object store before feeding
starts. Copying them into new chunks would cost a copy of every byte and one
``ray.put`` per chunk; a :class:`StoredRows` names a row range of such a block
instead, travels through the queues as ``[ref, start, stop]``, and the reader
turns it into a :class:`raytfnode.chunks.Chunk` whose numeric and tensor
columns are views of the block's buffers (no copy on either side).

Many small blocks would each cost a queue entry of their own (a put, a take
and an acknowledgement for a few hundred rows); :func:`runs_of` joins
consecutive small pieces into a :class:`StoredRun`, one entry whose reader
joins the pieces into one chunk (a copy of at most a chunk's bytes).

Pure: refs are held here, never resolved.
"""
from .chunks import Chunk, chunk_from_arrow, concat_chunks
from .errors import BadInputError

SMALL_PIECE_SHARE = 2
"""A piece under ``1 / SMALL_PIECE_SHARE`` of a chunk's bytes joins a run; a bigger one is read as a view.

Each queue entry costs about 7 ms of CPU across producer, queue actor and reader (three actor calls
and Ray's borrowing of the block's reference); joining copies the run's rows once in the reader. For
60,000 MNIST rows in 40 blocks of 4.7 MB (runs of three), an epoch took 0.13-0.15 s with 2 against
0.16-0.19 s with 4 (CPU 0.23-0.30 s against 0.31-0.40 s); pairs of pieces just under half a chunk
gain nothing and lose nothing (the copy costs what the entry saved)."""


class StoredRows:
    """Rows ``start:stop`` of a block (an Arrow table or a :class:`Chunk`) already in the object store.

    Attributes:
      :ref: the block's object ref.
      :start: first row (inclusive).
      :stop: last row (exclusive).
      :row_bytes: bytes per row (what the rows weigh, not what they add: they are stored already).
    """

    __slots__ = ("ref", "start", "stop", "row_bytes", "slot")

    def __init__(self, ref, start, stop, row_bytes, slot=None):
        self.ref = ref
        self.start = start
        self.stop = stop
        self.row_bytes = row_bytes
        self.slot = slot      # the fed node planned to read these rows (data locality), or None: any

    def __repr__(self):
        return "StoredRows({}:{}, {:.0f} bytes/row)".format(self.start, self.stop, self.row_bytes)

    @property
    def num_rows(self):
        return self.stop - self.start

    @property
    def nbytes(self):
        return int(self.num_rows * self.row_bytes)

    def slice(self, start, stop):
        """Rows ``start:stop`` of these rows (relative, as :meth:`Chunk.slice`)."""
        return StoredRows(self.ref, self.start + start, self.start + stop, self.row_bytes, self.slot)

    def box(self):
        """What a queue entry carries: ``[ref, start, stop]`` (a list, so Ray passes the ref unresolved)."""
        return [self.ref, self.start, self.stop]


class StoredRun:
    """Consecutive :class:`StoredRows` of small blocks, fed as one chunk.

    Travels as ``[[ref, ...], [start, ...], [stop, ...]]``; the reader fetches
    the blocks in one call and joins the ranges (a copy of the run's rows).

    Attributes:
      :pieces: the :class:`StoredRows`, in feeding order.
      :slot: the fed node planned to read them (every piece has the same), or ``None``.
    """

    __slots__ = ("pieces", "slot")

    def __init__(self, pieces):
        self.pieces = list(pieces)
        self.slot = self.pieces[0].slot

    def __repr__(self):
        return "StoredRun({} pieces, {} rows)".format(len(self.pieces), self.num_rows)

    @property
    def num_rows(self):
        return sum(piece.num_rows for piece in self.pieces)

    @property
    def nbytes(self):
        return sum(piece.nbytes for piece in self.pieces)

    def slice(self, start, stop):
        """Rows ``start:stop`` of the run (relative): a :class:`StoredRows` when they fall in one piece."""
        out, offset = [], 0
        for piece in self.pieces:
            first, last = max(start - offset, 0), min(stop - offset, piece.num_rows)
            if first < last:
                out.append(piece.slice(first, last))
            offset += piece.num_rows
        return out[0] if len(out) == 1 else StoredRun(out)

    def box(self):
        """What a queue entry carries: the refs (unresolved, in a list), the starts and the stops."""
        return [[piece.ref for piece in self.pieces], [piece.start for piece in self.pieces],
                [piece.stop for piece in self.pieces]]


def runs_of(pieces, max_bytes, max_rows):
    """Joins small pieces read by the same node into :class:`StoredRun` of at most ``max_bytes`` and
    ``max_rows``; a piece of ``max_bytes / SMALL_PIECE_SHARE`` or more stays as it is (its reader sees
    views of its block, no copy). Each node's pieces keep their order.

    >>> pieces = [StoredRows("a", 0, 10, 1.0), StoredRows("b", 0, 10, 1.0), StoredRows("c", 0, 90, 1.0)]
    >>> [type(p).__name__ for p in runs_of(pieces, max_bytes=100, max_rows=1000)]
    ['StoredRun', 'StoredRows']
    """
    out, open_runs = [], {}    # slot -> the pieces of its run being filled

    def close(slot):
        run = open_runs.pop(slot, None)
        if run:
            out.append(run[0] if len(run) == 1 else StoredRun(run))

    for piece in pieces:
        if piece.nbytes * SMALL_PIECE_SHARE >= max_bytes:
            close(piece.slot)
            out.append(piece)
            continue
        run = open_runs.get(piece.slot)
        if run and (sum(p.nbytes for p in run) + piece.nbytes > max_bytes
                    or sum(p.num_rows for p in run) + piece.num_rows > max_rows):
            close(piece.slot)
        open_runs.setdefault(piece.slot, []).append(piece)
    for slot in list(open_runs):
        close(slot)
    return out


def join_plan(layouts, homes, chunk_bytes, max_bytes, max_rows, budgets):
    """Which stored blocks to join once into bigger blocks, each of the blocks of one machine.

    A block under ``chunk_bytes / SMALL_PIECE_SHARE`` (one :func:`runs_of` would
    join) joins the open run of small blocks of its machine while the run stays
    within ``max_bytes`` and ``max_rows``; a bigger block is fed as it is. Joined copies take memory in
    their machine's object store, so a run grows only while the joined bytes of
    its machine stay within ``budgets``.

    Args:
      :layouts: ``(rows, bytes per row)`` of every block, in feeding order.
      :homes: the machine holding each block (``None`` where unknown: one more machine).
      :chunk_bytes: the feed's chunk.
      :max_bytes, max_rows: the most bytes and rows of a joined block.
      :budgets: ``{machine: bytes}`` the joined copies may take on each machine (missing: 0).

    Returns:
      The units to feed, in the order of their first block: lists of block indices, a list of one
      being a block fed as it is.

    >>> join_plan([(10, 1.0), (10, 1.0), (90, 1.0), (10, 1.0)], ["m"] * 4, 100, 100, 1000, {"m": 100})
    [[0, 1, 3], [2]]
    >>> join_plan([(10, 1.0), (10, 1.0)], ["m", "n"], 100, 100, 1000, {"m": 100, "n": 100})
    [[0], [1]]
    >>> join_plan([(10, 1.0), (10, 1.0)], ["m", "m"], 100, 100, 1000, {})
    [[0], [1]]
    """
    units, open_runs, joined = [], {}, {}   # machine -> [unit index, bytes, rows]; machine -> joined bytes
    for index, ((rows, row_bytes), home) in enumerate(zip(layouts, homes)):
        nbytes = rows * row_bytes
        run = open_runs.get(home)
        if nbytes * SMALL_PIECE_SHARE >= chunk_bytes:
            units.append([index])
            continue
        if run is not None and run[1] + nbytes <= max_bytes and run[2] + rows <= max_rows:
            adds = nbytes + (run[1] if len(units[run[0]]) == 1 else 0)   # a second block copies the first too
            if joined.get(home, 0) + adds <= budgets.get(home, 0):
                joined[home] = joined.get(home, 0) + adds
                units[run[0]].append(index)
                run[1] += nbytes
                run[2] += rows
                continue
        units.append([index])
        open_runs[home] = [len(units) - 1, nbytes, rows]
    return units


def joined_layout(layouts):
    """``(rows, bytes per row)`` of the block joined of blocks with these ``layouts``.

    >>> joined_layout([(10, 2.0), (30, 4.0)])
    (40, 3.5)
    """
    rows = sum(r for r, _ in layouts)
    return rows, sum(r * b for r, b in layouts) / max(rows, 1)


def join_blocks(blocks, labels):
    """One :class:`Chunk` of the rows of ``blocks`` (Arrow tables or chunks), in order.

    Raises ``BadInputError`` naming the two blocks (``labels``, e.g. ``'block 7'``) when a block's
    columns (names, kinds, element shapes) differ from the first block's.
    """
    chunks = [block if isinstance(block, Chunk) else chunk_from_arrow(block, label)
              for block, label in zip(blocks, labels)]
    first = chunks[0]
    for chunk, label in zip(chunks[1:], labels[1:]):
        if _layout(chunk) != _layout(first):
            raise BadInputError("{} and {} of the Ray Dataset have different columns: {} against {}; give every "
                                "block the same schema (for example with Dataset.map_batches)".format(
                                    labels[0], label, _described(first), _described(chunk)))
    return concat_chunks(chunks)


def _layout(chunk):
    return (chunk.names, chunk.kinds, tuple(getattr(column, "shape", (None,))[1:] for column in chunk.columns))


def _described(chunk):
    return ", ".join("{} ({}{})".format(name, kind, "" if not shape else " of shape {}".format(shape))
                     for name, kind, shape in zip(chunk.names or range(len(chunk.kinds)), chunk.kinds,
                                                  _layout(chunk)[2]))


def check_block(block, where=""):
    """Checks a block (an Arrow table or a :class:`Chunk`) and returns ``(num_rows, bytes per row)``.

    Raises ``BadInputError`` for input the readers cannot use (nulls, ragged
    arrays), naming ``where`` and the row. Numeric and tensor columns are read
    as views, so a check copies nothing.
    """
    chunk = block if isinstance(block, Chunk) else chunk_from_arrow(block, where)
    return chunk.num_rows, max(chunk.nbytes, 1) / max(chunk.num_rows, 1)


def block_pieces(ref, num_rows, row_bytes, chunk_rows, ranges=None):
    """The :class:`StoredRows` that feed a checked block: pieces of at most ``chunk_rows`` rows.

    Not cut by bytes: the rows are in the object store already, so a bigger piece
    holds no more memory, and every piece costs its own actor calls (a few ms of
    CPU on a 2-core machine). ``ranges`` (``[(slot, start, stop)]``, from
    :func:`raytfnode.locality.plan_epoch`) assigns row ranges to fed nodes;
    without it any node may read any piece.
    """
    per_piece = max(1, chunk_rows)
    if ranges is None:
        ranges = [(None, 0, num_rows)]
    return [StoredRows(ref, start, min(start + per_piece, stop), row_bytes, slot)
            for slot, first, stop in ranges for start in range(first, stop, per_piece)]


def stored_block_rows(ref, block, chunk_rows, where=""):
    """Checks the stored ``block`` (the value of ``ref``) and cuts it into :class:`StoredRows`.

    The check runs here, in the producer, so bad input fails naming ``where``
    and the row rather than later in a reader.
    """
    num_rows, row_bytes = check_block(block, where)
    return block_pieces(ref, num_rows, row_bytes, chunk_rows)


def chunk_of(value, box):
    """The :class:`Chunk` a queue entry's ``box`` names, given the fetched object ``value``."""
    if len(box) == 1:
        return value
    if isinstance(box[0], list):   # a StoredRun: ``value`` holds its blocks
        return concat_chunks([chunk_of(block, [None, start, stop]) for block, start, stop in zip(value, *box[1:])])
    start, stop = box[1], box[2]
    if isinstance(value, Chunk):
        return value.slice(start, stop)
    return chunk_from_arrow(value.slice(start, stop - start))


def box_without(box, rows, num_rows):
    """The box of a chunk entry without its first ``rows`` rows (a reader handed those out already).

    ``num_rows`` is how many rows ``box`` names. A put chunk's ``[ref]`` becomes ``[ref, rows, num_rows]``.
    """
    if len(box) == 1:
        return [box[0], rows, num_rows]
    if isinstance(box[0], list):
        refs, starts, stops = [], [], []
        for ref, start, stop in zip(*box):
            skip = min(rows, stop - start)
            rows -= skip
            if start + skip < stop:
                refs.append(ref)
                starts.append(start + skip)
                stops.append(stop)
        return [refs, starts, stops]
    return [box[0], box[1] + rows, box[2]]
