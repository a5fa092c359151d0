"""Benchmark: raytfnode.dfutil TFRecord write and read MB/s against Ray Data's write_tfrecords/read_tfrecords.

Both write the same rows (an int64 id, a 32-float feature array, a short string)
as TFRecord files of tf.train.Examples, with the same number of files, then read
them back in full: dfutil through Spark (``saveAsTFRecords``; ``loadTFRecords``
materialized with Spark's ``noop`` writer), Ray Data through
``ray.data.write_tfrecords`` and ``ray.data.read_tfrecords(...).materialize()``.
MB/s is the bytes of the TFRecord files each side wrote (10**6 bytes per MB)
over the wall-clock seconds; ratios are dfutil / Ray Data (> 1: dfutil faster).

Self-contained: uses the running Ray and Spark when there are, else starts a
local Ray and a local-mode Spark. Run ``python ci/bench/tfrecords.py [--tiny]``
to print the JSON.
"""
import json
import os
import shutil
import sys
import tempfile
import time

FEATURES = 32
FILES = 4


def _rows(count):
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(0)
    features = rng.random((count, FEATURES), dtype=np.float32)
    return pa.table({
        "id": pa.array(np.arange(count, dtype=np.int64)),
        "features": pa.array(list(features), type=pa.list_(pa.float32())),
        "name": pa.array(["row-{}".format(i) for i in range(count)]),
    })


def _dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
               if not name.startswith((".", "_")))


def _spark():
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName("raytfnode-bench-tfrecords")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())


def _timed(fn):
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(tiny=False):
    """Measures dfutil and Ray Data TFRecord write and read on the same rows; returns rates and ratios."""
    import ray

    from raytfnode import dfutil

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    spark = _spark()
    rows = 2000 if tiny else 200000
    table = _rows(rows)
    work = tempfile.mkdtemp(prefix="raytfnode-bench-tfr-")
    try:
        df = spark.createDataFrame(table.to_pandas()).repartition(FILES).cache()
        df.count()
        dataset = ray.data.from_arrow(table).repartition(FILES).materialize()

        ours, theirs = os.path.join(work, "dfutil"), os.path.join(work, "raydata")
        ours_write = _timed(lambda: dfutil.saveAsTFRecords(df, ours))
        theirs_write = _timed(lambda: dataset.write_tfrecords(theirs))
        ours_bytes, theirs_bytes = _dir_bytes(ours), _dir_bytes(theirs)

        loaded = {}
        ours_read = _timed(lambda: dfutil.loadTFRecords(spark, ours).write.format("noop").mode("overwrite").save())
        theirs_read = _timed(lambda: loaded.setdefault("ds", ray.data.read_tfrecords(theirs).materialize()))
        read_rows = loaded["ds"].count()
        df.unpersist()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def rate(size, seconds):
        return size / 1e6 / seconds

    result = {
        "rows": rows, "files": FILES, "float_features": FEATURES,
        "dfutil_bytes": ours_bytes, "raydata_bytes": theirs_bytes, "raydata_rows_read": read_rows,
        "dfutil_write_mb_s": rate(ours_bytes, ours_write), "raydata_write_mb_s": rate(theirs_bytes, theirs_write),
        "dfutil_read_mb_s": rate(ours_bytes, ours_read), "raydata_read_mb_s": rate(theirs_bytes, theirs_read),
        "dfutil_write_s": round(ours_write, 3), "raydata_write_s": round(theirs_write, 3),
        "dfutil_read_s": round(ours_read, 3), "raydata_read_s": round(theirs_read, 3),
    }
    result["write_ratio"] = result["dfutil_write_mb_s"] / result["raydata_write_mb_s"]
    result["read_ratio"] = result["dfutil_read_mb_s"] / result["raydata_read_mb_s"]
    for key in ("dfutil_write_mb_s", "raydata_write_mb_s", "dfutil_read_mb_s", "raydata_read_mb_s",
                "write_ratio", "read_ratio"):
        result[key] = float("{:.4g}".format(result[key]))    # rounded last: tiny runs move well under 1 MB/s
    return result


if __name__ == "__main__":
    print(json.dumps(measure(tiny="--tiny" in sys.argv[1:]), indent=1))
