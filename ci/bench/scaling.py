"""scaling: the cost of a feed as the work grows, and its rate with more nodes.

- rows: the same 2 readers fed 60,000 -> 600,000 MNIST rows (4 partitions) from a Ray Dataset;
- partitions: 60,000 MNIST rows in 4 -> 400 partitions, from a Ray Dataset and a Spark DataFrame;
- nodes: the MNIST set fed to 1, 2 and 4 nodes (``--scaling-source``).

For rows and partitions a feed is ``scaling_epochs`` epochs from Spark (each read from the source: no
epoch cache) and ``scaling_epochs_raydata`` from a Ray Dataset: one epoch of 60,000 rows from a Ray
Dataset takes 20-30 ms, about as long as the noise here; 50 epochs take about a second, as 5 epochs
from Spark do. The driver's CPU is its own clock (``time.process_time``, every thread of this process),
not /proc's 10 ms ticks, in which a Spark feed's 0.06-0.09 CPU-s moved by a sixth per tick. The figures
are rows/s (best of
``scaling_repeat`` feeds, and of the first feed, which checks a Ray Dataset's blocks and joins its small ones)
and the driver's CPU seconds per 100,000 rows
(this process only: the Ray Dataset feed runs in driver threads, the Spark one only schedules
tasks from here); flat columns mean the cost grows with the rows and not faster. The 600,000-row
set is not fed from Spark: cached in the executors it would not fit their memory here.

A Spark DataFrame's figure has its source's own rate beside it: Spark's Arrow read
(``mapInArrow`` counting rows) of the same cached DataFrame coalesced into the tasks the feed
uses (:func:`raytfnode.feed_tasks.feeding_tasks`), one epoch timed right before each feed, best
of those. Read in its own 400 tasks it takes 16-18 s here (40 ms a task), so the feed's
coalescing is the comparison that says what Spark itself costs at 400 partitions.
"""
import logging
import time

from bench.common import rate, source_of
from bench.data import build_data
from bench.limits import limit_spark_arrow
from bench.nodes import reader_fun
from raytfnode.feed_tasks import feeding_tasks

log = logging.getLogger("bench")


def _as_fed(bench, data):
    """``data`` with its DataFrame coalesced into the Spark tasks a feed of it uses."""
    import types
    parts = data.df.rdd.getNumPartitions()
    tasks = feeding_tasks(parts, bench.spark.sparkContext.defaultParallelism)
    return types.SimpleNamespace(df=data.df.coalesce(tasks) if tasks < parts else data.df, rows=data.rows)


def timed(bench, cluster, data, source, epochs=1, source_reads=None):
    """Best of ``scaling_repeat`` feeds of ``epochs`` epochs of ``data``, each epoch read from the source: (seconds,
    the driver's CPU seconds in that feed, the first feed's seconds: a Ray Dataset's blocks are checked
    and its small blocks joined in the first). With a list ``source_reads``, Spark's own Arrow read of
    the DataFrame as the feed reads it is timed right before each feed and appended to it."""
    samples = []
    no_cache = {} if source == "raydata" else {"epoch_cache_bytes": 0}
    for _ in range(bench.size.get("scaling_repeat", bench.size["repeat"])):
        if source_reads is not None:
            source_reads.append(limit_spark_arrow(_as_fed(bench, data)))
        # the driver's own clock (every thread of this process, in ns), not the 10 ms ticks of /proc: a
        # DataFrame feed's driver spends about 0.1 CPU-s in all
        cpu_started = time.process_time()
        started = time.perf_counter()
        report = cluster.train(source_of(data, source), num_epochs=epochs, **no_cache)
        seconds = time.perf_counter() - started
        driver_cpu = time.process_time() - cpu_started
        assert report["consumed"] == data.rows * epochs and not report["cached_epochs"], report
        samples.append((seconds, driver_cpu))
    return min(samples) + (samples[0][0],)


