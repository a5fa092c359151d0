"""Train and serve a digits classifier on Ray, fed from RayDP's Spark (InputMode.SPARK).

The whole job in one script:

1. start a local Ray and RayDP's Spark on it (2 Spark executors);
2. load scikit-learn's 8x8 digits (1,797 images) into a Spark DataFrame with an
   ``array<float>`` column ``image`` and an ``int`` column ``label``; split it 80/20;
3. ``TFCluster.run`` a chief and a worker that train a small ``tf_keras`` model under
   ``MultiWorkerMirroredStrategy``, fed by ``cluster.train(train_df, num_epochs=N)``
   through ``ctx.get_data_feed(...).as_dataset(global_batch)``; the chief exports a SavedModel;
4. start a second cluster whose nodes load the SavedModel and answer
   ``cluster.inference(test_df)`` through ``DataFeed(ctx.mgr, train_mode=False)``;
5. compute the held-out accuracy in Spark and print a summary.

Run it with a bare ``python examples/spark_digits.py`` (add ``--tensorboard`` to
start TensorBoard on the chief while training). ``--address host:port`` (or
``RAY_ADDRESS``, which ``ray job submit`` sets) joins a running Ray cluster instead
of starting one; the script then needs 4 free Ray CPUs (2 Spark executors, 2 TF
nodes). Progress of the training feed shows on stderr; ``RAYTFNODE_PROGRESS=0``
hides it and ``RAYTFNODE_LOG_LEVEL=verbose`` shows every start-up line of
TensorFlow, Ray and Spark.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def train_fun(args, ctx):
    """Runs on every TF node (chief:0 and worker:0): trains in lockstep, the chief exports."""
    import tensorflow as tf
    import tf_keras as keras

    from raytfnode import TFNode

    # TF_CONFIG is already set: create the strategy first, before any other TF call.
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(args.seed)

    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    # One pass over this node's share of the rows per epoch; Keras splits each global batch
    # across the replicas of all nodes.
    feed = ctx.get_data_feed(input_mapping={"image": "x", "label": "y"})
    dataset = feed.as_dataset(args.batch_size).map(lambda batch: (batch["x"], batch["y"]))

    callbacks = []
    if ctx.log_dir and ctx.job_name == "chief":
        callbacks.append(keras.callbacks.TensorBoard(log_dir=ctx.log_dir, update_freq="epoch"))
    history = model.fit(dataset, epochs=args.epochs, callbacks=callbacks, verbose=0)
    print("{}:{} trained: {}".format(ctx.job_name, ctx.task_index,
                                     {k: round(v[-1], 4) for k, v in history.history.items()}), flush=True)

    # Saving reads mirrored and sync-on-read variables, which is collective under
    # MultiWorkerMirroredStrategy: every node saves, only the chief's copy is kept.
    signatures = {
        tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: {
            "inputs": {"image": "image"},
            "outputs": {"probabilities": "probabilities"},
            "method_name": tf.saved_model.PREDICT_METHOD_NAME,
        }
    }
    if ctx.job_name == "chief":
        TFNode.export_saved_model(model, ctx.absolute_path(args.export_dir), tf.saved_model.SERVING, signatures)
    else:
        scratch = tempfile.mkdtemp(prefix="digits-worker-export-")
        TFNode.export_saved_model(model, scratch, tf.saved_model.SERVING, signatures)
        shutil.rmtree(scratch, ignore_errors=True)


def inference_fun(args, ctx):
    """Runs on every TF node of the second cluster: answers inference batches with predicted labels."""
    import numpy as np
    import tensorflow as tf

    from raytfnode import TFNode

    model = tf.saved_model.load(ctx.absolute_path(args.export_dir))
    predict = model.signatures[tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY]

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False, input_mapping={"image": "x"})
    answered = 0
    while not feed.should_stop():
        batch = feed.next_batch(args.batch_size * 4)
        images = batch["x"]
        if not len(images):
            continue
        probabilities = predict(image=tf.constant(images, dtype=tf.float32))["probabilities"].numpy()
        feed.batch_results(np.argmax(probabilities, axis=1).astype(int).tolist())
        answered += len(images)
    print("{}:{} answered {} rows".format(ctx.job_name, ctx.task_index, answered), flush=True)


def load_digits_dataframe(spark, args):
    """The digits as a DataFrame ``(image array<float>, label int)``, pixels scaled to [0, 1]."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import load_digits

    digits = load_digits()
    frame = pd.DataFrame({"image": list((digits.data / 16.0).astype(np.float32)),
                          "label": digits.target.astype(np.int32)})
    df = spark.createDataFrame(frame, "image array<float>, label int")   # through Arrow, no Python workers
    return df.repartition(args.partitions) if args.partitions else df


