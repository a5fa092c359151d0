"""Shared fixtures: one real local Ray cluster and one real Spark per test session.

Ray starts once with more logical CPUs than the machine has cores (TF nodes and
RayDP executors each take Ray CPUs) and two declared GPUs, so GPU scheduling is
exercised without GPU hardware. Spark comes in two kinds, local mode and RayDP;
``spark`` is parametrized over both and pytest groups the tests so each kind
starts once.
"""
import dataclasses
import os
import re
import sys
import time

import pytest
import ray

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RAY_CPUS = 12
RAY_GPUS = 2


def subprocess_env(**extra):
    """Environment for a script run in a child process (an example, the benchmark) that starts its own Ray."""
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    env.pop("RAY_AUTH_MODE", None)   # set by this process's ray.init(); a fresh user's shell has none
    env.update({
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "TF_USE_LEGACY_KERAS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (12 logical CPUs, 2 declared GPUs)."""
    import ray

    if not ray.is_initialized():
        for attempt in range(3):   # Ray gives a raylet 30 s to register, which a loaded host can miss
            try:
                ray.init(address="local", num_cpus=RAY_CPUS, num_gpus=RAY_GPUS, include_dashboard=False,
                         log_to_driver=False, logging_level="WARNING")
                break
            except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for the start-up timeout)
                ray.shutdown()
                if "timed out during startup" not in str(exc) or attempt == 2:
                    raise
    yield ray
    ray.shutdown()


def _start_local_spark():
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2,4]").appName("raytfnode-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.execution.arrow.pyspark.enabled", "true")
            .getOrCreate())


def _start_raydp_spark():
    import raydp

    from raytfnode import logs

    return raydp.init_spark("rtn-tests-{}".format(os.getpid()), num_executors=2, executor_cores=1,
                            executor_memory="1GB",
                            configs=logs.raydp_configs({"spark.task.maxFailures": "4", "spark.ui.enabled": "false",
                                                        "spark.sql.execution.arrow.pyspark.enabled": "true"}))


def _stop_spark(kind, spark):
    if kind == "raydp":
        import raydp
        raydp.stop_spark()
        time.sleep(1.0)  # RayDP's named actors linger briefly after stop_spark
    else:
        from pyspark import SparkContext
        spark.stop()
        # end the JVM too: a later RayDP session must launch its own JVM with RayDP's jars
        gateway = SparkContext._gateway
        if gateway is not None:
            process = getattr(gateway, "proc", None)
            gateway.shutdown()
            if process is not None:
                process.kill()
                process.wait()
            SparkContext._gateway = None
            SparkContext._jvm = None


@pytest.fixture(scope="session", params=["raydp", "local"])
def spark(request, ray_cluster):
    """A SparkSession: RayDP's Spark on the Ray cluster, then Spark local mode."""
    kind = request.param
    session = _start_local_spark() if kind == "local" else _start_raydp_spark()
    session.sparkContext.setLogLevel("ERROR")
    session.kind = kind
    _running_sparks[kind] = session
    yield session
    if _running_sparks.pop(kind, None) is not None:   # not stopped already by the multi-node fixture
        _stop_spark(kind, session)


_running_sparks = {}   # kind -> SparkSession started by the ``spark`` fixture and not stopped yet


@pytest.fixture
def no_leftovers(ray_cluster):
    """Asserts, after the test, that no raytfnode actor or placement group is left alive."""
    yield
    assert_no_leftovers()


_CLUSTER_NAME = re.compile(r"^raytfnode-[0-9a-f]{10}(-|$)")


def assert_no_leftovers(timeout=15.0):
    """Fails when an actor or placement group of a raytfnode cluster is still alive.

    Every raytfnode actor is named ``raytfnode-<cluster id>-...``; live named
    actors and placement groups come from this session's own Ray cluster (the
    state API would need the dashboard, which the session starts without).
    """
    deadline = time.monotonic() + timeout
    while True:
        actors = [a for a in ray.util.list_named_actors(all_namespaces=True)
                  if _CLUSTER_NAME.match(a.get("name") or "")]
        groups = [g for g in ray.util.placement_group_table().values()
                  if _CLUSTER_NAME.match(g.get("name") or "") and g.get("state") != "REMOVED"]
        if not actors and not groups:
            return
        if time.monotonic() > deadline:
            raise AssertionError("left behind: actors {} placement groups {}".format(
                [(a.get("namespace"), a.get("name")) for a in actors],
                [(g.get("name"), g.get("state")) for g in groups]))
        time.sleep(0.25)


# ---------------------------------------------------------------- many machines
#
# Tests marked ``multinode`` run on a Ray cluster of several raylets on this host
# (``ray.cluster_utils.Cluster``: each raylet has its own object store and its
# own declared resources, as a machine would). A driver can be connected to one
# Ray at a time, so those tests run after all the others (the ordering hook
# below) and the fixture first stops the single-node Spark and Ray.

TF_RESOURCE = "tf"          # marks the machines TF nodes may use: the head has none
MACHINE_STORE_BYTES = 300 << 20


def machine_resource(index):
    """The custom resource that pins work to machine ``index`` (0 is the head, the driver's machine)."""
    return "machine-{}".format(index)


