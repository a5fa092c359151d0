"""Restarting a failed TF cluster (``TFCluster.run(max_failures=...)``) on a real local Ray, with real TensorFlow.

Nodes write what they read into ``tmp_path`` (one file per attempt, node and epoch), so the tests check
exactly which rows each attempt consumed. A planned node of the first attempt stops at a chosen point of
its feed, writes a file there and waits; a driver thread then kills the victim (a node or a queue actor)
with ``ray.kill``, so the failure lands mid-feed however slow the machine is.
"""
import glob
import json
import os
import sys
import threading
import time

import numpy as np
import pytest
import ray
import ray.cloudpickle

from raytfnode import TFCluster
from raytfnode.errors import BadInputError, NodeError
from raytfnode.guard import plain
from raytfnode.restart import Failure, RestartPolicy, failure_place, keras_backup_resume_epoch

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(300)

ROWS = 96


def _partitions(rows=ROWS, parts=4):
    ids = list(range(rows))
    return [ids[p::parts] for p in range(parts)]


def _write_json(path, value):
    tmp = "{}.tmp".format(path)
    with open(tmp, "w") as f:
        json.dump(value, f)
    os.replace(tmp, path)


def _epochs_read(directory, attempt):
    """``{epoch: sorted ids}`` that the nodes of ``attempt`` read in every epoch they completed."""
    read = {}
    for path in glob.glob(os.path.join(directory, "a{}-*-e*.json".format(attempt))):
        epoch = int(path.rsplit("-e", 1)[1].split(".")[0])
        with open(path) as f:
            read.setdefault(epoch, []).extend(json.load(f))
    return {epoch: sorted(ids) for epoch, ids in read.items()}


def _reader(args, ctx):
    """Reads the feed epoch by epoch, writing each completed epoch's ids; fails as ``args`` say."""
    if ctx.attempt in args.get("raise_before_reading", ()):
        raise RuntimeError("planned failure before reading, attempt {}".format(ctx.attempt))
    resume = args.get("resume", {}).get(str(ctx.attempt))
    if resume is not None and ctx.executor_id == 0:
        ctx.resume_feed(resume)
    feed = ctx.get_data_feed()
    epoch = resume or 0
    while not feed.should_stop():
        ids = []
        for batch in feed.epoch_batches(8):
            ids.extend(int(v) for v in batch)
            if ctx.attempt in args.get("raise_mid_epoch", ()) and ctx.executor_id == args.get("failing", 0) \
                    and epoch == args.get("fail_epoch", 0):
                raise ValueError("planned failure in epoch {} on attempt {}".format(epoch, ctx.attempt))
        if feed.should_stop() and not ids:
            break
        _write_json(os.path.join(args["dir"], "a{}-{}-e{}.json".format(ctx.attempt, ctx.executor_id, epoch)), ids)
        epoch += 1


# ------------------------------------------------------------ pure policy


def _failure(attempt, place_line, read_data):
    tb = 'Traceback (most recent call last):\n  File "/x/user.py", line {}, in main_fun\nValueError: boom\n'.format(
        place_line)
    return Failure(attempt, NodeError("worker", 0, "ValueError: boom", tb), read_data, 0.0)


def test_policy_counts_restarts_and_treats_minus_one_as_unlimited():
    assert RestartPolicy(2).why_not([_failure(0, 1, True), _failure(1, 2, True)]) is None
    assert "max_failures=2" in RestartPolicy(2).why_not([_failure(i, i, True) for i in range(3)])
    assert RestartPolicy(-1).why_not([_failure(i, i, True) for i in range(50)]) is None
    assert "max_failures=0" in RestartPolicy(0).why_not([_failure(0, 1, True)])


def test_policy_gives_up_on_the_same_failure_before_any_data_twice_in_a_row():
    same = [_failure(0, 7, False), _failure(1, 7, False)]
    assert "before reading any data" in RestartPolicy(5).why_not(same)
    assert "user.py:7 in main_fun: ValueError" in RestartPolicy(5).why_not(same)
    assert RestartPolicy(5).why_not([_failure(0, 7, False), _failure(1, 8, False)]) is None
    assert RestartPolicy(5).why_not([_failure(0, 7, True), _failure(1, 7, False)]) is None


