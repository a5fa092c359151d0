"""Answering Arrow batches with a SavedModel signature: in a Spark Python worker or in a Ray actor.

The SavedModel is loaded once per process and kept in a module-level cache
keyed by ``(export_dir, tag_set, signature, saved_model.pb's mtime)``; every
later partition and batch in the same process reuses it (a re-exported model
at the same path is loaded again). Output columns are appended to each input
batch, so output rows line up 1:1 with input rows.
"""
import collections
import dataclasses
import os
import threading

import numpy as np

from ..chunks import chunk_from_arrow
from ..errors import BadInputError
from .signature import DEFAULT_SIGNATURE, coerce_input, parse_tags, to_arrow

_lock = threading.Lock()
_models = {}                       # cache key -> (loaded SavedModel, signature function)
#: How many times this process loaded each ``(export_dir, tag_set, signature)``.
loads = collections.Counter()


@dataclasses.dataclass(frozen=True)
class ServingPlan:
    """What ``transform()`` runs: the SavedModel signature, the column mappings, and where to run it.

    Attributes:
      :export_dir, tag_set, signature_def_key: the SavedModel signature.
      :inputs: ``[(column, TensorInfo)]``: the columns feeding the signature's inputs.
      :outputs: ``[(TensorInfo, column)]``: the outputs written as new columns.
      :batch_size: rows per call of the signature.
      :actors: ``None`` to answer in this process, else the :class:`raytfnode.pipeline.actors.PoolAddress`.
    """

    export_dir: str
    tag_set: str
    signature_def_key: str
    inputs: tuple
    outputs: tuple
    batch_size: int
    actors: object = None


def _stamp(export_dir):
    try:
        return os.stat(os.path.join(export_dir, "saved_model.pb")).st_mtime_ns
    except OSError:
        return None   # not a local path: the first load is kept


def signature_function(plan):
    """The plan's signature function, loaded at most once per process (per SavedModel version)."""
    signature = plan.signature_def_key or DEFAULT_SIGNATURE
    key = (plan.export_dir, plan.tag_set, signature, _stamp(plan.export_dir))
    with _lock:
        if key not in _models:
            import tensorflow as tf
            for old in [k for k in _models if k[:3] == key[:3]]:
                del _models[old]          # an older export at the same path
            model = tf.saved_model.load(plan.export_dir, tags=parse_tags(plan.tag_set))
            _models[key] = (model, model.signatures[signature])
            loads[key[:3]] += 1
        return _models[key][1]


def predict(plan, arrays):
    """Runs the signature over ``arrays`` (``{input name: array}``) in ``plan.batch_size`` slices.

    Returns ``{output name: array}`` with one row per input row.
    """
    import tensorflow as tf

    function = signature_function(plan)
    rows = len(next(iter(arrays.values())))
    wanted = [info.name for info, _ in plan.outputs]
    parts = {name: [] for name in wanted}
    step = max(1, int(plan.batch_size))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        feed = {name: tf.constant(array[start:stop]) for name, array in arrays.items()}
        result = function(**feed)
        for name in wanted:
            value = result[name].numpy()
            if len(value) != stop - start:
                raise BadInputError("output {!r} of the SavedModel at {} gave {} rows for {} input rows; "
                                    "transform() needs one output row per input row".format(
                                        name, plan.export_dir, len(value), stop - start))
            parts[name].append(value)
    return {name: np.concatenate(values) if values else np.zeros((0,)) for name, values in parts.items()}


def input_arrays(batch, plan, where):
    """``{input name: array}`` for one Arrow batch: the mapped columns, coerced to the signature's inputs."""
    import pyarrow as pa

    columns = [column for column, _ in plan.inputs]
    selected = pa.RecordBatch.from_arrays([batch.column(column) for column in columns], names=columns)
    chunk = chunk_from_arrow(selected, where)
    return {info.name: coerce_input(values, info, column)
            for (column, info), values in zip(plan.inputs, chunk.columns)}


def with_outputs(batch, outputs, plan):
    """``batch`` with the output columns appended, in the order of ``plan.outputs``."""
    import pyarrow as pa

    arrays = list(batch.columns) + [to_arrow(outputs[info.name], info) for info, _ in plan.outputs]
    names = list(batch.schema.names) + [column for _, column in plan.outputs]
    return pa.RecordBatch.from_arrays(arrays, names=names)


def answer_batches(batches, plan, where):
    """The ``mapInArrow`` function body: every input batch with its predictions appended, in order."""
    from ..zipcache import reuse_unchanged_archive_directories
    reuse_unchanged_archive_directories()
    if plan.actors is not None:
        from .actors import answer_on_actors
        yield from answer_on_actors(batches, plan, where)
        return
    for batch in batches:
        if batch.num_rows:
            yield with_outputs(batch, predict(plan, input_arrays(batch, plan, where)), plan)