def fed_rows(cluster):
    """Rows each fed node took from its queue so far, by node name."""
    import ray

    fed = [i for i, (job, _) in enumerate(cluster.roles) if job in ("chief", "master", "worker")]
    stats = ray.get([cluster.queue_actors[i].stats.remote() for i in fed])
    return {s["node"]: s["fed_rows"] for s in stats}


def check_tensorboard(url):
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch size (all replicas)")
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--partitions", type=int, default=0,
                        help="repartition the digits DataFrame (default: as Spark made it)")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--export_dir", default=None, help="SavedModel directory (default: a temporary one)")
    parser.add_argument("--num_cpus", type=int, default=6, help="logical CPUs of the local Ray")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (host:port or auto) instead of starting a local one; "
                             "default: $RAY_ADDRESS when set (ray job submit sets it)")
    parser.add_argument("--tensorboard", action="store_true", help="run TensorBoard on the chief while training")
    parser.add_argument("--keep_export", action="store_true", help="keep the temporary export dir")
    args = parser.parse_args(argv)

    started = time.monotonic()
    phases = {}
    mark = [started]

    def phase(name):
        now = time.monotonic()
        phases[name] = now - mark[0]
        mark[0] = now

    import ray
    import raydp

    from raytfnode import TFCluster, logs

    address = args.address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    phase("ray")
    spark = raydp.init_spark("spark_digits", num_executors=2, executor_cores=1, executor_memory="1GB",
                             configs=logs.raydp_configs({"spark.ui.enabled": "false",
                                                         "spark.ui.showConsoleProgress": "false",
                                                         "spark.sql.execution.arrow.pyspark.enabled": "true"}))
    spark.sparkContext.setLogLevel("ERROR")
    phase("spark")
    temporary_export = args.export_dir is None
    if temporary_export:
        args.export_dir = os.path.join(tempfile.mkdtemp(prefix="spark-digits-"), "export")
    args.export_dir = os.path.abspath(args.export_dir)
    try:
        df = load_digits_dataframe(spark, args)
        train_df, test_df = df.randomSplit([1.0 - args.test_fraction, args.test_fraction], seed=args.seed)
        phase("data")

        # ---- training: chief:0 and worker:0, fed from Spark
        cluster = TFCluster.run(spark, train_fun, args, num_executors=2, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK, master_node="chief",
                                tensorboard=args.tensorboard,
                                log_dir=os.path.join(os.path.dirname(args.export_dir), "tensorboard"))
        phase("start")
        if args.tensorboard:
            url = cluster.tensorboard_url()
            print("TensorBoard: {} (HTTP {})".format(url, check_tensorboard(url)), flush=True)
        try:
            report = cluster.train(train_df, num_epochs=args.epochs)
            phase("train")
            rows_per_node = fed_rows(cluster)
            if args.tensorboard:
                print("TensorBoard still serving: HTTP {}".format(check_tensorboard(url)), flush=True)
        finally:
            cluster.shutdown()
        phase("export")
        train_seconds = report["seconds"]
        print("trained: {} epochs ({} from the epoch cache), {} rows fed, {:.1f} s; SavedModel in {}".format(
            report["epochs"], report["cached_epochs"], report["rows"], train_seconds, args.export_dir), flush=True)

        # ---- inference: a second cluster loads the SavedModel and answers Spark's partitions
        cluster = TFCluster.run(spark, inference_fun, args, num_executors=2, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK, master_node="chief")
        phase("start2")
        try:
            predictions = cluster.inference(test_df)   # lazy RDD, partition i = answers for test partition i
            labels = test_df.rdd.map(lambda row: row.label)
            # one Spark job: (rows, correct) summed over the partitions
            total, correct = labels.zip(predictions).map(lambda pair: (1, int(pair[0] == pair[1]))).reduce(
                lambda a, b: (a[0] + b[0], a[1] + b[1]))
        finally:
            cluster.shutdown()
        phase("inference")
        accuracy = correct / total
        wall = time.monotonic() - started
        per_epoch = {k: v // max(report["epochs"], 1) for k, v in rows_per_node.items()}
        print("SUMMARY rows_per_worker_per_epoch={} epochs={} train_rows={} test_rows={} accuracy={:.4f} train_seconds={:.1f} "
              "wall_seconds={:.1f}".format(",".join("{}={}".format(k, v) for k, v in per_epoch.items()),
                                           report["epochs"], report["rows"] // max(report["epochs"], 1),
                                           total, accuracy, train_seconds, wall), flush=True)
        print("phases (s): " + ", ".join("{} {:.1f}".format(k, v) for k, v in phases.items()), flush=True)
        return accuracy
    finally:
        raydp.stop_spark()
        ray.shutdown()
        if temporary_export and not args.keep_export:
            shutil.rmtree(os.path.dirname(args.export_dir), ignore_errors=True)


if __name__ == "__main__":
    main()
