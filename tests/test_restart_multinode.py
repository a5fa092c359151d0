"""Restarts after a lost machine, on the multi-machine fixture (``multinode_cluster`` in conftest).

Each test adds extra raylets of its own with a resource only they have (``rt``), places the TF nodes
there, removes one of them mid-feed and checks where the restarted nodes run, or the error when the
remaining machines cannot hold the cluster.
"""
import json
import os
import sys
import threading
import time

import pytest
import ray
import ray.cloudpickle

from conftest import assert_no_leftovers
from raytfnode import TFCluster
from raytfnode.errors import ReservationTimeoutError

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(420)]

ROWS = 400


@pytest.fixture
def machines(multinode_cluster):
    """The shared multi-machine cluster; after the test nothing of a raytfnode cluster is left."""
    yield multinode_cluster
    assert_no_leftovers(timeout=30)


def _reader(args, ctx):
    """Reads every epoch, writing each completed epoch's ids. On attempt 0 each node stops halfway through its
    share of epoch 0, writes ``stopped-<executor>`` and waits there, so the machine always goes mid-feed."""
    feed = ctx.get_data_feed()
    epoch = read = 0
    while not feed.should_stop():
        ids = []
        for batch in feed.epoch_batches(20):
            ids.extend(int(v) for v in batch)
            time.sleep(0.02)
            read += len(batch)
            if ctx.attempt == 0 and read >= ROWS // 4:
                open(os.path.join(args["out"], "stopped-{}".format(ctx.executor_id)), "w").close()
                time.sleep(600)
        if not ids:
            break
        path = os.path.join(args["out"], "a{}-{}-e{}.json".format(ctx.attempt, ctx.executor_id, epoch))
        with open(path, "w") as f:
            json.dump(ids, f)
        epoch += 1


def _remove_when_reading(machines, node, out, removed):
    """Removes the machine ``node`` once a node of the first attempt stopped mid-feed (see ``_reader``)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if any(name.startswith("stopped-") for name in os.listdir(out)):
            machines.cluster.remove_node(node, allow_graceful=False)
            removed.append(time.monotonic())
            return
        time.sleep(0.05)


def _epoch_ids(directory, attempt):
    found = {}
    for name in os.listdir(directory):
        if name.startswith("a{}-".format(attempt)):
            epoch = int(name.rsplit("-e", 1)[1].split(".")[0])
            with open(os.path.join(directory, name)) as f:
                found.setdefault(epoch, []).extend(json.load(f))
    return {epoch: sorted(ids) for epoch, ids in found.items()}


def _train_and_lose_a_machine(machines, tmp_path, doomed, strategy, reservation_timeout=120):
    partitions = [list(range(p, ROWS, 4)) for p in range(4)]
    cluster = TFCluster.run(None, _reader, {"out": str(tmp_path)}, 2, 0, input_mode=TFCluster.InputMode.SPARK,
                            resources={"rt": 1}, placement_strategy=strategy, import_tensorflow=False,
                            max_failures=1, reservation_timeout=reservation_timeout)
    first_machines = [info["node_id"] for info in cluster.cluster_info]
    removed = []
    remover = threading.Thread(target=_remove_when_reading, args=(machines, doomed, str(tmp_path), removed), daemon=True)
    remover.start()
    try:
        return cluster, first_machines, removed, cluster.train(partitions, num_epochs=3, feed_timeout=120)
    except BaseException:
        if not cluster._stopped:   # a failed restart released the cluster already
            cluster.shutdown()
        raise
    finally:
        remover.join(60)


def test_a_lost_machine_restarts_the_cluster_on_the_machines_left(machines, tmp_path):
    keeper, keeper_id = machines.add_machine(num_cpus=2, resources={"rt": 2})
    doomed, doomed_id = machines.add_machine(num_cpus=2, resources={"rt": 1})
    try:
        cluster, first_machines, removed, report = _train_and_lose_a_machine(machines, tmp_path, doomed, "SPREAD")
        restarted_on = [info["node_id"] for info in cluster.cluster_info]
        cluster.shutdown()   # the nodes write their last epoch's ids before they return
        assert sorted(first_machines) == sorted([keeper_id, doomed_id])   # one node on each machine
        assert removed, "the machine was never removed"
        restart, = report["restarts"]
        lost = "worker:{}".format(first_machines.index(doomed_id))
        assert restart["node"] == lost, restart
        assert "died" in restart["error"] or "machine" in restart["error"], restart
        assert restarted_on == [keeper_id, keeper_id]
        second = _epoch_ids(tmp_path, 1)
        assert sorted(second) == [0, 1, 2]
        for ids in second.values():
            assert ids == list(range(ROWS))
    finally:
        machines.cluster.remove_node(keeper, allow_graceful=False)
        if doomed in machines.cluster.worker_nodes:
            machines.cluster.remove_node(doomed, allow_graceful=False)
    assert_no_leftovers(timeout=30)


def test_a_lost_machine_the_rest_cannot_replace_fails_with_a_clear_error(machines, tmp_path):
    keeper, keeper_id = machines.add_machine(num_cpus=2, resources={"rt": 1})
    doomed, doomed_id = machines.add_machine(num_cpus=2, resources={"rt": 1})
    try:
        with pytest.raises(ReservationTimeoutError) as caught:
            # 45 s: the restart may wait out the placement group when Ray still counts the lost machine
            _train_and_lose_a_machine(machines, tmp_path, doomed, "STRICT_SPREAD", reservation_timeout=45)
    finally:
        machines.cluster.remove_node(keeper, allow_graceful=False)
        if doomed in machines.cluster.worker_nodes:
            machines.cluster.remove_node(doomed, allow_graceful=False)
    message = str(caught.value)
    assert message.startswith("cannot restart the cluster after worker:"), message
    # at once from the feasibility checks once Ray counts the machine dead, or else the placement group's
    # timeout (Ray declares a lost machine dead only after its health checks fail for a while)
    assert ("rt=2 in all but the whole Ray cluster has 1" in message or "only 1 of" in message
            or "STRICT_SPREAD strategy" in message), message
    assert_no_leftovers(timeout=30)
