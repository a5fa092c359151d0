"""peers: what a user would pick instead of raytfnode, measured in the same run on the same rows and model.

- TensorFlowOnSpark 2.2.5 on a Spark standalone master and two 1-core workers (its own process,
  ``peer_spark.py``): feed rows/s with ``next_batch(100)``, and steps/s of the same Keras model fed
  through ``next_batch`` (its documented ``from_generator`` pattern);
- spark-tensorflow-distributor's ``MirroredStrategyRunner`` on the same standalone cluster: steps/s
  of the same model on in-memory data (it launches TensorFlow, it does not feed), and seconds from
  launch to the first step; it runs before TensorFlowOnSpark, so its Python workers import
  TensorFlow, as raytfnode's new nodes do. It runs once (a second MultiWorkerMirroredStrategy in the
  same Spark workers fails), so raytfnode's in-memory run is made just before and just after the
  standalone peers, and compared as the mean of the two;
- Ray Train v2 (``TensorflowTrainer``) on the same Ray Dataset with ``get_dataset_shard(...).to_tf()``
  each epoch, 2 workers: steps/s and seconds from ``fit()`` to the first step, in ``train_rounds``
  rounds that each run raytfnode fed from the Ray Dataset and Ray Train, raytfnode first in the odd
  rounds and Ray Train first in the even ones (the ratio is the median of the rounds' ratios: one run
  of each moves by a fifth with the load here);
- Spark's ``pyspark.ml.functions.predict_batch_udf`` with the same SavedModel on the same DataFrame,
  against ``cluster.inference``: three alternated pairs after a warm-up of each.

Every figure is set beside raytfnode's from this run (``training`` and ``sources`` when they ran,
else measured here) as raytfnode / peer. A peer that cannot run is recorded with its error.
"""
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import rate, source_of
from bench.nodes import MODEL_NAME, epoch_timer, export_model, infer_fun, keras_model, reader_fun

log = logging.getLogger("bench")

INFERENCE_BATCH = 1000
SPARK_PEERS_TIMEOUT = 1800   # seconds; on this shared machine the standalone cluster alone took 30-260 s to start


def compare(name, what, ours, peer, higher_is_better=True, digits=0, paired=None):
    """One comparison row: raytfnode's figure, the peer's, raytfnode / peer, and whether raytfnode is ahead.

    ``paired`` (the ratios of runs made one after the other) gives the ratio as their median, ``ours`` and
    ``peer`` being the medians of each side."""
    value = ours / peer if ours is not None and peer else None
    if paired:
        value = statistics.median(paired)
    ahead = None if value is None else (value > 1 if higher_is_better else value < 1)
    return {"name": name, "what": what, "ours": ours, "peer_value": peer, "ratio": value,
            "higher_is_better": higher_is_better, "ahead": ahead, "digits": digits}


# ----------------------------------------------------------------------------- Ray Train

def ray_train_loop(config):
    """Ray Train's worker loop: the same model under MultiWorkerMirroredStrategy, its shard via to_tf()."""
    import tensorflow as tf
    import tf_keras as keras
    from ray import train

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras_model(keras)
    shard = train.get_dataset_shard("train")
    timer = epoch_timer(keras, time.perf_counter)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    for _ in range(config["epochs"]):
        dataset = shard.to_tf(feature_columns="image", label_columns="label", batch_size=config["batch"])
        model.fit(dataset.with_options(options), epochs=1, verbose=0, callbacks=[timer])
    if train.get_context().get_world_rank() == 0:
        with open(config["out"], "w") as f:
            json.dump({"epochs": timer.epochs, "first_step_at": timer.first_step_at}, f)


