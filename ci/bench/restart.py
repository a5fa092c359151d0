"""restart: recovery time and work lost when a worker is killed mid-training (``max_failures=1``).

Two runs of the same job on the warm Ray cluster: 2 workers read 4 epochs of rows in batches (a
fixed sleep per batch stands in for a training step) and checkpoint after every epoch (the last
completed epoch in ``ctx.checkpoint_dir``; a restarted node calls ``ctx.resume_feed``). One run is
left alone; in the other, worker:1 is killed with ``ray.kill`` half way through epoch 3. Reported:
the recovery time (failure seen by the driver -> the new nodes consuming again, from ``train()``'s
restart record), the steps redone (batches read in all attempts minus the undisturbed run's), and
both wall times.
"""
import json
import logging
import os
import tempfile
import threading
import time

log = logging.getLogger("bench")

EPOCHS = 4
BATCH = 100


def checkpointing_reader(args, ctx):
    """Reads epoch by epoch; counts batches; records the last completed epoch as its 'checkpoint'."""
    state = os.path.join(ctx.checkpoint_dir, "last_epoch-{}".format(ctx.executor_id))
    os.makedirs(ctx.checkpoint_dir, exist_ok=True)
    epoch = 0
    if ctx.attempt and os.path.exists(state):
        with open(state) as f:
            epoch = int(f.read()) + 1
        if ctx.executor_id == 0:
            ctx.resume_feed(epoch)
    feed = ctx.get_data_feed()
    steps = 0
    count_file = os.path.join(args["out"], "steps-a{}-{}.json".format(ctx.attempt, ctx.executor_id))
    while not feed.should_stop():
        read = 0
        for _ in feed.epoch_batches(BATCH):
            steps += 1
            read += 1
            time.sleep(args["step_seconds"])
            with open(count_file + ".tmp", "w") as f:   # after every step: a killed node's steps count too
                json.dump(steps, f)
            os.replace(count_file + ".tmp", count_file)
        if not read:
            break
        with open(state, "w") as f:
            f.write(str(epoch))
        epoch += 1


def _steps(directory):
    total = 0
    for name in os.listdir(directory):
        if name.startswith("steps-") and name.endswith(".json"):
            with open(os.path.join(directory, name)) as f:
                total += json.load(f)
    return total


def _kill_in_epoch(cluster, rows_per_node_epoch, killed):
    import ray

    queue, victim = cluster.queue_actors[1], cluster.nodes[1]
    target = 2 * rows_per_node_epoch + rows_per_node_epoch // 2
    while not killed:
        if ray.get(queue.stats.remote(), timeout=30)["consumed_rows"] >= target:
            ray.kill(victim, no_restart=True)
            killed.append(time.time())
            return
        time.sleep(0.01)


def _one_run(rows, step_seconds, kill):
    from raytfnode import TFCluster

    out = tempfile.mkdtemp(prefix="bench-restart-")
    partitions = [list(range(p, rows, 4)) for p in range(4)]
    cluster = TFCluster.run(None, checkpointing_reader, {"out": out, "step_seconds": step_seconds}, 2, 0,
                            input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, max_failures=1,
                            checkpoint_dir=os.path.join(out, "ckpt"))
    killed = []
    if kill:
        threading.Thread(target=_kill_in_epoch, args=(cluster, rows // 2, killed), daemon=True).start()
    started = time.perf_counter()
    try:
        report = cluster.train(partitions, num_epochs=EPOCHS, feed_timeout=300)
    finally:
        cluster.shutdown(timeout=120)
    return {"wall_seconds": time.perf_counter() - started, "steps": _steps(out), "restarts": report["restarts"],
            "killed": bool(killed)}


def measure(bench):
    rows = 4000 if bench.tiny else 20000
    step_seconds = 0.005
    clean = _one_run(rows, step_seconds, kill=False)
    failed = _one_run(rows, step_seconds, kill=True)
    restart = failed["restarts"][0] if failed["restarts"] else {}
    result = {
        "rows_per_epoch": rows, "epochs": EPOCHS, "batch": BATCH, "step_seconds": step_seconds,
        "killed": failed["killed"],
        "recovery_seconds": restart.get("recovery_seconds"),
        "resume_epoch": restart.get("resume_epoch"),
        "rows_refed": restart.get("rows_refed"),
        "steps_undisturbed": clean["steps"],
        "steps_with_failure": failed["steps"],
        "steps_redone": failed["steps"] - clean["steps"],
        "wall_seconds_undisturbed": clean["wall_seconds"],
        "wall_seconds_with_failure": failed["wall_seconds"],
    }
    log.info("restart: recovery %.2f s, %d steps redone of %d, wall %.1f s vs %.1f s undisturbed",
             result["recovery_seconds"] or float("nan"), result["steps_redone"], clean["steps"],
             failed["wall_seconds"], clean["wall_seconds"])
    return result
