"""training: a small tf_keras model under MultiWorkerMirroredStrategy on two nodes, fed against in-memory.

The same model (``nodes.keras_model``) and global batch, fed with ``DataFeed.as_dataset`` from each
source in ``--train-sources``, against an in-memory ``tf.data`` pipeline of the same rows. The first
epoch is not timed (graph tracing, the collectives' set-up).

On a shared 2-core machine one run of each moves by a third from run to run, so the full size runs
``train_rounds`` rounds, each running every variant once, one after the other, each round starting one
variant later than the one before (so no variant always runs first while the load drifts): a variant's
figures are the medians of its rounds, and a ratio to in-memory is the median of the ratios within one
round (runs close in time, so under similar load).
"""
import logging
import statistics
import time

from bench.common import rate, source_of, wait_kv
from bench.nodes import MODEL_NAME, train_fun

log = logging.getLogger("bench")


def measure(bench):
    data = bench.data("mnist")
    epochs, batch = bench.size["train_epochs"], bench.size["train_batch"]
    sources = [s for s in bench.args.train_sources.split(",") if s]
    out = {"model": MODEL_NAME, "global_batch": batch, "epochs": epochs,
           "rows": data.rows, "sources": sources, "timed_epochs": "2..{}".format(epochs) if epochs > 1 else "1",
           "runs": {}}
    rounds = bench.size.get("train_rounds", 1)
    out["rounds"] = rounds
    modes = ["in_memory"] + ["feed:" + s for s in sources]
    measured = {mode: [] for mode in modes}
    for round_index in range(rounds):
        # each round starts one variant later: none always runs first (the load drifts over a run)
        for mode in modes[round_index % len(modes):] + modes[:round_index % len(modes)]:
            measured[mode].append(train_once(bench, data, mode, epochs, batch))
            log.info("training %-15s %.1f steps/s (%d steps/epoch; round %d of %d)", mode,
                     measured[mode][-1]["steps_per_s"], measured[mode][-1]["steps_per_epoch"], round_index + 1, rounds)
    for mode in modes:
        runs = measured[mode]
        middle = sorted(runs, key=lambda run: run["steps_per_s"])[len(runs) // 2]
        out["runs"][mode] = dict(middle, steps_per_s=statistics.median(run["steps_per_s"] for run in runs),
                                 seconds_to_first_step=statistics.median(run["seconds_to_first_step"] for run in runs),
                                 rounds_steps_per_s=[run["steps_per_s"] for run in runs],
                                 rounds_seconds_to_first_step=[run["seconds_to_first_step"] for run in runs])
    out["ratios"] = {mode: statistics.median(run["steps_per_s"] / base["steps_per_s"]
                                             for run, base in zip(measured[mode], measured["in_memory"]))
                     for mode in modes if mode != "in_memory"}
    out["ratios_all_epochs"] = {mode: statistics.median(run["steps_per_s_all_epochs"] / base["steps_per_s_all_epochs"]
                                                        for run, base in zip(measured[mode], measured["in_memory"]))
                                for mode in modes if mode != "in_memory"}
    out["rounds_ratios"] = {mode: [run["steps_per_s"] / base["steps_per_s"]
                                   for run, base in zip(measured[mode], measured["in_memory"])]
                            for mode in modes if mode != "in_memory"}
    return out


def train_once(bench, data, mode, epochs, batch):
    """One training run of ``mode`` ('in_memory' or 'feed:<source>') on a new 2-node cluster."""
    from raytfnode import TFCluster
    startup_samples = bench.shared.setdefault("startup_samples", [])
    fed = mode != "in_memory"
    tf_args = {"feed": fed, "batch": batch, "epochs": epochs, "rows": data.rows, "parts": data.parts}
    started = time.perf_counter()
    started_wall = time.time()
    cluster = bench.run_cluster(
        train_fun, tf_args, num_cpus=1, import_tensorflow=True,
        input_mode=TFCluster.InputMode.SPARK if fed else TFCluster.InputMode.TENSORFLOW)
    run_seconds = time.perf_counter() - started
    imports = None       # each node's TensorFlow import, in seconds (it runs after run() returned)
    try:
        before = bench.cpu.snapshot()
        report = {}
        if fed:
            report = cluster.train(source_of(data, mode.split(":", 1)[1]), num_epochs=epochs)
            assert report["consumed"] == data.rows * epochs, report
        results = wait_kv(cluster, "train_result", 600)
        cpu = bench.cpu.delta(before)
        imports = [status["import_seconds"] for status in cluster.node_status()]
    finally:
        stop = time.perf_counter()
        cluster.shutdown(timeout=120)
        startup_samples.append({"run_seconds": run_seconds, "shutdown_seconds": time.perf_counter() - stop,
                                "tf_import_seconds": imports,
                                "map_fun": "train_fun (finished before shutdown)"})
    first_step = min(r["first_step_at"] for r in results) - started_wall
    results = [r["epochs"] for r in results]
    timed = results[0][1:] or results[0]
    steps = sum(e["steps"] for e in timed)
    seconds = sum(e["seconds"] for e in timed)
    every = results[0]   # the first epoch too: a fed run reads its source then, later epochs may come from the cache
    return {"steps_per_s": rate(steps, seconds), "steps_per_epoch": results[0][0]["steps"],
            "steps_per_s_all_epochs": rate(sum(e["steps"] for e in every), sum(e["seconds"] for e in every)),
            "epochs": results, "seconds_to_first_step": first_step,
            "wall_seconds": time.perf_counter() - started,
            "cached_epochs": report.get("cached_epochs", 0), "epoch_cache": report.get("epoch_cache"),
            "cpu_seconds_per_epoch": {k: v / epochs for k, v in cpu.items()}}
