"""``tf.train.Example`` records without TensorFlow: encoding, decoding and Spark schema inference.

The message classes are built from the Example protocol's own field
definitions in a private protobuf descriptor pool, so a Spark worker encodes
and decodes Examples in about 0.2 s of imports instead of importing
TensorFlow (seconds). The bytes are the same as ``tf.train.Example``'s: either
side reads what the other wrote, and the functions here also accept
``tf.train.Example`` objects.

Type mapping (TensorFlowOnSpark's, plus arrays of strings and binaries):

=====================================================  ===================
Spark type                                             Feature
=====================================================  ===================
float, double                                          FloatList
boolean, tinyint, smallint, int, bigint                Int64List
string (UTF-8), binary                                 BytesList
array of any of these                                  the same list type
=====================================================  ===================

A null value is written as an empty list.
"""
import functools

from .errors import BadInputError

FLOAT, INT64, STRING, BINARY = "float", "int64", "string", "binary"
_SCALAR_KINDS = {
    "float": FLOAT, "double": FLOAT,
    "boolean": INT64, "tinyint": INT64, "smallint": INT64, "int": INT64, "bigint": INT64, "long": INT64,
    "string": STRING, "binary": BINARY,
}


@functools.lru_cache(maxsize=None)
def example_class():
    """The ``Example`` message class (wire-compatible with ``tf.train.Example``), built once per process."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="raytfnode/tf_example.proto", package="tensorflow",
                                               syntax="proto3")

    def message(name, fields):
        msg = proto.message_type.add(name=name)
        for number, (field_name, field_type, label, type_name) in enumerate(fields, start=1):
            added = msg.field.add(name=field_name, number=number, type=field_type, label=label)
            if type_name:
                added.type_name = type_name
        return msg

    for name, value_type in (("BytesList", field.TYPE_BYTES), ("FloatList", field.TYPE_FLOAT),
                             ("Int64List", field.TYPE_INT64)):
        message(name, [("value", value_type, field.LABEL_REPEATED, None)])
    feature = message("Feature", [(kind, field.TYPE_MESSAGE, field.LABEL_OPTIONAL, ".tensorflow." + name)
                                  for kind, name in (("bytes_list", "BytesList"), ("float_list", "FloatList"),
                                                     ("int64_list", "Int64List"))])
    feature.oneof_decl.add(name="kind")
    for added in feature.field:
        added.oneof_index = 0
    features = message("Features", [("feature", field.TYPE_MESSAGE, field.LABEL_REPEATED,
                                     ".tensorflow.Features.FeatureEntry")])
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
                    type_name=".tensorflow.Feature")
    message("Example", [("features", field.TYPE_MESSAGE, field.LABEL_OPTIONAL, ".tensorflow.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.Example"))


# ------------------------------------------------------------------ encoding


def column_kind(name, dtype):
    """``(kind, is_array)`` of a DataFrame column from its ``DataFrame.dtypes`` type string.

    Raises:
      :BadInputError: for a type that has no ``tf.train.Feature`` form.
    """
    is_array = dtype.startswith("array<") and dtype.endswith(">")
    base = dtype[len("array<"):-1] if is_array else dtype
    kind = _SCALAR_KINDS.get(base)
    if kind is None:
        raise BadInputError(
            "column {!r} has type {}, which has no tf.train.Example form; supported: {} and arrays of them. Cast "
            "it first (for example to double or string)".format(name, dtype, ", ".join(sorted(_SCALAR_KINDS))))
    return kind, is_array


def encoder(dtypes):
    """A function ``encode(values) -> bytes`` that serializes one row (values in ``dtypes`` order) as an Example.

    Args:
      :dtypes: ``[(column name, type string), ...]`` as in ``DataFrame.dtypes``.
    """
    columns = [(name,) + column_kind(name, dtype) for name, dtype in dtypes]

    def encode(values):
        example = example_class()()      # looked up per call (cached): the closure must pickle for Spark
        feature_map = example.features.feature
        for (name, kind, is_array), value in zip(columns, values):
            feature = feature_map[name]
            try:
                _fill(feature, kind, is_array, value)
            except (TypeError, ValueError, AttributeError) as exc:
                raise BadInputError("column {!r} ({}{}) holds {!r}, which cannot be written: {}".format(
                    name, "array of " if is_array else "", kind, value, exc)) from None
        return example.SerializeToString()

    return encode


def _fill(feature, kind, is_array, value):
    if kind == FLOAT:
        target = feature.float_list
    elif kind == INT64:
        target = feature.int64_list
    else:
        target = feature.bytes_list
    if value is None:
        target.SetInParent()       # an empty list: the null
        return
    items = value if is_array else (value,)
    if kind == STRING:
        items = [item.encode("utf-8") if isinstance(item, str) else str(item).encode("utf-8") for item in items]
    elif kind == BINARY:
        items = [bytes(item) for item in items]
    elif kind == INT64:
        items = [int(item) for item in items]
    target.value.extend(items)
    if not items:
        target.SetInParent()


# ------------------------------------------------------------------ decoding


def parse(data):
    """The Example message of one serialized record."""
    return example_class().FromString(bytes(data))


def _values(feature):
    kind = feature.WhichOneof("kind")
    if kind == "int64_list":
        return INT64, feature.int64_list.value
    if kind == "float_list":
        return FLOAT, feature.float_list.value
    if kind == "bytes_list":
        return STRING, feature.bytes_list.value
    return None, ()


def row_dict(example, binary_features=()):
    """``{feature: value}`` of an Example, as TensorFlowOnSpark's ``fromTFExample`` gives it.

    One value gives a scalar, several a list, none ``None``; bytes are decoded
    as UTF-8 unless the feature is in ``binary_features`` (then a ``bytearray``).
    """
    row = {}
    for name, feature in sorted(example.features.feature.items()):
        kind, values = _values(feature)
        if kind == STRING:
            if not values:
                row[name] = None
            elif name in binary_features:
                row[name] = bytearray(values[0]) if len(values) == 1 else [bytearray(v) for v in values]
            else:
                row[name] = values[0].decode("utf-8") if len(values) == 1 else [v.decode("utf-8") for v in values]
        elif len(values) > 1:
            row[name] = list(values)
        elif len(values) == 1:
            row[name] = values[0]
        else:
            row[name] = None
    return row


def column_decoder(fields, binary_features=()):
    """A function ``decode(example, offset_note) -> [values]`` giving one row for the Spark ``fields``.

    Args:
      :fields: ``[(name, spark type simple string), ...]`` of the schema (``bigint``, ``double``, ``string``,
        ``binary``, or ``array<...>`` of them).
      :binary_features: accepted for symmetry; ``binary`` fields come back as ``bytes``.

    The decoder raises :class:`raytfnode.errors.BadInputError` when a scalar field holds several values.
    """
    plan = []
    for name, simple in fields:
        is_array = simple.startswith("array<")
        base = simple[len("array<"):-1] if is_array else simple
        plan.append((name, base, is_array))

    def decode(example, where):
        feature_map = example.features.feature
        out = []
        for name, base, is_array in plan:
            feature = feature_map.get(name)
            values = _values(feature)[1] if feature is not None else ()
            if base == "string":
                values = [v.decode("utf-8") for v in values]
            elif base == "binary":
                values = [bytes(v) for v in values]
            if is_array:
                out.append(list(values))
            elif not values:
                out.append(None)
            elif len(values) == 1:
                out.append(values[0])
            else:
                raise BadInputError(
                    "feature {!r} holds {} values in the record at {}, but the schema has it as a scalar (its "
                    "first records held one value each); pass a schema with an array type for it".format(
                        name, len(values), where))
        return out

    return decode


# ------------------------------------------------------------------ schema


def infer_schema(example, binary_features=()):
    """The Spark ``StructType`` of an Example, as TensorFlowOnSpark infers it.

    Int64List -> ``LongType``, FloatList -> ``DoubleType``, BytesList ->
    ``StringType`` (``BinaryType`` for names in ``binary_features``); several
    values -> ``ArrayType`` of that; an empty list -> ``StringType``. Fields
    are sorted by name.
    """
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(name, _sql_type(name, feature, binary_features), True)
                       for name, feature in sorted(example.features.feature.items())])


def _sql_type(name, feature, binary_features):
    from pyspark.sql.types import ArrayType, BinaryType, DoubleType, LongType, StringType

    kind, values = _values(feature)
    if name in binary_features:
        base = BinaryType()
    elif kind == INT64 and values:
        base = LongType()
    elif kind == FLOAT and values:
        base = DoubleType()
    else:
        base = StringType()
    return ArrayType(base) if len(values) > 1 else base


def merge_schemas(schemas):
    """One schema from several inferred ones: a field is an array when any record held several values,
    and a type seen with values wins over ``StringType`` (what an empty list gives)."""
    from pyspark.sql.types import ArrayType, StringType, StructField, StructType

    merged = {}
    for schema in schemas:
        for field in schema.fields:
            seen = merged.get(field.name)
            if seen is None:
                merged[field.name] = field.dataType
                continue
            seen_array = isinstance(seen, ArrayType)
            new_array = isinstance(field.dataType, ArrayType)
            seen_base = seen.elementType if seen_array else seen
            new_base = field.dataType.elementType if new_array else field.dataType
            base = new_base if isinstance(seen_base, StringType) else seen_base
            merged[field.name] = ArrayType(base) if (seen_array or new_array) else base
    return StructType([StructField(name, merged[name], True) for name in sorted(merged)])
