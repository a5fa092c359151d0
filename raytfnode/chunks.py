"""Chunk encoding: rows <-> columnar numpy chunks. Pure functions, no Ray.

A :class:`Chunk` holds a run of rows as columns: one numpy array per column
(``(n,)`` for scalars, ``(n, d1, ...)`` for fixed-shape arrays) or, for values
that are not numeric (strings, dicts, ``None``-first columns), a plain list.
Chunks travel through the Ray object store as one object each, so feeding
costs one ``ray.put`` per chunk instead of one pickled call per row.

What :meth:`Chunk.rows` gives back (the ``next_batch`` row format):

* a scalar row (``3``, ``2.5``) comes back as the same Python scalar;
* a list of numbers (``[0.1, 0.2]``) comes back as a list of Python numbers;
* a numpy array row comes back as a read-only numpy array of the same shape
  and dtype (a view into the chunk);
* a tuple (or ``pyspark.sql.Row``) comes back as a plain tuple whose fields
  follow the rules above; a list of mixed fields comes back as a list;
* anything else comes back as the object itself.

The kind of each column is fixed by the chunk's first row; a later row that
does not match (another length, another shape, ``None`` in a numeric column)
is rejected with :class:`raytfnode.errors.BadInputError` naming the row and
the column, instead of being silently converted.
"""
import itertools
import numbers
import sys

import numpy as np

from .errors import BadInputError

DEFAULT_CHUNK_BYTES = 32 << 20
"""Target size of a chunk. A training feed's coordinator splits every chunk across the fed nodes, and
each piece costs a put and about three actor calls across producer, queue actor and reader (several ms
of CPU on a 2-core machine), so chunks must be large: with 2 nodes, 32 MiB chunks (16 MiB pieces) fed
60,000 MNIST rows from a Spark RDD in 0.44 s against 0.57 s for 16 MiB (medians of 9 alternated epochs),
and 16 MiB fed them 1.4x faster than 8 MiB before that. A producer holds about two chunks at a time."""

DEFAULT_CHUNK_ROWS = 1 << 20
"""Most rows in a chunk, however small they are. Every chunk costs actor calls whatever its size, so
chunks of small rows must hold many of them (1,048,576 int64 rows are 8 MiB as a column). Rows a producer
holds as Python objects until their chunk is encoded are also bounded by the size of those objects (see
:func:`rows_per_chunk`): one-number rows from a Spark RDD are about 36 bytes each that way, so a chunk of
them holds up to about 930,000 rows."""

SCALAR = "scalar"   # numeric scalars -> 1-D array, rows as Python scalars
LIST = "list"       # lists/tuples of numbers -> N-D array, rows as (nested) lists
NDARRAY = "ndarray"  # numpy arrays -> N-D array, rows as numpy arrays
OBJECT = "object"   # anything else -> list, rows as the objects themselves

SINGLE = "single"   # the row is one value (one column)
TUPLE = "tuple"     # the row is a tuple of fields
FIELDS = "fields"   # the row is a list of fields (not all numbers)


