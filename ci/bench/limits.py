"""limits: what each source and the object store move with no feeding, on the same data.

Spark iterating the cached RDD in its Python workers, Spark reading the cached DataFrame through
Arrow (``mapInArrow``), Ray Data iterating the Dataset in the driver (``iter_batches``), Ray Data's
own way to feed two trainers (``streaming_split(2)``), and the object store moving the feed's chunk
pieces (``ray.put`` in two producers, ``ray.get`` in two consumers). Every sample is kept and the
best is reported; ``sources`` times the source's limit again right before each feed.
"""
import logging
import statistics
import time

from bench.common import DATASETS, best, rate
from bench.data import gen_arrow_batches

log = logging.getLogger("bench")

LIMITS = ("spark_rdd_iter", "spark_arrow_read", "ray_data_iter", "ray_data_split2", "object_store")


def _count_rows(iterator):
    return [sum(1 for _ in iterator)]


def _count_arrow(batches):
    import pyarrow as pa
    n = 0
    for batch in batches:
        n += batch.num_rows
    yield pa.RecordBatch.from_pylist([{"n": n}])


def limit_spark_rdd(data):
    """Spark's Python workers deserialize every row of the cached RDD and count them."""
    started = time.perf_counter()
    n = sum(data.rdd.mapPartitions(_count_rows).collect())
    seconds = time.perf_counter() - started
    assert n == data.rows, (n, data.rows)
    return seconds


def limit_spark_arrow(data):
    """Spark hands the cached DataFrame to its Python workers as Arrow batches (mapInArrow) that count rows."""
    started = time.perf_counter()
    n = sum(r.n for r in data.df.mapInArrow(_count_arrow, "n long").collect())
    seconds = time.perf_counter() - started
    assert n == data.rows, (n, data.rows)
    return seconds


def limit_ray_data(data, batch_size=1000):
    """Ray Data iterates the materialized Dataset as numpy batches in the driver."""
    started = time.perf_counter()
    n = 0
    for batch in data.ds.iter_batches(batch_size=batch_size, batch_format="numpy"):
        n += len(next(iter(batch.values())))
    seconds = time.perf_counter() - started
    assert n == data.rows, (n, data.rows)
    return seconds


def limit_ray_data_split(data, batch_size=1000, consumers=2):
    """Ray Data's own way to feed two trainers: ``streaming_split(2)`` read by two actors with iter_batches."""
    import ray

    @ray.remote(num_cpus=0)
    class SplitReader:
        def read(self, iterator):
            n = 0
            for batch in iterator.iter_batches(batch_size=batch_size, batch_format="numpy"):
                n += len(next(iter(batch.values())))
            return n

    readers = [SplitReader.remote() for _ in range(consumers)]
    ray.get([r.__ray_ready__.remote() for r in readers])
    started = time.perf_counter()
    n = sum(ray.get([r.read.remote(it) for r, it in zip(readers, data.ds.streaming_split(consumers, equal=False))]))
    seconds = time.perf_counter() - started
    for reader in readers:
        ray.kill(reader)
    assert n == data.rows, (n, data.rows)
    return seconds


def _store_actors():
    import ray

    @ray.remote(num_cpus=0)
    class StoreProducer:
        """Holds ready pieces (chunks cut as the feed cuts them) and moves them through the object store."""

        def __init__(self, kind, indexes, rows, parts, chunk_bytes, slots):
            from raytfnode.bridges.spark import _arrow_chunks
            from raytfnode.feeding import FeedTarget
            target = FeedTarget("", "", (), (), "", "input", "", chunk_bytes=chunk_bytes)
            self.pieces = []
            for index in indexes:
                for chunk in _arrow_chunks(gen_arrow_batches(kind, index, rows, parts), "", target):
                    per = chunk.num_rows // slots
                    for slot in range(slots):
                        stop = chunk.num_rows if slot == slots - 1 else (slot + 1) * per
                        self.pieces.append((slot, chunk.slice(slot * per, stop)))

        def ready(self):
            return len(self.pieces)

        def run(self, consumers, in_flight=4):
            calls = []
            rows = 0
            for slot, piece in self.pieces:
                ref = ray.put(piece)
                calls.append(consumers[slot].get.remote([ref]))
                if len(calls) > in_flight:
                    done, calls = ray.wait(calls, num_returns=len(calls) - in_flight)
                    rows += sum(ray.get(done))
            rows += sum(ray.get(calls))
            return rows

    @ray.remote(num_cpus=0)
    class StoreConsumer:
        def get(self, box):
            return ray.get(box[0]).num_rows

    return StoreProducer, StoreConsumer


def limit_object_store(data, chunk_bytes, producers=2, slots=2):
    """ray.put of the feed's chunk pieces in ``producers`` actors, ray.get in ``slots`` consumer actors."""
    import ray

    StoreProducer, StoreConsumer = _store_actors()
    consumers = [StoreConsumer.remote() for _ in range(slots)]
    owners = [StoreProducer.remote(data.kind, list(range(p, data.parts, producers)), data.rows, data.parts,
                                   chunk_bytes, slots) for p in range(producers)]
    ray.get([o.ready.remote() for o in owners] + [c.get.remote([ray.put(_tiny_chunk())]) for c in consumers])
    started = time.perf_counter()
    n = sum(ray.get([o.run.remote(consumers) for o in owners]))
    seconds = time.perf_counter() - started
    for actor in owners + consumers:
        ray.kill(actor)
    assert n == data.rows, (n, data.rows)
    return seconds


def _tiny_chunk():
    from raytfnode.chunks import encode_rows
    return encode_rows([1, 2, 3])



def sample(bench, kind, name):
    """One timing of limit ``name`` on data ``kind``; every sample is kept, the best one is reported."""
    data = bench.data(kind)
    function = {"spark_rdd_iter": limit_spark_rdd, "spark_arrow_read": limit_spark_arrow,
                "ray_data_iter": limit_ray_data, "ray_data_split2": limit_ray_data_split,
                "object_store": lambda d: limit_object_store(d, bench.chunk_bytes)}[name]
    before = bench.cpu.snapshot()
    seconds = function(data)
    cpu = bench.cpu.delta(before)
    samples = bench.shared.setdefault("limit_samples", {}).setdefault(kind, {}).setdefault(name, [])
    samples.append((seconds, sum(cpu.values())))
    return seconds


def figures(bench):
    """Best time of every limit sampled so far: {kind: {limit: figure}}."""
    out = {}
    for kind, names in bench.shared.get("limit_samples", {}).items():
        data = bench.data(kind)
        out[kind] = {}
        for name, samples in names.items():
            if samples:
                seconds = best([s for s, _ in samples])
                out[kind][name] = {"seconds": seconds, "rows_per_s": rate(data.rows, seconds),
                                   "mb_per_s": rate(data.mb, seconds), "samples": [s for s, _ in samples],
                                   "cpu_seconds": statistics.median(c for _, c in samples)}
    return out


def measure(bench):
    """The limits, warmed up, sampled ``repeat`` times."""
    for kind in DATASETS:
        for name in LIMITS:
            if name == "ray_data_split2" and bench.tiny:
                continue  # a reference only, and slow to start
            sample(bench, kind, name)  # warm: Python workers, Ray Data executor, actor processes
            bench.shared["limit_samples"][kind][name].clear()
            for _ in range(bench.size["repeat"]):
                seconds = sample(bench, kind, name)
                log.info("limit %-16s %-5s %10.0f rows/s", name, kind, rate(bench.data(kind).rows, seconds))
    return figures(bench)
