"""A Spark Python worker joins the driver's Ray cluster: the token-authentication setting travels with Spark.

Without cluster: the check a worker runs before ``ray.init``. With the session's real
Spark: the driver's ``RAY_AUTH_MODE`` lands in the environment Spark gives its
Python workers, and a task sees it. (``tests/test_examples.py::test_original_style``
feeds from a SparkContext started before Ray, which needs exactly this.)
"""
import pytest

from raytfnode.errors import FeedError
from raytfnode.worker_ray import check_worker_auth, pass_auth_to_spark_workers


def test_worker_without_auth_mode_is_told_which_variable_to_set():
    with pytest.raises(FeedError, match=r"^partition 3: .* has no RAY_AUTH_MODE\. Set spark\.executorEnv\.RAY_AUTH_MODE=token"):
        check_worker_auth("token", "10.0.0.1:6379", environ={}, where="partition 3")


@pytest.mark.parametrize("auth_mode, environ", [(None, {}), ("disabled", {}), ("token", {"RAY_AUTH_MODE": "token"})])
def test_worker_that_needs_no_token_or_has_it_passes(auth_mode, environ):
    check_worker_auth(auth_mode, "10.0.0.1:6379", environ=environ)


def test_driver_auth_mode_reaches_the_python_workers_of_later_jobs(spark):
    sc = spark.sparkContext
    had = sc.environment.pop("RAY_AUTH_MODE", None)
    try:
        assert pass_auth_to_spark_workers(sc, environ={"RAY_AUTH_MODE": "token"}) == {"RAY_AUTH_MODE": "token"}
        assert pass_auth_to_spark_workers(sc, environ={"RAY_AUTH_MODE": "token"}) == {}   # once is enough

        def worker_env(_):
            import os
            yield os.environ.get("RAY_AUTH_MODE")

        assert set(sc.parallelize(range(2), 2).mapPartitions(worker_env).collect()) == {"token"}
    finally:
        sc.environment.pop("RAY_AUTH_MODE", None)
        if had is not None:
            sc.environment["RAY_AUTH_MODE"] = had


def test_connected_worker_leaves_ray_and_its_imports_out_of_sparks_collection_after_each_task(spark, ray_cluster):
    """PySpark's daemon runs ``gc.collect()`` after every task of a reused worker; Ray's objects must not be in it."""
    import os

    from raytfnode.worker_ray import AUTH_MODE_ENV, connect_worker

    ray = ray_cluster
    address = ray.get_runtime_context().gcs_address
    auth_mode = os.environ.get(AUTH_MODE_ENV)
    pass_auth_to_spark_workers(spark.sparkContext)

    def connect_and_count(_):
        import gc

        connect_worker(address, "raytfnode-test-gc", auth_mode)
        gc.collect()
        yield gc.get_freeze_count(), len(gc.get_objects())

    for frozen, collected in spark.sparkContext.parallelize(range(2), 2).mapPartitions(
            connect_and_count).collect():
        assert frozen > 50_000, frozen                # Ray, numpy and raytfnode, left out of every collection
        assert collected < frozen / 2, (collected, frozen)