def test_policy_never_restarts_bad_input():
    failure = Failure(0, BadInputError("row 3 has no label"), True, 0.0)
    assert "BadInputError" in RestartPolicy(-1).why_not([failure])
    in_node = Failure(0, NodeError("worker", 1, "BadInputError: input_mapping names 2 columns"), True, 0.0)
    assert "bad input cannot be fixed" in RestartPolicy(-1).why_not([in_node])


@pytest.mark.parametrize("value", [-2, 1.5, True, "3"])
def test_max_failures_must_be_an_integer_from_minus_one(value):
    with pytest.raises(BadInputError, match="max_failures"):
        RestartPolicy(value)


def test_failure_place_names_the_innermost_frame_and_the_exception_type():
    tb = ('Traceback (most recent call last):\n  File "/a/node.py", line 10, in _run\n    map_fun(args, ctx)\n'
          '  File "/b/train.py", line 42, in main_fun\n    raise KeyError("x")\nKeyError: \'x\'\n')
    assert failure_place(tb) == "train.py:42 in main_fun: KeyError"
    assert failure_place(None) is None


def test_keras_backup_resume_epoch_reads_the_epoch_after_the_last_backed_up_one(tmp_path):
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tf_keras as keras

    assert keras_backup_resume_epoch(str(tmp_path)) is None
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 2), np.float32), np.ones((8, 1), np.float32)

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("stop after epoch 1 (0-based), as a crash would")

    with pytest.raises(RuntimeError, match="stop after epoch 1"):
        model.fit(x, y, epochs=5, verbose=0,
                  callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path)), StopAfterTwo()])
    # the crash came after BackupAndRestore backed epoch 1 up: fit resumes at epoch 2
    assert keras_backup_resume_epoch(str(tmp_path)) == 2


# ------------------------------------------------------------ restarts on a real cluster


def test_map_fun_failing_on_its_first_attempt_only_is_restarted_and_the_job_finishes(ray_cluster, no_leftovers,
                                                                                      tmp_path):
    args = {"dir": str(tmp_path), "raise_mid_epoch": [0], "failing": 1, "fail_epoch": 1}
    cluster = TFCluster.run(None, _reader, args, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, max_failures=1)
    try:
        report = cluster.train(_partitions(), num_epochs=3, feed_timeout=120)
    finally:
        cluster.shutdown()
    assert [r["attempt"] for r in report["restarts"]] == [1]
    assert report["restarts"][0]["node"] == "worker:1"
    assert "planned failure in epoch 1 on attempt 0" in report["restarts"][0]["error"]
    # no checkpoint and no resume_feed: the second attempt starts over and reads every epoch once
    assert report["restarts"][0]["resume_epoch"] == 0
    second = _epochs_read(tmp_path, 1)
    assert sorted(second) == [0, 1, 2]
    for epoch, ids in second.items():
        assert ids == list(range(ROWS)), epoch
    first = _epochs_read(tmp_path, 0)
    assert first[0] == list(range(ROWS))
    assert report["restarts"][0]["rows_refed"] >= ROWS   # epoch 0 again, plus what epoch 1 had been fed


def test_resume_feed_starts_the_restarted_feed_at_the_reported_epoch(ray_cluster, no_leftovers, tmp_path):
    args = {"dir": str(tmp_path), "raise_mid_epoch": [0], "failing": 0, "fail_epoch": 2, "resume": {"1": 2}}
    cluster = TFCluster.run(None, _reader, args, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, max_failures=1)
    try:
        report = cluster.train(_partitions(), num_epochs=4, feed_timeout=120)
    finally:
        cluster.shutdown()
    restart, = report["restarts"]
    assert restart["resume_epoch"] == 2
    assert restart["recovery_seconds"] is not None and restart["recovery_seconds"] > 0
    first, second = _epochs_read(tmp_path, 0), _epochs_read(tmp_path, 1)
    assert sorted(first) == [0, 1] and sorted(second) == [2, 3]   # epoch 2 was half read: fed again whole
    for ids in list(first.values()) + list(second.values()):
        assert ids == list(range(ROWS))
    assert report["epochs"] == 4


