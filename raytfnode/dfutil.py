"""Spark DataFrames to and from TFRecord files, with no Hadoop jar.

Keeps the API of ``tensorflowonspark.dfutil`` (``saveAsTFRecords``,
``loadTFRecords``, ``isLoadedDF``, ``toTFExample``, ``fromTFExample``,
``infer_schema``). TensorFlowOnSpark needed TensorFlow's Hadoop
``TFRecordFileOutputFormat`` jar on Spark's classpath; here each Spark task
writes and reads standard TFRecord files itself (framing in
:mod:`raytfnode.tfrecord`, Examples in :mod:`raytfnode.tfexample`, neither
importing TensorFlow), through ``pyarrow.fs``, so ``file://``, local paths,
and whatever filesystems pyarrow reaches (``hdfs://``, ``s3://``, ``gs://``)
work. The files read back with ``tf.data.TFRecordDataset`` and
``ray.data.read_tfrecords``, and files written by ``tf.io.TFRecordWriter``
load into a DataFrame.

Layout: ``saveAsTFRecords`` writes one file per DataFrame partition,
``<output_dir>/part-r-<partition:05d>`` (the names Hadoop's output format
used), each written under a hidden temporary name and renamed when complete.
``loadTFRecords`` reads every file of ``input_dir`` whose name does not start
with ``_`` or ``.``, one Spark partition per file.

A corrupt file (a truncated record, a length or data CRC that does not match)
raises :class:`raytfnode.tfrecord.CorruptTFRecordError` (a
:class:`raytfnode.errors.BadInputError`) naming the file and the record's byte
offset. ``loadTFRecords`` is lazy like any DataFrame: the error comes from the
Spark action that reads the file, wrapped by Spark, with that message.
"""
import os
import uuid
import weakref

from . import tfexample
from .errors import BadInputError
from .tfexample import infer_schema
from .tfrecord import CorruptTFRecordError, iter_records, write_records

__all__ = ["CorruptTFRecordError", "fromTFExample", "infer_schema", "isLoadedDF", "loadTFRecords",
           "saveAsTFRecords", "toTFExample"]

SCHEMA_SAMPLE_RECORDS = 100
READ_BATCH_ROWS = 8192
_STREAM_BUFFER = 1 << 20

loadedDF = weakref.WeakKeyDictionary()   # DataFrame made by loadTFRecords -> its input_dir


def isLoadedDF(df):
    """Returns True if the input DataFrame was produced by the loadTFRecords() method.

    This is primarily used by the Spark ML Pipelines APIs.

    Args:
      :df: Spark Dataframe
    """
    try:
        return df in loadedDF
    except TypeError:
        return False


# ------------------------------------------------------------------ files


def _filesystem(path):
    """``(pyarrow FileSystem, path within it)`` of a local path or a URI; local paths are made absolute."""
    from pyarrow import fs as pafs

    if "://" in path:
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def _uri(path):
    """A URI every Spark worker resolves the same way (a local path made absolute on the driver)."""
    return path if "://" in path else "file://" + os.path.abspath(path)


def _part_name(partition):
    return "part-r-{:05d}".format(partition)


def list_record_files(input_dir):
    """The TFRecord files of ``input_dir`` (or ``[input_dir]`` when it is a file), as sorted URIs.

    Names starting with ``_`` or ``.`` (``_SUCCESS``, temporary files) are left out.
    """
    from pyarrow import fs as pafs

    filesystem, root = _filesystem(input_dir)
    info = filesystem.get_file_info(root)
    base = _uri(input_dir)
    if info.type == pafs.FileType.File:
        return [base]
    if info.type != pafs.FileType.Directory:
        raise BadInputError("loadTFRecords: {} does not exist; give a directory of TFRecord files or one "
                            "file".format(input_dir))
    names = sorted(entry.base_name for entry in filesystem.get_file_info(pafs.FileSelector(root))
                   if entry.type == pafs.FileType.File and not entry.base_name.startswith(("_", ".")))
    return [base.rstrip("/") + "/" + name for name in names]


def read_file_records(uri, check_data_crc=True):
    """Yields ``(offset, data)`` for every record of the TFRecord file ``uri``.

    Raises:
      :CorruptTFRecordError: naming the file and the broken record's byte offset.
    """
    filesystem, path = _filesystem(uri)
    with filesystem.open_input_stream(path, compression=None, buffer_size=_STREAM_BUFFER) as stream:
        yield from iter_records(stream, uri, check_data_crc)


