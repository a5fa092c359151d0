"""Benchmark: ``TFModel.transform`` rows/s against Spark's own ``predict_batch_udf``, on one SavedModel and DataFrame.

Both answer the same cached DataFrame of digits-shaped rows (64 float32 pixels)
with the same SavedModel (a dense 64-128-10 classifier) and the same batch size,
in Spark local mode, in one run: each path runs once to load the model into
Spark's Python workers, then the timed runs alternate between the paths and
each path's median is reported. A third path, ``TFModel`` on two Ray actors that
hold the model (``inference_actors=2``, CPU only here), is measured the same way.
Every run writes all columns to Spark's ``noop`` sink, so every row is computed.

``measure(tiny)`` returns the rates and the ratios; ``python ci/bench/pipeline.py
[--tiny]`` prints them as JSON. It starts a local Ray and Spark when none is running.
"""
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

FEATURES = 64
BATCH_SIZE = 1000


def export_model(export_dir):
    """A dense 64-128-10 softmax classifier (random weights: only speed is measured) as a SavedModel."""
    import tf_keras as keras

    from raytfnode import TFNode

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Input(shape=(FEATURES,), name="image"),
                              keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax", name="probabilities")])
    TFNode.export_saved_model(model, export_dir, "serve", {
        "serving_default": {"inputs": {"image": "image"}, "outputs": {"probabilities": "probabilities"}}})
    return export_dir


def cached_frame(spark, rows, partitions):
    """``rows`` rows of ``image array<float>`` (64 values in [0, 1]), cached in Spark and counted."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    # Python floats: without Arrow (a fallback Spark may take) createDataFrame refuses numpy float32 objects
    frame = pd.DataFrame({"image": rng.random((rows, FEATURES), dtype=np.float32).tolist()})
    df = spark.createDataFrame(frame, "image array<float>").repartition(partitions).cache()
    assert df.count() == rows
    return df


def predict_batch_udf_column(export_dir):
    """Spark's ``predict_batch_udf`` over the same SavedModel signature."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.types import ArrayType, FloatType

    def make_predict_fn():
        import tensorflow as tf
        function = tf.saved_model.load(export_dir).signatures["serving_default"]

        def predict(inputs):
            return function(image=tf.constant(inputs))["probabilities"].numpy()
        return predict

    return predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()), batch_size=BATCH_SIZE,
                             input_tensor_shapes=[[FEATURES]])


def _seconds(df):
    started = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def measure(tiny: bool) -> dict:
    """Runs the comparison; returns rows/s of each path and ``TFModel``'s ratios to ``predict_batch_udf``."""
    import ray
    from pyspark.sql import SparkSession

    from raytfnode.pipeline import TFModel

    rows, repeats = (10_000, 1) if tiny else (200_000, 3)
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    spark = SparkSession.getActiveSession()
    started_spark = spark is None
    if started_spark:
        spark = (SparkSession.builder.master("local[2]").appName("bench-pipeline")
                 .config("spark.ui.enabled", "false").getOrCreate())
        spark.sparkContext.setLogLevel("ERROR")
    workdir = tempfile.mkdtemp(prefix="bench-pipeline-")
    model_on_actors = None
    try:
        export_dir = export_model(os.path.join(workdir, "export"))
        df = cached_frame(spark, rows, partitions=4)
        model = (TFModel({}).setExportDir(export_dir).setInputMapping({"image": "image"})
                 .setOutputMapping({"probabilities": "probabilities"}).setBatchSize(BATCH_SIZE))
        model_on_actors = model.copy().setInferenceActors(2)
        paths = {
            "tfmodel": model.transform(df),
            "predict_batch_udf": df.withColumn("probabilities", predict_batch_udf_column(export_dir)("image")),
            "tfmodel_actors": model_on_actors.transform(df),
        }
        for frame in paths.values():          # loads the model into the workers (and actors)
            _seconds(frame)
        times = {name: [] for name in paths}
        for _ in range(repeats):
            for name, frame in paths.items():
                times[name].append(_seconds(frame))
        rates = {name: rows / statistics.median(seconds) for name, seconds in times.items()}
        df.unpersist()
        return {
            "rows": rows,
            "batch_size": BATCH_SIZE,
            "repeats": repeats,
            "tfmodel_rows_per_s": round(rates["tfmodel"]),
            "predict_batch_udf_rows_per_s": round(rates["predict_batch_udf"]),
            "tfmodel_actors_rows_per_s": round(rates["tfmodel_actors"]),
            "tfmodel_vs_predict_batch_udf": round(rates["tfmodel"] / rates["predict_batch_udf"], 3),
            "tfmodel_actors_vs_predict_batch_udf": round(rates["tfmodel_actors"] / rates["predict_batch_udf"], 3),
            "seconds": {name: [round(s, 3) for s in seconds] for name, seconds in times.items()},
        }
    finally:
        if model_on_actors is not None:
            model_on_actors.close()
        if started_spark:
            spark.stop()
        if started_ray:
            ray.shutdown()


if __name__ == "__main__":
    print(json.dumps(measure("--tiny" in sys.argv[1:]), indent=2))
