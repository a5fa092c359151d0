"""Inference results of one chunk as one block: an array when they are alike, a list otherwise.

``DataFeed.batch_results`` takes whatever ``map_fun`` returns for a batch: a
NumPy array, a list of per-row arrays (``list(model(x))``), or a list of any
objects. Results travel from the TF node to the queue actor, to the producer
and (for a DataFrame) through Spark; a list of 15,000 small arrays is pickled
item by item at each hop, while one array of 15,000 rows moves as one buffer.
:func:`join_results` therefore stacks results that are arrays of one shape and
dtype into one array. Iterating a block gives the same rows either way: rows
of a stacked array are arrays of the shape and dtype ``map_fun`` returned.
"""
import numpy as np


def _stackable(rows):
    """Whether ``rows`` (a list) are arrays of one shape (at least 1-D) and one non-object dtype."""
    if not rows or not isinstance(rows[0], np.ndarray):
        return False
    first = rows[0]
    if first.ndim == 0 or first.dtype == object:
        return False
    shape, dtype = first.shape, first.dtype
    return all(type(row) is np.ndarray and row.shape == shape and row.dtype == dtype for row in rows)


def _as_array(part):
    """``part`` as one array whose rows are its results, or ``None`` when it has no such form."""
    if isinstance(part, np.ndarray):
        return part if part.ndim >= 1 and part.dtype != object else None
    if isinstance(part, list) and _stackable(part):
        return np.stack(part)
    return None


def join_results(parts):
    """The results of one chunk, from the results of its batches (``parts``), as one block.

    The block is an array when every part is (or stacks into) an array with rows
    of one shape and dtype; otherwise a list of the results in order.

      >>> join_results([np.zeros((2, 3)), [np.ones(3)]]).shape
      (3, 3)
      >>> join_results([["a"], ["b", "c"]])
      ['a', 'b', 'c']
    """
    arrays = [_as_array(part) for part in parts]
    if arrays and all(a is not None for a in arrays):
        shape, dtype = arrays[0].shape[1:], arrays[0].dtype
        if all(a.shape[1:] == shape and a.dtype == dtype for a in arrays):
            return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    joined = []
    for part in parts:
        joined.extend(part)
    return joined


def slices(block, rows):
    """``block`` in consecutive pieces of at most ``rows`` results (an array gives views)."""
    return [block[start:start + rows] for start in range(0, len(block), rows)]