def write_file_records(uri_dir, partition, records):
    """Writes ``records`` (bytes) as ``<uri_dir>/part-r-<partition>``; returns ``(uri, records, bytes)``.

    The file is written under a hidden name and renamed when complete, so a
    reader never sees half a file and a retried Spark task replaces it whole.
    """
    filesystem, directory = _filesystem(uri_dir)
    final = directory.rstrip("/") + "/" + _part_name(partition)
    temporary = "{}/.{}.{}.tmp".format(directory.rstrip("/"), _part_name(partition), uuid.uuid4().hex[:8])
    try:
        with filesystem.open_output_stream(temporary, compression=None, buffer_size=_STREAM_BUFFER) as stream:
            count, written = write_records(stream, records)
        filesystem.move(temporary, final)
    except BaseException:
        try:
            filesystem.delete_file(temporary)
        except Exception:  # noqa: BLE001  (nothing was created)
            pass
        raise
    return uri_dir.rstrip("/") + "/" + _part_name(partition), count, written


# ------------------------------------------------------------------ TensorFlowOnSpark's row functions


def toTFExample(dtypes):
    """mapPartition function to convert a Spark RDD of Row into an RDD of serialized tf.train.Example bytestring.

    Note that tf.train.Example is a fairly flat structure with limited datatypes, e.g. tf.train.FloatList,
    tf.train.Int64List, and tf.train.BytesList, so most DataFrame types will be coerced into one of these types.

    Args:
      :dtypes: the DataFrame.dtypes of the source DataFrame.

    Returns:
      A mapPartition function which converts the source DataFrame into ``(bytearray(serialized Example), None)``
      pairs. Unsupported column types raise :class:`raytfnode.errors.BadInputError` at once.
    """
    encode = tfexample.encoder(dtypes)
    names = [name for name, _ in dtypes]

    def _toTFExample(rows):
        return [(bytearray(encode([row[name] for name in names])), None) for row in rows]

    return _toTFExample


def fromTFExample(iter, binary_features=[]):
    """mapPartition function to convert an RDD of serialized tf.train.Example bytestring into an RDD of Row.

    Note: TensorFlow represents both strings and binary types as tf.train.BytesList, and we need to
    disambiguate these types for Spark DataFrames DTypes (StringType and BinaryType), so we require a "hint"
    from the caller in the ``binary_features`` argument.

    Args:
      :iter: the RDD partition iterator: serialized Examples, or ``(serialized Example, None)`` pairs.
      :binary_features: a list of tf.train.Example features which are expected to be binary/bytearrays.

    Returns:
      An array/iterator of DataFrame Row with features converted into columns.
    """
    from pyspark.sql import Row

    rows = []
    for record in iter:
        data = record[0] if isinstance(record, tuple) else record
        rows.append(Row(**tfexample.row_dict(tfexample.parse(data), binary_features)))
    return rows


# ------------------------------------------------------------------ Spark jobs