def test_map_fun_failing_on_every_attempt_raises_after_max_failures_plus_one_attempts(ray_cluster, no_leftovers,
                                                                                      tmp_path):
    args = {"dir": str(tmp_path), "raise_mid_epoch": [0, 1, 2, 3], "failing": 0, "fail_epoch": 0}
    cluster = TFCluster.run(None, _reader, args, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, max_failures=2)
    try:
        with pytest.raises(NodeError) as caught:
            cluster.train(_partitions(), num_epochs=2, feed_timeout=120)
    finally:
        with pytest.raises(NodeError):
            cluster.shutdown()
    error = caught.value
    assert error.node == "worker:0" and "not restarted: max_failures=2 restarts are spent" in str(error)
    assert "planned failure in epoch 0 on attempt 2" in error.message
    assert [a.node for a in error.attempts] == ["worker:0", "worker:0"]
    for attempt, earlier in enumerate(error.attempts):
        assert "planned failure in epoch 0 on attempt {}".format(attempt) in earlier.remote_traceback
    assert cluster.attempt == 2


def test_map_fun_failing_before_any_data_in_the_same_place_is_not_retried(ray_cluster, no_leftovers, tmp_path):
    args = {"dir": str(tmp_path), "raise_before_reading": list(range(10))}
    cluster = TFCluster.run(None, _reader, args, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            import_tensorflow=False, max_failures=5)
    try:
        with pytest.raises(NodeError, match="before reading any data on attempts 0 and 1") as caught:
            cluster.train(_partitions(), num_epochs=2, feed_timeout=120)
    finally:
        with pytest.raises(NodeError):
            cluster.shutdown()
    assert cluster.attempt == 1 and len(caught.value.attempts) == 1


