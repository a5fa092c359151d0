"""What every measurement shares: sizes, the machine, CPU and object-store meters, small helpers."""
import logging
import os
import platform
import sys
import threading
import time

MNIST_DIM = 784
MNIST_ROW_BYTES = MNIST_DIM * 4 + 8
TINY_ROW_BYTES = 8
CONSUMERS = ("next_batch(100)", "next_batch(1000)", "arrays")
CONSUMER_QUEUE = {"next_batch(100)": "input", "next_batch(1000)": "nb1000", "arrays": "arrays"}
SOURCES = ("rdd", "dataframe", "raydata")
DATASETS = ("mnist", "tiny")
LIMIT_OF = {"rdd": "spark_rdd_iter", "dataframe": "spark_arrow_read", "raydata": "ray_data_iter"}

log = logging.getLogger("bench")


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
        self.pinned_peak = 0         # store bytes pinned as primary copies (what Ray may not evict)
        self.store_samples = 0
        self.rss_peak = {p.pid: 0 for p in self.procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._state = None

    def store_used(self, pinned=False):
        """Bytes in the local object store (raylet store stats; else object_store_memory availability).

        With ``pinned=True``: ``(bytes used, bytes pinned as primary copies)``. A read object whose last
        reference is gone is unpinned at once but stays "used" until Ray's batched free (about a
        second); the store evicts it when it needs the room.
        """
        import ray
        try:
            from ray._private.internal_api import get_memory_info_reply, get_state_from_address
            if self._state is None:
                self._state = get_state_from_address(ray.get_runtime_context().gcs_address)
            stats = get_memory_info_reply(self._state).store_stats
            used = int(stats.object_store_bytes_used)
            return (used, int(stats.object_store_bytes_primary_copy)) if pinned else used
        except Exception:  # noqa: BLE001
            total = ray.cluster_resources().get("object_store_memory", 0)
            used = int(total - ray.available_resources().get("object_store_memory", total))
            return (used, used) if pinned else used

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
            used, pinned = self.store_used(pinned=True)
            self.store_peak = max(self.store_peak, used)
            self.pinned_peak = max(self.pinned_peak, pinned)
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
        if cmd.startswith(("ray::NodeQueuesActor", "ray::CoordinatorActor", "ray::_NodeQueues", "ray::_Coordinator")):
            return "queue+coordinator actors"
        if cmd.startswith("ray::") or "default_worker.py" in cmd:
            # a Ray worker that has not set its title yet (an actor starting up) is looked at again next time
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
    for name in ("pyspark", "raydp", "tensorflow", "tf_keras", "numpy", "pyarrow", "tensorflowonspark",
                 "spark-tensorflow-distributor", "setuptools"):
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
    """The Spark RDD, Spark DataFrame or Ray Dataset of ``data``."""
    return {"rdd": data.rdd, "dataframe": data.df, "raydata": data.ds}[source]

