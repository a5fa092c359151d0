"""Rows already in the object store, fed by reference instead of copied.

A Ray Dataset's blocks are Arrow tables in the object store before feeding
starts. Copying them into new chunks would cost a copy of every byte and one
``ray.put`` per chunk; a :class:`StoredRows` names a row range of such a block
instead, travels through the queues as ``[ref, start, stop]``, and the reader
turns it into a :class:`raytfnode.chunks.Chunk` whose numeric and tensor
columns are views of the block's buffers (no copy on either side).

Pure: refs are held here, never resolved.
"""
from .chunks import Chunk, chunk_from_arrow


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
    start, stop = box[1], box[2]
    if isinstance(value, Chunk):
        return value.slice(start, stop)
    return chunk_from_arrow(value.slice(start, stop - start))