class Chunk:
    """A run of rows stored as columns.

    Attributes:
      :columns: tuple of columns, each a numpy array or a list, all of length ``num_rows``.
      :kinds: tuple of column kinds (``'scalar'``, ``'list'``, ``'ndarray'``, ``'object'``).
      :row_kind: ``'single'``, ``'tuple'`` or ``'fields'``: how rows are rebuilt.
      :names: tuple of column names, or ``None`` when the source had none.
      :num_rows: number of rows.
    """

    __slots__ = ("columns", "kinds", "row_kind", "names", "num_rows")

    def __init__(self, columns, kinds, row_kind, names=None):
        self.columns = tuple(columns)
        self.kinds = tuple(kinds)
        self.row_kind = row_kind
        self.names = tuple(names) if names is not None else None
        self.num_rows = len(self.columns[0]) if self.columns else 0

    def __len__(self):
        return self.num_rows

    def __repr__(self):
        return "Chunk(num_rows={}, kinds={}, row_kind={!r}, names={})".format(
            self.num_rows, self.kinds, self.row_kind, self.names)

    def __reduce__(self):
        return (Chunk, (self.columns, self.kinds, self.row_kind, self.names))

    @property
    def nbytes(self):
        """Approximate size in bytes (exact for numeric columns)."""
        total = 0
        for column in self.columns:
            total += column.nbytes if isinstance(column, np.ndarray) else 64 * len(column)
        return total

    def slice(self, start, stop):
        """Rows ``start:stop`` as a new chunk (numpy columns are views, no copy)."""
        return Chunk([c[start:stop] for c in self.columns], self.kinds, self.row_kind, self.names)

    def rows(self, start=0, stop=None):
        """Rows ``start:stop`` in the row format described in the module docstring."""
        stop = self.num_rows if stop is None else stop
        values = [_column_values(c[start:stop], kind) for c, kind in zip(self.columns, self.kinds)]
        if self.row_kind == SINGLE:
            return values[0]
        if self.row_kind == TUPLE:
            return list(zip(*values))
        return [list(row) for row in zip(*values)]

    def arrays(self, start=0, stop=None):
        """Columns ``start:stop`` as numpy arrays (object columns become object arrays)."""
        stop = self.num_rows if stop is None else stop
        out = []
        for column in self.columns:
            part = column[start:stop]
            if not isinstance(part, np.ndarray):
                array = np.empty(len(part), dtype=object)
                array[:] = part
                part = array
            out.append(part)
        return tuple(out)

    def column_index(self, name, position=None):
        """Index of column ``name``; with no names, ``position`` (the sorted-name order) is used."""
        if self.names is not None:
            try:
                return self.names.index(name)
            except ValueError:
                raise BadInputError(
                    "input_mapping names column {!r}, but the data has columns {}; "
                    "change input_mapping to use these names".format(name, list(self.names))) from None
        if position is None or position >= len(self.columns):
            raise BadInputError(
                "input_mapping names {} columns but each row has {} fields; rows of an RDD map to "
                "input_mapping's columns in sorted name order".format(
                    (position or 0) + 1, len(self.columns)))
        return position


def _column_values(column, kind):
    if kind in (SCALAR, LIST):
        return column.tolist()
    if kind == NDARRAY:
        return list(column)
    return list(column)


def _is_number(value):
    return isinstance(value, (numbers.Number, np.number, np.bool_)) and not isinstance(value, complex)


def _kind_of(value):
    if isinstance(value, np.ndarray):
        return NDARRAY if value.dtype != object else OBJECT
    if _is_number(value):
        return SCALAR
    if isinstance(value, (list, tuple)) and value and all(_is_number(v) for v in value):
        return LIST
    if isinstance(value, (list, tuple)) and value and all(
            isinstance(v, (list, tuple)) and v and all(_is_number(x) for x in v) for v in value):
        return LIST
    return OBJECT


def row_layout(row):
    """How a row is split into columns: ``(row_kind, kinds, names)`` from one example row."""
    names = getattr(row, "__fields__", None) or getattr(row, "_fields", None)
    if isinstance(row, tuple):
        return TUPLE, tuple(_kind_of(v) for v in row), tuple(names) if names else None
    if isinstance(row, list) and row and not all(_is_number(v) for v in row):
        return FIELDS, tuple(_kind_of(v) for v in row), None
    return SINGLE, (_kind_of(row),), None


def encode_rows(rows, layout=None, where="", first_row_index=0):
    """Encodes a list of rows into a :class:`Chunk`.

    Args:
      :rows: a non-empty list of rows (scalars, lists, tuples, numpy arrays or objects).
      :layout: the ``row_layout`` of the stream the rows come from; taken from
        ``rows[0]`` when ``None``. Passing the stream's layout keeps every chunk
        of a partition consistent.
      :where: text naming the source in errors, e.g. ``"partition 3"``.
      :first_row_index: index of ``rows[0]`` within that source, for errors.

    Raises:
      BadInputError: a row whose length, shape or type does not match the layout.
    """
    if not rows:
        raise ValueError("encode_rows needs at least one row")
    row_kind, kinds, names = layout or row_layout(rows[0])
    if row_kind == SINGLE:
        raw_columns = [rows]
    else:
        width = len(kinds)
        lengths = set(map(len, rows))
        if lengths != {width}:
            bad = next(i for i, r in enumerate(rows) if len(r) != width)
            raise BadInputError("{}: row {} has {} fields but the first row has {}; every row must have "
                                "the same fields".format(_place(where), first_row_index + bad, len(rows[bad]), width))
        raw_columns = list(zip(*rows)) if width else []
    columns = []
    layout = (row_kind, kinds, names)
    for index, (values, kind) in enumerate(zip(raw_columns, kinds)):
        columns.append(_encode_column(values, kind, _column_label(where, layout, index), first_row_index))
    return Chunk(columns, kinds, row_kind, names)


