#!/usr/bin/env python
"""raytfnode benchmark: feed throughput against the limits of its sources, training, start-up, memory, scaling.

Everything is measured in one run, on the same generated data:

1. feed throughput into ``DataFeed`` (2 nodes that only read) from a Spark RDD, a Spark
   DataFrame (Arrow) and a Ray Dataset, with ``next_batch(100)``, ``next_batch(1000)`` and
   the array path (``epoch_batches(1000)``), for MNIST-shaped rows (784 float32 + int64
   label) and tiny rows (one int64);
2. the limits beside them: Spark iterating the same RDD in its Python workers, Spark
   reading the same DataFrame through Arrow (``mapInArrow``), Ray Data iterating the same
   Dataset (``iter_batches``) and the object store moving the same chunks (``ray.put`` in
   two producers, ``ray.get`` in two consumers), with no feeding; plus TensorFlowOnSpark's
   quoted 3,300 rows/s;
3. training end to end: a small ``tf_keras`` model under MultiWorkerMirroredStrategy on two
   workers, fed (``as_dataset``) against an in-memory ``tf.data`` pipeline;
4. ``run()`` and ``shutdown()`` of a 2-node cluster (``import_tensorflow=True``);
5. peak object-store bytes and consumer RSS while feeding 10x ``queue_max_bytes``;
6. feed throughput with 1, 2 and 4 nodes.

Usage::

    python ci/bench.py                 # full run (RayDP Spark), < 10 minutes
    python ci/bench.py --spark local   # Spark local mode instead of RayDP
    python ci/bench.py --tiny          # small sizes (the test suite runs this)
    python ci/bench.py --sections feed,limits --out /tmp/b.json

Prints a table and writes JSON (default ``ci/results/bench.json``, git-ignored).
"""
import argparse
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", os.environ["PYSPARK_PYTHON"])
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import raytfnode  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.dirname(HERE))  # raytfnode from this checkout

TFOS_ROWS_PER_S = 3300.0  # quoted: TensorFlowOnSpark, MNIST-shaped rows, same machine class (from the issue)
MNIST_DIM = 784
MNIST_ROW_BYTES = MNIST_DIM * 4 + 8
TINY_ROW_BYTES = 8
SECTIONS = ("limits", "feed", "training", "startup", "memory", "scaling")

SIZES = {
    "full": dict(mnist_rows=60000, tiny_rows=1000000, partitions=4, train_epochs=3, train_batch=256,
                 startup_repeats=3, memory_queue_bytes=16 << 20, memory_sleep=0.25, scaling_nodes=(1, 2, 4),
                 repeat=2),
    "tiny": dict(mnist_rows=3000, tiny_rows=40000, partitions=4, train_epochs=2, train_batch=128,
                 startup_repeats=1, memory_queue_bytes=1 << 20, memory_sleep=0.05, scaling_nodes=(1, 2),
                 repeat=1),
}

CONSUMERS = ("next_batch(100)", "next_batch(1000)", "arrays")
CONSUMER_QUEUE = {"next_batch(100)": "input", "next_batch(1000)": "nb1000", "arrays": "arrays"}
SOURCES = ("rdd", "dataframe", "raydata")
DATASETS = ("mnist", "tiny")
LIMIT_OF = {"rdd": "spark_rdd_iter", "dataframe": "spark_arrow_read", "raydata": "ray_data_iter"}
LIMITS = ("spark_rdd_iter", "spark_arrow_read", "ray_data_iter", "ray_data_split2", "object_store")

log = logging.getLogger("bench")


# ----------------------------------------------------------------------------- data (same everywhere)

def partition_sizes(total, parts):
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


# ----------------------------------------------------------------------------- limits (no feeding)

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


# ----------------------------------------------------------------------------- map_funs (run in the TF nodes)

def _read_feed(feed, mode, sleep=0.0, batch=1000):
    """Reads ``feed`` until its end with one of the CONSUMERS, doing nothing with the rows (a pure read)."""
    import time as _time
    rows = 0
    if mode == "arrays":
        while not feed.should_stop():
            for arrays in feed.epoch_batches(batch):
                rows += len(arrays[0]) if isinstance(arrays, tuple) else len(arrays)
                if sleep:
                    _time.sleep(sleep)
    else:
        size = 100 if mode == "next_batch(100)" else 1000
        while not feed.should_stop():
            rows += len(feed.next_batch(size))
            if sleep:
                _time.sleep(sleep)
    return rows


