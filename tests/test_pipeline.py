"""raytfnode.pipeline: TFEstimator/TFModel as Spark ML stages, on real Spark (local mode), Ray and TensorFlow.

The Spark tests run on Spark local mode only (``spark`` parametrized indirectly with
``"local"``): the stages use nothing RayDP-specific, and one training is enough here.
One module-scoped fixture trains the digits once through a saved-and-loaded
``Pipeline`` (2 TF nodes, MultiWorkerMirroredStrategy), and the tests share its model.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import subprocess_env, summary_lines

from raytfnode import BadInputError
from raytfnode.pipeline import (HasBatchSize, HasSteps, Namespace, TFEstimator, TFModel, TFParams,
                                read_signature)

LOCAL_SPARK = pytest.mark.parametrize("spark", ["local"], indirect=True)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# ------------------------------------------------------------------ no Spark job needed

def test_namespace_takes_dicts_argparse_namespaces_and_argv_lists():
    from_dict = Namespace({"string": "foo", "array": [1, 2], "map": {"a": 1}})
    assert (from_dict.string, from_dict.array, from_dict.map) == ("foo", [1, 2], {"a": 1})
    assert "string" in from_dict and "extra" not in from_dict
    assert Namespace(from_dict) == from_dict
    assert Namespace(argparse.Namespace(string="foo", array=[1, 2], map={"a": 1})) == from_dict
    argv = ["--foo", "1", "--bar", "test"]
    assert Namespace(argv).argv == argv
    assert list(Namespace(argv)) == argv
    with pytest.raises(TypeError, match="Unsupported Namespace args"):
        Namespace(42)


def test_merge_args_params_overlays_set_and_default_params_on_a_copy_of_the_args():
    class Stage(TFParams, HasBatchSize, HasSteps):
        def __init__(self, args):
            super().__init__()
            self.args = args

    args = Namespace({"a": 1, "b": 2})
    merged = Stage(args).setBatchSize(10).merge_args_params()
    assert merged == Namespace({"a": 1, "b": 2, "batch_size": 10, "steps": 1000})
    assert args == Namespace({"a": 1, "b": 2})          # the stage's own args are left as they were
    estimator = TFEstimator(lambda args, ctx: None, ["--lr", "0.1"]).setEpochs(3)
    merged = estimator.merge_args_params()
    assert merged.argv == ["--lr", "0.1"] and merged.epochs == 3 and merged.num_gpus == 0.0


def test_params_have_tensorflowonspark_defaults_and_carry_from_estimator_to_model():
    estimator = TFEstimator(lambda args, ctx: None, {})
    defaults = {p.name: estimator.getOrDefault(p) for p in estimator.params}
    assert {k: defaults[k] for k in ("batch_size", "cluster_size", "epochs", "grace_secs", "input_mode",
                                     "master_node", "num_ps", "protocol", "readers", "steps", "tensorboard",
                                     "driver_ps_nodes", "feed_timeout")} == {
        "batch_size": 100, "cluster_size": 1, "epochs": 1, "grace_secs": 30, "input_mode": 1,
        "master_node": "chief", "num_ps": 0, "protocol": "grpc", "readers": 1, "steps": 1000,
        "tensorboard": False, "driver_ps_nodes": False, "feed_timeout": 600.0}
    estimator.setExportDir("/x").setTagSet("serve").setOutputMapping({"out": "col"}).setNumGPUs(1)
    model = estimator._copyValues(TFModel(estimator.args))
    assert (model.getExportDir(), model.getTagSet(), model.getOutputMapping(), model.getNumGPUs()) == \
        ("/x", "serve", {"out": "col"}, 1.0)
    with pytest.raises(TypeError, match="Could not convert"):
        TFModel({}).setInputMapping(["image"])


# ------------------------------------------------------------------ the trained digits model

def make_train_fn():
    """The TF nodes' main function, made inside a function so that cloudpickle stores it by value
    (Ray nodes and a loaded pipeline cannot import this test module)."""

    def train_digits(args, ctx):
        """The TF nodes' main function (MultiWorkerMirroredStrategy); the chief exports the SavedModel."""
        import tempfile

        import tensorflow as tf
        import tf_keras as keras

        from raytfnode import TFNode

        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        tf.keras.utils.set_random_seed(args.seed)
        with strategy.scope():
            model = keras.Sequential([keras.layers.Input(shape=(64,), name="image"),
                                      keras.layers.Dense(64, activation="relu"),
                                      keras.layers.Dense(10, activation="softmax", name="probabilities")])
            model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
        feed = TFNode.DataFeed(ctx.mgr, input_mapping=args.input_mapping)
        dataset = feed.as_dataset(args.batch_size).map(lambda batch: (batch["image"], batch["label"]))
        model.fit(dataset, epochs=args.epochs, verbose=0)
        # saving is collective under MultiWorkerMirroredStrategy: every node saves, the chief's copy is kept
        export_dir = args.export_dir if ctx.job_name == "chief" else tempfile.mkdtemp()
        TFNode.export_saved_model(model, export_dir, "serve", {
            "serving_default": {"inputs": {"image": "image"}, "outputs": {"probabilities": "probabilities"}}})

    return train_digits


