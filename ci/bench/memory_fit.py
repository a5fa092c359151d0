"""memory (fit): does the feed run without spilling in an object store sized from the queues' byte bound?

Ray keeps a read object in the store until its next batched free (about a second), so the store's
"bytes used" climbs above what the feed holds. Those objects are no longer pinned: the store evicts
them when a new object needs the room. What makes Ray spill is pinned objects passing 80% of the
store. This measures it directly: a new local Ray whose object store is 1.5 x the bound (nodes x
``queue_max_bytes`` + producers x ``chunk_bytes``), so that its spilling threshold is 1.2 x the bound,
gets a feed of several times the bound, and Ray's own counters say whether it spilled an object to
disk or allocated outside the store, beside the peaks of bytes used and bytes pinned.

It runs in a child process (``python ci/bench/memory_fit.py``; prints one JSON line), because the
store size is fixed when Ray starts and the benchmark's own Ray session has a default-sized one.
The rows come from a list of partitions fed from the driver's threads (no Spark): each producer
puts its chunks into the object store as a Spark task does.
"""
import argparse
import json
import os
import sys
import time

CI = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(CI)
sys.path[:0] = [CI, REPO]
# the TF nodes (new Ray workers) import reader_fun from this package and this checkout's raytfnode
os.environ["PYTHONPATH"] = os.pathsep.join([CI, REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                                                         if p and p not in (CI, REPO)])

from bench.common import MNIST_ROW_BYTES, Sampler  # noqa: E402
from bench.data import gen_rows  # noqa: E402
from bench.nodes import reader_fun  # noqa: E402
from bench.targets import STORE_GOAL  # noqa: E402

#: Ray refuses a smaller object store than this (ray_constants.OBJECT_STORE_MINIMUM_MEMORY_BYTES)
RAY_MINIMUM_STORE_BYTES = 75 << 20
#: Ray starts spilling once pinned primary copies pass this share of the store (its default
#: ``object_spilling_threshold``)
RAY_SPILLING_THRESHOLD = 0.8
#: the store whose spilling threshold is STORE_GOAL x the bound (1.2 / 0.8 = 1.5): the feed runs in it
#: without spilling exactly when it pins at most STORE_GOAL x the bound, however many read objects
#: wait for Ray's batched free
FIT_STORE_OVER_BOUND = round(STORE_GOAL / RAY_SPILLING_THRESHOLD, 6)   # 1.5, not 1.4999999999999998


def store_counters(state):
    """The local raylet's object-store counters: bytes used, bytes pinned as primary copies, spilled, fallback."""
    from ray._private.internal_api import get_memory_info_reply
    stats = get_memory_info_reply(state).store_stats
    return {"used": stats.object_store_bytes_used, "pinned": stats.object_store_bytes_primary_copy,
            "spilled": stats.spilled_bytes_total, "fallback": stats.object_store_bytes_fallback}


def feed_in_small_store(queue_bytes, chunk_bytes, store_over_bound, fed_over_bound, sleep):
    """Feeds ``fed_over_bound`` x the bound through a Ray whose store is ``store_over_bound`` x the bound."""
    import ray
    from ray._private.internal_api import get_state_from_address

    from raytfnode import TFCluster

    nodes, producers = 2, 2
    bound = nodes * queue_bytes + producers * chunk_bytes
    store_bytes = int(store_over_bound * bound)
    if store_bytes < RAY_MINIMUM_STORE_BYTES:
        raise SystemExit("a store of {:.2f} x a bound of {} bytes is under Ray's minimum of {} bytes: raise "
                         "--queue-bytes".format(store_over_bound, bound, RAY_MINIMUM_STORE_BYTES))
    ray.init(address="local", num_cpus=4, object_store_memory=store_bytes, include_dashboard=False,
             log_to_driver=False, logging_level="WARNING")
    try:
        state = get_state_from_address(ray.get_runtime_context().gcs_address)
        rows = int(fed_over_bound * bound / MNIST_ROW_BYTES)
        partitions = [gen_rows("mnist", i, rows, producers) for i in range(producers)]
        cluster = TFCluster.run(None, reader_fun, {"mode": "arrays", "sleep": sleep}, nodes, 0,
                                input_mode=TFCluster.InputMode.SPARK, num_cpus=1, import_tensorflow=False,
                                queue_max_bytes=queue_bytes, chunk_bytes=chunk_bytes, reservation_timeout=300)
        try:
            baseline = store_counters(state)
            with Sampler(interval=0.02) as sampler:
                started = time.perf_counter()
                report = cluster.train(partitions, num_epochs=1)
                seconds = time.perf_counter() - started
            after = store_counters(state)
            assert report["consumed"] == rows, report
        finally:
            cluster.shutdown(timeout=120)
    finally:
        ray.shutdown()
    fed_bytes = rows * MNIST_ROW_BYTES
    return {"queue_max_bytes": queue_bytes, "chunk_bytes": chunk_bytes, "nodes": nodes, "producers": producers,
            "bound_bytes": bound, "store_bytes": store_bytes, "store_over_bound": store_bytes / bound,
            "spilling_threshold": RAY_SPILLING_THRESHOLD,
            "fed_bytes": fed_bytes, "fed_over_bound": fed_bytes / bound, "rows": rows, "seconds": seconds,
            "feed_mb_per_s": fed_bytes / seconds / 1e6, "reader_sleep": sleep,
            "store_baseline_bytes": baseline["used"], "store_used_peak_bytes": max(sampler.store_peak, baseline["used"]),
            "pinned_peak_over_baseline_bytes": max(sampler.pinned_peak, baseline["pinned"]) - baseline["pinned"],
            "spilled_bytes": after["spilled"] - baseline["spilled"],
            "fallback_bytes": max(after["fallback"], baseline["fallback"]),
            "fits": after["spilled"] == baseline["spilled"] and after["fallback"] == 0}


def run_child(queue_bytes, chunk_bytes, store_over_bound, fed_over_bound, sleep, timeout=600):
    """Runs :func:`feed_in_small_store` in a new Python process (its own Ray); returns its result dict."""
    import subprocess
    command = [sys.executable, os.path.abspath(__file__), "--queue-bytes", str(queue_bytes), "--chunk-bytes",
               str(chunk_bytes), "--store-over-bound", str(store_over_bound), "--fed-over-bound", str(fed_over_bound),
               "--sleep", str(sleep)]
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError("memory_fit exited with {}:\n{}".format(done.returncode, done.stderr[-4000:]))
    return json.loads(lines[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue-bytes", type=int, default=32 << 20)
    parser.add_argument("--chunk-bytes", type=int, default=8 << 20)
    parser.add_argument("--store-over-bound", type=float, default=FIT_STORE_OVER_BOUND)
    parser.add_argument("--fed-over-bound", type=float, default=4.0)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds each reader sleeps per 1000 rows")
    args = parser.parse_args(argv)
    print(json.dumps(feed_in_small_store(args.queue_bytes, args.chunk_bytes, args.store_over_bound, args.fed_over_bound,
                             args.sleep)), flush=True)


if __name__ == "__main__":
    main()
