"""A Ray Dataset feeds TF nodes that get one GPU each when the Ray cluster has GPUs (no Spark).

1. connect to a Ray cluster (``--address``, e.g. ``auto`` or ``ray://...``/``host:port``) or
   start a local one;
2. look at ``ray.cluster_resources()``: with GPUs, every TF node asks Ray for
   ``num_gpus=1`` (Ray sets ``CUDA_VISIBLE_DEVICES``; TensorFlow then uses that GPU); without,
   the nodes run on CPUs;
3. build a Ray Dataset of scikit-learn's digits (``image``: 64 floats, ``label``: int) and
   split it;
4. ``cluster.train(train_ds, num_epochs=N)`` feeds the training rows; the nodes train a
   ``tf_keras`` model under ``MultiWorkerMirroredStrategy`` with ``model.fit(feed.as_dataset(...))``;
5. the same nodes then answer ``cluster.inference(test_ds, qname='infer')`` (a second queue)
   with predicted labels; the result is a Ray Dataset with a ``result`` column.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def main_fun(args, ctx):
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    from raytfnode import TFNode

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(args.seed)
    print("{}:{} Ray GPUs {} -> TensorFlow sees {}".format(
        ctx.job_name, ctx.task_index, ctx.gpu_ids or "none",
        [d.name for d in tf.config.list_physical_devices("GPU")] or "no GPU (runs on CPU)"), flush=True)

    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Reshape((8, 8, 1)),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(args.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    # training: the 'input' queue, one pass per epoch
    train_feed = ctx.get_data_feed(input_mapping={"image": "x", "label": "y"})
    dataset = train_feed.as_dataset(args.batch_size).map(lambda batch: (batch["x"], batch["y"]))
    history = model.fit(dataset, epochs=args.epochs, verbose=0)
    print("{}:{} trained: {}".format(ctx.job_name, ctx.task_index,
                                     {k: round(v[-1], 4) for k, v in history.history.items()}), flush=True)

    # inference: the 'infer' queue, until shutdown() ends the feed
    infer_feed = TFNode.DataFeed(ctx.mgr, train_mode=False, qname_in="infer", input_mapping={"image": "x"})
    answered = 0
    while not infer_feed.should_stop():
        batch = infer_feed.next_batch(256)
        if len(batch["x"]):
            probabilities = model(batch["x"], training=False).numpy()
            infer_feed.batch_results(np.argmax(probabilities, axis=1).astype(int).tolist())
            answered += len(batch["x"])
    print("{}:{} answered {} rows".format(ctx.job_name, ctx.task_index, answered), flush=True)


def digits_dataset(blocks):
    import numpy as np
    import pandas as pd
    import ray
    from sklearn.datasets import load_digits

    digits = load_digits()
    frame = pd.DataFrame({"image": list((digits.data / 16.0).astype(np.float32)),
                          "label": digits.target.astype(np.int32)})
    return ray.data.from_pandas(frame).repartition(blocks)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None,
                        help="address of an existing Ray cluster ('auto' or host:port); default: start a local "
                             "Ray. A cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token "
                             "in the environment when the address is given explicitly")
    parser.add_argument("--num_cpus", type=int, default=4, help="logical CPUs of a local Ray")
    parser.add_argument("--declare_gpus", type=int, default=None,
                        help="GPUs a local Ray declares (default: what Ray detects); lets you try the GPU "
                             "scheduling path on a machine without GPUs")
    parser.add_argument("--cpu", action="store_true", help="never ask Ray for GPUs")
    parser.add_argument("--cluster_size", type=int, default=2, help="TF nodes (all workers)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch size")
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--blocks", type=int, default=4, help="blocks of the Ray Dataset")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args(argv)

    started = time.monotonic()
    import ray

    from raytfnode import TFCluster

    address = args.address or os.environ.get("RAY_ADDRESS")   # ray job submit sets RAY_ADDRESS
    if address and address != "local":
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=args.num_cpus, num_gpus=args.declare_gpus, include_dashboard=False,
                 log_to_driver=True, logging_level="WARNING")
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus and not args.cpu:
            num_gpus = 1
            if gpus < args.cluster_size:
                print("the cluster has {} GPUs: using {} TF nodes instead of {}".format(
                    gpus, gpus, args.cluster_size), flush=True)
                args.cluster_size = gpus
            print("DEVICE gpu: {} GPUs in the Ray cluster, {} TF nodes with num_gpus=1 each".format(
                gpus, args.cluster_size), flush=True)
        else:
            num_gpus = 0
            print("DEVICE cpu: {} TF nodes on CPUs ({})".format(
                args.cluster_size, "--cpu" if gpus else "no GPUs in the Ray cluster"), flush=True)

        data = digits_dataset(args.blocks)
        train_ds, test_ds = data.train_test_split(test_size=0.2, shuffle=True, seed=args.seed)
        train_ds, test_ds = train_ds.materialize(), test_ds.materialize()   # fixed blocks: stable order

        cluster = TFCluster.run(None, main_fun, args, args.cluster_size, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK, num_gpus=num_gpus,
                                queues=("input", "infer", "output", "error"))
        try:
            report = cluster.train(train_ds, num_epochs=args.epochs)
            results = cluster.inference(test_ds, qname="infer")      # a Ray Dataset, column 'result'
            predictions = results.to_pandas()["result"].to_numpy()
        finally:
            cluster.shutdown()
        labels = test_ds.to_pandas()["label"].to_numpy()
        accuracy = float((predictions == labels).mean())
        print("SUMMARY device={} nodes={} epochs={} rows_per_epoch={} test_rows={} accuracy={:.4f} "
              "train_seconds={:.1f} wall_seconds={:.1f}".format(
                  "gpu" if num_gpus else "cpu", args.cluster_size, report["epochs"],
                  report["rows"] // max(report["epochs"], 1), len(labels), accuracy, report["seconds"],
                  time.monotonic() - started), flush=True)
        return accuracy
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