# the worker machines of the shared cluster: (num_cpus, num_gpus)
MACHINES = ((4, 2), (4, 2), (4, 0))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "multinode: runs on a Ray cluster of several raylets (the multinode_cluster fixture); "
        "these tests run after every other test of the session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    """Moves the ``multinode`` tests to the end, keeping the order of the others."""
    single = [item for item in items if item.get_closest_marker("multinode") is None]
    multi = [item for item in items if item.get_closest_marker("multinode") is not None]
    items[:] = single + multi


@dataclasses.dataclass
class Machines:
    """The shared multi-node cluster: ``cluster`` is the ``ray.cluster_utils.Cluster``.

    ``node_ids[i]`` is the Ray node id of machine ``i`` (0 is the head, where the
    driver runs); ``gpus[i]`` its declared GPUs. Every worker machine has the
    resource ``machine-<i>`` (1000 units) and ``tf`` (100 units); TF nodes ask for
    ``{'tf': 1}`` to stay off the head.
    """

    cluster: object
    node_ids: list
    gpus: list
    nodes: list

    def machine_of(self, node_id):
        """The machine index of a Ray node id (``None`` for a node not in the fixture's list)."""
        return self.node_ids.index(node_id) if node_id in self.node_ids else None

    def add_machine(self, num_cpus=2, num_gpus=0, resources=None):
        """Adds an extra raylet (for a test that removes it again); returns ``(node, node_id)``."""
        node, node_id = add_raylet(self.cluster, num_cpus=num_cpus, num_gpus=num_gpus,
                                   resources=dict(resources or {}), object_store_memory=MACHINE_STORE_BYTES)
        if node is None:
            pytest.skip("the extra raylet started too late for Ray to hand back its handle (a loaded host)")
        return node, node_id


def _stop_single_node_parts():
    for kind in list(_running_sparks):
        _stop_spark(kind, _running_sparks.pop(kind))
    if ray.is_initialized():
        ray.shutdown()


RAYLET_LATE_SECONDS = 180   # a raylet that missed Ray's own 30 s start-up wait (a loaded host) may still come


def _raylet_alive(gcs_address, node_id):
    try:
        ray._private.services.get_node(gcs_address, node_id)
        return True
    except RuntimeError:
        return False


def add_raylet(cluster, **node_args):
    """``cluster.add_node(**node_args)`` that survives a slow start: returns ``(node or None, node id)``.

    ``add_node`` gives up when the raylet has not registered within 30 s, which
    happens on a loaded host although the raylet keeps starting. The node id is
    chosen here, so a late raylet is found and waited for (its Node object is
    lost then: ``None``; its processes end with the session).
    """
    node_id = ray.NodeID.from_random().hex()
    env_vars = dict(node_args.pop("env_vars", None) or {}, RAY_OVERRIDE_NODE_ID_FOR_TESTING=node_id)
    try:
        node = cluster.add_node(env_vars=env_vars, **node_args)
        return node, node.node_id
    except Exception as exc:  # noqa: BLE001  (Ray raises a bare Exception for the start-up timeout)
        if "timed out during startup" not in str(exc) or cluster.head_node is None:
            raise
    deadline = time.monotonic() + RAYLET_LATE_SECONDS
    while not _raylet_alive(cluster.address, node_id):
        if time.monotonic() > deadline:
            raise RuntimeError("raylet {} did not register within {} s".format(node_id, RAYLET_LATE_SECONDS))
        time.sleep(1.0)
    return None, node_id


def start_head(head_args, attempts=5):
    """A ``ray.cluster_utils.Cluster`` with its head; a head that missed Ray's 30 s start-up wait is retried."""
    from ray.cluster_utils import Cluster

    for attempt in range(attempts):
        try:
            return Cluster(initialize_head=True, head_node_args=dict(head_args))
        except Exception as exc:  # noqa: BLE001
            if "timed out during startup" not in str(exc) or attempt == attempts - 1:
                raise


@pytest.fixture(scope="session")
def multinode_cluster():
    """A head (the driver's machine, no TF resource) and three worker raylets: two with 2 GPUs, one CPU-only."""
    _stop_single_node_parts()
    cluster = start_head({"num_cpus": 4, "resources": {machine_resource(0): 1000},
                          "object_store_memory": MACHINE_STORE_BYTES, "include_dashboard": False})
    nodes, node_ids = [cluster.head_node], [cluster.head_node.node_id]
    for index, (num_cpus, num_gpus) in enumerate(MACHINES, start=1):
        node, node_id = add_raylet(cluster, num_cpus=num_cpus, num_gpus=num_gpus,
                                   resources={machine_resource(index): 1000, TF_RESOURCE: 100},
                                   object_store_memory=MACHINE_STORE_BYTES)
        nodes.append(node)
        node_ids.append(node_id)
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    machines = Machines(cluster=cluster, node_ids=node_ids, gpus=[0] + [gpus for _, gpus in MACHINES], nodes=nodes)
    assert ray.get_runtime_context().get_node_id() == machines.node_ids[0]   # the driver is on the head
    yield machines
    for kind in list(_running_sparks):
        _stop_spark(kind, _running_sparks.pop(kind))
    ray.shutdown()
    cluster.shutdown()


def summary_lines(output):
    """The ``SUMMARY ...`` lines of ``output``, also where a node's log line forwarded by Ray (printed from
    another thread of the driver) got in front of one on the same line."""
    return [line[line.index("SUMMARY "):] for line in output.splitlines() if "SUMMARY " in line]
