"""The Spark-standalone peers, in a process of their own: ``python -m bench.peer_spark ...`` (``ci/`` on the path).

Starts a Spark standalone master and two 1-core workers with the pyspark package's own
``bin/spark-class``, then, on the same MNIST rows as the benchmark (``data.gen_rows``):

1. TensorFlowOnSpark 2.2.5 (``InputMode.SPARK``, ``TFOS_SERVER_HOST=127.0.0.1``): one epoch fed to two
   nodes that read with ``next_batch(100)`` (rows/s of ``cluster.train``), then the benchmark's Keras
   model under MultiWorkerMirroredStrategy fed through ``next_batch`` (steps/s);
2. spark-tensorflow-distributor's ``MirroredStrategyRunner(num_slots=2, use_gpu=False)`` training the
   same model on in-memory rows (steps/s, seconds to the first step), or the error that stops it. It
   runs ``--std-rounds`` times (2), each in a Spark application of its own: one run's steps/s moved
   by 10-20% from run to run here, and a second run in the same Python workers fails.

Writes a JSON file; every process it started (master, workers and their executors) is stopped by
process group at the end, also on error.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

SPARK_CONF = {"spark.cores.max": "2", "spark.executor.cores": "1", "spark.executor.memory": "2g",
              "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false", "spark.task.maxFailures": "1"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Standalone:
    """A Spark standalone master and workers, each in its own process group, stopped by ``stop()``."""

    def __init__(self, workdir, workers=2, cores=1, memory="2g"):
        import pyspark
        self.spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
        self.workdir = workdir
        self.workers = workers
        self.cores = cores
        self.memory = memory
        self.port = free_port()
        self.url = "spark://127.0.0.1:{}".format(self.port)
        self.procs = []

    def _start(self, name, *args):
        log = open(os.path.join(self.workdir, name + ".log"), "w")
        proc = subprocess.Popen([self.spark_class] + list(args), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def start(self, timeout=90):
        self._start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                    "--port", str(self.port), "--webui-port", str(free_port()))
        deadline = time.monotonic() + timeout
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.procs[0].poll() is not None:
                    raise RuntimeError("the Spark master did not listen on {} within {} s (see {})".format(
                        self.port, timeout, os.path.join(self.workdir, "master.log")))
                time.sleep(0.3)
        for index in range(self.workers):
            work = os.path.join(self.workdir, "worker{}".format(index))
            os.makedirs(work, exist_ok=True)
            self._start("worker{}".format(index), "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                        "--cores", str(self.cores), "--memory", self.memory, "--webui-port", str(free_port()),
                        "--work-dir", work, self.url)

    def stop(self):
        """SIGTERM to each started process group (the workers' executors are in them), SIGKILL after 10 s."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)   # what is left of the group (executors)
            except ProcessLookupError:
                pass


def spark_context(master_url, executors=2):
    """A SparkContext (a new application) on the standalone cluster, once its executors registered."""
    from pyspark import SparkConf, SparkContext
    conf = SparkConf().setMaster(master_url).setAppName("bench-peers")
    for key, value in SPARK_CONF.items():
        conf.set(key, value)
    sc = SparkContext(conf=conf)
    sc.setLogLevel("ERROR")
    wait_executors(sc, executors)
    return sc


def cached_rows(sc, rows, parts):
    """The benchmark's MNIST rows as a cached RDD, counted (its Python workers are up afterwards)."""
    from bench.data import gen_rows
    rdd = sc.parallelize(range(parts), parts).mapPartitionsWithIndex(
        lambda i, _: gen_rows("mnist", i, rows, parts)).cache()
    assert rdd.count() == rows
    return rdd


def wait_executors(sc, count, timeout=120):
    deadline = time.monotonic() + timeout
    while sc._jsc.sc().getExecutorMemoryStatus().size() < count + 1:   # + the driver
        if time.monotonic() > deadline:
            raise RuntimeError("{} executors did not register within {} s".format(count, timeout))
        time.sleep(0.3)


# ----------------------------------------------------------------------------- TensorFlowOnSpark map_funs

def tfos_reader(args, ctx):
    """Reads the TFoS feed with next_batch(100) until the end of the feed."""
    from tensorflowonspark import TFNode
    feed = TFNode.DataFeed(ctx.mgr, False)
    while not feed.should_stop():
        feed.next_batch(100)


def tfos_train(args, ctx):
    """The benchmark's model under MultiWorkerMirroredStrategy, fed by TFoS's next_batch through
    ``tf.data.Dataset.from_generator`` (TFoS's documented pattern, whole batches per call)."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    from tensorflowonspark import TFNode

    from bench.nodes import epoch_timer, keras_model

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    feed = TFNode.DataFeed(ctx.mgr, False)

    def batches():
        while not feed.should_stop():
            rows = feed.next_batch(args["batch"])
            if not rows:
                return
            yield np.stack([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.int64)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=(
        tf.TensorSpec([None, 784], tf.float32), tf.TensorSpec([None], tf.int64)))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    with strategy.scope():
        model = keras_model(keras)
    timer = epoch_timer(keras, time.perf_counter)
    model.fit(dataset.with_options(options), epochs=args["epochs"], steps_per_epoch=args["steps_per_epoch"],
              verbose=0, callbacks=[timer])
    feed.terminate()
    if ctx.job_name == "chief":
        with open(args["out"], "w") as f:
            json.dump({"epochs": timer.epochs, "first_step_at": timer.first_step_at}, f)


def run_tfos(sc, rdd, rows, epochs, batch, workdir):
    from tensorflowonspark import TFCluster

    out = {}
    try:
        cluster = TFCluster.run(sc, tfos_reader, {}, 2, 0, input_mode=TFCluster.InputMode.SPARK)
        try:
            cluster.train(sc.parallelize(range(400), 2).map(lambda i: (None, i)), num_epochs=1)  # warm-up
            started = time.perf_counter()
            cluster.train(rdd, num_epochs=1)
            out["feed_seconds"] = time.perf_counter() - started
            out["feed_rows_per_s"] = rows / out["feed_seconds"]
        finally:
            cluster.shutdown(grace_secs=1)
    except Exception:  # noqa: BLE001
        out["feed_error"] = traceback.format_exc(limit=3)
    # per step each of the 2 workers takes batch/2 rows (MWMS splits its batch per replica); TFoS's own
    # example leaves 10% of the rows unread so that no worker runs dry before the others
    steps = int(0.9 * rows / batch)
    result = os.path.join(workdir, "tfos_train.json")
    try:
        started_wall = time.time()
        cluster = TFCluster.run(sc, tfos_train, {"batch": batch, "epochs": epochs, "steps_per_epoch": steps,
                                                 "out": result},
                                2, 0, input_mode=TFCluster.InputMode.SPARK, master_node="chief")
        try:
            cluster.train(rdd, num_epochs=epochs)
        finally:
            cluster.shutdown(grace_secs=1)
        with open(result) as f:
            got = json.load(f)
        timed = got["epochs"][1:] or got["epochs"]
        out.update({"train_steps_per_s": sum(e["steps"] for e in timed) / sum(e["seconds"] for e in timed),
                    "train_steps_per_epoch": steps, "train_epochs": got["epochs"],
                    "train_seconds_to_first_step": got["first_step_at"] - started_wall})
    except Exception:  # noqa: BLE001
        out["train_error"] = traceback.format_exc(limit=3)
    return out


# ----------------------------------------------------------------------------- spark-tensorflow-distributor

def std_train(rows, parts, batch, epochs):
    """Runs in each of MirroredStrategyRunner's barrier tasks: in-memory rows of this worker, the same model.

    Also says whether the task's Python worker had imported TensorFlow already (Spark reuses its Python
    workers, so a run after another TensorFlow job of the same application starts warm) and when the
    function began and finished importing it.
    """
    entered_at = time.time()
    warm = "tensorflow" in sys.modules
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras
    imported_at = time.time()

    from bench.data import gen_arrays
    from bench.nodes import epoch_timer, keras_model

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    mine = [gen_arrays("mnist", i, rows, parts) for i in range(parts) if i % 2 == task]
    images = np.concatenate([p["image"] for p in mine])
    labels = np.concatenate([p["label"] for p in mine])
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).filter(lambda x, y: True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    with strategy.scope():
        model = keras_model(keras)
    timer = epoch_timer(keras, time.perf_counter)
    model.fit(dataset.with_options(options).prefetch(2), epochs=epochs, verbose=0, callbacks=[timer])
    return {"epochs": timer.epochs, "first_step_at": timer.first_step_at, "tensorflow_imported_before": warm,
            "entered_at": entered_at, "tensorflow_imported_at": imported_at}


def std_summary(rounds):
    """spark-tensorflow-distributor's figures over its ``rounds``: the mean steps/s and seconds to the first
    step, with every round kept; the first round's error when one failed."""
    failed = [run for run in rounds if "steps_per_s" not in run]
    if failed:
        return dict(failed[0], rounds=rounds)
    mean = lambda key: sum(run[key] for run in rounds) / len(rounds)  # noqa: E731
    return {"steps_per_s": mean("steps_per_s"), "seconds_to_first_step": mean("seconds_to_first_step"),
            "steps_per_epoch": rounds[0]["steps_per_epoch"],
            "tensorflow_imported_before": any(run["tensorflow_imported_before"] for run in rounds),
            "tensorflow_import_seconds": mean("tensorflow_import_seconds"),
            "seconds_to_train_fn": mean("seconds_to_train_fn"), "rounds": rounds}


