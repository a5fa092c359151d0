"""Cluster templates, cluster specs and ``TF_CONFIG``: pure functions.

A TF cluster is a list of nodes, each a ``(job_name, task_index)`` pair, in
the order of TensorFlowOnSpark's template: ``ps`` first, then the master node
(for example ``chief``), then the ``evaluator``, then the ``worker`` nodes.
The executor id of a node is its position in that list.
"""
import json

FEEDABLE_JOBS = ("chief", "master", "worker")
"""Roles that read from feed queues; ``ps`` and ``evaluator`` nodes are never fed."""


def cluster_template(num_executors, num_ps, master_node=None, eval_node=False):
    """Assigns executor ids to roles.

    Args:
      :num_executors: total number of TF nodes.
      :num_ps: number of parameter-server nodes.
      :master_node: name of the master role (``'chief'`` or ``'master'``) or ``None``.
      :eval_node: whether one node is an ``evaluator``.

    Returns:
      An ordered dict ``{job_name: [executor_id, ...]}``.

    Raises:
      ValueError: when the roles need more nodes than ``num_executors`` or a count is negative.
    """
    if num_ps < 0:
        raise ValueError("num_ps must be >= 0, got {}".format(num_ps))
    needed = num_ps + (1 if master_node else 0) + (1 if eval_node else 0)
    if num_executors <= needed:
        roles = ["{} ps".format(num_ps)] if num_ps else []
        if master_node:
            roles.append("1 {}".format(master_node))
        if eval_node:
            roles.append("1 evaluator")
        raise ValueError(
            "num_executors={} leaves no worker node: the roles take {} ({}); "
            "set num_executors to at least {}".format(num_executors, needed, ", ".join(roles) or "none", needed + 1)
        )
    if master_node is not None and master_node not in ("chief", "master"):
        raise ValueError("master_node must be 'chief', 'master' or None, got {!r}".format(master_node))
    template = {}
    ids = iter(range(num_executors))
    if num_ps:
        template["ps"] = [next(ids) for _ in range(num_ps)]
    if master_node:
        template[master_node] = [next(ids)]
    if eval_node:
        template["evaluator"] = [next(ids)]
    template["worker"] = list(ids)
    return template


def node_roles(template):
    """Returns ``[(job_name, task_index)]`` indexed by executor id."""
    roles = {}
    for job_name, executor_ids in template.items():
        for task_index, executor_id in enumerate(executor_ids):
            roles[executor_id] = (job_name, task_index)
    return [roles[i] for i in sorted(roles)]


def cluster_spec(roles, addresses):
    """Builds the cluster spec dict ``{job_name: ['host:port', ...]}`` in task order.

    Args:
      :roles: ``[(job_name, task_index)]`` indexed by executor id.
      :addresses: ``'host:port'`` of each node, indexed by executor id.
    """
    if len(roles) != len(addresses):
        raise ValueError("{} roles but {} addresses".format(len(roles), len(addresses)))
    spec = {}
    for (job_name, task_index), address in sorted(zip(roles, addresses), key=lambda ra: (ra[0][0], ra[0][1])):
        spec.setdefault(job_name, []).append(address)
    ordered = {}
    for job_name, _ in roles:
        ordered.setdefault(job_name, spec[job_name])
    return ordered


def tf_config(spec, job_name, task_index):
    """Returns the ``TF_CONFIG`` JSON string for one node.

    The evaluator is not part of the training cluster (TensorFlow's convention):
    its ``TF_CONFIG`` names it in ``task`` but leaves it out of ``cluster``.
    """
    cluster = {job: list(addrs) for job, addrs in spec.items() if job != "evaluator"}
    return json.dumps({"cluster": cluster, "task": {"type": job_name, "index": task_index}, "environment": "cloud"})


def node_name(job_name, task_index):
    """The display name of a node, ``'worker:1'``."""
    return "{}:{}".format(job_name, task_index)


def feedable(roles):
    """Executor ids of the nodes that read feed queues (chief/master/worker), in order."""
    return [i for i, (job_name, _) in enumerate(roles) if job_name in FEEDABLE_JOBS]


def coordination_leader(roles):
    """The executor id of the node TensorFlow makes its coordination service leader, or ``None``.

    TensorFlow's rule (``multi_worker_util.coordination_leader``): ``ps`` task 0 when the cluster has
    ``ps`` nodes, else ``chief`` task 0, else ``worker`` task 0. Under ``MultiWorkerMirroredStrategy``
    every other node registers with the leader when it builds its strategy; one that tries before the
    leader's service is up waits about a second for its next try, so the other nodes start ``map_fun``
    only after the leader did (see :meth:`raytfnode.node._TFNode.start`).

      >>> coordination_leader([("worker", 0), ("worker", 1)]), coordination_leader([("ps", 0), ("worker", 0)])
      (0, 0)
      >>> coordination_leader([("worker", 0), ("chief", 0)]), coordination_leader([("evaluator", 0)])
      (1, None)
    """
    for job_name in ("ps", "chief", "worker"):
        if (job_name, 0) in roles:
            return roles.index((job_name, 0))
    return None
