"""A restartable training job: a TF node dies mid-training and the job finishes on its own.

What it shows (``TFCluster.run(..., max_failures=N)``):

1. ``train_fun`` is an ordinary Keras program under ``MultiWorkerMirroredStrategy``
   with one addition, ``tf_keras.callbacks.BackupAndRestore(ctx.checkpoint_dir)``:
   the model is backed up at the end of every epoch into a directory that stays
   the same across restarts;
2. with ``--crash_in_epoch E`` the process of ``worker:1`` exits abruptly in epoch
   ``E`` of the first attempt (as a preempted machine or an out-of-memory kill would);
3. the driver sees the dead node within seconds, stops every node, starts a new set
   (new ports, new ``TF_CONFIG``) and runs ``train_fun`` again with ``ctx.attempt = 1``;
   ``fit`` resumes from the backup, and the feed starts at the epoch the backup has
   not completed (no code needed for that with ``BackupAndRestore``);
4. ``train()`` returns a report that lists the restart; the script prints it and the
   held-out accuracy.

Run it with ``python examples/restartable_digits.py`` (Spark local mode on an
embedded Ray; ``--address`` joins a running Ray cluster instead).
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
    """Runs on worker:0 and worker:1; resumes from ``ctx.checkpoint_dir`` after a restart."""
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    tf.keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])

    class CrashOnce(keras.callbacks.Callback):
        """Kills this process in epoch ``crash_in_epoch`` of the first attempt (the demonstration's failure)."""

        def on_train_batch_end(self, batch, logs=None):
            if ctx.attempt == 0 and ctx.task_index == 1 and self.epoch == args.crash_in_epoch and batch == 3:
                print("worker:1 crashes in epoch {} (attempt 0)".format(self.epoch), flush=True)
                os._exit(1)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    feed = ctx.get_data_feed(input_mapping={"image": "x", "label": "y"})
    dataset = feed.as_dataset(args.batch_size).map(lambda d: (d["x"], d["y"]))
    history = model.fit(dataset, epochs=args.epochs, verbose=0, callbacks=[
        keras.callbacks.BackupAndRestore(ctx.checkpoint_dir),   # the one line that makes it restartable
        CrashOnce(),
    ])
    if ctx.task_index == 0:
        test = np.load(args.test_file)
        local = keras.models.clone_model(model)   # a copy outside the strategy: predict on one node only
        local.set_weights(model.get_weights())
        accuracy = float(np.mean(np.argmax(local.predict(test["x"], verbose=0), axis=1) == test["y"]))
        with open(os.path.join(args.out_dir, "result.txt"), "w") as f:
            f.write("{} {} {}\n".format(accuracy, ctx.attempt, ",".join(str(e) for e in history.epoch)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch_size", type=int, default=64, help="global batch size")
    parser.add_argument("--crash_in_epoch", type=int, default=2, help="-1: no crash")
    parser.add_argument("--max_failures", type=int, default=2)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--address", default=None, help="a running Ray cluster to join (default: start one)")
    args = parser.parse_args(argv)

    import numpy as np
    import ray
    from pyspark.sql import SparkSession
    from sklearn.datasets import load_digits

    from raytfnode import TFCluster

    started = time.monotonic()
    if args.address:
        ray.init(address=args.address, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=4, include_dashboard=False, logging_level="WARNING")
    spark = (SparkSession.builder.master("local[2]").appName("restartable_digits")
             .config("spark.ui.enabled", "false").getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    args.out_dir = tempfile.mkdtemp(prefix="restartable-digits-")
    try:
        digits = load_digits()
        x, y = (digits.data / 16.0).astype(np.float32), digits.target.astype(np.int64)
        order = np.random.default_rng(args.seed).permutation(len(y))
        train, test = order[:1440], order[1440:]
        args.test_file = os.path.join(args.out_dir, "test.npz")
        np.savez(args.test_file, x=x[test], y=y[test])
        train_df = spark.createDataFrame([(x[i].tolist(), int(y[i])) for i in train], "image array<float>, label long")

        cluster = TFCluster.run(spark, train_fun, args, num_executors=2, num_ps=0,
                                input_mode=TFCluster.InputMode.SPARK, max_failures=args.max_failures,
                                checkpoint_dir=os.path.join(args.out_dir, "checkpoints"))
        try:
            report = cluster.train(train_df, num_epochs=args.epochs)
        finally:
            cluster.shutdown()
        for restart in report["restarts"]:
            print("restart {attempt}: {node} failed ({why}); resumed at epoch {resume_epoch}, consuming again after "
                  "{recovery:.1f} s, {rows_refed} rows fed again".format(
                      why=restart["error"].splitlines()[0][:90], recovery=restart["recovery_seconds"] or float("nan"),
                      **restart), flush=True)
        with open(os.path.join(args.out_dir, "result.txt")) as f:
            accuracy, attempt, epochs_ran = f.read().split()
        print("SUMMARY restarts={} final_attempt={} epochs_fed={} epochs_of_last_attempt={} accuracy={:.4f} "
              "wall_seconds={:.1f}".format(len(report["restarts"]), attempt, report["epochs"], epochs_ran,
                                           float(accuracy), time.monotonic() - started), flush=True)
    finally:
        spark.stop()
        ray.shutdown()
        shutil.rmtree(args.out_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
