#!/usr/bin/env python
"""Many machines: feed throughput over several raylets beside the object store's own transfer rate.

On its own ``ray.cluster_utils.Cluster`` (a head for the driver, without TF
resources, and four worker raylets, each with its own object store), one run
measures:

1. feed throughput of a Ray Dataset (MNIST-shaped rows: 784 float32 + an int64
   label; blocks made by tasks spread round-robin over the worker machines)
   into 1, 2, 4 and 8 reading TF nodes spread over the machines
   (``placement_strategy='SPREAD'``, nodes that only read, no TensorFlow);
2. beside each, the limit measured in the same run: the object store moving
   blocks of the same size between raylets, with no feeding: as many consumer
   actors as readers, placed the same way, each ``ray.get``-ing blocks that a
   task put on another machine;
3. bytes of blocks copied to other machines in one epoch into one reader per
   machine, with ``data_locality=True`` (blocks read where they live as far
   as the per-epoch balance allows) and ``False`` (the locality-blind level
   split), counted from the object store's locations of every block before and
   after the epoch.

All raylets run on this one host: they share its cores and its memory bus, so
the numbers show the overheads and the shape of the scaling, not a network's
speed. ``measure(tiny)`` returns JSON-able numbers; run as a script it prints
them.
"""
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
try:
    import raytfnode  # noqa: F401  (installed, or on PYTHONPATH)
except ImportError:  # pragma: no cover
    sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # raytfnode from this checkout

MNIST_DIM = 784
ROW_BYTES = MNIST_DIM * 4 + 8
WORKER_MACHINES = 4
TF_RESOURCE = "tf"

SIZES = {
    "full": dict(rows=48000, blocks=16, epochs=2, readers=(1, 2, 4, 8), store_bytes=500 << 20),
    "tiny": dict(rows=4000, blocks=8, epochs=1, readers=(1, 2, 4, 8), store_bytes=200 << 20),
}


def machine_resource(index):
    return "machine-{}".format(index)


# ------------------------------------------------------------------ data


def _make_block(first, count):
    """An Arrow table of ``count`` MNIST-shaped rows; the label is the row id."""
    import numpy as np
    import pyarrow as pa

    pixels = np.random.default_rng(first).random((count, MNIST_DIM), dtype=np.float32)
    return pa.table({"image": pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), MNIST_DIM),
                     "label": pa.array(np.arange(first, first + count, dtype=np.int64))})


def _block_sizes(rows, blocks):
    base, extra = divmod(rows, blocks)
    return [base + (1 if i < extra else 0) for i in range(blocks)]