def _place(where):
    return where or "input"


def _encode_column(values, kind, label, first_row_index):
    if kind == OBJECT:
        return list(values)
    if kind == NDARRAY:
        first = values[0]
        try:   # rows of one shape: one (n, ...) array; np.array copies them twice as fast as np.stack here
            array = np.array(values)
        except (ValueError, TypeError):
            array = None
        if array is None or array.dtype == object:
            bad = next(i for i, v in enumerate(values)
                       if not isinstance(v, np.ndarray) or v.shape != first.shape)
            got = values[bad]
            raise BadInputError("{}: row {} is {} but the first row is an array of shape {}; rows of an array "
                                "column must share one shape (pad or split them)".format(
                                    label, first_row_index + bad, _describe(got), first.shape))
        return array
    try:
        array = np.asarray(values)
    except (ValueError, TypeError):
        array = None
    if array is None or array.dtype.kind not in "biuf":
        if kind == SCALAR:
            bad = next(i for i, v in enumerate(values) if not _is_number(v))
            raise BadInputError("{}: row {} is {} in a numeric column; replace missing values before "
                                "feeding (e.g. DataFrame.fillna) or cast the column".format(
                                    label, first_row_index + bad, _describe(values[bad])))
        first_shape = np.shape(values[0])
        bad = next((i for i, v in enumerate(values) if _bad_number_list(v, first_shape)), 0)
        raise BadInputError("{}: row {} is {} but the first row is a list of numbers of shape {}; rows of "
                            "a list column must share one length and hold only numbers".format(
                                label, first_row_index + bad, _describe(values[bad]), first_shape))
    return array


def _bad_number_list(value, shape):
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):
        return True
    return array.shape != shape or array.dtype.kind not in "biuf"


def _describe(value):
    if value is None:
        return "None"
    if isinstance(value, np.ndarray):
        return "an array of shape {}".format(value.shape)
    if isinstance(value, (list, tuple)):
        return "a {} of length {}".format(type(value).__name__, len(value))
    return "{!r} ({})".format(value, type(value).__name__)


