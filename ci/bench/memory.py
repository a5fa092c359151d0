"""memory: peak object-store bytes and consumer RSS while feeding 10x ``queue_max_bytes`` to slow readers.

The bound is nodes x ``queue_max_bytes`` + producers x ``chunk_bytes``; the peak is split into what
the queues hold (their own count) and what is outside them (producers' puts, readers' read-ahead,
Ray's deferred frees). How long Ray keeps a read object before freeing it is measured beside.
"""
import logging
import statistics
import time

from bench import memory_fit
from bench.common import Sampler, free_delay, source_of
from bench.nodes import reader_fun

log = logging.getLogger("bench")


def measure(bench):
    """One epoch of MNIST rows from ``--memory-source`` into two readers that sleep between batches."""
    data = bench.data("mnist")
    queue_bytes = bench.size["memory_queue_bytes"]
    chunk_bytes = min(bench.chunk_bytes, queue_bytes // 2)
    source = bench.args.memory_source
    nodes = 2
    producers = 4 if source == "raydata" else 2
    cluster = bench.run_cluster(reader_fun, {"mode": "arrays", "sleep": bench.size["memory_sleep"]},
                               queue_max_bytes=queue_bytes, chunk_bytes=chunk_bytes)
    try:
        pids = [info["pid"] for info in cluster.cluster_info]
        probe = Sampler(pids)
        time.sleep(0.5)
        baseline_store, baseline_pinned = probe.store_used(pinned=True)
        baseline_rss = probe.rss()
        with Sampler(pids, queues=cluster.queue_actors, baseline=baseline_store) as sampler:
            started = time.perf_counter()
            report = cluster.train(source_of(data, source), num_epochs=1)
            seconds = time.perf_counter() - started
        assert report["consumed"] == data.rows, report
    finally:
        cluster.shutdown(timeout=120)
    bound = nodes * queue_bytes + producers * chunk_bytes
    peak = sampler.store_peak - baseline_store
    out = {
        "source": source, "fed_bytes": int(data.rows * data.row_bytes), "queue_max_bytes": queue_bytes,
        "chunk_bytes": chunk_bytes, "nodes": nodes, "producers": producers,
        "fed_over_queue_bytes": data.rows * data.row_bytes / queue_bytes,
        "store_baseline_bytes": baseline_store, "store_peak_bytes": sampler.store_peak,
        "store_peak_over_baseline_bytes": peak, "bound_bytes": bound, "peak_over_bound": peak / bound,
        "store_samples": sampler.store_samples, "seconds": seconds,
        "pinned_baseline_bytes": baseline_pinned, "pinned_peak_over_baseline_bytes": sampler.pinned_peak - baseline_pinned,
        "pinned_over_bound": (sampler.pinned_peak - baseline_pinned) / bound,
        "queued_peak_bytes": sampler.queued_peak, "outside_queues_peak_bytes": sampler.outside_peak,
        "consumer_rss_baseline_bytes": [baseline_rss[p] for p in pids],
        "consumer_rss_peak_bytes": [sampler.rss_peak[p] for p in pids],
    }
    delays = [free_delay(probe) for _ in range(5)]
    delays = [d for d in delays if d is not None]
    out["free_delay_seconds"] = statistics.median(delays) if delays else None
    out["feed_mb_per_s"] = data.rows * data.row_bytes / seconds / 1e6
    # the same feed shape in a new Ray whose store spills past STORE_GOAL x the bound (a child process)
    fit = bench.size["memory_fit"]
    out["fit"] = memory_fit.run_child(fit["queue_bytes"], fit["chunk_bytes"], memory_fit.FIT_STORE_OVER_BOUND,
                                      fit["fed_over_bound"], fit["sleep"])
    log.info("memory: fed %.1fx the bound through a store of %.2fx the bound: %s (spilled %d bytes, pinned at most "
             "%.2fx the bound)", out["fit"]["fed_over_bound"], out["fit"]["store_over_bound"],
             "fits" if out["fit"]["fits"] else "did not fit", out["fit"]["spilled_bytes"],
             out["fit"]["pinned_peak_over_baseline_bytes"] / out["fit"]["bound_bytes"])
    log.info("memory: store peak +%.1f MB over baseline (bound %.1f MB), consumer RSS peak %s MB",
             peak / 1e6, bound / 1e6, [round(sampler.rss_peak[p] / 1e6) for p in pids])
    return out

