"""The targets of the performance issues, judged from one run's results (pure: results in, targets out)."""
import statistics

from bench.common import CONSUMERS, DATASETS, LIMIT_OF

FEED_GOAL = 0.70
TRAINING_GOAL = 0.90
STORE_GOAL = 1.20       # object-store peak over (nodes x queue_max_bytes + producers x chunk_bytes)
FLAT_GOAL = 0.80        # a "flat" cost: the largest work keeps at least this share of the smallest one's rate


def annotate_feed(results):
    """Adds to every feed entry its limit, the ratio to it and to the object store's rate."""
    limits = results.get("limits", {})
    for e in results.get("sources", []):
        e["limit"] = LIMIT_OF[e["source"]]
        if e.get("limit_feed_pairs"):
            e["ratio_to_limit"] = statistics.median(lim / fed for lim, fed in e["limit_feed_pairs"])
        elif limits.get(e["data"], {}).get(e["limit"]):
            e["ratio_to_limit"] = e["rows_per_s"] / limits[e["data"]][e["limit"]]["rows_per_s"]
        store = limits.get(e["data"], {}).get("object_store", {}).get("rows_per_s")
        e["ratio_to_object_store"] = e["rows_per_s"] / store if store else None


def evaluate(results, chunk_bytes):
    """{target name: {goal, value, met, ...}} for every target the run has figures for."""
    annotate_feed(results)
    targets = {}
    feed = results.get("sources", [])
    default = [e for e in feed if e["consumer"] in CONSUMERS]
    if default and all(e.get("ratio_to_limit") is not None for e in default):
        for source, name in (("rdd", "rdd_feed_vs_spark_rdd_iter"), ("dataframe", "dataframe_feed_vs_arrow_read"),
                             ("raydata", "raydata_feed_vs_ray_data_iter")):
            arrays = [e["ratio_to_limit"] for e in default if e["source"] == source and e["consumer"] == "arrays"]
            every = [e["ratio_to_limit"] for e in default if e["source"] == source]
            targets[name] = {"goal": ">= {:.2f} (arrays consumer, worst data set, {:g} MB chunks)".format(
                                 FEED_GOAL, chunk_bytes / 2 ** 20),
                             "value": min(arrays), "range_all_consumers": [min(every), max(every)],
                             "met": min(arrays) >= FEED_GOAL}
        rate = {(e["data"], e["source"], e["consumer"]): e["rows_per_s"] for e in default}
        cases = [(k, c) for k in DATASETS for c in CONSUMERS]
        faster = [case for case in cases if rate[(case[0], "dataframe", case[1])] > rate[(case[0], "rdd", case[1])]]
        targets["dataframe_feed_faster_than_rdd_feed"] = {"goal": "in every data set x consumer case",
                                                          "value": "{}/{} cases".format(len(faster), len(cases)),
                                                          "met": len(faster) == len(cases)}
    training = results.get("training")
    if training and training.get("ratios"):
        # every epoch timed when the run has it: the first epoch is the one a fed run reads from its source
        every = "ratios_all_epochs" in training
        for mode, ratio in training.get("ratios_all_epochs", training["ratios"]).items():
            if mode.split(":", 1)[1] in ("rdd", "dataframe"):
                targets["training_" + mode.replace(":", "_") + "_vs_in_memory"] = {
                    "goal": ">= {:.2f} over {} epochs{}".format(TRAINING_GOAL, training["epochs"],
                                                                 ", every epoch timed" if every else ""),
                    "value": ratio, "met": ratio >= TRAINING_GOAL}
    memory = results.get("memory")
    if memory:
        # what the feed holds is what Ray keeps pinned; "used" adds read objects Ray has unpinned and
        # frees in batches (evicted when the store needs the room: see bench.memory_fit)
        held = memory.get("pinned_over_bound")
        targets["object_store_bound"] = {
            "goal": "peak <= {:.1f} x (nodes*queue_max_bytes + producers*chunk_bytes), store bytes pinned{}".format(
                STORE_GOAL, "" if held is not None else " (not measured: store bytes used)"),
            "value": held if held is not None else memory["peak_over_bound"],
            "store_used_over_bound": memory["peak_over_bound"],
            "met": (held if held is not None else memory["peak_over_bound"]) <= STORE_GOAL}
        fit = memory.get("fit")
        if fit:
            targets["object_store_fits_small_store"] = {
                "goal": "{:.1f}x the bound fed to slow readers through a store of {:.2f}x the bound (Ray spills "
                        "once pinned objects pass {:.0%} of it, {:.2f}x the bound): 0 bytes spilled or allocated outside "
                        "it".format(fit["fed_over_bound"], fit["store_over_bound"], fit["spilling_threshold"],
                                    fit["spilling_threshold"] * fit["store_over_bound"]),
                "value": "{:.1f} MB spilled, {:.1f} MB outside; used peak {:.2f}x, pinned {:.2f}x the bound".format(
                    fit["spilled_bytes"] / 1e6, fit["fallback_bytes"] / 1e6, fit["store_used_peak_bytes"] / fit["bound_bytes"],
                    fit["pinned_peak_over_baseline_bytes"] / fit["bound_bytes"]),
                "met": fit["fits"]}
    startup = results.get("startup")
    if startup and startup.get("run_seconds_median") is not None:
        run_s, stop_s = startup["run_seconds_median"], startup["shutdown_seconds_median"]
        targets["run_seconds"] = {"goal": "< 5 (median, import_tensorflow=True)", "value": run_s, "met": run_s < 5}
        targets["shutdown_seconds"] = {"goal": "< 1 (median)", "value": stop_s, "met": stop_s < 1}
    scaling = results.get("scaling")
    if scaling and scaling.get("spread"):
        for name, spread in scaling["spread"].items():
            rate_kept = spread["rows_per_s_last_over_first"]
            cpu_grew = spread["driver_cpu_per_row_last_over_first"]
            met = rate_kept >= FLAT_GOAL and (cpu_grew is None or cpu_grew <= 1 / FLAT_GOAL)
            targets["flat_" + name.replace(":", "_")] = {
                "goal": "largest/smallest: rows/s >= {:.2f}x, driver CPU per row <= {:.2f}x".format(
                    FLAT_GOAL, 1 / FLAT_GOAL),
                "value": "rows/s {:.2f}x, driver CPU/row {}{}".format(
                    rate_kept, "-" if cpu_grew is None else "{:.2f}x".format(cpu_grew),
                    "" if spread.get("source_rows_per_s_last_over_first") is None else
                    " (Spark's own Arrow read of the same partitions in the same tasks: rows/s {:.2f}x)".format(
                        spread["source_rows_per_s_last_over_first"])),
                "met": met}
    peers = results.get("peers")
    if peers and peers.get("comparisons"):
        for c in peers["comparisons"]:
            if c.get("ratio") is not None:
                targets["ahead_of_" + c["name"]] = {
                    "goal": "raytfnode / peer {} 1 ({})".format(">" if c["higher_is_better"] else "<", c["what"]),
                    "value": c["ratio"], "met": c["ahead"]}
    return targets
