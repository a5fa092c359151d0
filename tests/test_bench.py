"""ci/bench.py runs end to end in its small mode and reports what it measured.

The benchmark starts its own Ray and Spark (local mode here, to keep it short), so this test
does not use the session's Ray. No speed is asserted: the machine is shared and the sizes are
tiny; the test checks that every section ran, printed its part of the table and wrote its
figures to the JSON file.
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import subprocess_env

BENCH = Path(__file__).resolve().parents[1] / "ci" / "bench.py"
CONSUMERS = {"next_batch(100)", "next_batch(1000)", "arrays"}
SOURCES = {"rdd", "dataframe", "raydata"}


@pytest.mark.spark
@pytest.mark.timeout(900)
def test_bench_tiny_prints_the_table_and_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, str(BENCH), "--tiny", "--spark", "local", "--out", str(out)],
                              cwd=str(tmp_path), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=840)
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail("bench.py --tiny did not finish; its output ended with:\n{}".format(output[-6000:]))
    seconds = time.monotonic() - started
    output = done.stdout
    assert done.returncode == 0, "bench.py --tiny exited with {} after {:.0f} s:\n{}".format(
        done.returncode, seconds, output[-8000:])
    print("bench.py --tiny: {:.0f} s".format(seconds))

    # the table
    table = output[output.index("raytfnode benchmark"):]
    for heading in ("machine: nproc=", "Limits (no feeding", "Feed into DataFeed", "TensorFlowOnSpark reference",
                    "QUOTED", "Training:", "Start-up / shutdown", "Memory,", "Scaling", "Targets",
                    "JSON written to {}".format(out)):
        assert heading in table, "the table has no {!r}:\n{}".format(heading, table)
    for source in SOURCES:
        assert "\n  {} ".format(source) in table, table

    # the JSON
    results = json.loads(out.read_text())
    for key in ("machine", "limits", "feed", "reference", "training", "startup", "memory", "scaling", "targets",
                "total_seconds", "section_seconds"):
        assert key in results, "bench.json has no {!r}: {}".format(key, sorted(results))
    assert set(results["section_seconds"]) == {"limits", "feed", "training", "startup", "memory", "scaling"}
    machine = results["machine"]
    assert machine["nproc"] >= 1 and machine["ram_gb"] > 0 and machine["cpu_model"]

    for kind in ("mnist", "tiny"):
        for name in ("spark_rdd_iter", "spark_arrow_read", "ray_data_iter", "object_store"):
            figure = results["limits"][kind][name]
            assert figure["rows_per_s"] > 0 and figure["mb_per_s"] > 0 and figure["samples"], (kind, name, figure)

    feed = results["feed"]
    cases = {(e["data"], e["source"], e["consumer"]) for e in feed}
    assert cases == {(k, s, c) for k in ("mnist", "tiny") for s in SOURCES for c in CONSUMERS}, cases
    for entry in feed:
        assert entry["rows"] > 0 and entry["rows_per_s"] > 0 and entry["mb_per_s"] > 0, entry
        assert entry["ratio_to_limit"] > 0 and entry["limit"] in ("spark_rdd_iter", "spark_arrow_read",
                                                                  "ray_data_iter"), entry
        if entry["data"] == "mnist":
            assert entry["ratio_to_tfos_quoted"] > 0, entry
    assert results["reference"]["tfos_rows_per_s"] == 3300 and "quoted" in results["reference"]["kind"]

    training = results["training"]
    assert training["runs"]["in_memory"]["steps_per_s"] > 0
    assert training["ratios"] and all(r > 0 for r in training["ratios"].values()), training["ratios"]

    startup = results["startup"]
    assert startup["run_seconds_median"] > 0 and startup["shutdown_seconds_median"] >= 0

    memory = results["memory"]
    assert memory["fed_bytes"] >= 5 * memory["queue_max_bytes"], memory
    assert memory["store_peak_bytes"] > 0 and all(b > 0 for b in memory["consumer_rss_peak_bytes"]), memory

    assert [e["nodes"] for e in results["scaling"]] == [1, 2]
    assert all(e["rows_per_s"] > 0 for e in results["scaling"])

    for name in ("rdd_feed_vs_spark_rdd_iter", "dataframe_feed_vs_arrow_read", "raydata_feed_vs_ray_data_iter",
                 "dataframe_feed_faster_than_rdd_feed", "feed_training_vs_in_memory", "object_store_bound",
                 "run_seconds", "shutdown_seconds"):
        assert name in results["targets"] and isinstance(results["targets"][name]["met"], bool), name