def run_std(rows, parts, batch, epochs):
    try:
        from spark_tensorflow_distributor import MirroredStrategyRunner
        started_wall = time.time()
        got = MirroredStrategyRunner(num_slots=2, use_gpu=False, use_custom_strategy=True).run(
            std_train, rows=rows, parts=parts, batch=batch, epochs=epochs)
        timed = got["epochs"][1:] or got["epochs"]
        return {"steps_per_s": sum(e["steps"] for e in timed) / sum(e["seconds"] for e in timed),
                "steps_per_epoch": got["epochs"][0]["steps"], "epochs": got["epochs"],
                "seconds_to_first_step": got["first_step_at"] - started_wall,
                "tensorflow_imported_before": got["tensorflow_imported_before"],
                "seconds_to_train_fn": got["entered_at"] - started_wall,
                "tensorflow_import_seconds": got["tensorflow_imported_at"] - got["entered_at"]}
    except Exception as exc:  # noqa: BLE001
        return {"error": "{}: {}".format(type(exc).__name__, str(exc)[:2000]), "traceback": traceback.format_exc()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--parts", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--std-rounds", type=int, default=2,
                        help="spark-tensorflow-distributor runs, each in an application of its own")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.std_rounds < 1:
        parser.error("--std-rounds must be at least 1, got {}".format(args.std_rounds))
    # SIGTERM (the runner's timeout) unwinds through the finally below, which stops the cluster
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    os.environ["TFOS_SERVER_HOST"] = "127.0.0.1"
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    workdir = args.dir or tempfile.mkdtemp(prefix="bench-standalone-")
    result = {"spark_conf": SPARK_CONF}
    cluster = Standalone(workdir)
    sc = None
    try:
        started = time.perf_counter()
        cluster.start()
        sc = spark_context(cluster.url)
        result["standalone_start_seconds"] = time.perf_counter() - started
        rows, parts = args.rows, args.parts
        rounds = []
        for index in range(args.std_rounds):
            if index:   # a new application: new executors, whose Python workers have not imported TensorFlow
                sc.stop()
                sc = spark_context(cluster.url)
            rdd = cached_rows(sc, rows, parts)
            # spark-tensorflow-distributor before TensorFlowOnSpark, while no Python worker of this application
            # has imported TensorFlow (as raytfnode's new nodes have not), so start-up is compared cold with
            # cold: after TensorFlowOnSpark, Spark's reused Python workers have it imported. One run per
            # application: a second MultiWorkerMirroredStrategy in the same workers fails ("Collective ops
            # are already configured").
            rounds.append(run_std(rows, parts, args.batch, args.epochs))
            print("std round {}:".format(index + 1), json.dumps(rounds[-1])[:2000], flush=True)
        result["std"] = std_summary(rounds)
        result["tfos"] = run_tfos(sc, rdd, rows, args.epochs, args.batch, workdir)
        print("tfos:", json.dumps(result["tfos"])[:2000], flush=True)
    except Exception:  # noqa: BLE001
        result["error"] = traceback.format_exc(limit=5)
        print(result["error"], flush=True)
    finally:
        if sc is not None:
            try:
                sc.stop()
            except Exception:  # noqa: BLE001
                pass
        cluster.stop()
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
