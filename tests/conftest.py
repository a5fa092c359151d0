"""Shared fixtures: one real local Ray cluster and one real Spark per test session.

Ray starts once with more logical CPUs than the machine has cores (TF nodes and
RayDP executors each take Ray CPUs) and two declared GPUs, so GPU scheduling is
exercised without GPU hardware. Spark comes in two kinds, local mode and RayDP;
``spark`` is parametrized over both and pytest groups the tests so each kind
starts once.
"""
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
        ray.init(address="local", num_cpus=RAY_CPUS, num_gpus=RAY_GPUS, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
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

    return raydp.init_spark("rtn-tests-{}".format(os.getpid()), num_executors=2, executor_cores=1,
                            executor_memory="1GB",
                            configs={"spark.task.maxFailures": "4", "spark.ui.enabled": "false",
                                     "spark.sql.execution.arrow.pyspark.enabled": "true"})


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
    yield session
    _stop_spark(kind, session)


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
