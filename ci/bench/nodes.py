"""The map_funs the benchmark's TF nodes run: a pure reader of the feed, and a small Keras model.

They run in Ray actors, which import them from this package (the runner puts ``ci/`` on the
workers' PYTHONPATH).
"""
import time

from bench.common import MNIST_DIM
from bench.data import gen_arrays


def keras_model(keras):
    """The model every training figure uses (raytfnode and the peers): 784-128-64-10, adam."""
    model = keras.Sequential([
        keras.layers.Input((MNIST_DIM,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


MODEL_NAME = "Dense(128,relu)-Dense(64,relu)-Dense(10), adam"


def epoch_timer(keras, clock):
    """A Keras callback that keeps steps, seconds and loss of every epoch, and when the first step ended."""

    class Timer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []
            self.first_step_at = None   # wall clock (time.time()), comparable across processes of one host

        def on_epoch_begin(self, epoch, logs=None):
            self.start = clock()
            self.steps = 0

        def on_train_batch_end(self, step, logs=None):
            self.steps += 1
            if self.first_step_at is None:
                self.first_step_at = time.time()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append({"steps": self.steps, "seconds": clock() - self.start,
                                "loss": float((logs or {}).get("loss", float("nan")))})

    return Timer()


def _read_feed(feed, mode, sleep=0.0, batch=1000):
    """Reads ``feed`` until its end with one of the CONSUMERS, doing nothing with the rows (a pure read)."""
    import time as _time
    rows = 0
    if mode == "arrays":
        while not feed.should_stop():
            for arrays in feed.epoch_batches(batch):
                rows += len(arrays[0]) if isinstance(arrays, tuple) else len(arrays)
                if sleep:
                    _time.sleep(sleep)
    else:
        size = 100 if mode == "next_batch(100)" else 1000
        while not feed.should_stop():
            rows += len(feed.next_batch(size))
            if sleep:
                _time.sleep(sleep)
    return rows


def reader_fun(args, ctx):
    """Reads the feed: ``args['mode']`` on queue 'input', or with ``args['queues']`` ({queue: mode}) one
    reader thread per queue, so one cluster serves every consumer kind (the driver feeds one queue at a time)."""
    import threading as _threading
    queues = args.get("queues") or {"input": args["mode"]}
    counts = {}

    def read(qname, mode):
        counts[qname] = _read_feed(ctx.get_data_feed(qname_in=qname), mode, args.get("sleep", 0.0))

    threads = [_threading.Thread(target=read, args=item, daemon=True) for item in queues.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ctx.mgr.set("rows_read", counts)


def train_fun(args, ctx):
    """A small tf_keras model under MultiWorkerMirroredStrategy, fed or from an in-memory tf.data pipeline."""
    import time as _time

    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    batch = args["batch"]
    if args["feed"]:
        feed = ctx.get_data_feed()
        dataset = feed.as_dataset(batch)
    else:
        import numpy as np
        mine = [i for i in range(args["parts"]) if i % ctx.num_workers == ctx.task_index]
        parts = [gen_arrays("mnist", i, args["rows"], args["parts"]) for i in mine]
        images = np.concatenate([p["image"] for p in parts])
        labels = np.concatenate([p["label"] for p in parts])
        # unknown cardinality, like the feed's dataset: Keras then runs each epoch until the data ends
        # (with a known one it stops MultiWorkerMirroredStrategy epochs after cardinality steps, half the rows)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch).filter(lambda x, y: True)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options).prefetch(2)

    with strategy.scope():
        model = keras_model(keras)

    timer = epoch_timer(keras, _time.perf_counter)
    model.fit(dataset, epochs=args["epochs"], verbose=0, callbacks=[timer])
    ctx.mgr.set("train_result", {"epochs": timer.epochs, "first_step_at": timer.first_step_at})



def export_model(path):
    """Saves the benchmark's model (untrained: inference speed does not depend on the weights) as a
    SavedModel whose ``serving_default`` maps ``x`` (float32 [n, 784]) to ``logits`` [n, 10]."""
    import tensorflow as tf
    import tf_keras as keras

    model = keras_model(keras)
    serve = tf.function(lambda x: {"logits": model(x, training=False)})
    tf.saved_model.save(model, path, signatures={
        "serving_default": serve.get_concrete_function(tf.TensorSpec([None, MNIST_DIM], tf.float32, name="x"))})
    return path


def infer_fun(args, ctx):
    """Answers inference batches with the SavedModel's logits (10 float32 per row), until the feed ends."""
    import tensorflow as tf

    from raytfnode import TFNode

    predict = tf.saved_model.load(args["model_dir"]).signatures["serving_default"]
    feed = TFNode.DataFeed(ctx.mgr, train_mode=False, input_mapping={"image": "x"})
    while not feed.should_stop():
        images = feed.next_batch(args["batch"])["x"]
        if len(images):
            feed.batch_results(list(predict(x=tf.constant(images, dtype=tf.float32))["logits"].numpy()))