def ray_train(bench, data, epochs, batch):
    from ray.train import RunConfig, ScalingConfig
    from ray.train.tensorflow import TensorflowTrainer

    scratch = tempfile.mkdtemp(prefix="bench-raytrain-")
    out = os.path.join(scratch, "rank0.json")
    trainer = TensorflowTrainer(ray_train_loop,
                                train_loop_config={"epochs": epochs, "batch": batch, "out": out},
                                scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
                                run_config=RunConfig(name="bench", storage_path=scratch),
                                datasets={"train": data.ds})
    started_wall = time.time()
    started = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - started
    with open(out) as f:
        got = json.load(f)
    timed = got["epochs"][1:] or got["epochs"]
    return {"steps_per_s": rate(sum(e["steps"] for e in timed), sum(e["seconds"] for e in timed)),
            "steps_per_epoch": got["epochs"][0]["steps"], "epochs": got["epochs"], "fit_seconds": wall,
            "seconds_to_first_step": got["first_step_at"] - started_wall}


# ----------------------------------------------------------------------------- inference

def ray_train_rounds(bench, data, epochs, batch):
    """raytfnode fed from the Ray Dataset and Ray Train on it, one after the other in each of ``train_rounds``
    rounds (so each pair ran under similar load; the order alternates): ``(raytfnode's runs, Ray Train's runs)``."""
    from bench.training import train_once
    ours, theirs = [], []
    for round_index in range(bench.size.get("train_rounds", 1)):
        if round_index % 2:   # every other round Ray Train goes first: a load that drifts favours neither
            theirs.append(ray_train(bench, data, epochs, batch))
            ours.append(train_once(bench, data, "feed:raydata", epochs, batch))
        else:
            ours.append(train_once(bench, data, "feed:raydata", epochs, batch))
            theirs.append(ray_train(bench, data, epochs, batch))
        log.info("Ray Train round %d: raytfnode %.1f steps/s, Ray Train %.1f steps/s", round_index + 1,
                 ours[-1]["steps_per_s"], theirs[-1]["steps_per_s"])
    return ours, theirs


def inference_pairs(bench, df, model_dir, rows, pairs=3):
    """predict_batch_udf and cluster.inference over the same DataFrame, alternated ``pairs`` times after one
    warm-up each (the first run loads the model in the Python workers or the nodes): their rates and the
    ratio within each pair."""
    cluster = bench.run_cluster(infer_fun, {"model_dir": model_dir, "batch": INFERENCE_BATCH}, num_cpus=1,
                                import_tensorflow=True)
    try:
        samples = {"predict_batch_udf": [], "raytfnode": []}
        for index in range(pairs + 1):
            for name, run in (("predict_batch_udf", lambda: predict_batch_udf_seconds(df, model_dir)),
                              ("raytfnode", lambda: raytfnode_inference_seconds(cluster, df, rows))):
                seconds = run()
                if index:     # the warm-up is not counted
                    samples[name].append(seconds)
    finally:
        cluster.shutdown(timeout=120)
    out = {name: {"rows": rows, "samples": got, "rows_per_s": rate(rows, statistics.median(got))}
           for name, got in samples.items()}
    out["pair_ratios"] = [udf / ours for udf, ours in zip(samples["predict_batch_udf"], samples["raytfnode"])]
    return out


