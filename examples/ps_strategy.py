"""ParameterServerStrategy on Ray: ps nodes, a chief (the coordinator) and workers.

``TFCluster.run(None, main_fun, args, num_executors=num_ps + 1 + num_workers, num_ps=num_ps,
master_node='chief')`` gives the nodes ``ps:0..``, ``chief:0`` and ``worker:0..``, each with
its ``TF_CONFIG``:

* ``ps`` nodes start a ``tf.distribute.Server`` with ``ctx.start_cluster_server()`` and
  ``join()`` it: they never return; ``cluster.shutdown()`` stops them once the chief is done;
* ``worker`` nodes start their server the same way and serve the chief's steps until the
  chief writes a ``DONE`` marker next to the model (TF2 workers are passive: the coordinator
  drives them, and nothing in TensorFlow tells them that training is over);
* the ``chief`` builds a ``ParameterServerStrategy`` from ``TF_CONFIG``, schedules training
  steps on the workers with a ``ClusterCoordinator``, evaluates the model and saves it.
"""
import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def load_digits_split(test_fraction, seed):
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(images))
    split = int(round(len(order) * (1.0 - test_fraction)))
    return (images[order[:split]], labels[order[:split]]), (images[order[split:]], labels[order[split:]])


def main_fun(args, ctx):
    import tensorflow as tf

    done_marker = os.path.join(ctx.absolute_path(args.model_dir), "DONE")

    if ctx.job_name in ("ps", "worker"):
        _, server = ctx.start_cluster_server(num_gpus=0)
        print("{}:{} serving at {}".format(ctx.job_name, ctx.task_index, server.target), flush=True)
        if ctx.job_name == "ps":
            server.join()           # never returns: shutdown() stops the ps nodes
        while not tf.io.gfile.exists(done_marker):
            time.sleep(0.5)         # the server runs on TF's own threads meanwhile
        print("worker:{} done".format(ctx.task_index), flush=True)
        return

    # ---- the chief: coordinator of the training
    import tf_keras as keras

    tf.keras.utils.set_random_seed(args.seed)
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    strategy = tf.distribute.ParameterServerStrategy(resolver)
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    (x_train, y_train), (x_test, y_test) = load_digits_split(args.test_fraction, args.seed)

    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(64,), name="image"),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, name="logits"),
        ])
        optimizer = keras.optimizers.Adam(args.learning_rate)
        train_accuracy = keras.metrics.SparseCategoricalAccuracy()
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="none")

    def dataset_fn(input_context):
        # runs on every worker; each shuffles differently and repeats forever
        batch = input_context.get_per_replica_batch_size(args.batch_size)
        dataset = tf.data.Dataset.from_tensor_slices((x_train, y_train))
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        return dataset.shuffle(len(x_train)).repeat().batch(batch).prefetch(2)

    @tf.function
    def per_worker_dataset_fn():
        return strategy.distribute_datasets_from_function(dataset_fn)

    per_worker_iterator = iter(coordinator.create_per_worker_dataset(per_worker_dataset_fn))

    @tf.function
    def train_step(iterator):
        def replica_fn(images, labels):
            with tf.GradientTape() as tape:
                logits = model(images, training=True)
                loss = tf.nn.compute_average_loss(loss_fn(labels, logits), global_batch_size=args.batch_size)
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            train_accuracy.update_state(labels, logits)
            return loss

        images, labels = next(iterator)
        losses = strategy.run(replica_fn, args=(images, labels))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    started = time.monotonic()
    for epoch in range(args.epochs):
        train_accuracy.reset_states()
        losses = [coordinator.schedule(train_step, args=(per_worker_iterator,))
                  for _ in range(args.steps_per_epoch)]
        coordinator.join()      # every scheduled step has run on some worker
        print("chief: epoch {} loss {:.4f} accuracy {:.4f}".format(
            epoch + 1, float(losses[-1].fetch()), float(train_accuracy.result())), flush=True)
    seconds = time.monotonic() - started

    # evaluation on the coordinator: the variables are read from the ps nodes
    logits = model(x_test, training=False)
    test_accuracy = float(tf.reduce_mean(tf.cast(tf.equal(tf.argmax(logits, axis=1), y_test), tf.float32)))
    model_dir = ctx.absolute_path(args.model_dir)
    model.save(os.path.join(model_dir, "saved_model"))
    with tf.io.gfile.GFile(os.path.join(model_dir, "RESULT"), "w") as result:
        result.write("{:.4f} {:.2f}".format(test_accuracy, seconds))
    with tf.io.gfile.GFile(done_marker, "w") as done:
        done.write("done")
    print("chief: {} steps in {:.1f} s, test accuracy {:.4f}".format(
        args.epochs * args.steps_per_epoch, seconds, test_accuracy), flush=True)


def alive_actors(namespace, timeout=15.0):
    """Names of the cluster's actors still alive (killed actors take a moment to be reported dead)."""
    import ray

    deadline = time.monotonic() + timeout
    while True:
        alive = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a.get("namespace") == namespace]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.5)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num_ps", type=int, default=1)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps_per_epoch", type=int, default=40)
    parser.add_argument("--batch_size", type=int, default=64, help="global batch size")
    parser.add_argument("--learning_rate", type=float, default=0.005)
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--model_dir", default="ps_digits_model", help="where the chief saves the model")
    parser.add_argument("--num_cpus", type=int, default=None, help="logical CPUs of the local Ray "
                        "(default: one per TF node)")
    parser.add_argument("--address", default=None,
                        help="join this Ray cluster (host:port or auto) instead of starting one; "
                             "default: $RAY_ADDRESS when set")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.monotonic()
    import ray

    from raytfnode import TFCluster

    num_executors = args.num_ps + 1 + args.num_workers
    model_dir = os.path.abspath(args.model_dir)
    os.makedirs(model_dir, exist_ok=True)
    for stale in ("DONE", "RESULT"):
        if os.path.exists(os.path.join(model_dir, stale)):
            os.remove(os.path.join(model_dir, stale))
    address = args.address or os.environ.get("RAY_ADDRESS")   # ray job submit sets RAY_ADDRESS
    if address and address != "local":
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    else:
        ray.init(address="local", num_cpus=args.num_cpus or num_executors, include_dashboard=False, log_to_driver=True,
                 logging_level="WARNING")
    try:
        cluster = TFCluster.run(None, main_fun, args, num_executors, num_ps=args.num_ps, master_node="chief",
                                input_mode=TFCluster.InputMode.TENSORFLOW)
        print("cluster: {}".format(cluster.cluster_spec), flush=True)
        cluster.shutdown(grace_secs=0)   # waits for chief and workers, then stops the ps nodes
        leftovers = alive_actors(cluster.namespace)
        print("after shutdown: {} actors of the cluster alive {}".format(len(leftovers), leftovers), flush=True)
    finally:
        ray.shutdown()
    with open(os.path.join(model_dir, "RESULT")) as result:
        accuracy, train_seconds = (float(v) for v in result.read().split())
    print("SUMMARY ps={} workers={} steps={} accuracy={:.4f} train_seconds={:.1f} leftover_actors={} "
          "wall_seconds={:.1f}".format(args.num_ps, args.num_workers, args.epochs * args.steps_per_epoch, accuracy,
                                       train_seconds, len(leftovers), time.monotonic() - started), flush=True)
    return accuracy


if __name__ == "__main__":
    main()
