"""Reports that TF nodes write for the driver: one JSON file per node, read back after the run.

Every Ray worker of the tests runs on this host, so a node's ``map_fun`` writes
its report into a directory of the test's ``tmp_path`` and the test reads them
all. Test modules whose map_funs call these register this module with
``register_pickle_by_value`` (Ray actors and Spark workers cannot import it).
"""
import glob
import json
import os
import time


def write_node_report(out_dir, ctx, report):
    """Writes ``report`` (a dict) for this node, atomically, with its ``node`` name (``worker:0``)."""
    path = os.path.join(out_dir, "{}-{}.json".format(ctx.job_name, ctx.task_index))
    with open(path + ".tmp", "w") as f:
        json.dump(dict(report, node="{}:{}".format(ctx.job_name, ctx.task_index)), f)
    os.replace(path + ".tmp", path)


def read_node_reports(out_dir):
    """The reports in ``out_dir`` by node name."""
    reports = {}
    for path in sorted(glob.glob(os.path.join(str(out_dir), "*.json"))):
        with open(path) as f:
            report = json.load(f)
        reports[report["node"]] = report
    return reports


def wait_for_file(path, seconds=120):
    """Waits for a file a node (or the driver) writes when it reached a point: a hang guard, not a delay."""
    deadline = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError("{} did not appear within {} s".format(path, seconds))
        time.sleep(0.05)
