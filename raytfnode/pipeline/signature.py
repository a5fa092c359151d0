"""What a SavedModel signature takes and gives, and the conversions between it and Arrow.

Pure functions apart from reading ``saved_model.pb``: the signature is read from
the SavedModel's protocol buffer (no variables are loaded), so the driver can
check the mappings and build the output schema before any Spark task runs.
"""
import collections
import os

import numpy as np

from ..errors import BadInputError

DEFAULT_SIGNATURE = "serving_default"

#: One input or output of a signature: its name, numpy dtype and shape (``-1`` for an unknown dimension).
TensorInfo = collections.namedtuple("TensorInfo", "name dtype shape")


def parse_tags(tag_set):
    """``'serve,gpu'`` -> ``['serve', 'gpu']``; ``None`` stays ``None``."""
    if tag_set is None:
        return None
    return [tag.strip() for tag in tag_set.split(",") if tag.strip()]


def read_signature(export_dir, tag_set=None, signature_def_key=None):
    """Reads one signature of the SavedModel in ``export_dir``.

    Args:
      :export_dir: directory of the SavedModel.
      :tag_set: comma-separated tags of the MetaGraph; ``None`` takes the only one, else the ``serve`` one.
      :signature_def_key: the signature; ``None`` takes ``serving_default``.

    Returns:
      ``(inputs, outputs)``: dicts ``{name: TensorInfo}``.

    Raises:
      BadInputError: no SavedModel, or no such tag set or signature (the message lists what there is).
    """
    import tensorflow as tf
    from tensorflow.core.protobuf import saved_model_pb2

    path = os.path.join(export_dir or "", "saved_model.pb")
    if not export_dir or not tf.io.gfile.exists(path):
        raise BadInputError("no SavedModel at export_dir={!r} (no saved_model.pb there); set export_dir to the "
                            "directory the training function exported to".format(export_dir))
    saved_model = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    meta_graph = _meta_graph(saved_model, parse_tags(tag_set), export_dir)
    key = signature_def_key or DEFAULT_SIGNATURE
    if key not in meta_graph.signature_def:
        raise BadInputError("the SavedModel at {} has no signature {!r}; its signatures are {}; set "
                            "signature_def_key to one of them".format(
                                export_dir, key,
                                sorted(k for k in meta_graph.signature_def if k != "__saved_model_init_op")))
    signature = meta_graph.signature_def[key]
    return _tensor_infos(signature.inputs), _tensor_infos(signature.outputs)


def _meta_graph(saved_model, tags, export_dir):
    graphs = list(saved_model.meta_graphs)
    if tags is None:
        serving = [g for g in graphs if list(g.meta_info_def.tags) == ["serve"]]
        if len(graphs) == 1 or serving:
            return graphs[0] if len(graphs) == 1 else serving[0]
    else:
        for graph in graphs:
            if set(graph.meta_info_def.tags) == set(tags):
                return graph
    raise BadInputError("the SavedModel at {} has no MetaGraph with tag_set {}; its tag sets are {}".format(
        export_dir, tags, [",".join(g.meta_info_def.tags) for g in graphs]))


def _tensor_infos(proto_map):
    import tensorflow as tf

    infos = {}
    for name, info in proto_map.items():
        dtype = tf.dtypes.as_dtype(info.dtype).as_numpy_dtype
        shape = None if info.tensor_shape.unknown_rank else tuple(int(d.size) for d in info.tensor_shape.dim)
        infos[name] = TensorInfo(name, np.dtype(dtype), shape)
    return infos


