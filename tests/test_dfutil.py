"""dfutil: DataFrames to and from TFRecord files, read and written by TensorFlow and Ray Data too."""
import os

import pytest

from raytfnode import dfutil, tfexample, tfrecord
from raytfnode.errors import BadInputError
from raytfnode.tfrecord import CorruptTFRecordError

local_spark = pytest.mark.parametrize("spark", ["local"], indirect=True)

ALL_TYPES_DDL = ("f float, d double, b boolean, t tinyint, s smallint, i int, l bigint, str string, bin binary, "
                 "af array<float>, ad array<double>, ab array<boolean>, ai array<int>, al array<bigint>, "
                 "astr array<string>, abin array<binary>")


def _all_types_rows():
    rows = []
    for k in range(40):
        rows.append((0.5 + k, -1.25 * k, k % 2 == 0, k % 100, -k, 1000 * k, (1 << 40) + k, "héllo {}".format(k),
                     bytes([255 - k, 0, k]), [0.25, float(k)], [1.5, -2.5, float(k)], [True, False],
                     [k, -k], [1 << 50, k, 7], ["a{}".format(k), "ü"], [b"\x00\x01", bytes([k])]))
    return rows


def _write_tf_records(path, payloads):
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for payload in payloads:
            writer.write(payload)


# ------------------------------------------------------------------ framing and Examples, without Spark


def test_framed_records_read_back_with_tf_data(tmp_path):
    import tensorflow as tf

    payloads = [b"", b"x", os.urandom(100000), b"last"]
    path = str(tmp_path / "records")
    with open(path, "wb") as stream:
        assert tfrecord.write_records(stream, payloads)[0] == 4
    assert [r.numpy() for r in tf.data.TFRecordDataset(path)] == payloads


def test_records_written_by_tensorflow_read_with_offsets(tmp_path):
    payloads = [b"first", b"", b"z" * 70000]
    path = str(tmp_path / "tf.tfrecord")
    _write_tf_records(path, payloads)
    with open(path, "rb") as stream:
        read = list(tfrecord.iter_records(stream, path))
    assert [data for _, data in read] == payloads
    assert [offset for offset, _ in read] == [0, 16 + 5, 16 + 5 + 16]


def _corrupt_copy(tmp_path, position, replacement=None, truncate=None):
    path = str(tmp_path / "bad.tfrecord")
    payloads = [b"a" * 10, b"b" * 20, b"c" * 30]
    with open(path, "wb") as stream:
        tfrecord.write_records(stream, payloads)
    data = bytearray(open(path, "rb").read())
    if truncate is not None:
        data = data[:truncate]
    else:
        data[position] ^= replacement
    open(path, "wb").write(bytes(data))
    return path


@pytest.mark.parametrize("position, problem", [(26 + 0, "length"), (26 + 12 + 5, "data")])
def test_bad_crc_names_file_and_record_offset(tmp_path, position, problem):
    path = _corrupt_copy(tmp_path, position, 0x40)   # inside the second record (it starts at 26)
    with pytest.raises(CorruptTFRecordError) as caught:
        list(dfutil.read_file_records(path))
    assert caught.value.offset == 26
    assert path in str(caught.value) and "byte offset 26" in str(caught.value)
    assert problem in caught.value.problem


def test_truncated_file_names_file_and_record_offset(tmp_path):
    path = _corrupt_copy(tmp_path, None, truncate=26 + 12 + 19)    # the second record's data cut short
    with pytest.raises(CorruptTFRecordError) as caught:
        list(dfutil.read_file_records(path))
    assert caught.value.offset == 26 and "ends" in caught.value.problem


