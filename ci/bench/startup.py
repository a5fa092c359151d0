"""startup: ``run()`` and ``shutdown()`` of a 2-node cluster on the warm Ray cluster, with and without TensorFlow.

``run()`` returns before the nodes import TensorFlow; ``ready_seconds`` is the time from calling it until
every node has imported it and runs ``map_fun``, and ``shutdown()`` is timed from there.

The training clusters' ``run()`` (2 nodes, ``import_tensorflow=True``) count as samples too.
"""
import logging
import statistics
import time

from bench.common import tf_import_reference
from bench.nodes import reader_fun

log = logging.getLogger("bench")


def measure(bench):
    """run()/shutdown() with and without TensorFlow; the median and the extremes."""
    runs = []
    for import_tf in (True, False):
        repeats = bench.size["startup_repeats"] if import_tf else 1
        if import_tf and bench.shared.get("startup_samples", []) and bench.tiny:
            repeats = 0  # the training clusters were 2-node run()s with TensorFlow too
        for _ in range(repeats):
            started = time.perf_counter()
            cluster = bench.run_cluster(reader_fun, {"mode": "arrays"}, import_tensorflow=import_tf)
            run_seconds = time.perf_counter() - started
            while import_tf and any(status["import_seconds"] is None for status in cluster.node_status()):
                if time.perf_counter() - started > 300:
                    raise RuntimeError("the nodes had not imported TensorFlow 300 s after run()")
                time.sleep(0.02)
            ready_seconds = time.perf_counter() - started   # every node has TensorFlow and runs map_fun
            started = time.perf_counter()
            cluster.shutdown(timeout=60)
            shutdown_seconds = time.perf_counter() - started
            runs.append({"import_tensorflow": import_tf, "run_seconds": run_seconds, "ready_seconds": ready_seconds,
                         "shutdown_seconds": shutdown_seconds,
                         "map_fun": "reader (waits on its feed until shutdown)"})
            log.info("startup (import_tensorflow=%s): run() %.2f s, nodes ready %.2f s, shutdown() %.2f s", import_tf,
                     run_seconds, ready_seconds, shutdown_seconds)
    with_tf = [r for r in runs if r["import_tensorflow"]] + bench.shared.get("startup_samples", [])
    return {
        "runs": runs,
        "training_cluster_runs": bench.shared.get("startup_samples", []),
        "run_seconds_median": statistics.median(r["run_seconds"] for r in with_tf) if with_tf else None,
        "run_seconds_min": min(r["run_seconds"] for r in with_tf) if with_tf else None,
        "ready_seconds_median": statistics.median(r["ready_seconds"] for r in runs if r["import_tensorflow"])
        if any(r["import_tensorflow"] for r in runs) else None,
        "shutdown_seconds_median": statistics.median(r["shutdown_seconds"] for r in runs),
        "shutdown_seconds_max": max(r["shutdown_seconds"] for r in runs),
        "run_seconds_without_tf": [r["run_seconds"] for r in runs if not r["import_tensorflow"]],
        "python_import_tensorflow_seconds": tf_import_reference(),
    }

