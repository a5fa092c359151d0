"""The run every measurement shares: its options, Ray, Spark (started on first use) and the data sets."""
import logging
import os
import time

from bench.common import SOURCES, CpuMeter, default_chunk_bytes
from bench.data import build_data

log = logging.getLogger("bench")

#: the master of ``--spark local`` (the JSON's ``spark_layout`` names it)
LOCAL_MASTER = "local[2]"

SIZES = {
    "full": dict(mnist_rows=60000, tiny_rows=1000000, partitions=4, train_epochs=5, train_batch=256, train_rounds=3,
                 startup_repeats=3, memory_queue_bytes=16 << 20, memory_sleep=0.25, scaling_nodes=(1, 2, 4),
                 scaling_rows=(60000, 200000, 600000), scaling_partitions=(4, 40, 400), scaling_epochs=5,
                 scaling_epochs_raydata=50,
                 scaling_repeat=3, repeat=3,
                 inference_rows=60000,
                 memory_fit=dict(queue_bytes=32 << 20, chunk_bytes=8 << 20, fed_over_bound=4.0, sleep=0.02)),
    "tiny": dict(mnist_rows=3000, tiny_rows=40000, partitions=4, train_epochs=2, train_batch=128, train_rounds=1,
                 startup_repeats=1, memory_queue_bytes=1 << 20, memory_sleep=0.05, scaling_nodes=(1, 2),
                 scaling_rows=(3000, 30000), scaling_partitions=(4, 16), scaling_epochs=1, scaling_epochs_raydata=1,
                 repeat=1,
                 inference_rows=3000,
                 memory_fit=dict(queue_bytes=32 << 20, chunk_bytes=8 << 20, fed_over_bound=1.5, sleep=0.0)),
}


class Bench:
    """Options, sizes, Ray and Spark of one run, and what the measurements hand each other.

    ``spark`` and ``data(kind)`` start Spark and build a data set on first use, so a measurement
    run alone (``--only``) pays only for what it needs. ``shared`` carries figures one measurement
    takes from another run before it (the limits timed right before each feed, the start-up of the
    training clusters).
    """

    def __init__(self, args):
        self.args = args
        self.tiny = args.tiny
        self.size = dict(SIZES["tiny" if args.tiny else "full"])
        if args.repeat:
            self.size["repeat"] = args.repeat
        self.cpu = CpuMeter()
        self.chunk_bytes = None
        self.shared = {}
        self.results = {}
        self._spark = None
        self._data = {}

    # -- Ray and Spark

    def start_ray(self):
        import ray
        if self.args.address:
            ray.init(address=self.args.address, log_to_driver=False, logging_level="WARNING")
        else:
            # "local": a new cluster of this run, even when another session's `ray start` cluster is running.
            # Ray waits 30 s (fixed) for its raylet to register; on this shared machine under load that
            # sometimes passes, so the start is tried five times
            for attempt in range(5):
                try:
                    ray.init(address="local", num_cpus=self.args.ray_cpus, include_dashboard=False,
                             log_to_driver=False, logging_level="WARNING")
                    break
                except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for this)
                    if "timed out during startup" not in str(exc) or attempt == 4:
                        raise
                    log.warning("Ray did not start (%s); trying again", exc)
                    ray.shutdown()
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor", "py4j"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.chunk_bytes = default_chunk_bytes()   # what TFCluster.run uses when not told

    @property
    def spark(self):
        """The SparkSession of the run (RayDP, or local mode with ``--spark local``), started on first use."""
        if self._spark is None:
            started = time.monotonic()
            if self.args.spark == "raydp":
                import raydp

                from raytfnode import logs
                self._spark = raydp.init_spark("raytfnode-bench-{}".format(os.getpid()),
                                               num_executors=self.args.executors,
                                               executor_cores=self.args.executor_cores,
                                               executor_memory=self.args.executor_memory,
                                               configs=logs.raydp_configs({
                                                   "spark.ui.enabled": "false",
                                                   "spark.ui.showConsoleProgress": "false",
                                                   "spark.sql.execution.arrow.pyspark.enabled": "true",
                                                   "spark.task.maxFailures": "1"}))
            else:
                from pyspark.sql import SparkSession
                self._spark = (SparkSession.builder.master(LOCAL_MASTER).appName("raytfnode-bench")
                               .config("spark.ui.enabled", "false")
                               .config("spark.ui.showConsoleProgress", "false")
                               .config("spark.driver.memory", self.args.executor_memory)
                               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
                               .getOrCreate())
            self._spark.sparkContext.setLogLevel("ERROR")
            self.results["spark_start_seconds"] = time.monotonic() - started
        return self._spark

    def data(self, kind):
        """The data set ``kind`` ('mnist' or 'tiny') in all three sources, built on first use."""
        if kind not in self._data:
            rows = self.size["mnist_rows" if kind == "mnist" else "tiny_rows"]
            self._data[kind] = build_data(self.spark, kind, rows, self.size["partitions"])
        return self._data[kind]

    def release_data(self):
        """Unpersists and drops the data sets (a measurement that needs the memory calls it)."""
        for data in self._data.values():
            if data.rdd is not None:
                data.rdd.unpersist()
            if data.df is not None:
                data.df.unpersist()
        self._data.clear()

    def stop(self):
        import ray
        if self._spark is not None:
            if self.args.spark == "raydp":
                import raydp
                raydp.stop_spark()
            else:
                self._spark.stop()
            self._spark = None
        ray.shutdown()

    # -- raytfnode clusters

    def run_cluster(self, map_fun, tf_args, nodes=2, **kwargs):
        """``TFCluster.run`` with the benchmark's defaults (fed, read-only nodes of ``--node-cpus``)."""
        from raytfnode import TFCluster
        kwargs.setdefault("input_mode", TFCluster.InputMode.SPARK)
        kwargs.setdefault("num_cpus", self.args.node_cpus)
        kwargs.setdefault("import_tensorflow", False)
        kwargs.setdefault("chunk_bytes", self.chunk_bytes)
        kwargs.setdefault("reservation_timeout", 300)   # a TF node took over 120 s to start here under load
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
