"""Connecting a Spark Python worker to the driver's Ray cluster.

Spark's Python workers (in RayDP executors, local mode, or any Spark whose
workers reach Ray) feed the TF nodes' queue actors, so each connects to Ray once.
On a Ray cluster with token authentication (``RAY_AUTH_MODE=token``, which
Ray 2.60's ``ray start`` and a local ``ray.init()`` turn on) a process must have
that variable in its environment when it imports Ray: Ray reads its settings
once, at import. A Spark JVM started before the driver's ``ray.init()`` gives its
Python workers an environment without it.

The driver therefore hands the variable to Spark: :func:`pass_auth_to_spark_workers`
puts it in ``SparkContext.environment``, the environment Spark gives every Python
worker it starts for a later job (as ``spark.executorEnv.*`` does). A worker that
still lacks it fails with :func:`check_worker_auth`'s message, which says what to set.

PySpark's daemon runs a full ``gc.collect()`` after every task of a reused
worker, and the worker takes no next task until it is done. Once Ray is
imported that collection examines every object of Ray, numpy and the rest:
about 70,000 objects and 29 ms on a 2-core machine (125,000 and 63 ms with Ray
Data imported too). :func:`connect_worker` therefore freezes the heap as it
stands once connected (``gc.freeze()``), and later collections skip those
objects: about 15,000 objects and 4-8 ms were left in the workers of a training
feed. Frozen objects are still freed by reference counting; only cycles among
them that are garbage at that moment are kept, once per worker.
"""
import gc
import logging
import os

import ray

from .errors import FeedError

AUTH_MODE_ENV = "RAY_AUTH_MODE"


def pass_auth_to_spark_workers(sc, environ=None):
    """Gives Spark's Python workers of later jobs the driver's ``RAY_AUTH_MODE``.

    Args:
      :sc: the driver's SparkContext.
      :environ: the driver's environment (default ``os.environ``).

    Returns:
      The variables added to ``sc.environment`` (empty when the driver has no
      ``RAY_AUTH_MODE``, or Spark's workers already get one).
    """
    environ = os.environ if environ is None else environ
    mode = environ.get(AUTH_MODE_ENV)
    if not mode or AUTH_MODE_ENV in sc.environment:
        return {}
    sc.environment[AUTH_MODE_ENV] = mode
    return {AUTH_MODE_ENV: mode}


def check_worker_auth(auth_mode, ray_address, environ=None, where=None):
    """Raises :class:`FeedError` when this process cannot join a Ray cluster that needs token authentication.

    Args:
      :auth_mode: the driver's ``RAY_AUTH_MODE`` (``None`` when it had none).
      :ray_address: the Ray cluster's address, for the message.
      :environ: this process's environment (default ``os.environ``).
      :where: what this worker was given to feed (``'partition 3'``), named first in the message.
    """
    environ = os.environ if environ is None else environ
    if auth_mode and auth_mode != "disabled" and not environ.get(AUTH_MODE_ENV):
        raise FeedError(
            "{}this Spark Python worker (pid {}) cannot join the Ray cluster at {}: the cluster uses {}={} and the "
            "worker's environment has no {}. Set spark.executorEnv.{}={} in the Spark configuration (with the "
            "token in RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token on every Spark machine), or "
            "start Spark after ray.init()".format("{}: ".format(where) if where else "", os.getpid(), ray_address,
                                                  AUTH_MODE_ENV, auth_mode, AUTH_MODE_ENV, AUTH_MODE_ENV, auth_mode))


def connect_worker(ray_address, namespace, auth_mode, where=None):
    """Connects this process to the Ray cluster at ``ray_address`` unless it is connected already.

    The caller holds its own lock: two threads of one worker must not both call ``ray.init``.
    """
    if ray.is_initialized():
        return
    check_worker_auth(auth_mode, ray_address, where=where)
    ray.init(address=ray_address, namespace=namespace, log_to_driver=False, logging_level=logging.WARNING)
    gc.freeze()   # Spark's collection after each task then skips Ray's and the imports' objects


__all__ = ["AUTH_MODE_ENV", "check_worker_auth", "connect_worker", "pass_auth_to_spark_workers"]