def digits_frames(spark):
    """``(train_df, test_df)`` of the scikit-learn digits: ``id``, ``pixels`` (0-16), ``label``; every 5th row tests."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = [(i, digits.data[i].astype(np.float32).tolist(), int(digits.target[i])) for i in range(len(digits.target))]
    frame = spark.createDataFrame(rows, "id long, pixels array<float>, label int")
    return frame.filter("id % 5 != 0").repartition(3), frame.filter("id % 5 = 0").repartition(4)


SCALE = "SELECT *, transform(pixels, p -> CAST(p / 16.0 AS FLOAT)) AS image FROM __THIS__"


@pytest.fixture(scope="module")
def trained(spark, tmp_path_factory):
    """A Pipeline [SQLTransformer (scale to [0, 1]), TFEstimator] saved, loaded, fitted; its model saved and loaded."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import SQLTransformer

    root = tmp_path_factory.mktemp("pipeline")
    train_df, test_df = digits_frames(spark)
    estimator = (TFEstimator(make_train_fn(), {"seed": 7})
                 .setInputMapping({"image": "image", "label": "label"})
                 .setOutputMapping({"probabilities": "probabilities"})
                 .setClusterSize(2).setEpochs(8).setBatchSize(64).setExportDir(str(root / "export")))
    Pipeline(stages=[SQLTransformer(statement=SCALE), estimator]).save(str(root / "pipeline"))
    pipeline = Pipeline.load(str(root / "pipeline"))        # train_digits comes back from the saved metadata
    pipeline.fit(train_df).save(str(root / "fitted"))
    fitted = PipelineModel.load(str(root / "fitted"))
    return {"model": fitted, "train": train_df, "test": test_df, "export_dir": str(root / "export"),
            "root": root}


def reference_probabilities(export_dir, pixels):
    """The SavedModel's answers computed here in the driver, for rows of raw pixels."""
    import tensorflow as tf
    function = tf.saved_model.load(export_dir).signatures["serving_default"]
    return function(image=tf.constant(np.asarray(pixels, np.float32) / 16.0))["probabilities"].numpy()


@LOCAL_SPARK
def test_pipeline_fit_save_load_transform_answers_every_row_aligned_with_90_percent_accuracy(trained, spark):
    fitted, test_df = trained["model"], trained["test"]
    assert type(fitted.stages[-1]) is TFModel and fitted.stages[-1].getExportDir() == trained["export_dir"]
    out = fitted.transform(test_df)
    assert out.columns == ["id", "pixels", "label", "image", "probabilities"]
    rows = sorted(out.select("id", "pixels", "label", "probabilities").collect())
    expected_ids = sorted(r.id for r in test_df.select("id").collect())
    assert [r.id for r in rows] == expected_ids                  # every row once, none added
    accuracy = np.mean([int(np.argmax(r.probabilities)) == r.label for r in rows])
    assert accuracy >= 0.9, accuracy
    # each output row is the model's answer for the pixels of its own input row
    reference = reference_probabilities(trained["export_dir"], [r.pixels for r in rows])
    np.testing.assert_allclose(np.array([r.probabilities for r in rows]), reference, atol=1e-5)


