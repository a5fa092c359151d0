"""A second driver on the same Ray cluster finds a raytfnode cluster's actors by name and can do nothing with them.

The cluster's queue actors hold fed rows (chunks) while its nodes wait; the
second driver (a separate process, joined to the same Ray cluster) lists every
named actor, takes those of the cluster and calls every kind of method it can:
reading rows, putting rows, setting a node's error, terminating the feed. Each
call is refused, and the training that runs meanwhile gets every row exactly
once with no error.
"""
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import ray
import ray.cloudpickle
from conftest import subprocess_env

from raytfnode import TFCluster

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])   # Ray workers cannot import this test module

SECOND_DRIVER = textwrap.dedent("""
    import json, sys
    import ray

    ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
    prefix = "raytfnode-" + sys.argv[2]
    found = [entry for entry in ray.util.list_named_actors(all_namespaces=True) if entry["name"].startswith(prefix)
             and ("-queues-" in entry["name"] or entry["name"].endswith("-coordinator"))]
    attempts = [("take", ("input",)), ("put_item", ("input", "poison")), ("set_error", ("intruder was here",)),
                ("kv_set", ("state", "stopped")), ("terminate", ("intruder:0",)), ("stats", ())]
    outcomes = {}
    for entry in found:
        actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
        for method, args in attempts:
            for how, call in (("direct", lambda: getattr(actor, method).remote(*args)),
                              ("no secret", lambda: actor.call.remote(None, method, *args)),
                              ("guessed secret", lambda: actor.call.remote(b"0" * 32, method, *args))):
                try:
                    ray.get(call(), timeout=30)
                    outcome = "ANSWERED"
                except Exception as exc:  # noqa: BLE001
                    outcome = "{}: {}".format(type(exc).__name__, str(exc).strip().splitlines()[-1][:200])
                outcomes["{} {} {}".format(entry["name"], method, how)] = outcome
    print(json.dumps({"actors": sorted(entry["name"] for entry in found), "outcomes": outcomes}))
""")


def _read_after_go(args, ctx):
    """Waits for the test's go-ahead, then reads every row and writes them to ``<out>/<node>.json``."""
    while not os.path.exists(args["go"]):
        time.sleep(0.1)
    feed = ctx.get_data_feed()
    rows = []
    while not feed.should_stop():
        rows.extend(int(v) for v in feed.next_batch(50))
    with open(os.path.join(args["out"], "{}-{}.json".format(ctx.job_name, ctx.task_index)), "w") as f:
        json.dump(rows, f)


def _ray_auth():
    """The token-authentication mode of this Ray cluster: a second driver joins it as a real one would."""
    return {"RAY_AUTH_MODE": os.environ["RAY_AUTH_MODE"]} if os.environ.get("RAY_AUTH_MODE") else {}


@pytest.mark.timeout(600)
def test_a_second_driver_that_finds_the_actors_by_name_can_neither_read_nor_change_a_feed(ray_cluster, no_leftovers,
                                                                                          tmp_path):
    go = tmp_path / "go"
    partitions = [list(range(p * 500, p * 500 + 500)) for p in range(4)]
    cluster = TFCluster.run(None, _read_after_go, {"go": str(go), "out": str(tmp_path)}, 2, 0,
                            input_mode=TFCluster.InputMode.SPARK, import_tensorflow=False, queue_max_bytes=1 << 20)
    reports = []
    feeder = threading.Thread(target=lambda: reports.append(cluster.train(partitions, num_epochs=1)), daemon=True)
    try:
        feeder.start()
        deadline = time.monotonic() + 120   # rows wait in the queues: something worth stealing
        while sum(ray.get(q.stats.remote())["fed_rows"] for q in cluster.queue_actors) == 0:
            assert time.monotonic() < deadline, "nothing was fed"
            time.sleep(0.1)
        done = subprocess.run([sys.executable, "-c", SECOND_DRIVER, ray.get_runtime_context().gcs_address,
                               cluster.cluster_id], env=subprocess_env(**_ray_auth()), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
        go.touch()
        feeder.join(240)
    finally:
        go.touch()
        cluster.shutdown(timeout=120)
    queue_names = ["raytfnode-{}-queues-{}".format(cluster.cluster_id, i) for i in range(2)]
    assert set(queue_names + ["raytfnode-{}-coordinator".format(cluster.cluster_id)]) == set(seen["actors"])
    outcomes = seen["outcomes"]
    assert outcomes and not [call for call, outcome in outcomes.items() if outcome == "ANSWERED"], outcomes
    for call, outcome in outcomes.items():
        if call.endswith("direct"):
            assert outcome.startswith("AttributeError"), (call, outcome)       # the actor offers only call()
        else:
            assert "without the cluster's secret" in outcome, (call, outcome)
    report, = reports
    assert report["consumed"] == report["rows"] == 2000 and not report["skipped"], report
    rows = [row for i in range(2) for row in json.load(open(tmp_path / "worker-{}.json".format(i)))]
    assert sorted(rows) == list(range(2000))      # nothing stolen, nothing put in
