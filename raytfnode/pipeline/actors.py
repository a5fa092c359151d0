"""A pool of Ray actors that hold the SavedModel and answer ``TFModel.transform()`` batches.

The driver starts the pool (each actor with the Ray resources asked for, GPUs
included: Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it assigned before
TensorFlow is imported); Spark tasks connect to Ray, look the actors up by
name, send the input columns of each Arrow batch to one of them (round robin,
two batches in flight per task) and append the predictions they get back to
that same batch, so rows stay aligned.
"""
import collections
import dataclasses
import logging
import os
import threading
import time
import uuid

import ray

from ..errors import BadInputError, ReservationTimeoutError
from ..resources import check_feasible, node_request
from ..worker_ray import connect_worker
from . import serving

logger = logging.getLogger(__name__)

IN_FLIGHT = 2


@dataclasses.dataclass(frozen=True)
class PoolAddress:
    """Where Spark tasks find the pool: actor names, their namespace, and the Ray cluster's address."""

    namespace: str
    names: tuple
    ray_address: str
    auth_mode: str = None


@ray.remote(num_cpus=0)
class InferenceActor:
    """Holds one loaded SavedModel signature and answers batches with it."""

    def __init__(self, plan):
        self.plan = plan
        self.rows = 0
        self.batches = 0
        serving.signature_function(plan)     # load now: a bad SavedModel fails the pool's start

    def ready(self):
        return True

    def predict(self, arrays):
        outputs = serving.predict(self.plan, arrays)
        self.rows += len(next(iter(arrays.values())))
        self.batches += 1
        return outputs

    def status(self):
        return {"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "pid": os.getpid(), "rows": self.rows,
                "batches": self.batches, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "loads": sum(serving.loads.values())}


class InferencePool:
    """``size`` :class:`InferenceActor` s, each with ``num_cpus``/``num_gpus``/``resources``.

    Its actors belong to the driver: they end with :meth:`close` or with the driver.
    """

    def __init__(self, plan, size, num_cpus=1, num_gpus=0, resources=None, start_timeout=600):
        if size < 1:
            raise BadInputError("an inference pool needs at least one actor, got {}".format(size))
        self.pool_id = uuid.uuid4().hex[:10]
        self.namespace = "raytfnode-" + self.pool_id
        names = ["raytfnode-{}-infer-{}".format(self.pool_id, i) for i in range(size)]
        request = node_request("inference", num_cpus, num_gpus, None, resources)
        check_feasible([request] * size, ["inference:{}".format(i) for i in range(size)])
        self.actors = [InferenceActor.options(name=name, namespace=self.namespace, **request.actor_options())
                       .remote(plan) for name in names]
        self.address = PoolAddress(self.namespace, tuple(names), ray.get_runtime_context().gcs_address,
                                   os.environ.get("RAY_AUTH_MODE"))
        try:
            refs = [actor.ready.remote() for actor in self.actors]
            ready, pending = ray.wait(refs, num_returns=len(refs), timeout=start_timeout)
            if pending:
                raise ReservationTimeoutError(
                    "{} of {} inference actors (each {}) did not start within {} s; the Ray cluster has {} "
                    "available".format(len(pending), size, request.amounts(), start_timeout,
                                       ray.available_resources()))
            ray.get(ready)
        except BaseException:
            self.close()
            raise

    def status(self):
        """Per actor: the GPU ids Ray gave it, its process id, and the rows and batches it answered."""
        return ray.get([actor.status.remote() for actor in self.actors])

    def close(self):
        """Kills the pool's actors."""
        for actor in self.actors:
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        self.actors = []


_connect_lock = threading.Lock()
_handles = {}


def _pool_handles(address):
    """Connects this process to Ray once (as :func:`raytfnode.feeding.connect` does) and looks the actors up."""
    with _connect_lock:
        connect_worker(address.ray_address, address.namespace, address.auth_mode)
        if address not in _handles:
            _handles.clear()
            _handles[address] = [ray.get_actor(name, namespace=address.namespace) for name in address.names]
        return _handles[address]


def answer_on_actors(batches, plan, where):
    """Sends each batch's inputs to the pool and yields the batch with its predictions, in input order."""
    actors = _pool_handles(plan.actors)
    first = hash((where, time.monotonic_ns())) % len(actors)   # spread concurrent tasks over the pool
    pending = collections.deque()
    for number, batch in enumerate(batches):
        if not batch.num_rows:
            continue
        actor = actors[(first + number) % len(actors)]
        pending.append((batch, actor.predict.remote(serving.input_arrays(batch, plan, where))))
        if len(pending) >= IN_FLIGHT:
            batch, ref = pending.popleft()
            yield serving.with_outputs(batch, ray.get(ref), plan)
    while pending:
        batch, ref = pending.popleft()
        yield serving.with_outputs(batch, ray.get(ref), plan)