def predict_batch_udf_seconds(df, model_dir):
    """Seconds of Spark's predict_batch_udf over the DataFrame, written to the noop sink."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn():
        import tensorflow as tf
        predict = tf.saved_model.load(model_dir).signatures["serving_default"]

        def run(x):
            return predict(x=tf.constant(x, dtype=tf.float32))["logits"].numpy()
        return run

    udf = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=INFERENCE_BATCH,
                            input_tensor_shapes=[[784]])
    started = time.perf_counter()
    df.select(udf("image").alias("logits")).write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def raytfnode_inference_seconds(cluster, df, rows):
    """Seconds of cluster.inference over the same DataFrame, its results counted in Spark."""
    started = time.perf_counter()
    answered = cluster.inference(df).count()
    assert answered == rows, (answered, rows)
    return time.perf_counter() - started


def export(model_dir):
    """The SavedModel, written by a Ray task (TensorFlow stays out of the driver)."""
    import ray
    return ray.get(ray.remote(num_cpus=1)(export_model).remote(model_dir))


# ----------------------------------------------------------------------------- Spark standalone peers

def spark_peers(bench, data, epochs, batch):
    """TensorFlowOnSpark and spark-tensorflow-distributor in their own process (their own SparkContext on
    a standalone cluster started there and stopped there, also on error)."""
    scratch = tempfile.mkdtemp(prefix="bench-sparkpeers-")
    out = os.path.join(scratch, "result.json")
    cmd = [sys.executable, "-m", "bench.peer_spark", "--rows", str(data.rows), "--parts", str(data.parts),
           "--epochs", str(epochs), "--batch", str(batch), "--dir", scratch, "--out", out]
    log.info("spark peers: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=SPARK_PEERS_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.terminate()   # SIGTERM: it stops its standalone cluster before it exits
        try:
            output, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        output += "\n[bench] stopped after {} s".format(SPARK_PEERS_TIMEOUT)
    with open(os.path.join(scratch, "peer_spark.log"), "w") as f:
        f.write(output)
    if not os.path.exists(out):
        raise RuntimeError("bench.peer_spark exited with {} and no result; its output ends:\n{}".format(
            proc.returncode, output[-4000:]))
    with open(out) as f:
        got = json.load(f)
    got["log"] = os.path.join(scratch, "peer_spark.log")
    return got


# ----------------------------------------------------------------------------- the comparisons

def ours_training(bench, data, epochs, batch):
    """raytfnode's training figures from the ``training`` measurement, or measured here when it did not run."""
    if "training" in bench.results and bench.results["training"].get("epochs") == epochs:
        return bench.results["training"]
    import bench.training as training
    saved = bench.args.train_sources
    bench.args.train_sources = "raydata,rdd"
    try:
        return training.measure(bench)
    finally:
        bench.args.train_sources = saved


def ours_feed_rate(bench, data):
    """raytfnode's MNIST RDD feed with next_batch(100), from ``sources`` or measured here."""
    for e in bench.results.get("sources") or []:
        if (e["data"], e["source"], e["consumer"]) == ("mnist", "rdd", "next_batch(100)"):
            return e["rows_per_s"]
    cluster = bench.run_cluster(reader_fun, {"mode": "next_batch(100)"})
    try:
        bench.warm_up(cluster, ("rdd",))
        started = time.perf_counter()
        cluster.train(source_of(data, "rdd"), num_epochs=1)
        return rate(data.rows, time.perf_counter() - started)
    finally:
        cluster.shutdown(timeout=120)


