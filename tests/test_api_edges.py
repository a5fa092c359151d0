"""TensorFlowOnSpark API details that ported programs lean on: keyword names, shutdown(-1), ctx fields,
TFManager.connect, export_saved_model with tensor objects."""
import json
import sys

import numpy as np
import pytest
import ray

from raytfnode import TFCluster, TFManager, TFNode
from raytfnode.errors import BadInputError, ClusterStoppedError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _echo_then_wait_for_control(args, ctx):
    """Answers inference (x * 10), then takes one item from the 'control' queue and reports it."""
    import json
    import os

    from raytfnode import TFNode

    feed = TFNode.DataFeed(ctx.mgr, train_mode=False)
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if batch:
            feed.batch_results([row * 10 for row in batch])
    control = ctx.mgr.get_queue("control").get(timeout=300)
    report = {"control": control, "address": ctx.mgr.address, "defaultFS": ctx.defaultFS,
              "num_workers": ctx.num_workers, "abs": TFNode.hdfs_path(ctx, "/data/x")}
    with open(os.path.join(args["out"], "{}-{}.json".format(ctx.job_name, ctx.task_index)), "w") as handle:
        json.dump(report, handle)


@pytest.mark.parametrize("spark", ["local"], indirect=True)
def test_original_keywords_connect_and_shutdown_without_timeout(spark, no_leftovers, tmp_path):
    cluster = TFCluster.run(spark.sparkContext, _echo_then_wait_for_control, {"out": str(tmp_path)}, 2, 0,
                            input_mode=TFCluster.InputMode.SPARK, queues=("input", "output", "error", "control"))
    try:
        assert cluster.inference(dataRDD=[[1, 2], [3]]) == [[10, 20], [30]]
        assert cluster.inference(data=[[4]]) == [[40]]
        with pytest.raises(BadInputError, match="once"):
            cluster.train(dataRDD=[[1]], data=[[1]])
        addresses = [info["addr"] for info in cluster.cluster_info]
        for index, address in enumerate(addresses):
            TFManager.connect(address, cluster.cluster_info[index]["authkey"]).get_queue("control").put(
                "hello {}".format(index))
    except BaseException:
        cluster.shutdown(timeout=60)
        raise
    cluster.shutdown(timeout=-1)        # TensorFlowOnSpark's "no timeout": waits for both map_funs

    reports = [json.load(open(str(tmp_path / "worker-{}.json".format(i)))) for i in range(2)]
    assert [r["control"] for r in reports] == ["hello 0", "hello 1"]
    assert [r["address"] for r in reports] == addresses
    assert {(r["defaultFS"], r["num_workers"], r["abs"]) for r in reports} == {("file://", 2, "file:///data/x")}
    with pytest.raises(ClusterStoppedError, match=addresses[0]):
        TFManager.connect(addresses[0], b"any key")


def test_connect_refuses_a_malformed_address(ray_cluster):
    with pytest.raises(BadInputError, match="namespace"):
        TFManager.connect(("localhost", 8888), b"key")


def test_num_workers_counts_chief_master_and_workers_of_the_spec():
    from raytfnode.context import TFNodeContext

    spec = {"ps": ["h:1"], "chief": ["h:2"], "worker": ["h:3", "h:4"], "evaluator": ["h:5"]}
    assert TFNodeContext(cluster_spec=spec).num_workers == 3
    assert TFNodeContext(cluster_spec=spec, num_workers=7).num_workers == 7


# -------------------------------------------------------- export_saved_model as the original's examples call it


def test_session_export_takes_tensor_objects_and_uses_the_key_as_method_name(tmp_path):
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = str(tmp_path / "tf1")
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, shape=[None, 2], name="x")
        w = v1.Variable([[2.0], [3.0]], name="w")
        y = tf.identity(tf.matmul(x, w) + 1.0, name="y")
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            graph.finalize()                  # as under a MonitoredTrainingSession
            TFNode.export_saved_model(sess, export_dir, "serve", {
                "predict_xy": {"inputs": {"features": x}, "outputs": {"prediction": y}}})

    with tf.Graph().as_default(), v1.Session() as sess:
        meta = v1.saved_model.loader.load(sess, ["serve"], export_dir)
        signature = meta.signature_def["predict_xy"]
        assert signature.method_name == "predict_xy"
        out = sess.run(signature.outputs["prediction"].name,
                       {signature.inputs["features"].name: [[1.0, 1.0], [0.0, 2.0]]})
    np.testing.assert_allclose(out, [[6.0], [7.0]])


def test_keras_export_takes_the_models_tensors(tmp_path):
    import tensorflow as tf
    import tf_keras as keras

    export_dir = str(tmp_path / "keras")
    model = keras.Sequential([keras.Input(shape=(2,), name="feats"),
                              keras.layers.Dense(1, name="out", kernel_initializer="ones")])
    TFNode.export_saved_model(model, export_dir, "serve", {
        "serving_default": {"inputs": {"x": model.inputs[0]}, "outputs": {"y": model.outputs[0]}}})
    out = tf.saved_model.load(export_dir).signatures["serving_default"](x=tf.constant([[1.0, 2.0]]))
    np.testing.assert_allclose(out["y"].numpy(), [[3.0]])


def test_tf_module_is_refused_with_what_to_use(tmp_path):
    import tensorflow as tf

    with pytest.raises(BadInputError, match="tf.saved_model.save"):
        TFNode.export_saved_model(tf.Module(), str(tmp_path / "m"), "serve",
                                  {"s": {"inputs": {"x": "x"}, "outputs": {"y": "y"}}})
