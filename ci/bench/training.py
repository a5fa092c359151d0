"""training: a small tf_keras model under MultiWorkerMirroredStrategy on two nodes, fed against in-memory.

The same model (``nodes.keras_model``) and global batch, fed with ``DataFeed.as_dataset`` from each
source in ``--train-sources``, against an in-memory ``tf.data`` pipeline of the same rows. The first
epoch is not timed (graph tracing, the collectives' set-up).
"""
import logging
import time

from bench.common import rate, source_of, wait_kv
from bench.nodes import MODEL_NAME, train_fun

log = logging.getLogger("bench")


def measure(bench):
    from raytfnode import TFCluster
    data = bench.data("mnist")
    epochs, batch = bench.size["train_epochs"], bench.size["train_batch"]
    sources = [s for s in bench.args.train_sources.split(",") if s]
    out = {"model": MODEL_NAME, "global_batch": batch, "epochs": epochs,
           "rows": data.rows, "sources": sources, "timed_epochs": "2..{}".format(epochs) if epochs > 1 else "1",
           "runs": {}}
    startup_samples = bench.shared.setdefault("startup_samples", [])
    for mode in ["in_memory"] + ["feed:" + s for s in sources]:
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
        out["runs"][mode] = {"steps_per_s": rate(steps, seconds), "steps_per_epoch": results[0][0]["steps"],
                             "epochs": results, "seconds_to_first_step": first_step,
                             "wall_seconds": time.perf_counter() - started,
                             "cpu_seconds_per_epoch": {k: v / epochs for k, v in cpu.items()}}
        log.info("training %-15s %.1f steps/s (%d steps/epoch)", mode, out["runs"][mode]["steps_per_s"],
                 out["runs"][mode]["steps_per_epoch"])
    base = out["runs"]["in_memory"]["steps_per_s"]
    out["ratios"] = {mode: run["steps_per_s"] / base for mode, run in out["runs"].items() if mode != "in_memory"}
    return out
