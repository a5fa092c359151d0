"""The benchmark package (ci/bench/) runs end to end in its small mode and reports what it measured.

The benchmark starts its own Ray and Spark (local mode here, to keep it short), so this test
does not use the session's Ray. No speed is asserted: the machine is shared and the sizes are
tiny; the test checks that every measurement ran, wrote its figures to the JSON file, and that the
Markdown table generated from that file shows the file's figures. The peers (``--peers``) are not
run here: they start a Spark standalone cluster and take minutes.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import subprocess_env

CI = Path(__file__).resolve().parents[1] / "ci"
BENCH = CI / "bench"
CONSUMERS = {"next_batch(100)", "next_batch(1000)", "arrays"}
SOURCES = {"rdd", "dataframe", "raydata"}
MEASUREMENTS = ["limits", "sources", "training", "startup", "memory", "scaling"]


def run(args, timeout, cwd):
    try:
        return subprocess.run([sys.executable] + args, cwd=str(cwd), env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail("{} did not finish; its output ended with:\n{}".format(args, output[-6000:]))


def test_bench_refuses_an_unknown_measurement(tmp_path):
    done = run([str(BENCH), "--only", "limits,no_such_measurement"], 120, tmp_path)
    assert done.returncode == 2, done.stdout[-3000:]
    assert "no_such_measurement" in done.stdout and "sources" in done.stdout, done.stdout[-3000:]


@pytest.mark.spark
@pytest.mark.timeout(900)
def test_bench_tiny_writes_json_and_table_py_renders_its_figures(tmp_path):
    out = tmp_path / "bench.json"
    started = time.monotonic()
    done = run([str(BENCH), "--tiny", "--spark", "local", "--only", ",".join(MEASUREMENTS), "--out", str(out)], 840,
               tmp_path)
    seconds = time.monotonic() - started
    output = done.stdout
    assert done.returncode == 0, "bench --tiny exited with {} after {:.0f} s:\n{}".format(
        done.returncode, seconds, output[-8000:])
    print("bench --tiny: {:.0f} s".format(seconds))

    results = json.loads(out.read_text())
    assert results["measurements"][:len(MEASUREMENTS)] == MEASUREMENTS, results["measurements"]
    assert not results["errors"], results["errors"]
    assert set(MEASUREMENTS) <= set(results["measurement_seconds"])
    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["ram_gb"] > 0 and machine["cpu_model"]
    assert len(machine["loadavg_at_start"]) == 3 and len(machine["loadavg_at_end"]) == 3
    assert results["spark_layout"]["master"] == "local[2]", results["spark_layout"]   # what Spark the figures had

    for kind in ("mnist", "tiny"):
        for name in ("spark_rdd_iter", "spark_arrow_read", "ray_data_iter", "object_store"):
            figure = results["limits"][kind][name]
            assert figure["rows_per_s"] > 0 and figure["mb_per_s"] > 0 and figure["samples"], (kind, name, figure)

    feed = results["sources"]
    cases = {(e["data"], e["source"], e["consumer"]) for e in feed}
    assert cases == {(k, s, c) for k in ("mnist", "tiny") for s in SOURCES for c in CONSUMERS}, cases
    for entry in feed:
        assert entry["rows"] > 0 and entry["rows_per_s"] > 0 and entry["mb_per_s"] > 0, entry
        assert entry["ratio_to_limit"] > 0 and entry["limit"] in ("spark_rdd_iter", "spark_arrow_read",
                                                                  "ray_data_iter"), entry

    training = results["training"]
    assert training["runs"]["in_memory"]["steps_per_s"] > 0
    assert all(run["seconds_to_first_step"] > 0 for run in training["runs"].values()), training["runs"]
    assert training["ratios"] and all(r > 0 for r in training["ratios"].values()), training["ratios"]

    startup = results["startup"]
    assert startup["run_seconds_median"] > 0 and startup["shutdown_seconds_median"] >= 0

    memory = results["memory"]
    assert memory["fed_bytes"] >= 5 * memory["queue_max_bytes"], memory
    assert memory["store_peak_bytes"] > 0 and all(b > 0 for b in memory["consumer_rss_peak_bytes"]), memory
    # pinned bytes are part of the bytes used; the child Ray's store is sized from the bound and took the feed
    assert 0 < memory["pinned_peak_over_baseline_bytes"] <= memory["store_peak_over_baseline_bytes"], memory
    fit = memory["fit"]
    assert fit["store_bytes"] == int(1.5 * fit["bound_bytes"]) and fit["fed_bytes"] > fit["bound_bytes"], fit
    assert 0 < fit["pinned_peak_over_baseline_bytes"] <= fit["store_used_peak_bytes"] <= fit["store_bytes"], fit
    assert fit["fits"] == (fit["spilled_bytes"] == 0 and fit["fallback_bytes"] == 0), fit

    scaling = results["scaling"]
    assert [e["rows"] for e in scaling["rows"]] == results["sizes"]["scaling_rows"]
    assert {(e["source"], e["partitions"]) for e in scaling["partitions"]} == {
        (s, p) for s in ("raydata", "dataframe") for p in results["sizes"]["scaling_partitions"]}
    assert all(e["rows_per_s"] > 0 and e["driver_cpu_seconds"] >= 0 for e in scaling["rows"] + scaling["partitions"])
    spark_fed = [e for e in scaling["partitions"] if e["source"] == "dataframe"]   # beside Spark's own read
    feeds = results["sizes"].get("scaling_repeat", results["sizes"]["repeat"])
    assert spark_fed and all(e["source_rows_per_s"] > 0 and len(e["source_read_seconds"]) == feeds
                             and e["rows_per_s_over_source"] == e["rows_per_s"] / e["source_rows_per_s"]
                             for e in spark_fed)
    assert [e["nodes"] for e in scaling["nodes"]] == [1, 2]

    for name in ("rdd_feed_vs_spark_rdd_iter", "dataframe_feed_vs_arrow_read", "raydata_feed_vs_ray_data_iter",
                 "dataframe_feed_faster_than_rdd_feed", "object_store_bound", "object_store_fits_small_store",
                 "run_seconds", "shutdown_seconds",
                 "flat_rows_raydata", "flat_partitions_dataframe"):
        assert name in results["targets"] and isinstance(results["targets"][name]["met"], bool), name

    # the table the README takes, generated from the file: the machine, the load and the file's figures
    table = run([str(BENCH / "table.py"), str(out)], 60, tmp_path)
    assert table.returncode == 0, table.stdout
    markdown = table.stdout
    assert machine["cpu_model"] in markdown and "{} cores".format(machine["nproc"]) in markdown, markdown
    assert "load average {:.1f}".format(machine["loadavg_at_start"][0]) in markdown, markdown
    assert "Spark local mode" in markdown.splitlines()[0], markdown
    for entry in feed:
        assert "{:,.0f}".format(entry["rows_per_s"]) in markdown, (entry, markdown)
    assert "{:.1f}".format(training["runs"]["in_memory"]["steps_per_s"]) in markdown, markdown
    assert markdown.strip() in output, "the run printed a different table than table.py makes of its JSON"


def test_spark_tensorflow_distributor_runs_are_averaged_and_each_is_shown_in_the_table(tmp_path):
    # pure parts of the peers (which this file does not run): bench.peer_spark's summary of its runs, each in
    # a Spark application of its own, and the lines table.py writes under the comparisons
    script = """