def _kill_when_stopped(victim, stopped, killed):
    """Kills the actor ``victim`` once a node wrote the file ``stopped`` (where it stopped); appends what it
    wrote to ``killed``."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if os.path.exists(stopped):
            ray.kill(victim, no_restart=True)
            killed.append(json.load(open(stopped)))
            return
        time.sleep(0.02)


def _stop(args, ctx, done):
    """The planned stop: on attempt 0, node ``args["stop_executor"]`` writes ``done`` (how far it got) to
    ``args["stopped"]`` once ``done`` reached ``args["stop_after"]``, and waits there to be killed, so the
    failure always lands mid-feed, however slow the machine."""
    if ctx.attempt == 0 and ctx.executor_id == args.get("stop_executor") and done >= args["stop_after"]:
        _write_json(args["stopped"], done)
        time.sleep(600)


def _train_while_killing(cluster, victim, stopped):
    """Trains 3 epochs of ``_partitions()`` while ``victim`` (a node or queue actor) is killed once a node
    wrote the file ``stopped`` (see ``_stop``); ``(report, killed)``."""
    killed = []
    watcher = threading.Thread(target=_kill_when_stopped, args=(victim, stopped, killed), daemon=True)
    watcher.start()
    try:
        report = cluster.train(_partitions(), num_epochs=3, feed_timeout=120)
    finally:
        cluster.shutdown()
    watcher.join(5)
    return report, killed


def _assert_attempt_read_every_epoch_whole(directory, attempt):
    """The nodes of ``attempt`` read epochs 0, 1 and 2, each with every row once."""
    read = _epochs_read(directory, attempt)
    assert sorted(read) == [0, 1, 2]
    for ids in read.values():
        assert ids == list(range(ROWS))


@pytest.mark.parametrize("victim", ["chief", "ps"])
def test_killed_chief_or_ps_node_restarts_the_whole_cluster(ray_cluster, no_leftovers, tmp_path, victim):
    # the roles are 3 nodes, 1 ps, master "chief": ps:0, chief:0, worker:0 in executor order
    roles = ["ps:0", "chief:0", "worker:0"]
    stopped = str(tmp_path / "stopped.json")
    args = {"dir": str(tmp_path), "slow": 0.05, "stop_executor": roles.index("chief:0"), "stop_after": ROWS // 4,
            "stopped": stopped}
    cluster = TFCluster.run(None, _reader_with_ps, args, 3, 1, master_node="chief",
                            input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, max_failures=1)
    names = ["{}:{}".format(*role) for role in cluster.roles]
    assert names == roles
    victim_id = names.index("chief:0" if victim == "chief" else "ps:0")
    report, killed = _train_while_killing(cluster, cluster.nodes[victim_id], stopped)
    assert killed, "the node was never killed"
    restart, = report["restarts"]
    assert restart["node"] == names[victim_id] and "died" in restart["error"]
    _assert_attempt_read_every_epoch_whole(tmp_path, 1)
    # the ps of the second attempt is a new process
    assert len(glob.glob(os.path.join(tmp_path, "ps-a*.pid"))) == 2


def test_killed_queue_actor_restarts_the_cluster_and_the_feed_finishes(ray_cluster, no_leftovers, tmp_path):
    # a node's queue actor lives on the driver's machine; killed mid-feed, it fails its node (named), and
    # max_failures restarts the cluster with new queue actors
    stopped = str(tmp_path / "stopped.json")
    args = {"dir": str(tmp_path), "slow": 0.05, "stop_executor": 0, "stop_after": ROWS // 4, "stopped": stopped}
    cluster = TFCluster.run(None, _reader_with_ps, args, 2, 0,
                            input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, max_failures=1)
    report, killed = _train_while_killing(cluster, plain(cluster.queue_actors[1]), stopped)
    assert killed, "the queue actor was never killed"
    restart, = report["restarts"]
    assert restart["node"] == "worker:1" and "its queue actor" in restart["error"] and "died" in restart["error"]
    _assert_attempt_read_every_epoch_whole(tmp_path, 1)


def _reader_with_ps(args, ctx):
    """ps nodes wait (as a parameter server would) and fail when a peer is gone; the others read."""
    if ctx.job_name == "ps":
        with open(os.path.join(args["dir"], "ps-a{}.pid".format(ctx.attempt)), "w") as f:
            f.write(str(os.getpid()))
        while True:
            time.sleep(0.1)
    feed = ctx.get_data_feed()
    epoch = read = 0
    while not feed.should_stop():
        ids = []
        for batch in feed.epoch_batches(8):
            ids.extend(int(v) for v in batch)
            time.sleep(args["slow"])
            read += len(batch)
            _stop(args, ctx, read)
        if feed.should_stop() and not ids:
            break
        _write_json(os.path.join(args["dir"], "a{}-{}-e{}.json".format(ctx.attempt, ctx.executor_id, epoch)), ids)
        epoch += 1


def test_inference_after_a_killed_node_returns_each_rows_answer_once_in_order(ray_cluster, no_leftovers, tmp_path):
    partitions = [list(range(p * 40, p * 40 + 40)) for p in range(6)]
    stopped = str(tmp_path / "stopped.json")
    # worker:1 answers partitions 1, 3 and 5 (40 rows each): it dies after answering partition 1
    cluster = TFCluster.run(None, _doubler, {"slow": 0.05, "stop_executor": 1, "stop_after": 40, "stopped": stopped},
                            2, 0, input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, max_failures=1)
    killed = []
    watcher = threading.Thread(target=_kill_when_stopped, args=(cluster.nodes[1], stopped, killed), daemon=True)
    watcher.start()
    try:
        results = cluster.inference(partitions, feed_timeout=120)
    finally:
        cluster.shutdown()
    watcher.join(5)
    assert killed and cluster.attempt == 1
    assert results == [[2 * row for row in part] for part in partitions]


@pytest.mark.parametrize("spark", ["local"], indirect=True)
@pytest.mark.parametrize("kind", ["rdd", "dataframe"])
def test_spark_fed_inference_action_restarts_after_a_killed_node_and_answers_every_row_once_in_order(
        spark, ray_cluster, no_leftovers, kind, tmp_path):
    rows = list(range(240))
    rdd = spark.sparkContext.parallelize(rows, 6)
    data = rdd if kind == "rdd" else spark.createDataFrame(rdd.map(lambda v: (v,)), "v long")
    stopped = str(tmp_path / "stopped.json")
    cluster = TFCluster.run(spark, _doubler, {"slow": 0.05, "stop_executor": 1, "stop_after": 50, "stopped": stopped},
                            2, 0, input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, max_failures=1)
    killed = []
    # worker:1 answers partitions 1, 3 and 5 (40 rows each): it dies reading partition 3, after partition 1
    watcher = threading.Thread(target=_kill_when_stopped, args=(cluster.nodes[1], stopped, killed), daemon=True)
    watcher.start()
    try:
        results = cluster.inference(data, feed_timeout=120)
        answers = results.collect()      # the action is watched: the kill restarts the cluster, the action re-runs
        assert killed and cluster.attempt == 1, (killed, cluster.attempt)
        assert len(cluster.failures) == 1 and cluster.failures[0].error.node == "worker:1"
        refed = sum(ray.get(queue.stats.remote())["fed_rows"] for queue in cluster.queue_actors)
        assert refed == len(rows), refed        # the new nodes answered every partition: nothing of the
        assert not results.is_cached            # cancelled job is reused (Spark can keep a partition cut short)
        again = results.count()           # a later action runs on the restarted cluster's nodes
    finally:
        cluster.shutdown()
    watcher.join(5)
    doubled = [2 * row for row in rows]
    assert [int(answer) for answer in answers] == doubled
    assert again == len(rows)


def _doubler(args, ctx):
    feed = ctx.get_data_feed(train_mode=False)
    answered = 0
    while not feed.should_stop():
        batch = feed.next_batch(10)
        if batch:
            time.sleep(args["slow"])
            feed.batch_results([2 * (row[0] if isinstance(row, (tuple, list)) else row) for row in batch])
            answered += len(batch)
            _stop(args, ctx, answered)


# ------------------------------------------------------------ Keras, BackupAndRestore, held-out accuracy


def _keras_digits(args, ctx):
    """MWMS Keras on the digits; BackupAndRestore(ctx.checkpoint_dir); records the epochs each attempt ran and
    the test accuracy of the weights each of them started from."""
    import tensorflow as tf
    import tf_keras as keras

    tf.keras.utils.set_random_seed(args["seed"])
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.layers.Dense(32, activation="relu", input_shape=(64,)),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    feed = ctx.get_data_feed(input_mapping={"x": "x", "y": "y"})
    ds = feed.as_dataset(32).map(lambda d: (d["x"], d["y"]))
    test = np.load(args["test"])
    x, y = test["x"], test["y"]

    def accuracy():
        # numpy, not predict: no TF op inside fit's strategy scope, so no collective in a callback
        kernel1, bias1, kernel2, bias2 = model.get_weights()
        hidden = np.maximum(x @ kernel1 + bias1, 0.0)
        return float(np.mean(np.argmax(hidden @ kernel2 + bias2, axis=1) == y))

    ran, start_accuracy = [], []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            ran.append(epoch)
            start_accuracy.append(accuracy())

        def on_train_batch_end(self, batch, logs=None):
            # the planned victim stops at an exact step and waits to be killed: MWMS trains in lockstep, so
            # the epoch it stops in can neither end nor be backed up on any node
            if (ctx.attempt, ctx.executor_id, self.epoch, batch) == (0, 1, *args.get("stop_at", (None, None))):
                _write_json(args["stopped"], [self.epoch, batch])
                time.sleep(600)

    model.fit(ds, epochs=args["epochs"], verbose=0,
              callbacks=[keras.callbacks.BackupAndRestore(ctx.checkpoint_dir), Record()])
    if ctx.executor_id == 0:
        _write_json(os.path.join(args["dir"], "result-a{}.json".format(ctx.attempt)),
                    {"accuracy": accuracy(), "epochs_ran": ran, "start_accuracy": start_accuracy,
                     "resume_epoch": ctx.resume_epoch})


def _digits(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:1400], order[1400:]
    np.savez(tmp_path / "test.npz", x=x[test], y=y[test])
    rows = [(x[i], y[i]) for i in train]
    return [rows[p::4] for p in range(4)], str(tmp_path / "test.npz")


@pytest.mark.timeout(600)
def test_killed_worker_in_epoch_two_resumes_from_the_keras_backup_weights(
        ray_cluster, no_leftovers, tmp_path):
    partitions, test_file = _digits(tmp_path)
    rows = sum(len(p) for p in partitions)
    epochs = 4

    def run(directory, stop_at):
        os.makedirs(directory, exist_ok=True)
        stopped = os.path.join(directory, "stopped.json")
        args = {"dir": directory, "seed": 7, "epochs": epochs, "test": test_file, "stopped": stopped}
        if stop_at is not None:
            args["stop_at"] = stop_at
        cluster = TFCluster.run(None, _keras_digits, args, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                                max_failures=2, checkpoint_dir=os.path.join(directory, "ckpt"))
        killed = []
        if stop_at is not None:
            threading.Thread(target=_kill_when_stopped, args=(cluster.nodes[1], stopped, killed), daemon=True).start()
        try:
            report = cluster.train(partitions, num_epochs=epochs, feed_timeout=180)
        finally:
            cluster.shutdown()
        return report, killed

    steps_per_epoch = rows // 2 // 32    # each node's share, in batches of 32
    step = int(np.random.default_rng().integers(1, steps_per_epoch - 1))
    report, killed = run(str(tmp_path / "killed"), (1, step))   # worker:1 is killed at that step of epoch 2
    assert killed == [[1, step]], "worker:1 was never killed (step {} of epoch 2)".format(step)
    restart, = report["restarts"]
    assert restart["node"] == "worker:1" and restart["resume_epoch"] == 1   # epoch 1 (0-based) was backed up
    first = json.load(open(tmp_path / "killed" / "result-a1.json"))
    assert first["resume_epoch"] == 1 and first["epochs_ran"] == [1, 2, 3]   # resumed, not from scratch
    assert report["epochs"] == 1 + 3 and report["consumed"] >= rows * 4
    clean, _ = run(str(tmp_path / "clean"), None)
    assert clean["restarts"] == []
    uninterrupted = json.load(open(tmp_path / "clean" / "result-a0.json"))
    assert uninterrupted["epochs_ran"] == [0, 1, 2, 3]
    # the restarted attempt starts from the backed-up weights: trained one epoch, like the clean run's after
    # epoch 0 (0.84-0.90 here), not the untrained ones (about 0.1). The order of the rows differs between runs,
    # so final accuracies differ by a few test rows either way; both must be those of a trained model.
    assert uninterrupted["start_accuracy"][0] < 0.3 and uninterrupted["start_accuracy"][1] > 0.7, uninterrupted
    assert first["start_accuracy"][0] > 0.7, (first, uninterrupted)
    assert first["accuracy"] > 0.85 and uninterrupted["accuracy"] > 0.85, (first, uninterrupted)


@pytest.mark.timeout(900)
def test_restartable_example_loses_a_worker_process_and_finishes(tmp_path):
    from test_examples import run_example

    output, summary = run_example("restartable_digits.py", "--epochs", "4", "--crash_in_epoch", "2", cwd=tmp_path,
                                  timeout=840)
    assert "worker:1 crashes in epoch 2 (attempt 0)" in output
    assert summary["restarts"] == "1" and summary["final_attempt"] == "1"
    # the backup held epochs 0 and 1: the last attempt ran epochs 2 and 3 only
    assert summary["epochs_of_last_attempt"] == "2,3"
    assert float(summary["accuracy"]) > 0.85