@LOCAL_SPARK
def test_transform_loads_the_savedmodel_once_per_python_worker_process(trained, spark):
    model = trained["model"].stages[-1].copy().setBatchSize(7)     # many batches per partition
    scaled = trained["model"].stages[0].transform(trained["test"].repartition(8))
    assert model.transform(scaled).count() == trained["test"].count()
    key = (trained["export_dir"], None, "serving_default")

    def loads_in_this_process(batches):
        import pyarrow as pa
        from raytfnode.pipeline import serving
        list(batches)
        yield pa.RecordBatch.from_pylist([{"pid": os.getpid(), "loads": serving.loads.get(key, 0)}])

    # many short tasks of the same kind (Arrow UDF workers) visit every idle Python worker in turn
    probe = spark.range(0, 24, 1, 24).mapInArrow(loads_in_this_process, "pid long, loads long").collect()
    loads = {row.pid: row.loads for row in probe}
    assert max(loads.values()) == 1, loads       # 8 partitions x 7-row batches, yet loaded once per process


@LOCAL_SPARK
def test_transform_on_gpu_actors_answers_the_same_as_spark_workers(trained, spark, no_leftovers):
    scaled = trained["model"].stages[0].transform(trained["test"])
    on_workers = dict(trained["model"].stages[-1].transform(scaled).select("id", "probabilities").collect())
    model = trained["model"].stages[-1].copy().setNumGPUs(1).setInferenceActors(2).setBatchSize(50)
    try:
        on_actors = dict(model.transform(scaled.repartition(4)).select("id", "probabilities").collect())
        status = model.actor_status()
    finally:
        model.close()
    assert sorted(on_actors) == sorted(on_workers)
    np.testing.assert_allclose([on_actors[i] for i in sorted(on_actors)],
                               [on_workers[i] for i in sorted(on_workers)], atol=1e-5)
    assert sorted(gpu for s in status for gpu in s["gpu_ids"]) == ["0", "1"]       # one declared GPU each
    assert sorted(s["cuda_visible_devices"] for s in status) == ["0", "1"]
    assert sum(s["rows"] for s in status) == len(on_actors)     # every row was answered by an actor
    assert all(s["loads"] == 1 for s in status)


@LOCAL_SPARK
def test_transform_follows_signature_def_key_tag_set_and_mappings(trained, spark):
    inputs, outputs = read_signature(trained["export_dir"], "serve", "serving_default")
    assert list(inputs) == ["image"] and inputs["image"].shape == (-1, 64)
    scaled = trained["model"].stages[0].transform(trained["test"]).withColumnRenamed("image", "img")
    model = (TFModel({}).setExportDir(trained["export_dir"]).setTagSet("serve")
             .setSignatureDefKey("serving_default").setInputMapping({"img": "image"})
             .setOutputMapping({"probabilities": "p"}))
    row = model.transform(scaled).select("p").head()
    assert len(row.p) == 10 and abs(sum(row.p) - 1.0) < 1e-4
    with pytest.raises(BadInputError, match="no signature 'predict'.*serving_default"):
        model.copy().setSignatureDefKey("predict").transform(scaled)
    with pytest.raises(BadInputError, match="no MetaGraph with tag_set \\['gpu'\\]"):
        model.copy().setTagSet("gpu").transform(scaled)
    with pytest.raises(BadInputError, match="names tensor\\(s\\) \\['logits'\\]"):
        model.copy().setOutputMapping({"logits": "l"}).transform(scaled)