def make_blocks(machine_ids, rows, blocks):
    """Blocks made by Ray tasks, block i on worker machine ``i % len(machine_ids)``; waits until they exist."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    make = ray.remote(num_cpus=0)(_make_block)
    refs, first = [], 0
    for i, size in enumerate(_block_sizes(rows, blocks)):
        home = machine_ids[i % len(machine_ids)]
        refs.append(make.options(scheduling_strategy=NodeAffinitySchedulingStrategy(home, soft=False))
                    .remote(first, size))
        first += size
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    return refs


def holders(refs):
    """The Ray node ids holding a copy of each object (the object store's own location table)."""
    import ray

    locations = ray.experimental.get_object_locations(refs)
    return [set(locations[ref]["node_ids"]) for ref in refs]


def block_bytes(refs):
    import ray

    locations = ray.experimental.get_object_locations(refs)
    return [locations[ref]["object_size"] for ref in refs]


# ------------------------------------------------------------------ feeding


def reader_fun(args, ctx):
    """Reads every epoch with the array path, doing nothing with the rows; counts them."""
    feed = ctx.get_data_feed()
    rows = 0
    while not feed.should_stop():
        for arrays in feed.epoch_batches(1000):
            rows += len(arrays[0])
    ctx.mgr.set("rows_read", rows)


def feed_rate(refs, readers, epochs, placement_strategy="SPREAD", **run_kwargs):
    """Rows/s of ``train()`` of the blocks into ``readers`` reading nodes spread over the machines."""
    import ray

    from raytfnode import TFCluster

    dataset = ray.data.from_arrow_refs(refs)
    cluster = TFCluster.run(None, reader_fun, None, readers, 0, input_mode=TFCluster.InputMode.SPARK,
                            resources={TF_RESOURCE: 1}, placement_strategy=placement_strategy, import_tensorflow=False,
                            reservation_timeout=300, **run_kwargs)
    try:
        started = time.perf_counter()
        report = cluster.train(dataset, num_epochs=epochs, feed_timeout=600)
        seconds = time.perf_counter() - started
        machines = sorted({info["node_id"] for info in cluster.cluster_info})
    finally:
        cluster.shutdown()
    return {"rows": report["consumed"], "seconds": seconds, "rows_per_s": report["consumed"] / seconds,
            "mb_per_s": report["consumed"] * ROW_BYTES / seconds / 1e6, "machines_used": len(machines)}


# ------------------------------------------------------------------ the limit


def _consumer_class():
    import ray

    @ray.remote(num_cpus=0)
    class Consumer:
        """Fetches blocks from the object store (on another machine) and counts their rows."""

        def node_id(self):
            return ray.get_runtime_context().get_node_id()

        def fetch(self, boxes):
            rows = 0
            for box in boxes:
                rows += ray.get(box[0]).num_rows
            return rows

    return Consumer


def transfer_rate(machine_ids, rows, blocks, consumers):
    """Rows/s of ``consumers`` actors (spread over the machines) each ``ray.get``-ing blocks put on another one."""
    import ray

    refs = make_blocks(machine_ids, rows, blocks)
    homes = [next(iter(h)) for h in holders(refs)]
    Consumer = _consumer_class()
    actors = [Consumer.options(resources={machine_resource(1 + i % len(machine_ids)): 1}).remote()
              for i in range(consumers)]
    where = ray.get([a.node_id.remote() for a in actors])
    shares = [[] for _ in actors]
    for i, (ref, home) in enumerate(zip(refs, homes)):
        others = [a for a in range(len(actors)) if where[a] != home] or list(range(len(actors)))
        shares[others[i % len(others)]].append([ref])
    started = time.perf_counter()
    fetched = sum(ray.get([a.fetch.remote(share) for a, share in zip(actors, shares)]))
    seconds = time.perf_counter() - started
    remote = sum(1 for a, share in enumerate(shares) for box in share if homes[refs.index(box[0])] != where[a])
    for actor in actors:
        ray.kill(actor)
    del refs
    assert fetched == rows, (fetched, rows)
    return {"rows_per_s": rows / seconds, "mb_per_s": rows * ROW_BYTES / seconds / 1e6, "seconds": seconds,
            "blocks_from_other_machines": remote}


# ------------------------------------------------------------------ bytes between machines


def bytes_moved(machine_ids, rows, blocks, data_locality):
    """Bytes of blocks copied to other machines in one epoch into one reader per worker machine."""
    refs = make_blocks(machine_ids, rows, blocks)
    before = holders(refs)
    sizes = block_bytes(refs)
    feed = feed_rate(refs, len(machine_ids), 1, data_locality=data_locality,
                     placement_strategy="STRICT_SPREAD")
    after = holders(refs)
    copies = [len(a - b) for a, b in zip(after, before)]
    return {"data_locality": data_locality, "block_copies": sum(copies),
            "bytes": sum(c * s for c, s in zip(copies, sizes)), "dataset_bytes": sum(sizes),
            "rows_per_s": feed["rows_per_s"]}


# ------------------------------------------------------------------ the run


def _add_raylet(cluster, **node_args):
    """``cluster.add_node`` that waits for a raylet that missed Ray's 30 s start-up wait on a loaded host."""
    import ray

    node_id = ray.NodeID.from_random().hex()
    try:
        return cluster.add_node(env_vars={"RAY_OVERRIDE_NODE_ID_FOR_TESTING": node_id}, **node_args).node_id
    except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for the start-up timeout)
        if "timed out during startup" not in str(exc):
            raise
    deadline = time.monotonic() + 180
    while True:
        try:
            ray._private.services.get_node(cluster.address, node_id)
            return node_id
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _start_cluster(store_bytes, attempts=3):
    import ray
    from ray.cluster_utils import Cluster

    for attempt in range(attempts):
        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 2, "resources": {machine_resource(0): 1000}, "object_store_memory": store_bytes,
                "include_dashboard": False})
            break
        except Exception as exc:  # noqa: BLE001
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise
    machine_ids = [_add_raylet(cluster, num_cpus=3, resources={machine_resource(i): 1000, TF_RESOURCE: 100},
                               object_store_memory=store_bytes) for i in range(1, WORKER_MACHINES + 1)]
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    return cluster, machine_ids