def rows_per_chunk(example_row, target_bytes, max_rows, buffered=False):
    """How many rows like ``example_row`` make a chunk of about ``target_bytes`` (at most ``max_rows``).

    With ``buffered`` (the rows are held as Python objects until the chunk is encoded), those objects
    stay within about ``target_bytes`` too: ten floats are 80 bytes in a chunk but about 380 as a tuple
    of Python floats.
    """
    size = _row_bytes(example_row)
    if buffered:
        size = max(size, _python_bytes(example_row) + 8)   # + its slot in the buffer
    return int(max(1, min(max_rows, target_bytes // max(size, 1))))


def _python_bytes(value):
    """About the memory ``value`` takes as Python objects (a list or tuple from its first 64 items).

    An object that cannot tell its size counts 64 bytes: an estimate must never fail a feed.
    """
    try:
        size = sys.getsizeof(value)
    except Exception:  # noqa: BLE001  (a broken __sizeof__)
        size = 64
    if isinstance(value, (list, tuple)) and value:
        items = value[:64]
        size += sum(_python_bytes(v) for v in items) * len(value) / len(items)
    return int(size)


def _row_bytes(value):
    if isinstance(value, np.ndarray):
        return value.nbytes
    if _is_number(value):
        return 8
    if isinstance(value, (list, tuple)):
        return sum(_row_bytes(v) for v in value[:64]) * max(1, len(value) / 64.0) if len(value) > 64 else \
            sum(_row_bytes(v) for v in value)
    if isinstance(value, (str, bytes)):
        return len(value) + 32
    return 64


def chunk_rows(row_iter, target_bytes=DEFAULT_CHUNK_BYTES, max_rows=DEFAULT_CHUNK_ROWS, where=""):
    """Cuts an iterator of rows into chunks of about ``target_bytes``.

    Yields :class:`Chunk` objects. The chunk boundaries depend only on the rows,
    so iterating the same rows again gives the same chunks (a retried Spark task
    re-creates the chunks of its failed attempt exactly).

    When the first row holds numeric numpy arrays, each row's arrays are copied
    into the chunk as the row arrives (see :func:`_copied_chunks`), so the rows
    are freed at once instead of a chunk's worth of them waiting to be stacked.
    Other rows wait as Python objects until their chunk is encoded, so a chunk
    of them also holds no more than about ``target_bytes`` of those objects.
    """
    iterator = iter(row_iter)
    try:
        first = next(iterator)
    except StopIteration:
        return
    layout = row_layout(first)
    arrays = _array_fields(first, layout)
    if arrays:
        per_chunk = rows_per_chunk(first, target_bytes, max_rows)
        yield from _copied_chunks(itertools.chain([first], iterator), arrays, layout, per_chunk, where)
        return
    per_chunk = rows_per_chunk(first, target_bytes, max_rows, buffered=True)
    buffer = [first]
    buffer.extend(itertools.islice(iterator, per_chunk - 1))
    start = 0
    while buffer:
        yield encode_rows(buffer, layout, where, start)
        start += len(buffer)
        buffer = list(itertools.islice(iterator, per_chunk))


def _array_fields(row, layout):
    """``[(field, shape, dtype)]`` of the numeric numpy arrays in ``row`` (``[]`` when it has none)."""
    row_kind, kinds, _ = layout
    fields = (row,) if row_kind == SINGLE else row
    return [(index, fields[index].shape, fields[index].dtype) for index, kind in enumerate(kinds)
            if kind == NDARRAY and type(fields[index]) is np.ndarray and fields[index].dtype.kind in "biuf"
            and fields[index].dtype.isnative]


def _copied_chunks(rows, arrays, layout, per_chunk, where):
    """:func:`chunk_rows` for rows with numeric array fields (``arrays``, as :func:`_array_fields` finds them
    in the first row): each array is copied into the chunk's column as its row arrives.

    Stacking a chunk's rows at its end (``np.array`` over the list) held 16 MiB of freshly unpickled
    row arrays per chunk and read them back cold: over unpickling 30,000 MNIST rows (50 ms) it added
    55 ms, against 37 ms for the copy made here, while each row's memory is still in cache and is
    reused for the next. Other fields are gathered into lists and encoded as :func:`encode_rows`
    does. A row that does not match the first (another length, shape or dtype) makes its chunk go
    through :func:`encode_rows`, which gives the same chunk (numpy's type promotion) or the same
    error as before.
    """
    row_kind, kinds, names = layout
    single = row_kind == SINGLE
    width = len(kinds)
    copied = [index for index, _, _ in arrays]
    listed = [index for index in range(width) if index not in copied]
    start = 0
    while True:
        columns = [np.empty((per_chunk,) + shape, dtype) for _, shape, dtype in arrays]
        targets = [(index, shape, dtype, column) for (index, shape, dtype), column in zip(arrays, columns)]
        values = [[] for _ in listed]
        appends = [(index, found.append) for index, found in zip(listed, values)]
        count, matched = 0, True
        for row in itertools.islice(rows, per_chunk):
            fields = (row,) if single else row
            if not single and (not isinstance(row, (tuple, list)) or len(row) != width):
                matched = False
                break
            for index, shape, dtype, column in targets:
                value = fields[index]
                if type(value) is not np.ndarray or value.shape != shape or value.dtype != dtype:
                    matched = False
                    break
                column[count] = value
            if not matched:
                break
            for index, append in appends:
                append(fields[index])
            count += 1
        if not matched:   # ``row`` does not match the first: this chunk is encoded from its rows as they came
            fields_of = dict(zip(copied, columns))
            fields_of.update(zip(listed, values))
            done = [_field_row([fields_of[index][i] for index in range(width)], row_kind) for i in range(count)]
            chunk = encode_rows(done + [row] + list(itertools.islice(rows, per_chunk - count - 1)),
                                layout, where, start)
        elif count:
            fields_of = {index: column[:count] for index, column in zip(copied, columns)}
            fields_of.update((index, _encode_column(found, kinds[index], _column_label(where, layout, index), start))
                             for index, found in zip(listed, values))
            chunk = Chunk([fields_of[index] for index in range(width)], kinds, row_kind, names)
        else:
            return
        yield chunk
        start += chunk.num_rows
        if chunk.num_rows < per_chunk:
            return


def _field_row(fields, row_kind):
    """A row rebuilt from its fields, as :func:`encode_rows` reads it."""
    if row_kind == SINGLE:
        return fields[0]
    return tuple(fields) if row_kind == TUPLE else list(fields)


def _column_label(where, layout, index):
    row_kind, _, names = layout
    label = "column {}".format(names[index] if names else index) if row_kind != SINGLE else "value"
    return "{} {}".format(_place(where), label).strip()


def chunk_from_arrow(batch, where="", first_row_index=0):
    """Encodes a ``pyarrow.RecordBatch`` (or ``Table``) into a :class:`Chunk` without per-row Python work.

    Primitive columns become 1-D arrays; list columns whose rows share one
    length (nested lists included) become N-D arrays; strings and other
    types become lists. Nulls are rejected with the column and row named.
    """
    import pyarrow as pa

    columns, kinds = [], []
    names = list(batch.schema.names)
    for name, column in zip(names, batch.columns):
        if isinstance(column, pa.ChunkedArray):  # one chunk (a block's usual case) is used as is: no copy
            column = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        label = "{} column {}".format(_place(where), name)
        if column.null_count:
            bad = column.is_null().to_numpy(zero_copy_only=False).nonzero()[0][0]
            raise BadInputError("{}: row {} is null; replace missing values before feeding "
                                "(e.g. DataFrame.fillna or dropna)".format(label, first_row_index + int(bad)))
        array, kind = _arrow_column(column, label, first_row_index)
        columns.append(array)
        kinds.append(kind)
    return Chunk(columns, kinds, TUPLE, names)


def _arrow_column(column, label, first_row_index=0):
    import pyarrow as pa

    kind_type = column.type
    if isinstance(kind_type, pa.ExtensionType):  # e.g. Ray Data's tensor columns
        try:
            values = column.to_numpy()
        except Exception:  # noqa: BLE001
            values = None
        if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
            return values, (NDARRAY if values.ndim > 1 else SCALAR)
        return column.to_pylist(), OBJECT
    if pa.types.is_integer(kind_type) or pa.types.is_floating(kind_type) or pa.types.is_boolean(kind_type):
        return column.to_numpy(zero_copy_only=False), SCALAR
    if pa.types.is_list(kind_type) or pa.types.is_large_list(kind_type) or pa.types.is_fixed_size_list(kind_type):
        shape = []
        current = column
        while (pa.types.is_list(current.type) or pa.types.is_large_list(current.type)
               or pa.types.is_fixed_size_list(current.type)):
            if pa.types.is_fixed_size_list(current.type):
                width = current.type.list_size
            else:
                offsets = current.offsets.to_numpy()
                lengths = np.diff(offsets)
                width = int(lengths[0]) if len(lengths) else 0
                if len(lengths) and (lengths != width).any():
                    bad = int(np.nonzero(lengths != width)[0][0])
                    raise BadInputError("{}: row {} has length {} but the first row has length {}; rows of "
                                        "an array column must share one shape".format(
                                            label, first_row_index + bad, int(lengths[bad]), width))
            if current.flatten().null_count:
                raise BadInputError("{}: an array holds null elements; fill them before feeding".format(label))
            shape.append(width)
            current = current.flatten()
        if pa.types.is_integer(current.type) or pa.types.is_floating(current.type) or \
                pa.types.is_boolean(current.type):
            values = current.to_numpy(zero_copy_only=False)
            return values.reshape([len(column)] + shape), NDARRAY
    return column.to_pylist(), OBJECT


def concat_chunks(chunks):
    """Joins chunks of one layout into one chunk (used to build batches across chunk edges)."""
    if len(chunks) == 1:
        return chunks[0]
    first = chunks[0]
    columns = []
    for index, kind in enumerate(first.kinds):
        parts = [c.columns[index] for c in chunks]
        if kind == OBJECT or not isinstance(parts[0], np.ndarray):
            merged = []
            for part in parts:
                merged.extend(part)
            columns.append(merged)
        else:
            columns.append(np.concatenate(parts))
    return Chunk(columns, first.kinds, first.row_kind, first.names)
