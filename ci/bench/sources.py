"""sources: feed throughput into ``DataFeed`` from each source, beside the source's own limit.

Two nodes that only read take the same data from a Spark RDD, a Spark DataFrame (Arrow) and a Ray
Dataset, with ``next_batch(100)``, ``next_batch(1000)`` and the array path (``epoch_batches(1000)``),
for MNIST-shaped rows (784 float32 + int64 label) and tiny rows (one int64). When ``limits`` runs
too, the source's limit is timed right before each feed, and the ratio is taken pair by pair (the
pair shares the load of this shared machine).
"""
import logging
import time

import bench.limits as limits
from bench.common import CONSUMER_QUEUE, CONSUMERS, DATASETS, LIMIT_OF, SOURCES, best, rate, source_of
from bench.nodes import reader_fun

log = logging.getLogger("bench")


def timed_feed(bench, cluster, data, source, qname="input"):
    """One epoch of ``data`` from ``source`` into queue ``qname``: (seconds, CPU seconds by component)."""
    before = bench.cpu.snapshot()
    started = time.perf_counter()
    report = cluster.train(source_of(data, source), num_epochs=1, qname=qname)
    seconds = time.perf_counter() - started
    cpu = bench.cpu.delta(before)
    assert report["consumed"] == data.rows and report["rows"] == data.rows, report
    return seconds, cpu


def _sampled_feeds(bench, cluster, data, source, qname, with_limits):
    timings, pairs, cpus = [], [], []
    for _ in range(bench.size["repeat"]):
        limit = limits.sample(bench, data.kind, LIMIT_OF[source]) if with_limits else None
        seconds, cpu = timed_feed(bench, cluster, data, source, qname)
        timings.append(seconds)
        cpus.append(cpu)
        if limit is not None:
            pairs.append([limit, seconds])
    return timings, pairs, cpus


def entry(bench, kind, source, consumer, data, timings, pairs, cpus, chunk_bytes=None):
    """The figure of one feed case: best time of its samples, with the CPU seconds of that sample."""
    seconds = best(timings)
    cpu = cpus[timings.index(seconds)]
    out = {"data": kind, "source": source, "consumer": consumer, "rows": data.rows,
           "chunk_bytes": chunk_bytes or bench.chunk_bytes, "seconds": seconds,
           "rows_per_s": rate(data.rows, seconds), "mb_per_s": rate(data.mb, seconds), "samples": timings,
           "limit_feed_pairs": pairs, "cpu_seconds": sum(cpu.values()), "cpu_by_component": cpu}
    log.info("feed %-9s %-5s %-17s %10.0f rows/s %8.1f MB/s (%.2f s, %.2f CPU-s)", source, kind, consumer,
             out["rows_per_s"], out["mb_per_s"], seconds, out["cpu_seconds"])
    return out


def other_chunks(bench, with_limits):
    """The same MNIST feeds (arrays consumer) with chunk_bytes half the default (every chunk costs actor calls)."""
    chunk_bytes = bench.chunk_bytes // 2
    data = bench.data("mnist")
    out = []
    cluster = bench.run_cluster(reader_fun, {"mode": "arrays"}, chunk_bytes=chunk_bytes)
    try:
        bench.warm_up(cluster)
        for source in SOURCES:
            timings, pairs, cpus = _sampled_feeds(bench, cluster, data, source, "input", with_limits)
            out.append(entry(bench, "mnist", source, "arrays, {:g}MB chunks".format(chunk_bytes / 2 ** 20),
                             data, timings, pairs, cpus, chunk_bytes))
    finally:
        cluster.shutdown(timeout=120)
    return out


def measure(bench):
    """Every source x data set x consumer, through one 2-node cluster with one queue per consumer kind."""
    import ray
    with_limits = "limits" in bench.measurements
    out = []
    queues = {CONSUMER_QUEUE[c]: c for c in CONSUMERS}
    started = time.perf_counter()
    cluster = bench.run_cluster(reader_fun, {"queues": queues}, queues=tuple(queues) + ("output", "error"))
    log.info("feed cluster up in %.1f s", time.perf_counter() - started)
    try:
        started = time.perf_counter()
        bench.warm_up(cluster)  # connections are per process, not per queue
        log.info("warm-up %.1f s", time.perf_counter() - started)
        for consumer in CONSUMERS:
            for kind in DATASETS:
                data = bench.data(kind)
                for source in SOURCES:
                    timings, pairs, cpus = _sampled_feeds(bench, cluster, data, source, CONSUMER_QUEUE[consumer],
                                                          with_limits)
                    out.append(entry(bench, kind, source, consumer, data, timings, pairs, cpus))
        stats = ray.get([q.stats.remote() for q in cluster.queue_actors])
    finally:
        cluster.shutdown(timeout=120)
    read = sum(st["consumed_rows"] for st in stats)
    expected = sum(e["rows"] * len(e["samples"]) for e in out)
    assert read >= expected, (read, expected)
    if not bench.tiny:
        out.extend(other_chunks(bench, with_limits))
    if with_limits:
        bench.results["limits"] = limits.figures(bench)   # with the samples taken beside the feeds
    return out
