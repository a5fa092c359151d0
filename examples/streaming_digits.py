"""Online training on a stream of files, then scoring another stream (Spark Structured Streaming).

1. start a local Ray and Spark (local mode);
2. write scikit-learn's digits as parquet files into a directory, one file every
   ``--interval`` seconds (each file a random sample of the training rows), while
3. ``cluster.train(stream)`` feeds every micro-batch of the file stream to a chief and a
   worker training a ``tf_keras`` model under ``MultiWorkerMirroredStrategy``: the
   whole stream is one epoch, read through ``feed.as_dataset(...)``; when every file
   was fed the driver stops the stream, the nodes see the end of the feed, the chief
   exports a SavedModel;
4. a second cluster loads it and scores a stream of the held-out rows:
   ``cluster.inference(stream, output_schema=..., keep_columns=...)`` is a streaming
   DataFrame of predictions, written to a parquet sink;
5. the accuracy is computed from the sink and a summary printed.

Run it with ``python examples/streaming_digits.py``.
"""
import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

SCHEMA = "id long, image array<float>, label int"


def train_fun(args, ctx):
    """Runs on chief:0 and worker:0: one Keras epoch over the whole stream; the chief exports."""
    import tensorflow as tf
    import tf_keras as keras

    from raytfnode import TFNode

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    feed = ctx.get_data_feed(input_mapping={"image": "x", "label": "y"})
    # one pass = the whole stream: it ends when the driver stops the stream
    dataset = feed.as_dataset(args.batch_size).map(lambda batch: (batch["x"], batch["y"]))
    history = model.fit(dataset, epochs=1, verbose=0)
    print("{}:{} trained on the stream: {}".format(ctx.job_name, ctx.task_index,
                                                   {k: round(v[-1], 4) for k, v in history.history.items()}),
          flush=True)
    signatures = {tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: {
        "inputs": {"image": "image"}, "outputs": {"probabilities": "probabilities"},
        "method_name": tf.saved_model.PREDICT_METHOD_NAME}}
    # saving is collective under MultiWorkerMirroredStrategy: every node saves, the chief's copy is kept
    target = ctx.absolute_path(args.export_dir) if ctx.job_name == "chief" else tempfile.mkdtemp()
    TFNode.export_saved_model(model, target, tf.saved_model.SERVING, signatures)
    if ctx.job_name != "chief":
        shutil.rmtree(target, ignore_errors=True)


def score_fun(args, ctx):
    """Runs on the scoring cluster's nodes: answers each batch with the predicted labels."""
    import numpy as np
    import tensorflow as tf

    from raytfnode import TFNode

    predict = tf.saved_model.load(ctx.absolute_path(args.export_dir)).signatures["serving_default"]
    feed = TFNode.DataFeed(ctx.mgr, train_mode=False, input_mapping={"image": "x"})
    while not feed.should_stop():
        images = feed.next_batch(256)["x"]
        if len(images):
            probabilities = predict(image=tf.constant(images, dtype=tf.float32))["probabilities"].numpy()
            feed.batch_results(np.argmax(probabilities, axis=1).astype(int).tolist())


def write_file(directory, name, ids, images, labels):
    """One parquet file, written under a hidden name and renamed (the file source skips names with a dot)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": pa.array(ids, pa.int64()),
                      "image": pa.array([row.tolist() for row in images], pa.list_(pa.float32())),
                      "label": pa.array(labels, pa.int32())})
    pq.write_table(table, os.path.join(directory, "." + name))
    os.replace(os.path.join(directory, "." + name), os.path.join(directory, name))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=6, help="training files written into the stream")
    parser.add_argument("--sample", type=float, default=0.6, help="fraction of the training rows in each file")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between two files")
    parser.add_argument("--batch_size", type=int, default=64, help="global batch size")
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num_cpus", type=int, default=6, help="logical CPUs of the local Ray")
    parser.add_argument("--work_dir", default=None, help="directory for the streams, sinks and model")
    args = parser.parse_args(argv)

    import numpy as np
    import ray
    from pyspark.sql import SparkSession
    from sklearn.datasets import load_digits

    from raytfnode import TFCluster

    started = time.monotonic()
    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="streaming-digits-"))
    train_dir, test_dir = os.path.join(work, "train-stream"), os.path.join(work, "test-stream")
    os.makedirs(train_dir, exist_ok=True)
    os.makedirs(test_dir, exist_ok=True)
    args.export_dir = os.path.join(work, "export")

    digits = load_digits()
    images, labels = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int32)
    order = np.random.default_rng(args.seed).permutation(len(labels))
    train_ids, test_ids = order[:int(0.8 * len(order))], order[int(0.8 * len(order)):]

    ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=True,
             logging_level="WARNING")
    spark = (SparkSession.builder.master("local[2]").appName("streaming_digits")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    try:
        # ---- online training on a stream of files
        rng = np.random.default_rng(args.seed + 1)
        files = [np.sort(rng.choice(train_ids, int(args.sample * len(train_ids)), replace=False))
                 for _ in range(args.files)]
        write_file(train_dir, "part-000.parquet", files[0], images[files[0]], labels[files[0]])

        def write_the_rest():
            for number in range(1, args.files):
                time.sleep(args.interval)
                ids = files[number]
                write_file(train_dir, "part-{:03d}.parquet".format(number), ids, images[ids], labels[ids])

        writer = threading.Thread(target=write_the_rest, daemon=True)
        cluster = TFCluster.run(spark, train_fun, args, num_executors=2, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK, master_node="chief")
        try:
            stream = (spark.readStream.schema(SCHEMA).option("maxFilesPerTrigger", 1).parquet(train_dir)
                      .select("image", "label"))
            feed = cluster.train(stream, checkpoint_location=os.path.join(work, "train-checkpoint"))
            writer.start()
            while feed.progress()["batches"] < args.files:
                if feed.await_termination(0.5):    # raises at once if a node failed
                    break
            progress = feed.progress()
            feed.stop()                              # the nodes see the end of the feed and finish
        finally:
            cluster.shutdown()
        writer.join()
        train_seconds = time.monotonic() - started

        # ---- scoring another stream
        for number, ids in enumerate(np.array_split(test_ids, 2)):
            write_file(test_dir, "part-{:03d}.parquet".format(number), ids, images[ids], labels[ids])
        cluster = TFCluster.run(spark, score_fun, args, num_executors=2, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK)
        try:
            test_stream = spark.readStream.schema(SCHEMA).parquet(test_dir)
            predictions = cluster.inference(test_stream, output_schema="prediction int",
                                            keep_columns=["id", "label"])
            sink = os.path.join(work, "predictions")
            query = (predictions.writeStream.format("parquet").option("path", sink)
                     .option("checkpointLocation", os.path.join(work, "score-checkpoint"))
                     .trigger(availableNow=True).start())
            query.awaitTermination()
        finally:
            cluster.shutdown()
        scored = spark.read.parquet(sink)
        rows = scored.count()
        distinct = scored.select("id").distinct().count()
        accuracy = scored.where("prediction = label").count() / max(rows, 1)
        rows_per_node = ",".join("{}={}".format(k, v) for k, v in sorted(progress["rows_per_node"].items()))
        print("SUMMARY batches={} train_rows={} rows_per_node={} test_rows={} scored_rows={} distinct_ids={} "
              "accuracy={:.4f} train_seconds={:.1f} seconds={:.1f}".format(
                  progress["batches"], progress["rows"], rows_per_node, len(test_ids), rows, distinct, accuracy,
                  train_seconds, time.monotonic() - started), flush=True)
    finally:
        spark.stop()
        ray.shutdown()
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
