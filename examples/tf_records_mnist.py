"""InputMode.TENSORFLOW: the TF nodes read their own TFRecord shards; no data goes through the feed.

1. the driver writes scikit-learn's 8x8 digits as TFRecord shards (``train-*`` and ``test-*``)
   with ``tf.io.TFRecordWriter``;
2. ``TFCluster.run(None, main_fun, args, num_executors=N, num_ps=0, master_node='chief',
   input_mode=InputMode.TENSORFLOW)`` starts a chief and N-1 workers on Ray;
3. each node resolves the data directory with ``ctx.absolute_path``, reads its own share of
   the training shards with ``tf.data`` and trains a small ``tf_keras`` model under
   ``MultiWorkerMirroredStrategy``; the chief saves the model (the others save to scratch,
   as saving is collective);
4. the driver loads the saved model and reports its accuracy on the test shards.

Relative paths (``--data_dir``, ``--model_dir``) are resolved by ``ctx.absolute_path``
against the driver's working directory (``file://``) or the cluster's ``fs.defaultFS``.
"""
import argparse
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _example(image, label):
    import tensorflow as tf

    return tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(float_list=tf.train.FloatList(value=image)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
    })).SerializeToString()


def write_tfrecords(data_dir, num_shards, test_fraction, seed):
    """Writes the digits as ``train-0000i-of-n.tfrecord`` shards and one test shard; returns row counts."""
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(images))
    split = int(round(len(order) * (1.0 - test_fraction)))
    train, test = order[:split], order[split:]
    tf.io.gfile.makedirs(data_dir)
    for shard in range(num_shards):
        path = os.path.join(data_dir, "train-{:05d}-of-{:05d}.tfrecord".format(shard, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for i in train[shard::num_shards]:
                writer.write(_example(images[i], int(labels[i])))
    with tf.io.TFRecordWriter(os.path.join(data_dir, "test-00000-of-00001.tfrecord")) as writer:
        for i in test:
            writer.write(_example(images[i], int(labels[i])))
    return len(train), len(test)


def parse_batch(records):
    import tensorflow as tf

    features = tf.io.parse_example(records, {
        "image": tf.io.FixedLenFeature([64], tf.float32),
        "label": tf.io.FixedLenFeature([], tf.int64),
    })
    return features["image"], features["label"]


def main_fun(args, ctx):
    """Runs on every TF node: reads this node's shards, trains in lockstep; the chief saves."""
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(args.seed)

    # chief:0 is worker 0 of the training cluster, worker:i is worker i + 1
    node = 0 if ctx.job_name == "chief" else ctx.task_index + 1
    data_dir = ctx.absolute_path(args.data_dir)
    files = sorted(tf.io.gfile.glob(os.path.join(data_dir, "train-*.tfrecord")))
    mine = files[node::ctx.num_workers]
    if not mine:
        raise ValueError("{} has no training shard: {} shards in {} for {} nodes; write more shards".format(
            ctx, len(files), data_dir, ctx.num_workers))
    print("{}:{} reads {}".format(ctx.job_name, ctx.task_index, [os.path.basename(f) for f in mine]), flush=True)

    # each node reads only its own files, so tf.data must not shard again
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    dataset = (tf.data.TFRecordDataset(mine)
               .shuffle(2048, seed=args.seed + node)
               .batch(args.batch_size)      # the global batch: Keras splits it across the replicas
               .map(parse_batch)
               .with_options(options)
               .prefetch(2))

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
    history = model.fit(dataset, epochs=args.epochs, verbose=0)
    print("{}:{} trained: {}".format(ctx.job_name, ctx.task_index,
                                     {k: round(v[-1], 4) for k, v in history.history.items()}), flush=True)

    # saving is collective under MultiWorkerMirroredStrategy: everyone saves, the chief's copy is kept
    model_dir = ctx.absolute_path(args.model_dir)
    if ctx.job_name == "chief":
        model.save(model_dir)
    else:
        scratch = tempfile.mkdtemp(prefix="tfrecords-worker-")
        model.save(scratch)
        shutil.rmtree(scratch, ignore_errors=True)


def evaluate(args):
    import tensorflow as tf
    import tf_keras as keras

    model = keras.models.load_model(args.model_dir)
    test = tf.data.TFRecordDataset(tf.io.gfile.glob(os.path.join(args.data_dir, "test-*.tfrecord")))
    _, accuracy = model.evaluate(test.batch(256).map(parse_batch), verbose=0)
    return accuracy


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cluster_size", type=int, default=2, help="TF nodes: one chief, the rest workers")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=32, help="global batch size (all replicas)")
    parser.add_argument("--learning_rate", type=float, default=0.003)
    parser.add_argument("--num_shards", type=int, default=4, help="training TFRecord shards")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--data_dir", default="digits_tfrecords", help="where the TFRecords are written")
    parser.add_argument("--model_dir", default="digits_tfrecords_model", help="where the chief saves the model")
    parser.add_argument("--num_cpus", type=int, default=4, help="logical CPUs of the local Ray")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (host:port or auto) instead of starting one; "
                             "default: $RAY_ADDRESS when set")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.monotonic()
    import ray

    from raytfnode import TFCluster

    train_rows, test_rows = write_tfrecords(args.data_dir, args.num_shards, args.test_fraction, args.seed)
    print("wrote {} training rows in {} shards and {} test rows to {}".format(
        train_rows, args.num_shards, test_rows, os.path.abspath(args.data_dir)), flush=True)

    address = args.address or os.environ.get("RAY_ADDRESS")   # ray job submit sets RAY_ADDRESS
    if address and address != "local":
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=True, logging_level="WARNING")
    try:
        cluster = TFCluster.run(None, main_fun, args, args.cluster_size, num_ps=0, master_node="chief",
                                input_mode=TFCluster.InputMode.TENSORFLOW)
        cluster.shutdown()      # waits for every node's main_fun
    finally:
        ray.shutdown()
    accuracy = evaluate(args)
    print("SUMMARY nodes={} epochs={} train_rows={} test_rows={} accuracy={:.4f} wall_seconds={:.1f}".format(
        args.cluster_size, args.epochs, train_rows, test_rows, accuracy, time.monotonic() - started), flush=True)
    return accuracy


if __name__ == "__main__":
    main()