import sys
sys.path.insert(0, {ci!r})
from bench.peer_spark import std_summary
from bench.table import peers_table

def run(steps, first):
    return {{"steps_per_s": steps, "seconds_to_first_step": first, "steps_per_epoch": 235,
             "tensorflow_imported_before": False, "tensorflow_import_seconds": first - 5, "seconds_to_train_fn": 1.0}}

std = std_summary([run(60.0, 8.0), run(70.0, 10.0)])
assert (std["steps_per_s"], std["seconds_to_first_step"], len(std["rounds"])) == (65.0, 9.0, 2), std
failed = std_summary([run(60.0, 8.0), {{"error": "RuntimeError: no slots"}}])
assert failed["error"] == "RuntimeError: no slots" and "steps_per_s" not in failed, failed
peers = {{"comparisons": [], "spark_standalone": {{"std": std}},
          "in_memory_around_spark_peers": {{"steps_per_s": [66.0, 64.0], "seconds_to_first_step": [7.0, 7.5]}}}}
print("\\n".join(peers_table({{"peers": peers}})))
""".format(ci=str(CI))
    done = run(["-c", script], 60, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "runs (each a Spark application of its own): 60.0 and 70.0 steps/s, first step 8.0 and 10.0 s" \
        in done.stdout, done.stdout
    assert "TensorFlow: 4.0 s, mean)" in done.stdout, done.stdout
    assert "just before and just after the standalone peers: 66.0 and 64.0 steps/s" in done.stdout, done.stdout
