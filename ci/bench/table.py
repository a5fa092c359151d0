"""The README's Speed section as Markdown, generated from a benchmark result (``ci/results/bench.json``).

    python ci/bench/table.py [ci/results/bench.json]

Pure: reads the JSON, prints Markdown; every figure in the output comes from the file, so the
README and the measured run cannot disagree. It names the machine and the load it ran under.
"""
import json
import os
import sys

SOURCE_NAMES = {"rdd": "Spark RDD", "dataframe": "Spark DataFrame (Arrow)", "raydata": "Ray Dataset"}
DATA_NAMES = {"mnist": "MNIST", "tiny": "int64"}
LIMIT_NAMES = {"spark_rdd_iter": "Spark iterating the RDD in its Python workers",
               "spark_arrow_read": "Spark's Arrow read of the DataFrame (`mapInArrow`)",
               "ray_data_iter": "Ray Data iterating the Dataset in the driver (`iter_batches`)",
               "ray_data_split2": "Ray Data `streaming_split(2)` read by two actors",
               "object_store": "the object store moving the feed's chunks (`ray.put`/`ray.get`)"}


def num(value, digits=0):
    """A figure for the table: thousands separated, ``-`` for none."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return "{:,.{}f}".format(value, digits)


def ratio(value):
    return "-" if value is None else "{:.2f}".format(value)


def machine_line(results):
    m = results.get("machine", {})
    start = m.get("loadavg_at_start") or [None]
    end = m.get("loadavg_at_end") or [None]
    versions = m.get("versions", {})
    shown = ", ".join("{} {}".format(k, v) for k, v in versions.items() if v and k in (
        "ray", "pyspark", "raydp", "tensorflow", "tensorflowonspark"))
    return ("Run {} ({} size, Spark {}, {:.0f} s) on {}, {} cores, {} GB RAM; load average {} at the start and {} at "
            "the end (1-minute; the machine is shared, figures move by about 20% between runs); {}.".format(
                results.get("started_at", "?"), results.get("size", "?"),
                spark_layout(results),
                results.get("total_seconds", 0), m.get("cpu_model", "?"), m.get("nproc", "?"), m.get("ram_gb", "?"),
                num(start[0], 1), num(end[0], 1), shown))


def spark_layout(results):
    """'on Ray (RayDP, 1 executor x 2 cores)' or 'local mode'; runs before the layout was recorded had 2 x 1."""
    if results.get("spark") != "raydp":
        return "local mode"
    layout = results.get("spark_layout") or {"executors": 2, "executor_cores": 1}
    return "on Ray (RayDP, {} executor{} x {} core{})".format(
        layout["executors"], "" if layout["executors"] == 1 else "s",
        layout["executor_cores"], "" if layout["executor_cores"] == 1 else "s")


def feed_table(results):
    feed = results.get("sources") or []
    if not feed:
        return []
    tfos = _peer(results, "tfos_feed_next_batch_100")
    lines = ["| data | source | consumer | rows/s | MB/s | x its limit | CPU-s |"
             + (" x TensorFlowOnSpark feed |" if tfos else ""),
             "| --- | --- | --- | ---: | ---: | ---: | ---: |" + (" ---: |" if tfos else "")]
    for e in feed:
        row = "| {} | {} | `{}` | {} | {} | {} | {} |".format(
            DATA_NAMES.get(e["data"], e["data"]), SOURCE_NAMES.get(e["source"], e["source"]), e["consumer"],
            num(e["rows_per_s"]), num(e["mb_per_s"], 1), ratio(e.get("ratio_to_limit")), num(e.get("cpu_seconds"), 2))
        if tfos:
            row += " {} |".format(ratio(e["rows_per_s"] / tfos["peer_value"]) if e["data"] == "mnist" else "")
        lines.append(row)
    samples = {len(e.get("samples") or []) for e in feed}
    pairs = {len(e.get("limit_feed_pairs") or []) for e in feed} - {0}
    if samples:
        lines += ["", "A feed is one epoch; rows/s is the best of {} feeds{}.".format(
            "/".join(str(n) for n in sorted(samples)),
            ", x its limit the median of their ratios to the limit timed right before each ({} pairs)".format(
                "/".join(str(n) for n in sorted(pairs))) if pairs else "")]
    return lines


def limits_table(results):
    limits = results.get("limits") or {}
    if not limits:
        return []
    lines = ["| limit (no feeding, same data) | data | rows/s | MB/s |", "| --- | --- | ---: | ---: |"]
    for kind, figures in limits.items():
        for name, f in figures.items():
            lines.append("| {} | {} | {} | {} |".format(LIMIT_NAMES.get(name, name), DATA_NAMES.get(kind, kind),
                                                        num(f["rows_per_s"]), num(f["mb_per_s"], 1)))
    return lines


def training_table(results):
    t = results.get("training")
    if not t:
        return []
    rounds = t.get("rounds", 1)
    lines = ["Training: tf_keras {} under MultiWorkerMirroredStrategy on 2 nodes, {:,} rows, global batch {}, "
             "{} epochs (timed {}){}.".format(
                 t["model"], t["rows"], t["global_batch"], t["epochs"], t["timed_epochs"],
                 "; {} rounds, each running every input once in turn: medians, a ratio is the median of the "
                 "rounds' ratios".format(rounds) if rounds > 1 else ""),
             "", "| input | steps/s | steps/epoch | x in-memory | x in-memory, every epoch timed |" + (
                 " each round |" if rounds > 1 else ""),
             "| --- | ---: | ---: | ---: | ---: |" + (" --- |" if rounds > 1 else "")]
    every = t.get("ratios_all_epochs", {})
    for mode, r in t["runs"].items():
        name = "in-memory `tf.data`" if mode == "in_memory" else "fed from " + SOURCE_NAMES.get(
            mode.split(":", 1)[1], mode)
        line = "| {} | {} | {} | {} | {} |".format(name, num(r["steps_per_s"], 1), r["steps_per_epoch"],
                                                  ratio(t["ratios"].get(mode, 1.0)),
                                                  ratio(every.get(mode, 1.0)) if every else "-")
        if rounds > 1:   # the in-memory row: its rates; a fed row: its ratio within each round
            each = t["rounds_ratios"][mode] if mode != "in_memory" else None
            line += " {} |".format(", ".join(ratio(x) for x in each) if each else ", ".join(
                num(x, 1) + " steps/s" for x in r["rounds_steps_per_s"]))
        lines.append(line)
    cached = ["{} {} of {}".format(SOURCE_NAMES.get(mode.split(":", 1)[1], mode), r["cached_epochs"], t["epochs"])
              for mode, r in t["runs"].items() if mode != "in_memory" and "cached_epochs" in r]
    if cached:
        lines += ["", "Epochs fed from the epoch cache (the rest from the source): {}.".format(", ".join(cached))]
    return lines


def _peer(results, name):
    for c in (results.get("peers") or {}).get("comparisons", []):
        if c["name"] == name:
            return c
    return None


def _std_warmth(run):
    """Whether a spark-tensorflow-distributor run found TensorFlow imported, and its import time (newer runs)."""
    if "tensorflow_imported_before" not in run:
        return ""
    if run["tensorflow_imported_before"]:
        return " (TensorFlow was imported in its Python workers already)"
    return " (its Python workers imported TensorFlow: {:.1f} s{})".format(
        run["tensorflow_import_seconds"], ", mean" if len(run.get("rounds", ())) > 1 else "")


def peers_table(results):
    peers = results.get("peers")
    if not peers:
        return []
    lines = ["| figure | raytfnode | peer | raytfnode / peer | raytfnode ahead |",
             "| --- | ---: | ---: | ---: | --- |"]
    for c in peers.get("comparisons", []):
        digits = c.get("digits", 0)
        lines.append("| {} | {} | {} | {} | {} |".format(
            c["what"], num(c.get("ours"), digits), num(c.get("peer_value"), digits), ratio(c.get("ratio")),
            "-" if c.get("ahead") is None else ("yes" if c["ahead"] else "**no**")))
    out = lines
    std = (peers.get("spark_standalone") or {}).get("std") or {}
    if "steps_per_s" in std:
        if len(std.get("rounds", ())) > 1:
            out += ["", "* spark-tensorflow-distributor's runs (each a Spark application of its own): {} steps/s, "
                    "first step {} s after launch{}".format(
                        " and ".join("{:.1f}".format(run["steps_per_s"]) for run in std["rounds"]),
                        " and ".join("{:.1f}".format(run["seconds_to_first_step"]) for run in std["rounds"]),
                        _std_warmth(std))]
        else:
            out += ["", "* spark-tensorflow-distributor's run: {:.1f} steps/s, first step {:.1f} s after "
                    "launch{}".format(std["steps_per_s"], std["seconds_to_first_step"], _std_warmth(std))]
        around = peers.get("in_memory_around_spark_peers")
        if around:
            out += ["* raytfnode in-memory just before and just after the standalone peers: {} steps/s, first step "
                    "{} s after launch".format(" and ".join("{:.1f}".format(v) for v in around["steps_per_s"]),
                                               " and ".join("{:.1f}".format(v) for v in around["seconds_to_first_step"]))]
    for name, why in (peers.get("not_measured") or {}).items():
        out += ["", "* {} was not measured: {}".format(name, why)]
    return out


def startup_memory_lines(results):
    out = []
    s = results.get("startup")
    if s and s.get("run_seconds_median") is not None:
        ready = s.get("ready_seconds_median")
        out.append("* `run()` of a 2-node cluster with `import_tensorflow=True` (each node starts importing "
                   "TensorFlow once it is placed and has loaded `map_fun`; `run()` does not wait for it): {:.2f} s median (min {:.2f}; {}`import tensorflow` "
                   "alone {} s in a fresh process; {} s with `import_tensorflow=False`); `shutdown()` of the running "
                   "nodes {:.2f} s median.".format(
                       s["run_seconds_median"], s["run_seconds_min"],
                       "every node ready {:.2f} s after the call; ".format(ready) if ready is not None else "",
                       num(s.get("python_import_tensorflow_seconds"), 1),
                       ", ".join("{:.2f}".format(x) for x in s["run_seconds_without_tf"]), s["shutdown_seconds_median"]))
    m = results.get("memory")
    if m:
        out.append("* Memory: feeding {:.0f}x the queues' byte bound ({:,} MB through {} x {:g} MiB queues, {:g} MiB "
                   "chunks) to slow readers, the queues held at most {:.1f} MB; the object store peaked {:.1f} MB "
                   "above its baseline, {:.2f}x the bound of queues plus one chunk per producer ({:.1f} MB). Ray "
                   "frees a read object {} s after its last reference is dropped. Consumer RSS {} -> {} MB.".format(
                       m["fed_over_queue_bytes"], m["fed_bytes"] // 10 ** 6, m["nodes"], m["queue_max_bytes"] / 2 ** 20,
                       m["chunk_bytes"] / 2 ** 20, m["queued_peak_bytes"] / 1e6,
                       m["store_peak_over_baseline_bytes"] / 1e6, m["peak_over_bound"], m["bound_bytes"] / 1e6,
                       num(m.get("free_delay_seconds"), 2), [round(b / 1e6) for b in m["consumer_rss_baseline_bytes"]],
                       [round(b / 1e6) for b in m["consumer_rss_peak_bytes"]]))
        if m.get("pinned_over_bound") is not None:
            out.append("* What the feed holds, the store's bytes pinned as primary copies (a read object is "
                       "unpinned as soon as its last reference is gone, and stays counted as used until Ray's "
                       "batched free; the store evicts it when it needs the room): at most {:.1f} MB above its "
                       "baseline, {:.2f}x the bound.".format(m["pinned_peak_over_baseline_bytes"] / 1e6,
                                                            m["pinned_over_bound"]))
        f = m.get("fit")
        if f:
            out.append("* In a new Ray whose object store is {:.2f}x the bound ({:.1f} MB; {} x {:g} MiB queues, "
                       "{:g} MiB chunks, {} producers; Ray spills once pinned objects pass {:.0%} of its store, "
                       "{:.2f}x the bound), "
                       "{:.1f}x the bound fed to readers sleeping {:g} s per 1,000 rows at {:.0f} MB/s: {:.1f} MB "
                       "spilled, {:.1f} MB allocated outside the store ({}); bytes used peaked at {:.1f} MB ({:.2f}x the "
                       "bound: read objects awaiting Ray's batched free filled the store), pinned at {:.1f} MB "
                       "({:.2f}x).".format(
                           f["store_over_bound"], f["store_bytes"] / 1e6, f["nodes"], f["queue_max_bytes"] / 2 ** 20,
                           f["chunk_bytes"] / 2 ** 20, f["producers"], f.get("spilling_threshold", 0.8),
                           f.get("spilling_threshold", 0.8) * f["store_over_bound"], f["fed_over_bound"], f["reader_sleep"],
                           f["feed_mb_per_s"], f["spilled_bytes"] / 1e6, f["fallback_bytes"] / 1e6,
                           "it fits" if f["fits"] else "it did not fit",
                           f["store_used_peak_bytes"] / 1e6, f["store_used_peak_bytes"] / f["bound_bytes"],
                           f["pinned_peak_over_baseline_bytes"] / 1e6,
                           f["pinned_peak_over_baseline_bytes"] / f["bound_bytes"]))
    return out


def _scaling_repeat(results):
    sizes = results.get("sizes") or {}
    return sizes.get("scaling_repeat", sizes.get("repeat", "-"))


def scaling_table(results):
    s = results.get("scaling")
    if not s:
        return []
    lines = ["| work | source | rows | partitions | rows/s | first feed, rows/s | driver CPU-s per 100k rows | "
             "source's own read, rows/s | ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in ("rows", "partitions"):
        for e in s.get(key, []):
            lines.append("| {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
                "more rows" if key == "rows" else "more partitions", SOURCE_NAMES.get(e["source"], e["source"]),
                num(e["rows"]), e["partitions"], num(e["rows_per_s"]), num(e.get("first_rows_per_s")),
                num(e["driver_cpu_seconds_per_100k_rows"], 3), num(e.get("source_rows_per_s")),
                num(e.get("rows_per_s_over_source"), 2)))
    epochs = {}   # source -> the epochs of its feeds
    for key in ("rows", "partitions"):
        for e in s.get(key, []):
            epochs.setdefault(SOURCE_NAMES.get(e["source"], e["source"]), set()).add(e.get("epochs", 1))
    if any(counts != {1} for counts in epochs.values()):
        feeds = " and ".join("{} epochs from a {}".format("/".join(str(n) for n in sorted(counts)), name)
                             for name, counts in epochs.items())
        lines += ["", "A feed above is {}, each epoch read from the source (a Spark source without its epoch "
                      "cache), best of {}; the first feed checks a Ray Dataset's blocks and joins its small "
                      "ones.".format(feeds, _scaling_repeat(results))]
    if any(e.get("source_rows_per_s") for key in ("rows", "partitions") for e in s.get(key, [])):
        lines += ["", "The source's own read is Spark's Arrow read (`mapInArrow` counting rows) of the same "
                      "cached DataFrame coalesced into the tasks the feed uses, one epoch right before each "
                      "feed, best of those; ratio is the feed's rows/s over it."]
    nodes = s.get("nodes") or []
    if nodes:
        lines += ["", "Nodes ({} MNIST, arrays): {}.".format(SOURCE_NAMES.get(nodes[0]["source"], nodes[0]["source"]),
                                                             ", ".join("{} -> {} rows/s".format(e["nodes"],
                                                                                               num(e["rows_per_s"]))
                                                                       for e in nodes))]
    return lines


def targets_table(results):
    targets = results.get("targets") or {}
    if not targets:
        return []
    lines = ["| target | value | goal | met |", "| --- | ---: | --- | --- |"]
    for name, t in targets.items():
        value = t.get("value")
        shown = ratio(value) if isinstance(value, float) else value
        if t.get("store_used_over_bound") is not None:
            shown += " (store bytes used {})".format(ratio(t["store_used_over_bound"]))
        lines.append("| {} | {} | {} | {} |".format(name, shown, t["goal"], "yes" if t["met"] else "**no**"))
    return lines


KNOWN = {"started_at", "spark", "size", "measurements", "sizes", "note", "errors", "measurement_seconds",
         "total_seconds", "machine", "chunk_bytes_default", "targets", "spark_start_seconds", "limits", "sources",
         "training", "startup", "memory", "scaling", "peers", "spark_layout"}


def other_sections(results):
    """A measurement this script does not know (``pipeline``, ``tfrecords``): its top-level figures."""
    out = []
    for name, value in results.items():
        if name in KNOWN or not isinstance(value, dict):
            continue
        out += ["", "### {}".format(name), "", "| figure | value |", "| --- | ---: |"]
        for key, figure in value.items():
            if isinstance(figure, (int, float, str)) and not isinstance(figure, bool):
                out.append("| {} | {} |".format(key, num(figure, 2) if isinstance(figure, float) else figure))
    return out


def markdown(results):
    """The whole Speed section body for ``results`` (a loaded bench.json)."""
    parts = [[machine_line(results)]]
    for title, lines in (("Feed", feed_table(results)), ("Limits", limits_table(results)),
                         ("Training", training_table(results)),
                         ("Peers, measured in the same run", peers_table(results)),
                         ("Start-up and memory", startup_memory_lines(results)),
                         ("Cost as the work grows", scaling_table(results)), ("Targets", targets_table(results))):
        if lines:
            parts.append(["### " + title, ""] + lines)
    extra = other_sections(results)
    if extra:
        parts.append(extra[1:])
    if results.get("errors"):
        parts.append(["### Failed measurements", ""] + ["* {}: {}".format(k, v) for k, v in results["errors"].items()])
    return "\n\n".join("\n".join(p) for p in parts)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    path = argv[0] if argv else os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                             "results", "bench.json")
    with open(path) as f:
        print(markdown(json.load(f)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
