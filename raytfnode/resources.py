"""Ray resource requests of TF nodes, and the check that they can ever be placed."""
import dataclasses

import ray

from .errors import BadInputError, ReservationTimeoutError


@dataclasses.dataclass(frozen=True)
class NodeRequest:
    """The Ray resources one TF node actor asks for."""

    num_cpus: float = 1
    num_gpus: float = 0
    memory: int = None
    resources: tuple = ()

    def actor_options(self):
        """Keyword arguments for ``ActorClass.options``."""
        options = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            options["memory"] = self.memory
        if self.resources:
            options["resources"] = dict(self.resources)
        return options

    def bundle(self):
        """The placement-group bundle of this request (a bundle cannot be empty)."""
        bundle = {"CPU": self.num_cpus or 0.001}
        if self.num_gpus:
            bundle["GPU"] = self.num_gpus
        if self.memory:
            bundle["memory"] = self.memory
        bundle.update(dict(self.resources))
        return bundle

    def amounts(self):
        """``{resource: amount}`` with Ray's names (``CPU``, ``GPU``, ``memory``, custom)."""
        amounts = {"CPU": self.num_cpus, "GPU": self.num_gpus}
        if self.memory:
            amounts["memory"] = self.memory
        amounts.update(dict(self.resources))
        return {k: v for k, v in amounts.items() if v}


def node_request(job_name, num_cpus=1, num_gpus=0, memory=None, resources=None, role_resources=None):
    """The request of a node of role ``job_name``, with the per-role overrides applied."""
    values = {"num_cpus": num_cpus, "num_gpus": num_gpus, "memory": memory, "resources": resources}
    override = (role_resources or {}).get(job_name, {})
    unknown = set(override) - set(values)
    if unknown:
        raise BadInputError("role_resources[{!r}] has unknown keys {}; use {}".format(
            job_name, sorted(unknown), sorted(values)))
    values.update(override)
    for key in ("num_cpus", "num_gpus"):
        if values[key] is None or values[key] < 0:
            raise BadInputError("{} must be >= 0 for {} nodes, got {!r}".format(key, job_name, values[key]))
    return NodeRequest(values["num_cpus"], values["num_gpus"], values["memory"],
                       tuple(sorted((values["resources"] or {}).items())))


def placement_waves(requests):
    """The indices of ``requests`` in the order Ray should place them: ``[narrow, rest]``, or ``[all]``.

    Ray places actors created together in no fixed order, so a node that may go
    anywhere can take the machine whose resources a role was pinned to (for
    example ``role_resources={'chief': {'machine-2': 1}}``), and the pinned node
    then waits for ever. The narrow wave holds the requests that ask for a custom
    resource some other request does not ask for; it is placed before the rest.
    """
    keys = [set(dict(request.resources)) for request in requests]
    shared = set.intersection(*keys) if keys else set()
    narrow = [index for index, own in enumerate(keys) if own - shared]
    if not narrow or len(narrow) == len(requests):
        return [list(range(len(requests)))]
    return [narrow, [index for index in range(len(requests)) if index not in narrow]]


def describe_request(request):
    return ", ".join("{}={:g}".format(k, v) for k, v in sorted(request.amounts().items())) or "nothing"


def check_feasible(requests, node_names):
    """Fails at once when no Ray node could ever hold one TF node, or the cluster could never hold them all.

    A request that only has to wait for resources in use (for example by Spark
    executors) passes; ``reservation_timeout`` bounds that wait.
    """
    largest = {}
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        for key, value in node.get("Resources", {}).items():
            largest[key] = max(largest.get(key, 0), value)
    totals = ray.cluster_resources()
    for name, request in zip(node_names, requests):
        for key, amount in request.amounts().items():
            if amount > largest.get(key, 0):
                raise ReservationTimeoutError(
                    "TF node {} asks for {}={:g} but the largest Ray node has {:g} (the cluster: {}); lower the "
                    "request{}".format(name, key, amount, largest.get(key, 0), _summary(totals),
                                       " or start Ray with GPUs" if key == "GPU" else " or add Ray nodes"))
    needed = {}
    for request in requests:
        for key, amount in request.amounts().items():
            needed[key] = needed.get(key, 0) + amount
    for key, amount in needed.items():
        if amount > totals.get(key, 0) + 1e-9:
            raise ReservationTimeoutError(
                "{} TF nodes ask for {}={:g} in all but the whole Ray cluster has {:g}; lower num_executors or "
                "the per-node request, or add Ray nodes".format(len(requests), key, amount, totals.get(key, 0)))


def check_driver_node_fits(requests, node_names, driver_node_id):
    """Fails at once when a node pinned to the driver's machine (``driver_ps_nodes``) could never fit there.

    Args:
      :requests: the pinned nodes' :class:`NodeRequest` s.
      :node_names: their names (``'ps:0'``), in the same order.
      :driver_node_id: the Ray node id of the driver's machine.
    """
    machine = next((node.get("Resources", {}) for node in ray.nodes() if node.get("NodeID") == driver_node_id), {})
    needed = {}
    for name, request in zip(node_names, requests):
        for key, amount in request.amounts().items():
            needed[key] = needed.get(key, 0) + amount
            if needed[key] > machine.get(key, 0) + 1e-9:
                raise ReservationTimeoutError(
                    "driver_ps_nodes=True pins {} to the driver's machine, which has {}={:g} ({} in all) while "
                    "the ps nodes pinned there ask for {:g}; give the ps a request that machine holds "
                    "(role_resources={{'ps': {{...}}}}) or set driver_ps_nodes=False".format(
                        name, key, machine.get(key, 0), _summary(machine), needed[key]))


def check_placement_feasible(requests, strategy):
    """Fails at once when a placement strategy can never be met by the machines alive now.

    ``STRICT_SPREAD`` needs a machine for every node, ``STRICT_PACK`` one machine
    for all of them; ``PACK`` and ``SPREAD`` are best effort.
    """
    if strategy not in ("STRICT_SPREAD", "STRICT_PACK"):
        return
    machines = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]

    def fits(capacity, amounts):
        return all(capacity.get(key, 0) + 1e-9 >= amount for key, amount in amounts.items())

    if strategy == "STRICT_PACK":
        total = {}
        for request in requests:
            for key, amount in request.amounts().items():
                total[key] = total.get(key, 0) + amount
        if not any(fits(capacity, total) for capacity in machines):
            raise ReservationTimeoutError(
                "placement_strategy='STRICT_PACK' puts all {} TF nodes on one machine, but no Ray node has {}; "
                "use 'PACK' or lower the requests".format(len(requests), _summary(total)))
        return
    largest = max(requests, key=lambda r: sorted(r.amounts().items()))
    able = [capacity for capacity in machines if fits(capacity, largest.amounts())]
    if len(able) < len(requests):
        raise ReservationTimeoutError(
            "placement_strategy='STRICT_SPREAD' puts each of {} TF nodes on its own machine, but only {} of the "
            "{} alive Ray nodes can hold a node asking for {}; use 'SPREAD', fewer nodes, or add machines".format(
                len(requests), len(able), len(machines), _summary(largest.amounts())))


def _summary(resources):
    keep = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not (
        k.startswith("node:") or "memory" in k or k.startswith("accelerator_type"))}
    return ", ".join("{}={:g}".format(k, v) for k, v in sorted(keep.items()))


def object_store_bytes():
    """``{Ray node id: object store bytes}`` of the cluster's live machines."""
    return {node["NodeID"]: node.get("Resources", {}).get("object_store_memory", 0)
            for node in ray.nodes() if node.get("Alive")}
