"""Shared fixtures: one real local Ray cluster and one real Spark per test session.

Ray starts once with more logical CPUs than the machine has cores (TF nodes and
RayDP executors each take Ray CPUs) and two declared GPUs, so GPU scheduling is
exercised without GPU hardware. Spark comes in two kinds, local mode and RayDP;
``spark`` is parametrized over both and pytest groups the tests so each kind
starts once.
"""
import os
import sys
import time

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

RAY_CPUS = 12
RAY_GPUS = 2


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster for the whole session (12 logical CPUs, 2 declared GPUs)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=RAY_CPUS, num_gpus=RAY_GPUS, include_dashboard=False, log_to_driver=False,
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

    return raydp.init_spark("raytfnode-tests-{}".format(os.getpid()), num_executors=2, executor_cores=1,
                            executor_memory="1GB",
                            configs={"spark.task.maxFailures": "4", "spark.ui.enabled": "false",
                                     "spark.sql.execution.arrow.pyspark.enabled": "true"})


def _stop_spark(kind, spark):
    if kind == "raydp":
        import raydp
        raydp.stop_spark()
        time.sleep(1.0)  # RayDP's named actors linger briefly after stop_spark
    else:
        spark.stop()


@pytest.fixture(scope="session", params=["local", "raydp"])
def spark(request, ray_cluster):
    """A SparkSession: Spark local mode, then RayDP's Spark on the Ray cluster."""
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


def assert_no_leftovers(timeout=15.0):
    from ray.util.state import list_actors, list_placement_groups

    deadline = time.monotonic() + timeout
    while True:
        actors = [a for a in list_actors(filters=[("state", "!=", "DEAD")], limit=10000)
                  if (a.get("ray_namespace") or "").startswith("raytfnode-")
                  or (a.get("name") or "").startswith("raytfnode-")]
        groups = [g for g in list_placement_groups(limit=10000)
                  if (g.get("name") or "").startswith("raytfnode-") and g.get("state") != "REMOVED"]
        if not actors and not groups:
            return
        if time.monotonic() > deadline:
            raise AssertionError("left behind: actors {} placement groups {}".format(
                [(a.get("class_name"), a.get("name"), a.get("state")) for a in actors],
                [(g.get("name"), g.get("state")) for g in groups]))
        time.sleep(0.25)
