"""The cluster's directory: which attempt's queue actors and coordinator a lazy feed's producers use.

Each attempt of a cluster (a restart with ``max_failures``) has actors of its own
(``raytfnode-<id>-a<attempt>-...``). A producer of a lazy feed (a Spark task of an
action on ``inference()``'s RDD) may start after a restart, with the feed target
of the attempt that made the RDD; it asks the directory, an actor that lives as
long as the cluster, for the current attempt's actor names instead. So Spark
re-runs only the tasks that had no result, against the new nodes, and partitions
that completed before the failure are not fed again.

A cluster that cannot restart (``max_failures=0``, the default) has no directory:
its first attempt's actors are the only ones, and one more Ray worker process
starting beside the nodes delays their start (about 0.25 s on 2 cores). Nor has
one whose nodes read their own data (``InputMode.TENSORFLOW``): only a feed
restarts a cluster.
"""
from .guard import guarded_actor


class _Directory:
    """Actor body: the current attempt's actor names."""

    def __init__(self):
        self.current = None

    def point_to(self, attempt, queue_names, coordinator_name):
        """Producers use these actors from now on (the driver calls it once per attempt)."""
        self.current = (attempt, tuple(queue_names), coordinator_name)

    def current_actors(self):
        """``(attempt, queue actor names of the fed nodes, coordinator name)`` of the current attempt."""
        return self.current


#: ``DirectoryActor.options(...).remote(secret)``, called through a :class:`raytfnode.guard.GuardedHandle`
DirectoryActor = guarded_actor(_Directory, num_cpus=0)