def figure(bench, cluster, source, rows, parts, epochs):
    need_spark = source != "raydata"
    data = build_data(bench.spark, "mnist", rows, parts, need_spark=need_spark, need_ray=not need_spark)
    source_reads = [] if source == "dataframe" else None
    try:
        seconds, driver_cpu, first_seconds = timed(bench, cluster, data, source, epochs, source_reads)
    finally:
        if data.rdd is not None:
            data.rdd.unpersist()
            data.df.unpersist()
        data.ds = None
    out = {"source": source, "rows": rows, "partitions": parts, "epochs": epochs, "seconds": seconds,
           "rows_per_s": rate(rows * epochs, seconds), "mb_per_s": rate(data.mb * epochs, seconds),
           "first_seconds": first_seconds, "first_rows_per_s": rate(rows * epochs, first_seconds),
           "driver_cpu_seconds": driver_cpu, "driver_cpu_seconds_per_100k_rows": driver_cpu * 1e5 / (rows * epochs)}
    if source_reads:
        out["source_read_seconds"] = source_reads
        out["source_rows_per_s"] = rate(rows, min(source_reads))
        out["rows_per_s_over_source"] = out["rows_per_s"] / out["source_rows_per_s"]
    log.info("scaling %-9s %7d rows %3d partitions: %10.0f rows/s, driver %.2f CPU-s / 100k rows", source, rows,
             parts, out["rows_per_s"], out["driver_cpu_seconds_per_100k_rows"])
    return out


def by_nodes(bench):
    data = bench.data("mnist")
    source = bench.args.scaling_source
    out = []
    for nodes in bench.size["scaling_nodes"]:
        cluster = bench.run_cluster(reader_fun, {"mode": "arrays"}, nodes=nodes,
                                    num_cpus=min(0.5, bench.args.node_cpus))
        try:
            bench.warm_up(cluster, (source,))
            seconds = timed(bench, cluster, data, source)[0]
        finally:
            cluster.shutdown(timeout=120)
        out.append({"nodes": nodes, "source": source, "consumer": "arrays", "rows": data.rows,
                    "seconds": seconds, "rows_per_s": rate(data.rows, seconds), "mb_per_s": rate(data.mb, seconds)})
        log.info("scaling %d nodes: %.0f rows/s", nodes, out[-1]["rows_per_s"])
    return out


def measure(bench):
    rows_sizes, part_counts = bench.size["scaling_rows"], bench.size["scaling_partitions"]
    base_rows, base_parts = rows_sizes[0], part_counts[0]
    epochs = {"dataframe": bench.size.get("scaling_epochs", 1)}
    epochs["raydata"] = bench.size.get("scaling_epochs_raydata", epochs["dataframe"])
    out = {"rows": [], "partitions": [], "nodes": []}
    cluster = bench.run_cluster(reader_fun, {"mode": "arrays"})
    try:
        bench.warm_up(cluster, ("raydata", "dataframe"))
        for rows in rows_sizes:
            out["rows"].append(figure(bench, cluster, "raydata", rows, base_parts, epochs["raydata"]))
        for source in ("raydata", "dataframe"):
            for parts in part_counts:
                out["partitions"].append(figure(bench, cluster, source, base_rows, parts, epochs[source]))
    finally:
        cluster.shutdown(timeout=120)
    for key in ("rows", "partitions"):
        for source in ("raydata", "dataframe"):
            entries = [e for e in out[key] if e["source"] == source]
            if entries:
                out.setdefault("spread", {})["{}:{}".format(key, source)] = {
                    "rows_per_s_last_over_first": entries[-1]["rows_per_s"] / entries[0]["rows_per_s"],
                    "driver_cpu_per_row_last_over_first": (
                        entries[-1]["driver_cpu_seconds_per_100k_rows"] / entries[0]["driver_cpu_seconds_per_100k_rows"]
                        if entries[0]["driver_cpu_seconds_per_100k_rows"] else None)}
                if entries[0].get("source_rows_per_s") and entries[-1].get("source_rows_per_s"):
                    out["spread"]["{}:{}".format(key, source)]["source_rows_per_s_last_over_first"] = (
                        entries[-1]["source_rows_per_s"] / entries[0]["source_rows_per_s"])
    out["nodes"] = by_nodes(bench)
    return out
