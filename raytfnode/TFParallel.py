"""Independent single-node TensorFlow runs, as Ray actors.

Keeps ``tensorflowonspark.TFParallel.run``: ``map_fn(tf_args, ctx)`` runs
``num_executors`` times, in parallel, each in its own Ray actor with the Ray
resources asked for (GPUs land in ``CUDA_VISIBLE_DEVICES`` before TensorFlow
loads). There is no TF cluster: the runs share nothing and get no
``TF_CONFIG``. With ``use_barrier`` the runs start together or not at all
(one placement group, like Spark's barrier mode); a request the Ray cluster
can never hold fails at once. An exception in any run fails the call with
that run's traceback, after the other runs were stopped.
"""
import logging
import os
import sys
import time
import traceback
import uuid

import ray
from ray.exceptions import RayActorError
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .context import TFNodeContext
from .errors import BadInputError, NodeError, ReservationTimeoutError
from .resources import check_feasible, node_request

logger = logging.getLogger(__name__)

JOB_NAME = "worker"


class _ParallelRun:
    """One run's actor body: sets up the process for TensorFlow, then runs ``map_fn`` when asked."""

    def __init__(self, worker_num):
        self.worker_num = worker_num
        self.gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        os.environ.pop("TF_CONFIG", None)

    def ready(self):
        return self.worker_num

    def run(self, map_fn, tf_args, context_fields):
        """Runs ``map_fn(tf_args, ctx)``; returns ``("ok",)`` or ``("error", message, traceback)``."""
        ctx = TFNodeContext(executor_id=self.worker_num, job_name=JOB_NAME, task_index=self.worker_num,
                            gpu_ids=self.gpu_ids, resources=ray.get_runtime_context().get_assigned_resources(),
                            **context_fields)
        if isinstance(tf_args, list):
            sys.argv = tf_args
        try:
            map_fn(tf_args, ctx)
        except BaseException as exc:  # noqa: BLE001  (everything must reach the driver)
            return ("error", "{}: {}".format(type(exc).__name__, exc), traceback.format_exc())
        return ("ok",)


_ParallelRunActor = ray.remote(_ParallelRun)


def run(sc, map_fn, tf_args, num_executors, use_barrier=True, *, num_cpus=1, num_gpus=0, resources=None,
        memory=None, reservation_timeout=600, working_dir=None, env_vars=None):
    """Runs the user map_fn as parallel, independent instances of TF on Ray actors.

    Args:
      :sc: SparkContext or SparkSession (for ``ctx.defaultFS``), or ``None``.
      :map_fn: user-supplied TensorFlow "main" function, called as ``map_fn(tf_args, ctx)``; ``ctx`` has
        ``worker_num``/``executor_id`` (0..num_executors-1), ``num_workers``, ``defaultFS``, ``working_dir``,
        ``gpu_ids`` and ``resources``.
      :tf_args: ``argparse`` args, or command-line ``ARGV``.  These will be passed to the ``map_fn``.
      :num_executors: number of independent runs.
      :use_barrier: start all runs together or none (a Ray placement group); a request the Ray cluster
        cannot hold at all fails at once, one that must wait for busy resources waits up to
        ``reservation_timeout``. Without it each run starts when its resources are free.

    Ray-only keyword arguments:
      :num_cpus, num_gpus, memory, resources: Ray resources of every run's actor.
      :reservation_timeout: seconds to wait for the placement group with ``use_barrier``.
      :working_dir: ``ctx.working_dir`` (default: the driver's working directory).
      :env_vars: extra environment variables for the runs' processes.

    Returns:
      None

    Raises:
      :raytfnode.errors.NodeError: naming the first run that failed (``worker:<worker_num>``), with its
        remote traceback.
      :raytfnode.errors.ReservationTimeoutError: when the runs cannot be placed.
    """
    if not callable(map_fn):
        raise BadInputError("map_fn must be a function map_fn(args, ctx), got {!r}".format(map_fn))
    if not isinstance(num_executors, int) or num_executors < 1:
        raise BadInputError("num_executors must be an integer >= 1, got {!r}".format(num_executors))
    if not ray.is_initialized():
        logger.info("Ray is not running: starting a local Ray instance")
        ray.init()
    from .cluster import _default_fs, _spark_context
    request = node_request(JOB_NAME, num_cpus, num_gpus, memory, resources)
    names = ["{}:{}".format(JOB_NAME, i) for i in range(num_executors)]
    check_feasible([request] * num_executors if use_barrier else [request], names)
    run_id = uuid.uuid4().hex[:10]
    context_fields = {"defaultFS": _default_fs(_spark_context(sc)), "working_dir": working_dir or os.getcwd(),
                      "num_workers": num_executors}
    group = None
    actors = []
    started = time.monotonic()
    try:
        options = [dict(request.actor_options(), name="raytfnode-{}-parallel-{}".format(run_id, i),
                        namespace="raytfnode-" + run_id) for i in range(num_executors)]
        if env_vars:
            for option in options:
                option["runtime_env"] = {"env_vars": dict(env_vars)}
        if use_barrier:
            group = placement_group([request.bundle()] * num_executors, strategy="PACK",
                                    name="raytfnode-{}-parallel".format(run_id))
            ready, _ = ray.wait([group.ready()], timeout=reservation_timeout)
            if not ready:
                raise ReservationTimeoutError(
                    "the {} runs of TFParallel.run (each asking for {}) could not all start within "
                    "reservation_timeout={} s; free resources, lower num_executors or run with "
                    "use_barrier=False".format(num_executors, request.bundle(), reservation_timeout))
            for i, option in enumerate(options):
                option["scheduling_strategy"] = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i)
        actors = [_ParallelRunActor.options(**option).remote(i) for i, option in enumerate(options)]
        refs = {actor.run.remote(map_fn, tf_args, context_fields): i for i, actor in enumerate(actors)}
        _wait_for_runs(refs)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if group is not None:
            remove_placement_group(group)
    logger.info("TFParallel: %d runs finished in %.2f s", num_executors, time.monotonic() - started)


def _wait_for_runs(refs):
    """Waits for every run; raises the first failure (the others are stopped by the caller)."""
    pending = dict(refs)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            worker_num = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except RayActorError as exc:
                raise NodeError(JOB_NAME, worker_num, "its actor died ({}); the process was killed or ran out of "
                                "memory".format(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)) \
                    from None
            if outcome[0] == "error":
                raise NodeError(JOB_NAME, worker_num, outcome[1], outcome[2])