def test_encoded_rows_parse_as_tf_train_example():
    import tensorflow as tf

    dtypes = [(part.split()[0], part.split()[1]) for part in ALL_TYPES_DDL.split(", ")]
    row = _all_types_rows()[3]
    example = tf.train.Example.FromString(tfexample.encoder(dtypes)(row))
    feature = example.features.feature
    assert feature["f"].float_list.value == [3.5]
    assert feature["b"].int64_list.value == [0] and feature["l"].int64_list.value == [(1 << 40) + 3]
    assert feature["str"].bytes_list.value == ["héllo 3".encode("utf-8")]
    assert feature["bin"].bytes_list.value == [bytes([252, 0, 3])]
    assert feature["ad"].float_list.value == [1.5, -2.5, 3.0]
    assert feature["ab"].int64_list.value == [1, 0]
    assert feature["al"].int64_list.value == [1 << 50, 3, 7]
    assert feature["abin"].bytes_list.value == [b"\x00\x01", b"\x03"]
    # and the schema TensorFlowOnSpark infers from it, from TF's own message class
    schema = dict((f.name, f.dataType.simpleString()) for f in dfutil.infer_schema(example, ["bin", "abin"]).fields)
    assert schema == {"f": "double", "d": "double", "b": "bigint", "t": "bigint", "s": "bigint", "i": "bigint",
                      "l": "bigint", "str": "string", "bin": "binary", "af": "array<double>",
                      "ad": "array<double>", "ab": "array<bigint>", "ai": "array<bigint>", "al": "array<bigint>",
                      "astr": "array<string>", "abin": "array<binary>"}


def test_from_tf_example_gives_tensorflowonspark_rows():
    import tensorflow as tf

    example = tf.train.Example(features=tf.train.Features(feature={
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[7])),
        "pixels": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, 1.0])),
        "name": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"seven"])),
        "raw": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"\xff\x00"])),
        "empty": tf.train.Feature(float_list=tf.train.FloatList(value=[])),
    }))
    [row] = dfutil.fromTFExample([(bytearray(example.SerializeToString()), None)], binary_features=["raw"])
    assert row.asDict() == {"empty": None, "label": 7, "name": "seven", "pixels": [0.5, 1.0],
                            "raw": bytearray(b"\xff\x00")}


def test_unsupported_column_type_is_refused_with_its_name():
    with pytest.raises(BadInputError, match="'when'.*timestamp"):
        dfutil.toTFExample([("x", "int"), ("when", "timestamp")])


def test_toTFExample_maps_rows_like_the_original():
    from pyspark.sql import Row
    import tensorflow as tf

    convert = dfutil.toTFExample([("x", "double"), ("tag", "string")])
    [(data, key)] = convert([Row(x=2.5, tag="t")])
    assert key is None and isinstance(data, bytearray)
    parsed = tf.train.Example.FromString(bytes(data)).features.feature
    assert parsed["x"].float_list.value == [2.5] and parsed["tag"].bytes_list.value == [b"t"]


# ------------------------------------------------------------------ through Spark


def _approx_row(row):
    """Float32 storage: compare floats at float32 precision."""
    import numpy as np

    def fix(value):
        if isinstance(value, float):
            return float(np.float32(value))
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, bytearray):
            return bytes(value)
        return value

    return tuple(fix(v) for v in row)


def test_every_type_round_trips_one_file_per_partition(spark, tmp_path):
    out = str(tmp_path / "tfr")
    rows = _all_types_rows()
    df = spark.createDataFrame(rows, ALL_TYPES_DDL).repartition(3)
    written = dfutil.saveAsTFRecords(df, out)
    assert sorted(os.listdir(out)) == ["part-r-00000", "part-r-00001", "part-r-00002"]
    assert sum(count for _, count, _ in written) == len(rows)

    loaded = dfutil.loadTFRecords(spark.sparkContext, out, binary_features=["bin", "abin"])
    assert loaded.rdd.getNumPartitions() == 3
    names = [part.split()[0] for part in ALL_TYPES_DDL.split(", ")]
    got = sorted(_approx_row(tuple(r[n] for n in names)) for r in loaded.collect())
    assert got == sorted(_approx_row(r) for r in rows)
    assert dfutil.isLoadedDF(loaded) and not dfutil.isLoadedDF(df)
    assert not dfutil.isLoadedDF(loaded.filter("i > 5"))