def measure(bench):
    data = bench.data("mnist")
    epochs, batch = bench.size["train_epochs"], bench.size["train_batch"]
    out = {"model": MODEL_NAME, "rows": data.rows, "epochs": epochs, "global_batch": batch, "comparisons": [],
           "not_measured": {}}
    ours = ours_training(bench, data, epochs, batch)
    runs = ours["runs"]
    fed = runs.get("feed:rdd") or runs.get("feed:dataframe") or runs.get("feed:raydata")

    from bench.training import train_once
    bracket = [train_once(bench, data, "in_memory", epochs, batch)]   # in-memory runs just before and after
    try:
        spark = spark_peers(bench, data, epochs, batch)
    except Exception as exc:  # noqa: BLE001  (recorded: the other peers still run)
        log.exception("the Spark standalone peers failed")
        spark = {"error": "{}: {}".format(type(exc).__name__, exc)}
    bracket.append(train_once(bench, data, "in_memory", epochs, batch))
    out["spark_standalone"] = spark
    out["in_memory_around_spark_peers"] = {key: [run[key] for run in bracket]
                                           for key in ("steps_per_s", "seconds_to_first_step")}
    tfos = spark.get("tfos") or {}
    if "feed_rows_per_s" in tfos:
        out["comparisons"].append(compare("tfos_feed_next_batch_100", "MNIST feed, next_batch(100), rows/s: "
                                          "raytfnode (Spark RDD) vs TensorFlowOnSpark", ours_feed_rate(bench, data),
                                          tfos["feed_rows_per_s"]))
    else:
        out["not_measured"]["TensorFlowOnSpark feed"] = tfos.get("feed_error") or spark.get("error")
    if "train_steps_per_s" in tfos:
        out["comparisons"].append(compare("tfos_training", "training steps/s fed from Spark: raytfnode ({}) vs "
                                          "TensorFlowOnSpark (next_batch generator)".format(
                                              "RDD" if runs.get("feed:rdd") else "first source"),
                                          fed["steps_per_s"], tfos["train_steps_per_s"], digits=1))
    else:
        out["not_measured"]["TensorFlowOnSpark training"] = tfos.get("train_error") or spark.get("error")
    std = spark.get("std") or {}
    if "steps_per_s" in std:
        around = out["in_memory_around_spark_peers"]
        theirs = "spark-tensorflow-distributor{}".format(
            " (mean of its {} runs)".format(len(std["rounds"])) if len(std.get("rounds", ())) > 1 else "")
        out["comparisons"].append(compare("std_training", "training steps/s on in-memory data: raytfnode "
                                          "(InputMode.TENSORFLOW, mean of a run just before and one just after) "
                                          "vs " + theirs,
                                          statistics.mean(around["steps_per_s"]), std["steps_per_s"], digits=1))
        out["comparisons"].append(compare("std_first_step", "seconds from launch to the first step (in-memory, "
                                          "TensorFlow not yet imported): raytfnode (the same two runs) vs " + theirs,
                                          statistics.mean(around["seconds_to_first_step"]),
                                          std["seconds_to_first_step"], higher_is_better=False, digits=1))
    else:
        out["not_measured"]["spark-tensorflow-distributor"] = std.get("error") or spark.get("error")

    try:
        mine, theirs = ray_train_rounds(bench, data, epochs, batch)
        out["ray_train"] = dict(theirs[len(theirs) // 2],
                                steps_per_s=statistics.median(run["steps_per_s"] for run in theirs),
                                seconds_to_first_step=statistics.median(run["seconds_to_first_step"] for run in theirs),
                                rounds_steps_per_s=[run["steps_per_s"] for run in theirs],
                                rounds_raytfnode_steps_per_s=[run["steps_per_s"] for run in mine])
        out["comparisons"].append(compare(
            "ray_train_training", "training steps/s from the Ray Dataset: raytfnode vs Ray Train (to_tf per "
            "epoch), median of {} rounds, each running both".format(len(mine)),
            statistics.median(run["steps_per_s"] for run in mine), out["ray_train"]["steps_per_s"], digits=1,
            paired=[a["steps_per_s"] / b["steps_per_s"] for a, b in zip(mine, theirs)]))
        out["comparisons"].append(compare(
            "ray_train_first_step", "seconds from launch to the first step: raytfnode (run + train) vs Ray Train "
            "(fit), median of the same rounds",
            statistics.median(run["seconds_to_first_step"] for run in mine),
            out["ray_train"]["seconds_to_first_step"], higher_is_better=False, digits=1,
            paired=[a["seconds_to_first_step"] / b["seconds_to_first_step"] for a, b in zip(mine, theirs)]))
    except Exception as exc:  # noqa: BLE001
        log.exception("Ray Train failed")
        out["not_measured"]["Ray Train"] = "{}: {}".format(type(exc).__name__, exc)

    model_dir = export(os.path.join(tempfile.mkdtemp(prefix="bench-model-"), "savedmodel"))
    try:
        got = inference_pairs(bench, data.df, model_dir, data.rows)
        out["inference"] = dict(got, batch=INFERENCE_BATCH)
        out["comparisons"].append(compare(
            "predict_batch_udf", "inference rows/s, same SavedModel and DataFrame: cluster.inference vs "
            "predict_batch_udf, median of {} alternated pairs".format(len(got["pair_ratios"])),
            got["raytfnode"]["rows_per_s"], got["predict_batch_udf"]["rows_per_s"], paired=got["pair_ratios"]))
    except Exception as exc:  # noqa: BLE001
        log.exception("inference peers failed")
        out["not_measured"]["inference"] = "{}: {}".format(type(exc).__name__, exc)
    for c in out["comparisons"]:
        log.info("peer %-22s raytfnode %s, peer %s, ratio %s", c["name"], c["ours"], c["peer_value"], c["ratio"])
    return out
