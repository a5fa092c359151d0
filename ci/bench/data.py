"""The generated data sets: the same rows in every source (Spark RDD, Spark DataFrame, Ray Dataset).

Rows are made from the partition index alone, so a Spark worker, a Ray task or another process
(the peers' own Spark cluster) makes exactly the same rows without shipping them.
"""
import logging
import time

from bench.common import MNIST_DIM, MNIST_ROW_BYTES, TINY_ROW_BYTES

log = logging.getLogger("bench")


def partition_sizes(total, parts):
    """Rows in each of ``parts`` partitions of ``total`` rows (the first ones one more when it does not divide)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def gen_arrays(kind, index, total, parts):
    """The arrays of partition ``index``: deterministic, so every source holds the same rows."""
    import numpy as np

    sizes = partition_sizes(total, parts)
    n = sizes[index]
    offset = sum(sizes[:index])
    if kind == "mnist":
        rng = np.random.default_rng(1000 + index)
        images = rng.random((n, MNIST_DIM), dtype=np.float32)
        labels = rng.integers(0, 10, n, dtype=np.int64)
        return {"image": images, "label": labels}
    return {"x": np.arange(offset, offset + n, dtype=np.int64)}


def gen_rows(kind, index, total, parts):
    """Partition ``index`` as RDD rows: ``(np.float32[784], int)`` tuples or plain ints."""
    arrays = gen_arrays(kind, index, total, parts)
    if kind == "mnist":
        images, labels = arrays["image"], arrays["label"]
        return [(images[j], int(labels[j])) for j in range(len(labels))]
    return arrays["x"].tolist()


def gen_arrow_batches(kind, index, total, parts, batch_rows=10000, tensor=False):
    """Partition ``index`` as Arrow record batches (Spark ``array<float>`` or a Ray tensor column)."""
    import numpy as np
    import pyarrow as pa

    arrays = gen_arrays(kind, index, total, parts)
    n = len(next(iter(arrays.values())))
    for start in range(0, n, batch_rows):
        stop = min(n, start + batch_rows)
        if kind == "mnist":
            images = arrays["image"][start:stop]
            if tensor:
                from ray.data.extensions import ArrowTensorArray
                image_col = ArrowTensorArray.from_numpy(np.ascontiguousarray(images))
            else:
                offsets = pa.array(np.arange(0, (stop - start + 1) * MNIST_DIM, MNIST_DIM, dtype=np.int32))
                image_col = pa.ListArray.from_arrays(offsets, pa.array(images.reshape(-1)))
            yield pa.RecordBatch.from_arrays([image_col, pa.array(arrays["label"][start:stop])],
                                             names=["image", "label"])
        else:
            yield pa.RecordBatch.from_arrays([pa.array(arrays["x"][start:stop])], names=["x"])


class Data:
    """One data set in its three sources, cached/materialized before anything is timed."""

    def __init__(self, kind, rows, parts, row_bytes):
        self.kind = kind
        self.rows = rows
        self.parts = parts
        self.row_bytes = row_bytes
        self.rdd = None
        self.df = None
        self.ds = None

    @property
    def mb(self):
        return self.rows * self.row_bytes / 1e6


def build_data(spark, kind, rows, parts, need_spark=True, need_ray=True):
    import ray

    data = Data(kind, rows, parts, MNIST_ROW_BYTES if kind == "mnist" else TINY_ROW_BYTES)
    started = time.monotonic()
    if need_spark:
        sc = spark.sparkContext
        data.rdd = sc.parallelize(range(parts), parts).mapPartitionsWithIndex(
            lambda i, _: gen_rows(kind, i, rows, parts)).cache()
        got = data.rdd.count()
        assert got == rows, (got, rows)
        log.debug("rdd %s cached at %.1f s", kind, time.monotonic() - started)
        schema = "image array<float>, label long" if kind == "mnist" else "x long"

        def make(batches):
            for batch in batches:
                for index in batch.column(0).to_pylist():
                    yield from gen_arrow_batches(kind, index, rows, parts)

        data.df = spark.range(0, parts, 1, parts).mapInArrow(make, schema).cache()
        got = data.df.count()
        assert got == rows, (got, rows)
        log.debug("dataframe %s cached at %.1f s", kind, time.monotonic() - started)
    if need_ray:
        refs = []
        for index in range(parts):
            import pyarrow as pa
            table = pa.Table.from_batches(list(gen_arrow_batches(kind, index, rows, parts, batch_rows=1 << 30,
                                                                 tensor=True)))
            refs.append(ray.put(table))
        data.ds = ray.data.from_arrow_refs(refs).materialize()
        assert data.ds.count() == rows
    log.info("data %s: %d rows, %.0f MB, built in %.1f s", kind, rows, data.mb, time.monotonic() - started)
    return data