def reader_fun(args, ctx):
    """Reads the feed: ``args['mode']`` on queue 'input', or with ``args['queues']`` ({queue: mode}) one
    reader thread per queue, so one cluster serves every consumer kind (the driver feeds one queue at a time)."""
    import threading as _threading
    queues = args.get("queues") or {"input": args["mode"]}
    counts = {}

    def read(qname, mode):
        counts[qname] = _read_feed(ctx.get_data_feed(qname_in=qname), mode, args.get("sleep", 0.0))

    threads = [_threading.Thread(target=read, args=item, daemon=True) for item in queues.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctx.mgr.set("rows_read", counts)


def train_fun(args, ctx):
    """A small tf_keras model under MultiWorkerMirroredStrategy, fed or from an in-memory tf.data pipeline."""
    import time as _time

    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    batch = args["batch"]
    if args["feed"]:
        feed = ctx.get_data_feed()
        dataset = feed.as_dataset(batch)
    else:
        import numpy as np
        mine = [i for i in range(args["parts"]) if i % ctx.num_workers == ctx.task_index]
        parts = [gen_arrays("mnist", i, args["rows"], args["parts"]) for i in mine]
        images = np.concatenate([p["image"] for p in parts])
        labels = np.concatenate([p["label"] for p in parts])
        # unknown cardinality, like the feed's dataset: Keras then runs each epoch until the data ends
        # (with a known one it stops MultiWorkerMirroredStrategy epochs after cardinality steps, half the rows)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).filter(lambda x, y: True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options).prefetch(2)

    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input((MNIST_DIM,)),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ])
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = _time.perf_counter()
            self.steps = 0

        def on_train_batch_end(self, step, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append({"steps": self.steps, "seconds": _time.perf_counter() - self.start,
                                "loss": float((logs or {}).get("loss", float("nan")))})

    timer = Timer()
    model.fit(dataset, epochs=args["epochs"], verbose=0, callbacks=[timer])
    ctx.mgr.set("train_result", timer.epochs)


# ----------------------------------------------------------------------------- helpers

class Sampler:
    """Samples object-store bytes in use and the RSS of some processes in a thread."""

    def __init__(self, pids=(), interval=0.05, queues=(), baseline=0):
        import psutil
        self.procs = [psutil.Process(p) for p in pids]
        self.queues = list(queues)
        self.baseline = baseline
        self.queued_peak = 0         # bytes the queue actors hold (their own count)
        self.outside_peak = 0        # store bytes above baseline that no queue counts (producers, readers)
        self.interval = interval
        self.store_peak = 0
        self.store_samples = 0
        self.rss_peak = {p.pid: 0 for p in self.procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._state = None

    def store_used(self):
        """Bytes in the local object store (raylet store stats; else object_store_memory availability)."""
        import ray
        try:
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address
            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            return int(get_memory_info_reply(self._state).store_stats.object_store_bytes_used)
        except Exception:  # noqa: BLE001
            total = ray.cluster_resources().get("object_store_memory", 0)
            return int(total - ray.available_resources().get("object_store_memory", total))

    def rss(self):
        out = {}
        for p in self.procs:
            try:
                out[p.pid] = p.memory_info().rss
            except Exception:  # noqa: BLE001
                out[p.pid] = 0
        return out

    def _loop(self):
        import ray
        while not self._stop.is_set():
            used = self.store_used()
            self.store_peak = max(self.store_peak, used)
            if self.queues:
                queued = sum(sum(st["queued_bytes"].values()) for st in ray.get([q.stats.remote() for q in self.queues]))
                self.queued_peak = max(self.queued_peak, queued)
                self.outside_peak = max(self.outside_peak, used - self.baseline - queued)
            self.store_samples += 1
            for pid, value in self.rss().items():
                self.rss_peak[pid] = max(self.rss_peak[pid], value)
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU seconds used by the processes of this run (the driver's process tree: the local Ray cluster,
    RayDP or local Spark, their workers), grouped by component. With --address only this driver counts."""

    COMPONENTS = ("spark python workers", "spark JVMs", "TF nodes", "queue+coordinator actors",
                  "other ray workers (feed tasks, Ray Data)", "ray system", "driver", "other")

    def __init__(self):
        import psutil
        self._psutil = psutil
        self._kind = {}

    def _classify(self, proc):
        if proc.pid == os.getpid():
            return "driver"
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001
            return "other"
        if "pyspark.daemon" in cmd or "pyspark/worker" in cmd:
            return "spark python workers"
        if "java" in cmd.split(" ", 1)[0]:
            return "spark JVMs"
        if cmd.startswith("ray::_TFNode"):
            return "TF nodes"
        if cmd.startswith(("ray::_NodeQueues", "ray::_Coordinator")):
            return "queue+coordinator actors"
        if cmd.startswith("ray::"):
            return "other ray workers (feed tasks, Ray Data)"
        if "/ray/" in cmd:
            return "ray system"
        return "other"

    def snapshot(self):
        out = {}
        me = self._psutil.Process(os.getpid())
        try:
            procs = [me] + me.children(recursive=True)
        except Exception:  # noqa: BLE001
            procs = [me]
        for proc in procs:
            try:
                times = proc.cpu_times()
                key = (proc.pid, proc.create_time())
                if key not in self._kind or self._kind[key] == "other ray workers (feed tasks, Ray Data)":
                    self._kind[key] = self._classify(proc)
                out[key] = times.user + times.system
            except Exception:  # noqa: BLE001
                continue
        return out

    def delta(self, before):
        after = self.snapshot()
        out = {}
        for key, value in after.items():
            kind = self._kind.get(key, "other")
            out[kind] = out.get(kind, 0.0) + value - before.get(key, 0.0)
        return {k: round(v, 3) for k, v in out.items() if v >= 0.005}


def free_delay(probe, nbytes=8 << 20, timeout=5.0):
    """Seconds from dropping the last reference to an object another process read until the store frees it."""
    import numpy as np
    import ray

    @ray.remote(num_cpus=0)
    def read(box):
        return int(ray.get(box[0])[:16].sum())

    before = probe.store_used()
    ref = ray.put(np.ones(nbytes, dtype=np.uint8))
    ray.get(read.remote([ref]))
    del ref
    started = time.perf_counter()
    while probe.store_used() > before + nbytes // 2:
        if time.perf_counter() - started > timeout:
            return None
        time.sleep(0.01)
    return time.perf_counter() - started


def tf_import_reference():
    """Seconds ``import tensorflow`` takes in a fresh Python process here (what a new TF node pays)."""
    import subprocess
    code = "import time; t = time.perf_counter(); import tensorflow; print(time.perf_counter() - t)"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                             env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
        return float(out.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        return None


def default_chunk_bytes():
    """``chunk_bytes`` of ``TFCluster.run`` when the caller gives none."""
    import inspect

    from raytfnode import TFCluster
    return inspect.signature(TFCluster.run).parameters["chunk_bytes"].default


def best(values):
    return min(values) if values else None


def rate(rows, seconds):
    return rows / seconds if seconds else 0.0


def machine_info():
    import psutil
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import ray
    versions = {"python": platform.python_version(), "ray": ray.__version__}
    from importlib import metadata
    for name in ("pyspark", "raydp", "tensorflow", "tf_keras", "numpy", "pyarrow"):
        try:
            versions[name] = metadata.version(name)
        except Exception:  # noqa: BLE001
            versions[name] = None
    return {"nproc": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2 ** 30, 1),
            "cpu_model": model, "platform": platform.platform(), "loadavg_at_start": list(os.getloadavg()),
            "versions": versions}


def wait_kv(cluster, key, timeout):
    """Waits until every node of ``cluster`` set ``key`` in its kv store; returns the values."""
    import ray
    deadline = time.monotonic() + timeout
    while True:
        values = ray.get([q.kv_get.remote(key) for q in cluster.queue_actors])
        if all(v is not None for v in values):
            return values
        cluster._raise_node_error()
        if time.monotonic() > deadline:
            raise TimeoutError("nodes did not report {!r} within {} s: {}".format(key, timeout, values))
        time.sleep(0.2)


def source_of(data, source):
    return {"rdd": data.rdd, "dataframe": data.df, "raydata": data.ds}[source]


# ----------------------------------------------------------------------------- sections

class Bench:
    def __init__(self, args):
        self.args = args
        self.size = dict(SIZES["tiny" if args.tiny else "full"])
        if args.repeat:
            self.size["repeat"] = args.repeat
        self.spark = None
        self.data = {}
        self.limit_samples = {}
        self.limit_cpu = {}
        self.startup_samples = []
        self.cpu = CpuMeter()
        self.sections = list(SECTIONS)
        self.results = {"targets": {}}
        self.chunk_bytes = default_chunk_bytes()   # what TFCluster.run uses when not told

    # -- setup

    def start(self):
        import ray
        if self.args.address:
            ray.init(address=self.args.address, log_to_driver=False, logging_level="WARNING")
        else:
            ray.init(num_cpus=self.args.ray_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level="WARNING")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor", "py4j"):
            logging.getLogger(name).setLevel(logging.WARNING)
        started = time.monotonic()
        if self.args.spark == "raydp":
            import raydp
            self.spark = raydp.init_spark("raytfnode-bench-{}".format(os.getpid()), num_executors=2,
                                          executor_cores=1, executor_memory=self.args.executor_memory,
                                          configs={"spark.ui.enabled": "false",
                                                   "spark.ui.showConsoleProgress": "false",
                                                   "spark.sql.execution.arrow.pyspark.enabled": "true",
                                                   "spark.task.maxFailures": "1"})
        else:
            from pyspark.sql import SparkSession
            self.spark = (SparkSession.builder.master("local[2]").appName("raytfnode-bench")
                          .config("spark.ui.enabled", "false")
                          .config("spark.ui.showConsoleProgress", "false")
                          .config("spark.driver.memory", self.args.executor_memory)
                          .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                          .getOrCreate())
        self.spark.sparkContext.setLogLevel("ERROR")
        self.results["spark_start_seconds"] = time.monotonic() - started
        parts = self.size["partitions"]
        self.data["mnist"] = build_data(self.spark, "mnist", self.size["mnist_rows"], parts)
        self.data["tiny"] = build_data(self.spark, "tiny", self.size["tiny_rows"], parts)

    def stop(self):
        import ray
        if self.spark is not None:
            if self.args.spark == "raydp":
                import raydp
                raydp.stop_spark()
            else:
                self.spark.stop()
        ray.shutdown()

    def run_cluster(self, map_fun, tf_args, nodes=2, **kwargs):
        from raytfnode import TFCluster
        kwargs.setdefault("input_mode", TFCluster.InputMode.SPARK)
        kwargs.setdefault("num_cpus", self.args.node_cpus)
        kwargs.setdefault("import_tensorflow", False)
        kwargs.setdefault("chunk_bytes", self.chunk_bytes)
        kwargs.setdefault("reservation_timeout", 120)
        return TFCluster.run(self.spark, map_fun, tf_args, nodes, 0, **kwargs)

    def warm_up(self, cluster, sources=SOURCES):
        """One small feed from each source: Spark's Python workers and Ray's task workers connect to the
        cluster's actors (once per process) before anything is timed."""
        import ray
        if "rdd" in sources:
            cluster.train(self.spark.sparkContext.parallelize(range(400), 4), num_epochs=1)
        if "dataframe" in sources:
            cluster.train(self.spark.range(0, 400, 1, 4), num_epochs=1)
        if "raydata" in sources:
            cluster.train(ray.data.range(400, override_num_blocks=4).materialize(), num_epochs=1)

    # -- 2. limits

    def limit_sample(self, kind, name):
        """One timing of limit ``name`` on data ``kind``; every sample is kept, the best one is reported."""
        data = self.data[kind]
        function = {"spark_rdd_iter": limit_spark_rdd, "spark_arrow_read": limit_spark_arrow,
                    "ray_data_iter": limit_ray_data, "ray_data_split2": limit_ray_data_split,
                    "object_store": lambda d: limit_object_store(d, self.chunk_bytes)}[name]
        before = self.cpu.snapshot()
        seconds = function(data)
        cpu = self.cpu.delta(before)
        self.limit_samples.setdefault(kind, {}).setdefault(name, []).append(seconds)
        self.limit_cpu.setdefault(kind, {}).setdefault(name, []).append(sum(cpu.values()))
        return seconds

    def limits(self):
        """The limits, warmed up, sampled ``repeat`` times; the feed section samples the source limits again
        right before each feed, so limits and feeds see the same machine load."""
        repeat = self.size["repeat"]
        for kind in DATASETS:
            for name in LIMITS:
                if name == "ray_data_split2" and self.args.tiny:
                    continue  # a reference only, and slow to start
                self.limit_sample(kind, name)  # warm: Python workers, Ray Data executor, actor processes
                self.limit_samples[kind][name].clear()
                for _ in range(repeat):
                    seconds = self.limit_sample(kind, name)
                    log.info("limit %-16s %-5s %10.0f rows/s", name, kind, rate(self.data[kind].rows, seconds))

    def limit_figures(self):
        out = {}
        for kind, names in self.limit_samples.items():
            data = self.data[kind]
            out[kind] = {}
            for name, samples in names.items():
                if samples:
                    seconds = best(samples)
                    cpu = self.limit_cpu.get(kind, {}).get(name, [])
                    out[kind][name] = {"seconds": seconds, "rows_per_s": rate(data.rows, seconds),
                                       "mb_per_s": rate(data.mb, seconds), "samples": samples,
                                       "cpu_seconds": statistics.median(cpu) if cpu else None}
        return out

    # -- 1. feed

    def timed_feed(self, cluster, data, source, qname="input"):
        """One epoch of ``data`` from ``source`` into queue ``qname``: (seconds, CPU seconds by component)."""
        before = self.cpu.snapshot()
        started = time.perf_counter()
        report = cluster.train(source_of(data, source), num_epochs=1, qname=qname)
        seconds = time.perf_counter() - started
        cpu = self.cpu.delta(before)
        assert report["consumed"] == data.rows and report["rows"] == data.rows, report
        return seconds, cpu

    def feed(self):
        """Every source x data set x consumer, through one 2-node cluster with one queue per consumer kind."""
        import ray
        rows_out = []
        repeat = self.size["repeat"]
        queues = {CONSUMER_QUEUE[c]: c for c in CONSUMERS}
        started = time.perf_counter()
        cluster = self.run_cluster(reader_fun, {"queues": queues}, queues=tuple(queues) + ("output", "error"))
        log.info("feed cluster up in %.1f s", time.perf_counter() - started)
        try:
            started = time.perf_counter()
            self.warm_up(cluster)  # connections are per process, not per queue
            log.info("warm-up %.1f s", time.perf_counter() - started)
            for consumer in CONSUMERS:
                for kind in DATASETS:
                    data = self.data[kind]
                    for source in SOURCES:
                        timings, pairs, cpus = [], [], []
                        for _ in range(repeat):
                            # the source's limit is timed right before each feed: the pair shares the load
                            # of this (shared) machine, and the ratio is taken pair by pair
                            limit = self.limit_sample(kind, LIMIT_OF[source]) if "limits" in self.sections else None
                            seconds, cpu = self.timed_feed(cluster, data, source, CONSUMER_QUEUE[consumer])
                            timings.append(seconds)
                            cpus.append(cpu)
                            if limit is not None:
                                pairs.append([limit, seconds])
                        rows_out.append(self._feed_entry(kind, source, consumer, data, timings, pairs, cpus))
            stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
        finally:
            cluster.shutdown(timeout=120)
        read = sum(st["consumed_rows"] for st in stats)
        expected = sum(e["rows"] * len(e["samples"]) for e in rows_out)
        assert read >= expected, (read, expected)
        if not self.args.tiny:
            rows_out.extend(self.feed_other_chunks())
        self.results["feed"] = rows_out

    def _feed_entry(self, kind, source, consumer, data, timings, pairs, cpus, chunk_bytes=None):
        seconds = best(timings)
        cpu = cpus[timings.index(seconds)]
        entry = {"data": kind, "source": source, "consumer": consumer, "rows": data.rows,
                 "chunk_bytes": chunk_bytes or self.chunk_bytes, "seconds": seconds,
                 "rows_per_s": rate(data.rows, seconds), "mb_per_s": rate(data.mb, seconds), "samples": timings,
                 "limit_feed_pairs": pairs, "cpu_seconds": sum(cpu.values()), "cpu_by_component": cpu}
        log.info("feed %-9s %-5s %-17s %10.0f rows/s %8.1f MB/s (%.2f s, %.2f CPU-s)", source, kind, consumer,
                 entry["rows_per_s"], entry["mb_per_s"], seconds, entry["cpu_seconds"])
        return entry

    def other_chunk_bytes(self):
        """The chunk size compared with the default: half of it (the lever: every chunk costs actor calls)."""
        return self.chunk_bytes // 2

    def feed_other_chunks(self):
        """The same MNIST feeds (arrays consumer) with chunk_bytes half the default."""
        chunk_bytes = self.other_chunk_bytes()
        data = self.data["mnist"]
        out = []
        cluster = self.run_cluster(reader_fun, {"mode": "arrays"}, chunk_bytes=chunk_bytes)
        try:
            self.warm_up(cluster)
            for source in SOURCES:
                timings, pairs, cpus = [], [], []
                for _ in range(self.size["repeat"]):
                    limit = self.limit_sample("mnist", LIMIT_OF[source]) if "limits" in self.sections else None
                    seconds, cpu = self.timed_feed(cluster, data, source)
                    timings.append(seconds)
                    cpus.append(cpu)
                    if limit is not None:
                        pairs.append([limit, seconds])
                out.append(self._feed_entry("mnist", source, "arrays, {:g}MB chunks".format(chunk_bytes / 2 ** 20),
                                            data, timings, pairs, cpus, chunk_bytes))
        finally:
            cluster.shutdown(timeout=120)
        return out

    # -- 3. training

    def training(self):
        from raytfnode import TFCluster
        data = self.data["mnist"]
        epochs, batch = self.size["train_epochs"], self.size["train_batch"]
        sources = [s for s in self.args.train_sources.split(",") if s]
        out = {"model": "Dense(128,relu)-Dense(64,relu)-Dense(10), adam", "global_batch": batch, "epochs": epochs,
               "rows": data.rows, "sources": sources, "timed_epochs": "2..{}".format(epochs) if epochs > 1 else "1",
               "runs": {}}
        for mode in ["in_memory"] + ["feed:" + s for s in sources]:
            fed = mode != "in_memory"
            tf_args = {"feed": fed, "batch": batch, "epochs": epochs, "rows": data.rows, "parts": data.parts}
            started = time.perf_counter()
            cluster = self.run_cluster(
                train_fun, tf_args, num_cpus=1, import_tensorflow=True,
                input_mode=TFCluster.InputMode.SPARK if fed else TFCluster.InputMode.TENSORFLOW)
            run_seconds = time.perf_counter() - started
            try:
                before = self.cpu.snapshot()
                if fed:
                    report = cluster.train(source_of(data, mode.split(":", 1)[1]), num_epochs=epochs)
                    assert report["consumed"] == data.rows * epochs, report
                results = wait_kv(cluster, "train_result", 600)
                cpu = self.cpu.delta(before)
            finally:
                stop = time.perf_counter()
                cluster.shutdown(timeout=120)
                self.startup_samples.append({"run_seconds": run_seconds, "shutdown_seconds": time.perf_counter() - stop,
                                             "tf_import_seconds": [i.get("import_seconds", 0.0)
                                                                   for i in cluster.cluster_info],
                                             "map_fun": "train_fun (finished before shutdown)"})
            timed = results[0][1:] or results[0]
            steps = sum(e["steps"] for e in timed)
            seconds = sum(e["seconds"] for e in timed)
            out["runs"][mode] = {"steps_per_s": rate(steps, seconds), "steps_per_epoch": results[0][0]["steps"],
                                 "epochs": results, "wall_seconds": time.perf_counter() - started,
                                 "cpu_seconds_per_epoch": {k: v / epochs for k, v in cpu.items()}}
            log.info("training %-15s %.1f steps/s (%d steps/epoch)", mode, out["runs"][mode]["steps_per_s"],
                     out["runs"][mode]["steps_per_epoch"])
        base = out["runs"]["in_memory"]["steps_per_s"]
        out["ratios"] = {mode: run["steps_per_s"] / base for mode, run in out["runs"].items() if mode != "in_memory"}
        self.results["training"] = out

    # -- 4. start-up and shutdown

    def startup(self):
        """run()/shutdown() of a 2-node cluster on the warm Ray cluster, with and without TensorFlow."""
        runs = []
        for import_tf in (True, False):
            repeats = self.size["startup_repeats"] if import_tf else 1
            if import_tf and self.startup_samples and self.args.tiny:
                repeats = 0  # the training clusters were 2-node run()s with TensorFlow too
            for _ in range(repeats):
                started = time.perf_counter()
                cluster = self.run_cluster(reader_fun, {"mode": "arrays"}, import_tensorflow=import_tf)
                run_seconds = time.perf_counter() - started
                imports = [info.get("import_seconds", 0.0) for info in cluster.cluster_info]
                started = time.perf_counter()
                cluster.shutdown(timeout=60)
                shutdown_seconds = time.perf_counter() - started
                runs.append({"import_tensorflow": import_tf, "run_seconds": run_seconds,
                             "shutdown_seconds": shutdown_seconds, "tf_import_seconds": imports,
                             "map_fun": "reader (waits on its feed until shutdown)"})
                log.info("startup (import_tensorflow=%s): run() %.2f s (TF import %s), shutdown() %.2f s", import_tf,
                         run_seconds, ", ".join("{:.2f}".format(i) for i in imports), shutdown_seconds)
        with_tf = [r for r in runs if r["import_tensorflow"]] + self.startup_samples
        self.results["startup"] = {
            "runs": runs,
            "training_cluster_runs": self.startup_samples,
            "run_seconds_median": statistics.median(r["run_seconds"] for r in with_tf) if with_tf else None,
            "run_seconds_min": min(r["run_seconds"] for r in with_tf) if with_tf else None,
            "shutdown_seconds_median": statistics.median(r["shutdown_seconds"] for r in runs),
            "shutdown_seconds_max": max(r["shutdown_seconds"] for r in runs),
            "run_seconds_without_tf": [r["run_seconds"] for r in runs if not r["import_tensorflow"]],
            "python_import_tensorflow_seconds": tf_import_reference(),
        }

    # -- 5. memory

    def memory(self):
        data = self.data["mnist"]
        queue_bytes = self.size["memory_queue_bytes"]
        chunk_bytes = min(self.chunk_bytes, queue_bytes // 2)
        source = self.args.memory_source
        nodes = 2
        producers = 4 if source == "raydata" else 2
        cluster = self.run_cluster(reader_fun, {"mode": "arrays", "sleep": self.size["memory_sleep"]},
                                   queue_max_bytes=queue_bytes, chunk_bytes=chunk_bytes)
        try:
            pids = [info["pid"] for info in cluster.cluster_info]
            probe = Sampler(pids)
            time.sleep(0.5)
            baseline_store = probe.store_used()
            baseline_rss = probe.rss()
            with Sampler(pids, queues=cluster.queue_actors, baseline=baseline_store) as sampler:
                started = time.perf_counter()
                report = cluster.train(source_of(data, source), num_epochs=1)
                seconds = time.perf_counter() - started
            assert report["consumed"] == data.rows, report
        finally:
            cluster.shutdown(timeout=120)
        bound = nodes * queue_bytes + producers * chunk_bytes
        peak = sampler.store_peak - baseline_store
        out = {
            "source": source, "fed_bytes": int(data.rows * data.row_bytes), "queue_max_bytes": queue_bytes,
            "chunk_bytes": chunk_bytes, "nodes": nodes, "producers": producers,
            "fed_over_queue_bytes": data.rows * data.row_bytes / queue_bytes,
            "store_baseline_bytes": baseline_store, "store_peak_bytes": sampler.store_peak,
            "store_peak_over_baseline_bytes": peak, "bound_bytes": bound, "peak_over_bound": peak / bound,
            "store_samples": sampler.store_samples, "seconds": seconds,
            "queued_peak_bytes": sampler.queued_peak, "outside_queues_peak_bytes": sampler.outside_peak,
            "consumer_rss_baseline_bytes": [baseline_rss[p] for p in pids],
            "consumer_rss_peak_bytes": [sampler.rss_peak[p] for p in pids],
        }
        delays = [free_delay(probe) for _ in range(5)]
        delays = [d for d in delays if d is not None]
        out["free_delay_seconds"] = statistics.median(delays) if delays else None
        out["feed_mb_per_s"] = data.rows * data.row_bytes / seconds / 1e6
        log.info("memory: store peak +%.1f MB over baseline (bound %.1f MB), consumer RSS peak %s MB",
                 peak / 1e6, bound / 1e6, [round(sampler.rss_peak[p] / 1e6) for p in pids])
        self.results["memory"] = out

    # -- 6. scaling

    def scaling(self):
        data = self.data["mnist"]
        source = self.args.scaling_source
        out = []
        for nodes in self.size["scaling_nodes"]:
            cluster = self.run_cluster(reader_fun, {"mode": "arrays"}, nodes=nodes,
                                       num_cpus=min(0.5, self.args.node_cpus))
            try:
                self.warm_up(cluster, (source,))
                timings = []
                for _ in range(self.size["repeat"]):
                    started = time.perf_counter()
                    report = cluster.train(source_of(data, source), num_epochs=1)
                    timings.append(time.perf_counter() - started)
                    assert report["consumed"] == data.rows, report
            finally:
                cluster.shutdown(timeout=120)
            seconds = best(timings)
            out.append({"nodes": nodes, "source": source, "consumer": "arrays", "rows": data.rows,
                        "seconds": seconds, "rows_per_s": rate(data.rows, seconds),
                        "mb_per_s": rate(data.mb, seconds)})
            log.info("scaling %d nodes: %.0f rows/s", nodes, out[-1]["rows_per_s"])
        self.results["scaling"] = out

    # -- targets and report

    def evaluate(self):
        res = self.results
        targets = {}
        if self.limit_samples:
            res["limits"] = self.limit_figures()
        limits = res.get("limits", {})
        feed = res.get("feed", [])
        default = [e for e in feed if e["consumer"] in CONSUMERS]

        def feed_rate(kind, source, consumer):
            for e in default:
                if (e["data"], e["source"], e["consumer"]) == (kind, source, consumer):
                    return e["rows_per_s"]
            return None

        for e in feed:
            e["limit"] = LIMIT_OF[e["source"]]
            if e.get("limit_feed_pairs"):
                e["ratio_to_limit"] = statistics.median(lim / fed for lim, fed in e["limit_feed_pairs"])
            elif limits.get(e["data"], {}).get(e["limit"]):
                e["ratio_to_limit"] = e["rows_per_s"] / limits[e["data"]][e["limit"]]["rows_per_s"]
            store = limits.get(e["data"], {}).get("object_store", {}).get("rows_per_s")
            e["ratio_to_object_store"] = e["rows_per_s"] / store if store else None
            if e["data"] == "mnist":
                e["ratio_to_tfos_quoted"] = e["rows_per_s"] / TFOS_ROWS_PER_S
        if default and all(e.get("ratio_to_limit") is not None for e in default):
            for source, name in (("rdd", "rdd_feed_vs_spark_rdd_iter"), ("dataframe", "dataframe_feed_vs_arrow_read"),
                                 ("raydata", "raydata_feed_vs_ray_data_iter")):
                arrays = [e["ratio_to_limit"] for e in default if e["source"] == source and e["consumer"] == "arrays"]
                every = [e["ratio_to_limit"] for e in default if e["source"] == source]
                other = [e["ratio_to_limit"] for e in feed if e["source"] == source and e["consumer"] not in CONSUMERS]
                targets[name] = {"goal": ">= 0.70 (arrays consumer, worst data set, {:g} MB chunks)".format(
                                     self.chunk_bytes / 2 ** 20),
                                 "value": min(arrays), "range_all_consumers": [min(every), max(every)],
                                 "mnist_half_size_chunks": other[0] if other else None,
                                 "met": min(arrays) >= 0.70}
            cases = [(k, c) for k in DATASETS for c in CONSUMERS]
            faster = [case for case in cases if feed_rate(case[0], "dataframe", case[1]) > feed_rate(case[0], "rdd", case[1])]
            targets["dataframe_feed_faster_than_rdd_feed"] = {"goal": "in every data set x consumer case",
                                                              "value": "{}/{} cases".format(len(faster), len(cases)),
                                                              "met": len(faster) == len(cases)}
        if "training" in res and res["training"]["ratios"]:
            ratios = res["training"]["ratios"]
            first = "feed:" + res["training"]["sources"][0]
            targets["feed_training_vs_in_memory"] = {"goal": ">= 0.90 ({})".format(first), "value": ratios[first],
                                                     "all": ratios, "met": ratios[first] >= 0.90}
        if "memory" in res:
            targets["object_store_bound"] = {"goal": "peak <= nodes*queue_max_bytes + producers*chunk_bytes",
                                             "value": res["memory"]["peak_over_bound"],
                                             "met": res["memory"]["peak_over_bound"] <= 1.0}
        if "startup" in res:
            run_s = res["startup"]["run_seconds_median"]
            stop_s = res["startup"]["shutdown_seconds_median"]
            targets["run_seconds"] = {"goal": "< 5 (median, import_tensorflow=True)", "value": run_s, "met": run_s < 5}
            targets["shutdown_seconds"] = {"goal": "< 1 (median)", "value": stop_s, "met": stop_s < 1}
        res["targets"] = targets
        res["reference"] = {"tfos_rows_per_s": TFOS_ROWS_PER_S, "kind": "quoted, not measured",
                            "what": "TensorFlowOnSpark feeding MNIST-shaped rows, same machine class (from the issue)"}

    def table(self):
        res = self.results
        lines = []
        m = res["machine"]
        lines.append("raytfnode benchmark  {}  spark={}  size={}".format(res["started_at"], res["spark"], res["size"]))
        lines.append("machine: nproc={} RAM={} GB CPU={} loadavg at start={}".format(
            m["nproc"], m["ram_gb"], m["cpu_model"], " ".join("{:.1f}".format(x) for x in m["loadavg_at_start"])))
        lines.append("NOTE: a shared 2-core machine; other jobs ran meanwhile, absolute numbers are noisy.")
        limits = res.get("limits")
        if limits:
            lines.append("")
            lines.append("Limits (no feeding, same data; best of n)        rows/s        MB/s   n  CPU-s")
            for kind in DATASETS:
                for name, figure in limits.get(kind, {}).items():
                    lines.append("  {:<18} {:<6} {:>19,.0f} {:>11.1f} {:>3} {:>6}".format(
                        name, kind, figure["rows_per_s"], figure["mb_per_s"], len(figure["samples"]),
                        _fmt(figure.get("cpu_seconds"))))
        if res.get("feed"):
            lines.append("")
            lines.append("Feed into DataFeed, 2 read-only nodes, chunk_bytes {:g} MB (run()'s default) unless said. "
                         "rows/s: best of n;".format(res.get("chunk_bytes_default", 0) / 2 ** 20))
            lines.append("  ratio: median over n of (limit time / feed time), each limit timed right before its feed; "
                         "CPU-s: all processes of the run")
            lines.append("  {:<10} {:<6} {:<20} {:>11} {:>7} {:>6} {:>6}  {:<17} {:>6} {:>8} {:>7}".format(
                "source", "data", "consumer", "rows/s", "MB/s", "sec", "CPU-s", "limit", "ratio", "vs store",
                "x TFoS"))
            for e in res["feed"]:
                tfos = e.get("ratio_to_tfos_quoted")
                lines.append("  {:<10} {:<6} {:<20} {:>11,.0f} {:>7.1f} {:>6.2f} {:>6.2f}  {:<17} {:>6} {:>8} {:>7}".format(
                    e["source"], e["data"], e["consumer"], e["rows_per_s"], e["mb_per_s"], e["seconds"],
                    e.get("cpu_seconds", 0.0), e.get("limit", "-"), _fmt(e.get("ratio_to_limit")),
                    _fmt(e.get("ratio_to_object_store")), "{:.1f}".format(tfos) if tfos else "-"))
            mnist = [e for e in res["feed"] if e["data"] == "mnist"]
            lines.append("  TensorFlowOnSpark reference (QUOTED from the issue, not measured): {:,.0f} rows/s "
                         "MNIST-shaped; 'x TFoS' = our MNIST rows/s over it".format(TFOS_ROWS_PER_S))
            if mnist:
                lines.append("  our MNIST feed / TFoS quoted: {:.1f}x (slowest case) .. {:.1f}x (fastest case)".format(
                    min(e["ratio_to_tfos_quoted"] for e in mnist), max(e["ratio_to_tfos_quoted"] for e in mnist)))
        if "training" in res:
            t = res["training"]
            lines.append("")
            lines.append("Training: tf_keras {} under MultiWorkerMirroredStrategy, 2 workers (num_cpus=1), {} rows, "
                         "global batch {}, {} epochs (timed {})".format(t["model"], t["rows"], t["global_batch"],
                                                                       t["epochs"], t["timed_epochs"]))
            for mode, run in t["runs"].items():
                cpu = run["cpu_seconds_per_epoch"]
                lines.append("  {:<17} {:>7.1f} steps/s  ratio {:>5}   CPU-s/epoch {:.1f} (TF nodes {:.1f})".format(
                    "in-memory tf.data" if mode == "in_memory" else mode.replace("feed:", "fed from ") ,
                    run["steps_per_s"], _fmt(t["ratios"].get(mode, 1.0)), sum(cpu.values()),
                    cpu.get("TF nodes", 0.0)))
        if "startup" in res:
            s = res["startup"]
            lines.append("")
            lines.append("Start-up / shutdown, 2 nodes on the warm Ray cluster: run() with import_tensorflow=True "
                         "median {:.2f} s (min {:.2f}, n={}); without TF {}; shutdown() median {:.2f} s (max {:.2f})"
                         .format(s["run_seconds_median"], s["run_seconds_min"],
                                 len([r for r in s["runs"] if r["import_tensorflow"]]) + len(s["training_cluster_runs"]),
                                 ", ".join("{:.2f} s".format(x) for x in s["run_seconds_without_tf"]),
                                 s["shutdown_seconds_median"], s["shutdown_seconds_max"]))
            lines.append("  'import tensorflow' alone in a fresh process here: {} s".format(
                _fmt(s["python_import_tensorflow_seconds"])))
        if "memory" in res:
            mem = res["memory"]
            lines.append("")
            lines.append("Memory, {} MB fed ({:.0f}x queue_max_bytes={:g} MB, chunk {:g} MB) from {} to 2 slow readers:".format(
                mem["fed_bytes"] // 10 ** 6, mem["fed_over_queue_bytes"], mem["queue_max_bytes"] / 2 ** 20,
                mem["chunk_bytes"] / 2 ** 20, mem["source"]))
            lines.append("  object store peak over baseline {:.1f} MB; bound nodes*queue + producers*chunk = "
                         "{:.1f} MB ({:.2f}x)".format(mem["store_peak_over_baseline_bytes"] / 1e6,
                                                      mem["bound_bytes"] / 1e6, mem["peak_over_bound"]))
            lines.append("  of it: held by the queues at most {:.1f} MB; outside them (producers' puts, readers' "
                         "read-ahead, Ray's deferred frees) at most {:.1f} MB".format(
                             mem["queued_peak_bytes"] / 1e6, mem["outside_queues_peak_bytes"] / 1e6))
            if mem.get("free_delay_seconds") is not None:
                lines.append("  Ray frees an object {:.2f} s after its last reference is dropped (measured, median of 5); "
                             "at this feed's {:.0f} MB/s that keeps about {:.0f} MB of read chunks in the store".format(
                                 mem["free_delay_seconds"], mem["feed_mb_per_s"],
                                 mem["free_delay_seconds"] * mem["feed_mb_per_s"]))
            lines.append("  consumer node RSS baseline {} MB, peak {} MB".format(
                [round(b / 1e6) for b in mem["consumer_rss_baseline_bytes"]],
                [round(b / 1e6) for b in mem["consumer_rss_peak_bytes"]]))
        if res.get("scaling"):
            lines.append("")
            lines.append("Scaling ({} MNIST, arrays consumer, num_cpus<=0.5 per node)".format(
                res["scaling"][0]["source"]))
            for e in res["scaling"]:
                lines.append("  {} nodes {:>11,.0f} rows/s {:>8.1f} MB/s".format(e["nodes"], e["rows_per_s"],
                                                                                e["mb_per_s"]))
        if res.get("targets"):
            lines.append("")
            lines.append("Targets")
            for name, t in res["targets"].items():
                lines.append("  {:<38} {:<6} value={}  goal {}".format(
                    name, "MET" if t["met"] else "MISSED", _fmt(t.get("value")), t["goal"]))
        lines.append("")
        lines.append("total {:.0f} s".format(res["total_seconds"]))
        return "\n".join(lines)


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return "{:.2f}".format(value)
    return str(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes (for the test suite)")
    parser.add_argument("--spark", choices=("raydp", "local"), default="raydp")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma list of " + ",".join(SECTIONS))
    parser.add_argument("--out", default=os.path.join(HERE, "results", "bench.json"))
    parser.add_argument("--repeat", type=int, default=0, help="repetitions per figure (best is kept)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local one)")
    parser.add_argument("--ray-cpus", type=int, default=8, help="logical CPUs of the local Ray cluster")
    parser.add_argument("--node-cpus", type=float, default=0.5, help="num_cpus of read-only TF nodes")
    parser.add_argument("--executor-memory", default="2g")
    parser.add_argument("--train-sources", default=None,
                        help="comma list of sources feeding the training run (default raydata,dataframe; "
                             "raydata with --tiny)")
    parser.add_argument("--memory-source", choices=SOURCES, default="dataframe")
    parser.add_argument("--scaling-source", choices=SOURCES, default="dataframe")
    parser.add_argument("--print", dest="print_json", metavar="JSON", default=None,
                        help="print the table of an earlier run's JSON file and exit")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.print_json:
        bench = Bench(args)
        with open(args.print_json) as f:
            bench.results = json.load(f)
        print(bench.table())
        return 0
    if args.train_sources is None:
        args.train_sources = "raydata" if args.tiny else "raydata,dataframe"
    sections = [s for s in args.sections.split(",") if s]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error("unknown sections {}".format(sorted(unknown)))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("raytfnode").setLevel(logging.WARNING)
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)

    bench = Bench(args)
    bench.sections = sections
    wall = time.monotonic()
    bench.results.update({"started_at": datetime.datetime.now().isoformat(timespec="seconds"),
                          "spark": args.spark, "size": "tiny" if args.tiny else "full", "sections": sections,
                          "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in bench.size.items()},
                          "machine": machine_info(), "note": "shared 2-core machine; numbers are noisy",
                          "chunk_bytes_default": bench.chunk_bytes})
    try:
        bench.start()
        for section in SECTIONS:
            if section in sections:
                section_start = time.monotonic()
                getattr(bench, section)()
                bench.results.setdefault("section_seconds", {})[section] = time.monotonic() - section_start
    finally:
        bench.results["total_seconds"] = time.monotonic() - wall
        try:
            bench.evaluate()
        except Exception:  # noqa: BLE001
            log.exception("evaluating targets failed")
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(bench.results, f, indent=2, default=str)
        try:
            bench.stop()
        except Exception:  # noqa: BLE001
            log.exception("stopping Spark/Ray failed")
    print(bench.table())
    print("\nJSON written to {}".format(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