@LOCAL_SPARK
def test_bad_input_mapping_column_raises_bad_input_error_before_anything_starts(trained, spark, no_leftovers):
    estimator = TFEstimator(make_train_fn(), {"seed": 7}).setInputMapping({"imag": "image", "label": "label"})
    with pytest.raises(BadInputError, match=r"column\(s\) \['imag'\] that the DataFrame does not have"):
        estimator.setClusterSize(2).fit(trained["train"])
    with pytest.raises(BadInputError, match=r"TFEstimator has no input_mapping"):
        TFEstimator(make_train_fn(), {}).setClusterSize(2).fit(trained["train"])
    model = trained["model"].stages[-1]
    with pytest.raises(BadInputError, match=r"column\(s\) \['image'\] that the DataFrame does not have"):
        model.transform(trained["test"])          # the pixels were not scaled into 'image'
    with pytest.raises(BadInputError, match=r"leaves the signature input\(s\) \['image'\]"):
        model.copy().setInputMapping({"pixels": "pixels"}).transform(trained["test"])


@LOCAL_SPARK
def test_tf_model_alone_saves_and_loads_its_params_and_args(trained, spark, tmp_path):
    model = (TFModel(["--flag", "1"]).setExportDir(trained["export_dir"]).setInputMapping({"image": "image"})
             .setOutputMapping({"probabilities": "p"}).setBatchSize(17).setNumGPUs(1).setResources({"x": 1.0}))
    model.save(str(tmp_path / "model"))
    loaded = TFModel.load(str(tmp_path / "model"))
    assert loaded.uid == model.uid and loaded.args.argv == ["--flag", "1"]
    assert {p.name: loaded.getOrDefault(p) for p in loaded.params} == \
        {p.name: model.getOrDefault(p) for p in model.params}


def make_tensorflow_mode_fn():
    def record_args(args, ctx):
        """InputMode.TENSORFLOW: the node reads no feed; it records the args it was given."""
        import json
        import os
        with open(os.path.join(args.model_dir, "{}-{}.json".format(ctx.job_name, ctx.task_index)), "w") as f:
            json.dump({"seed": args.seed, "epochs": args.epochs, "input_mode": args.input_mode,
                       "num_workers": ctx.num_workers}, f)
    return record_args


@LOCAL_SPARK
def test_tensorflow_input_mode_runs_the_nodes_with_merged_args_and_feeds_nothing(trained, spark, tmp_path,
                                                                                   no_leftovers):
    import json

    estimator = (TFEstimator(make_tensorflow_mode_fn(), {"seed": 5}).setInputMode(0).setClusterSize(2)
                 .setEpochs(3).setModelDir(str(tmp_path)).setExportDir("/nowhere"))
    model = estimator.fit(trained["test"])
    records = {path.name: json.loads(path.read_text()) for path in tmp_path.glob("*.json")}
    assert records == {name: {"seed": 5, "epochs": 3, "input_mode": 0, "num_workers": 2}
                       for name in ("chief-0.json", "worker-0.json")}
    assert model.getExportDir() == "/nowhere"


@pytest.mark.timeout(900)
def test_example_pipeline_digits_trains_saves_loads_and_infers(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "pipeline_digits.py"), "--epochs", "6",
                           "--cluster_size", "2", "--model_dir", str(tmp_path / "model"),
                           "--export_dir", str(tmp_path / "export"), "--output", str(tmp_path / "predictions")],
                          cwd=str(tmp_path), env=subprocess_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-6000:]
    summary = summary_lines(done.stdout)
    assert summary, done.stdout[-6000:]
    fields = dict(pair.split("=", 1) for pair in summary[-1].split()[1:])
    assert float(fields["accuracy"]) >= 0.9, summary
    assert int(fields["predictions"]) == int(fields["test_rows"])
    assert (tmp_path / "export" / "saved_model.pb").exists()
    assert list((tmp_path / "predictions").glob("part-*"))