def measure(tiny: bool) -> dict:
    """Runs every measurement on a cluster of its own and returns JSON-able numbers."""
    import inspect

    import ray

    from raytfnode import TFCluster

    size = SIZES["tiny" if tiny else "full"]
    if ray.is_initialized():
        raise RuntimeError("measure() starts its own Ray cluster: call it from a process not connected to Ray")
    cluster, machine_ids = _start_cluster(size["store_bytes"])
    results = {"size": "tiny" if tiny else "full", "worker_machines": WORKER_MACHINES, "rows": size["rows"],
               "blocks": size["blocks"], "row_bytes": ROW_BYTES, "epochs": size["epochs"],
               "note": "raylets on one host share its cores and memory bus: overheads and scaling shape, "
                       "not a network's speed",
               "scaling": [], "bytes_moved": []}
    try:
        refs = make_blocks(machine_ids, size["rows"], size["blocks"])
        results["block_bytes"] = int(sum(block_bytes(refs)) / len(refs))
        for readers in size["readers"]:
            feed = feed_rate(refs, readers, size["epochs"])
            limit = transfer_rate(machine_ids, size["rows"], size["blocks"], readers)
            results["scaling"].append({"readers": readers, "feed": feed, "object_store_limit": limit,
                                       "feed_over_limit": feed["rows_per_s"] / limit["rows_per_s"]})
        del refs
        if "data_locality" in inspect.signature(TFCluster.run).parameters:
            for locality in (False, True):
                results["bytes_moved"].append(bytes_moved(machine_ids, size["rows"], size["blocks"], locality))
        else:
            results["bytes_moved_skipped"] = "this raytfnode has no TFCluster.run(data_locality=...)"
    finally:
        ray.shutdown()
        cluster.shutdown()
    return results


def _table(results):
    lines = ["readers  feed rows/s  feed MB/s  store limit rows/s  limit MB/s  feed/limit  machines",
             "-------  -----------  ---------  ------------------  ----------  ----------  --------"]
    for row in results["scaling"]:
        feed, limit = row["feed"], row["object_store_limit"]
        lines.append("{:>7}  {:>11,.0f}  {:>9.1f}  {:>18,.0f}  {:>10.1f}  {:>10.2f}  {:>8}".format(
            row["readers"], feed["rows_per_s"], feed["mb_per_s"], limit["rows_per_s"], limit["mb_per_s"],
            row["feed_over_limit"], feed["machines_used"]))
    for row in results["bytes_moved"]:
        lines.append("data_locality={!s:<5}: {} block copies to other machines, {:.1f} MB of {:.1f} MB per "
                     "epoch".format(row["data_locality"], row["block_copies"], row["bytes"] / 1e6,
                                    row["dataset_bytes"] / 1e6))
    return "\n".join(lines)


if __name__ == "__main__":
    measured = measure("--tiny" in sys.argv[1:])
    print(json.dumps(measured, indent=2))
    print(_table(measured))