@local_spark
def test_nulls_come_back_as_none(spark, tmp_path):
    out = str(tmp_path / "tfr")
    df = spark.createDataFrame([(1, None, 2.0), (2, "x", None)], "k bigint, s string, v double").coalesce(1)
    dfutil.saveAsTFRecords(df, out)
    schema = spark.createDataFrame([], "k bigint, s string, v double").schema
    got = sorted(tuple(r) for r in dfutil.loadTFRecords(spark, out, schema=schema).collect())
    assert got == [(1, None, 2.0), (2, "x", None)]


@local_spark
def test_written_files_read_with_tf_data_and_ray_data(spark, ray_cluster, tmp_path):
    import ray
    import tensorflow as tf

    out = str(tmp_path / "tfr")
    rows = [(k, float(k) / 4, "r{}".format(k), [k, k + 1]) for k in range(50)]
    df = spark.createDataFrame(rows, "k bigint, v double, name string, pair array<int>").repartition(2)
    dfutil.saveAsTFRecords(df, out)

    spec = {"k": tf.io.FixedLenFeature([], tf.int64), "v": tf.io.FixedLenFeature([], tf.float32),
            "name": tf.io.FixedLenFeature([], tf.string), "pair": tf.io.FixedLenFeature([2], tf.int64)}
    files = sorted(os.path.join(out, name) for name in os.listdir(out))
    parsed = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    assert sorted((int(p["k"]), float(p["v"]), p["name"].numpy().decode(), p["pair"].numpy().tolist())
                  for p in parsed) == sorted((k, v, n, p) for k, v, n, p in rows)

    ray_rows = ray.data.read_tfrecords(out).take_all()
    assert sorted(int(r["k"]) for r in ray_rows) == list(range(50))
    by_key = {int(r["k"]): r for r in ray_rows}
    assert by_key[9]["name"] in (b"r9", "r9") and list(by_key[9]["pair"]) == [9, 10]


@local_spark
def test_records_written_by_tensorflow_load_into_a_dataframe(spark, tmp_path):
    import tensorflow as tf

    def example(k):
        return tf.train.Example(features=tf.train.Features(feature={
            "id": tf.train.Feature(int64_list=tf.train.Int64List(value=[k])),
            "x": tf.train.Feature(float_list=tf.train.FloatList(value=[k / 2, 1.0])),
            "word": tf.train.Feature(bytes_list=tf.train.BytesList(value=["w{}".format(k).encode()])),
        })).SerializeToString()

    directory = tmp_path / "from_tf"
    directory.mkdir()
    _write_tf_records(str(directory / "a.tfrecord"), [example(k) for k in range(5)])
    _write_tf_records(str(directory / "b.tfrecord"), [example(k) for k in range(5, 8)])
    (directory / "_SUCCESS").write_bytes(b"")
    df = dfutil.loadTFRecords(spark.sparkContext, str(directory))
    assert [(f.name, f.dataType.simpleString()) for f in df.schema.fields] == [
        ("id", "bigint"), ("word", "string"), ("x", "array<double>")]
    assert sorted(tuple(r) for r in df.collect()) == [(k, "w{}".format(k), [k / 2, 1.0]) for k in range(8)]


@local_spark
def test_corrupt_file_fails_the_read_naming_file_and_offset(spark, tmp_path):
    directory = tmp_path / "corrupt"
    directory.mkdir()
    records = [tfexample.encoder([("k", "bigint")])([k]) for k in range(3)]
    good = str(directory / "part-r-00000")
    with open(good, "wb") as stream:
        tfrecord.write_records(stream, records)
    data = bytearray(open(good, "rb").read())
    second = len(tfrecord.frame(records[0]))
    data[second + 13] ^= 0x01                            # the second record's data
    bad = str(directory / "part-r-00001")
    open(bad, "wb").write(bytes(data))
    df = dfutil.loadTFRecords(spark.sparkContext, str(directory))
    from pyspark.errors import PythonException

    with pytest.raises(PythonException) as caught:   # lazy: Spark's wrapper of the worker's error
        df.collect()
    text = str(caught.value)
    assert "CorruptTFRecordError" in text and bad in text and "byte offset {}".format(second) in text


@local_spark
def test_save_refuses_a_directory_with_files(spark, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(BadInputError, match="already exists"):
        dfutil.saveAsTFRecords(spark.createDataFrame([(1,)], "k int"), str(out))
