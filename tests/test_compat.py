"""compat: the helpers TensorFlowOnSpark's examples import."""
import sys

import numpy as np
import ray

from raytfnode import TFParallel, compat

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _model():
    import tf_keras as keras

    model = keras.Sequential([keras.Input(shape=(2,), name="x"), keras.layers.Dense(1, kernel_initializer="ones")])
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_chief_exports_to_export_dir_and_others_to_worker_model(tmp_path, monkeypatch):
    import tensorflow as tf

    monkeypatch.chdir(tmp_path)
    model = _model()
    assert compat.export_saved_model(model, str(tmp_path / "export"), is_chief=True) == str(tmp_path / "export")
    assert compat.export_saved_model(model, str(tmp_path / "not_here"), is_chief=False) == "worker_model"
    assert (tmp_path / "worker_model" / "saved_model.pb").exists() and not (tmp_path / "not_here").exists()
    served = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    np.testing.assert_allclose(list(served(x=tf.constant([[1.0, 2.0]])).values())[0].numpy(), [[3.0]])


def test_disable_auto_shard_turns_sharding_off():
    import tensorflow as tf

    options = tf.data.Options()
    compat.disable_auto_shard(options)
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


def _gpu_report(args, ctx):
    import json
    import os

    from raytfnode import compat

    with open(os.path.join(args, "gpu.json"), "w") as handle:
        json.dump({"available": compat.is_gpu_available(), "visible": os.environ["CUDA_VISIBLE_DEVICES"]}, handle)


def test_a_run_that_asked_for_no_gpu_sees_none(ray_cluster, no_leftovers, tmp_path):
    import json

    TFParallel.run(None, _gpu_report, str(tmp_path), 1, num_gpus=0)
    assert json.load(open(str(tmp_path / "gpu.json"))) == {"available": False, "visible": ""}
