"""A Spark ML Pipeline that trains a digits classifier on Ray and answers a DataFrame with it.

In the style of TensorFlowOnSpark's ``examples/mnist/keras/mnist_pipeline.py``, ported
by changing its imports, on scikit-learn's 8x8 digits instead of MNIST CSV files:

* ``--mode train``: ``Pipeline([SQLTransformer (scale pixels to [0, 1]), TFEstimator])``
  is fitted on 80% of the digits; the TF nodes (Ray actors) train a ``tf_keras`` model
  under ``MultiWorkerMirroredStrategy``, fed the DataFrame's columns through Arrow; the
  chief exports a SavedModel to ``--export_dir``; the fitted ``PipelineModel`` is saved to
  ``--model_dir``.
* ``--mode inference``: the saved ``PipelineModel`` is loaded and answers the other 20%
  (``TFModel.transform``); predictions are written as JSON to ``--output``.
* ``--mode both`` (the default) does one after the other and prints the held-out accuracy.

Run it with a bare ``python examples/pipeline_digits.py``; ``--inference_actors 2``
answers on two Ray actors that hold the model instead of in Spark's Python workers.
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def main_fun(args, ctx):
    """Runs on every TF node: trains in lockstep with the others; the chief's export is kept."""
    import tensorflow as tf
    import tf_keras as keras

    from raytfnode import TFNode

    strategy = tf.distribute.MultiWorkerMirroredStrategy()    # TF_CONFIG is already set
    tf.keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax", name="probabilities"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])

    # args.input_mapping is the estimator's Param, merged into the args; one pass = one epoch of rows
    tf_feed = TFNode.DataFeed(ctx.mgr, input_mapping=args.input_mapping)
    dataset = tf_feed.as_dataset(args.batch_size).map(lambda batch: (batch["image"], batch["label"]))
    history = model.fit(dataset, epochs=args.epochs, verbose=0)
    print("{}:{} trained: {}".format(ctx.job_name, ctx.task_index,
                                     {k: round(v[-1], 4) for k, v in history.history.items()}), flush=True)

    # saving is collective under MultiWorkerMirroredStrategy: every node saves, the chief's copy is kept
    export_dir = ctx.absolute_path(args.export_dir) if ctx.job_name == "chief" else tempfile.mkdtemp()
    TFNode.export_saved_model(model, export_dir, tf.saved_model.SERVING, {
        "serving_default": {"inputs": {"image": "image"}, "outputs": {"probabilities": "probabilities"}}})


def digits_dataframes(spark):
    """``(train_df, test_df)``: ``id``, ``pixels`` (0-16, as in the data set) and ``label``; every 5th row tests."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = [(i, digits.data[i].astype(np.float32).tolist(), int(digits.target[i]))
            for i in range(len(digits.target))]
    df = spark.createDataFrame(rows, "id long, pixels array<float>, label int")
    return df.filter("id % 5 != 0"), df.filter("id % 5 = 0")


if __name__ == "__main__":
    import ray
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import SQLTransformer
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from raytfnode.pipeline import TFEstimator

    parser = argparse.ArgumentParser()
    parser.add_argument("--batch_size", help="number of records per batch", type=int, default=64)
    parser.add_argument("--cluster_size", help="number of nodes in the cluster", type=int, default=2)
    parser.add_argument("--epochs", help="number of epochs", type=int, default=10)
    parser.add_argument("--mode", help="train|inference|both", choices=["train", "inference", "both"],
                        default="both")
    parser.add_argument("--model_dir", help="path to save the fitted PipelineModel", default="digits_pipeline")
    parser.add_argument("--export_dir", help="path to export saved_model", default="digits_export")
    parser.add_argument("--output", help="path to save predictions (JSON)", type=str, default="predictions")
    parser.add_argument("--tensorboard", help="launch tensorboard process", action="store_true")
    parser.add_argument("--inference_actors", help="answer on N Ray actors (0: Spark's Python workers)",
                        type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", help="Spark master", default="local[2]")
    parser.add_argument("--num_cpus", help="logical CPUs of the local Ray", type=int, default=4)
    parser.add_argument("--ray_address", help="Ray cluster to join; 'local' starts one here", default="local")
    args = parser.parse_args()
    args.export_dir = os.path.abspath(args.export_dir)
    print("args:", args)

    local_ray = {"num_cpus": args.num_cpus, "include_dashboard": False} if args.ray_address == "local" else {}
    ray.init(address=args.ray_address, log_to_driver=True, logging_level="WARNING", **local_ray)
    spark = (SparkSession.builder.master(args.master).appName("pipeline_digits")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    train_df, test_df = digits_dataframes(spark)
    scale = SQLTransformer(statement="SELECT *, transform(pixels, p -> CAST(p / 16.0 AS FLOAT)) AS image "
                                     "FROM __THIS__")

    if args.mode in ("train", "both"):
        estimator = TFEstimator(main_fun, args) \
            .setInputMapping({"image": "image", "label": "label"}) \
            .setOutputMapping({"probabilities": "probabilities"}) \
            .setExportDir(args.export_dir) \
            .setClusterSize(args.cluster_size) \
            .setTensorboard(args.tensorboard) \
            .setEpochs(args.epochs) \
            .setBatchSize(args.batch_size) \
            .setGraceSecs(60)
        Pipeline(stages=[scale, estimator]).fit(train_df).write().overwrite().save(args.model_dir)
        print("saved the fitted pipeline to", args.model_dir)

    if args.mode in ("inference", "both"):
        model = PipelineModel.load(args.model_dir)
        model.stages[-1].setInferenceActors(args.inference_actors)
        preds = model.transform(test_df) \
            .withColumn("prediction", F.expr("array_position(probabilities, array_max(probabilities)) - 1")) \
            .select("id", "label", "prediction")
        preds.show(5)
        preds.write.mode("overwrite").json(args.output)
        counts = preds.agg(F.count("*").alias("rows"),
                           F.sum((F.col("prediction") == F.col("label")).cast("int")).alias("right")).head()
        model.stages[-1].close()
        print("SUMMARY test_rows={} predictions={} accuracy={:.4f}".format(
            test_df.count(), counts.rows, counts.right / counts.rows), flush=True)
    spark.stop()
    ray.shutdown()