def plan_inputs(input_mapping, inputs, columns, export_dir):
    """``[(column, TensorInfo)]`` in sorted column order: the columns that feed the signature's inputs.

    Mapping entries whose tensor is not an input of the signature (a training
    label, say) are left out; every signature input must be mapped, and every
    mapped column must be in ``columns``.
    """
    if not input_mapping:
        raise BadInputError("TFModel has no input_mapping; set it to {{column: input tensor}} for the "
                            "signature's inputs {}".format(sorted(inputs)))
    used = [(column, tensor) for column, tensor in sorted(input_mapping.items()) if tensor in inputs]
    unmapped = sorted(set(inputs) - {tensor for _, tensor in used})
    if unmapped:
        raise BadInputError("input_mapping {} leaves the signature input(s) {} of {} without a column; the "
                            "signature's inputs are {}".format(input_mapping, unmapped, export_dir, sorted(inputs)))
    missing = [column for column, _ in used if column not in columns]
    if missing:
        raise BadInputError("input_mapping names column(s) {} that the DataFrame does not have; its columns "
                            "are {}".format(missing, list(columns)))
    return [(column, inputs[tensor]) for column, tensor in used]


def plan_outputs(output_mapping, outputs, columns, export_dir):
    """``[(TensorInfo, column)]`` in sorted tensor order, checked against the signature and the input columns."""
    if not output_mapping:
        raise BadInputError("TFModel has no output_mapping; set it to {{output tensor: column}} with tensors "
                            "from the signature's outputs {}".format(sorted(outputs)))
    unknown = sorted(set(output_mapping) - set(outputs))
    if unknown:
        raise BadInputError("output_mapping names tensor(s) {} that the signature of {} does not have; its "
                            "outputs are {}".format(unknown, export_dir, sorted(outputs)))
    clash = [column for column in output_mapping.values() if column in columns]
    if clash:
        raise BadInputError("output_mapping would write column(s) {} that the DataFrame already has; map the "
                            "outputs to new column names".format(clash))
    plan = [(outputs[tensor], column) for tensor, column in sorted(output_mapping.items())]
    for info, column in plan:
        if info.shape is None or len(info.shape) == 0:
            raise BadInputError("output {!r} of {} has no batch dimension (shape {}); transform() needs one "
                                "value per row".format(info.name, export_dir, info.shape))
    return plan


def spark_type(info):
    """The Spark SQL type (DDL) of an output column: doubles/longs/booleans/strings, one array level per dim."""
    kind = info.dtype.kind
    base = {"f": "double", "i": "bigint", "u": "bigint", "b": "boolean"}.get(kind, "binary")
    for _ in info.shape[1:]:
        base = "array<{}>".format(base)
    return base


def coerce_input(values, info, column):
    """A column's values as the array the signature input wants: its dtype, and its shape when only that differs.

    Spark holds images as flat arrays; a model that takes ``(28, 28, 1)`` gets them reshaped.
    """
    if info.dtype.kind in "OSU":
        return np.asarray(values, dtype=object)
    array = np.asarray(values)
    if array.dtype.kind not in "biuf":
        raise BadInputError("column {!r} holds {} values, but input {!r} wants {}; give the column a numeric "
                            "(array) type".format(column, array.dtype, info.name, info.dtype))
    array = array.astype(info.dtype, copy=False)
    if info.shape is None or tuple(array.shape[1:]) == tuple(info.shape[1:]):
        return array
    wanted = [len(array)] + list(info.shape[1:])
    try:
        return array.reshape(wanted)
    except ValueError:
        raise BadInputError("column {!r} has rows of shape {}, which do not fit input {!r} of shape {}".format(
            column, tuple(array.shape[1:]), info.name, info.shape)) from None


def to_arrow(array, info):
    """An output array ``(rows, ...)`` as an Arrow array of the column type :func:`spark_type` names."""
    import pyarrow as pa

    array = np.asarray(array)
    kind = info.dtype.kind
    if kind == "f":
        flat = pa.array(array.reshape(-1).astype(np.float64, copy=False))
    elif kind in "iu":
        flat = pa.array(array.reshape(-1).astype(np.int64, copy=False))
    elif kind == "b":
        flat = pa.array(array.reshape(-1).astype(bool, copy=False))
    else:
        flat = pa.array([bytes(v) for v in array.reshape(-1)], type=pa.binary())
    for dim in reversed(array.shape[1:]):
        count = len(flat) // dim if dim else len(array)
        flat = pa.ListArray.from_arrays(pa.array(np.arange(count + 1, dtype=np.int32) * dim), flat)
    return flat