def saveAsTFRecords(df, output_dir):
    """Save a Spark DataFrame as TFRecords.

    This will convert the DataFrame rows to TFRecords prior to saving: one file per
    partition, written by the Spark tasks in parallel.

    Args:
      :df: Spark DataFrame
      :output_dir: Path to save TFRecords (a local path or a URI); it must not exist or be empty.

    Returns:
      A list of ``(file URI, records, bytes)``, one per partition.
    """
    encode = tfexample.encoder(df.dtypes)          # unsupported types fail here, before any job
    filesystem, directory = _filesystem(output_dir)
    from pyarrow import fs as pafs
    info = filesystem.get_file_info(directory)
    if info.type == pafs.FileType.File or (
            info.type == pafs.FileType.Directory and filesystem.get_file_info(pafs.FileSelector(directory))):
        raise BadInputError("saveAsTFRecords: {} already exists and is not an empty directory; remove it or "
                            "give another output_dir".format(output_dir))
    filesystem.create_dir(directory, recursive=True)
    target = _uri(output_dir)

    def write_partition(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        from .zipcache import reuse_unchanged_archive_directories
        reuse_unchanged_archive_directories()

        def records():
            for batch in batches:
                columns = [column.to_pylist() for column in batch.columns]
                for values in zip(*columns):
                    yield encode(values)

        uri, count, written = write_file_records(target, TaskContext.get().partitionId(), records())
        yield pa.RecordBatch.from_pydict({"path": [uri], "records": [count], "bytes": [written]})

    from .bridges.errors import unwrap
    try:
        rows = df.mapInArrow(write_partition, "path string, records long, bytes long").collect()
    except Exception as exc:  # noqa: BLE001  (Spark wraps a worker's error: show ours)
        error = unwrap(exc)
        if error is exc:
            raise
        raise error from exc
    return sorted((row["path"], row["records"], row["bytes"]) for row in rows)


def _infer_from_files(files, binary_features):
    for uri in files:
        schemas = []
        for _, data in read_file_records(uri):
            schemas.append(infer_schema(tfexample.parse(data), binary_features))
            if len(schemas) >= SCHEMA_SAMPLE_RECORDS:
                break
        if schemas:
            return tfexample.merge_schemas(schemas)
    return None


def loadTFRecords(sc, input_dir, binary_features=[], schema=None):
    """Load TFRecords from disk into a Spark DataFrame.

    This will attempt to automatically convert the tf.train.Example features into Spark DataFrame columns of
    equivalent types, inferred from the first records of the first non-empty file (a feature is an array
    when any of them holds several values).

    Note: TensorFlow represents both strings and binary types as tf.train.BytesList, and we need to
    disambiguate these types for Spark DataFrames DTypes (StringType and BinaryType), so we require a "hint"
    from the caller in the ``binary_features`` argument.

    Args:
      :sc: SparkContext (or SparkSession)
      :input_dir: location of TFRecords on disk: a directory, or one file.
      :binary_features: a list of tf.train.Example features which are expected to be binary/bytearrays.
      :schema: a ``StructType`` to use instead of inferring one (raytfnode only).

    Returns:
      A Spark DataFrame mirroring the tf.train.Example schema, one partition per file.
    """
    from pyspark.sql import SparkSession

    sc = getattr(sc, "sparkContext", sc)
    spark = SparkSession.getActiveSession() or SparkSession(sc)
    files = list_record_files(input_dir)
    if schema is None:
        schema = _infer_from_files(files, list(binary_features))
    if schema is None:
        raise BadInputError("loadTFRecords: {} holds no records ({} files); cannot infer a schema, pass "
                            "schema=".format(input_dir, len(files)))
    fields = [(field.name, field.dataType.simpleString()) for field in schema.fields]
    decode = tfexample.column_decoder(fields)
    arrow_schema = _arrow_schema(schema)

    def read_partition(batches):
        import pyarrow as pa

        from .zipcache import reuse_unchanged_archive_directories
        reuse_unchanged_archive_directories()
        for batch in batches:
            for uri in batch.column(0).to_pylist():
                rows = []
                for offset, data in read_file_records(uri):
                    rows.append(decode(tfexample.parse(data), "byte offset {} of {}".format(offset, uri)))
                    if len(rows) >= READ_BATCH_ROWS:
                        yield _to_batch(pa, rows, arrow_schema)
                        rows = []
                if rows:
                    yield _to_batch(pa, rows, arrow_schema)

    paths = spark.createDataFrame(sc.parallelize([(uri,) for uri in files], max(1, len(files))), "path string")
    df = paths.mapInArrow(read_partition, schema)
    loadedDF[df] = input_dir
    return df


def _to_batch(pa, rows, arrow_schema):
    columns = list(zip(*rows))
    return pa.RecordBatch.from_arrays([pa.array(column, type=field.type)
                                       for column, field in zip(columns, arrow_schema)], schema=arrow_schema)


def _arrow_schema(schema):
    import pyarrow as pa
    from pyspark.sql.types import ArrayType

    simple = {"bigint": pa.int64(), "double": pa.float64(), "string": pa.string(), "binary": pa.binary(),
              "float": pa.float32(), "int": pa.int32(), "boolean": pa.bool_()}

    def arrow_type(data_type):
        if isinstance(data_type, ArrayType):
            return pa.list_(arrow_type(data_type.elementType))
        name = data_type.simpleString()
        if name not in simple:
            raise BadInputError("loadTFRecords: schema type {} is not one a tf.train.Example feature can fill; use "
                                "bigint, double, string, binary or arrays of them".format(name))
        return simple[name]

    return pa.schema([pa.field(f.name, arrow_type(f.dataType)) for f in schema.fields])
