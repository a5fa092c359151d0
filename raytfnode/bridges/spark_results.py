"""The lazy results of Spark-fed inference: an RDD whose actions run under the cluster's watch.

``cluster.inference(rdd_or_dataframe)`` returns an RDD, as TensorFlowOnSpark
does, and the user runs the job later with an action (``collect()``,
``count()``, ``saveAsTextFile(...)``). Run as a plain Spark job, a failed node
would reach the caller as Spark's ``Py4JJavaError`` after Spark's task retries,
and a node that died would be noticed only at ``feed_timeout``.

An action called on the returned RDD itself runs as a feed of the cluster
instead: the driver watches the nodes while Spark runs it, a node failure
cancels the Spark job within seconds and raises the node's
:class:`raytfnode.errors.NodeError` (with Spark's exception as its ``__cause__``
when Spark noticed first),
and with ``TFCluster.run(..., max_failures=N)`` the cluster restarts and the
action runs again on the new nodes, every partition of it: the producers find
the current attempt's actors through the cluster's directory
(:mod:`raytfnode.directory`). Nothing the cancelled Spark job computed is
reused: Spark can keep a partition of a cancelled job cut short (a PySpark
task whose input stream ends at the cancellation ends its partition there, as
if the input had ended), so results cached while it ran could miss rows with
no error. RDDs derived from the result (``results.map(...)``) are plain Spark
RDDs: their actions fail within seconds too (each node's queue actor watches
its node), with Spark's own exception.
"""
import functools
import itertools
import threading

from pyspark.rdd import PipelinedRDD

from .spark import _SparkJob

#: the RDD methods that run a Spark job and are watched
ACTIONS = ("collect", "collectAsMap", "count", "countByKey", "countByValue", "first", "fold", "foreach",
           "foreachPartition", "aggregate", "isEmpty", "max", "mean", "min", "reduce", "saveAsPickleFile",
           "saveAsTextFile", "stats", "sum", "take", "takeOrdered", "takeSample", "top", "treeAggregate",
           "treeReduce")

_in_action = threading.local()   # an action that calls another one (first() calls take()) is watched once
_action_numbers = itertools.count()


class InferenceResults(PipelinedRDD):
    """The RDD ``cluster.inference()`` returns for Spark input: one result per input row, lazily.

    It is an ordinary ``pyspark`` RDD; its actions (see :data:`ACTIONS`) run as a
    watched feed of the cluster (node failures raise ``NodeError`` at once and,
    with ``max_failures``, restart the cluster and run the action again).
    """

    @classmethod
    def adopt(cls, rdd, cluster, target, build):
        """Turns ``rdd`` (made by ``build(target)``) into an :class:`InferenceResults` of ``cluster``."""
        rdd.__class__ = cls
        # "rdd": None stands for the results RDD itself. Holding it here would make a reference cycle,
        # and a dropped result (with its cluster's actor handles) would live until the cycle collector ran.
        rdd._raytfnode_feed = {"cluster": cluster, "target": target, "build": build, "rdd": None,
                               "failed": set()}
        return rdd

    def _fed_rdd(self):
        """The RDD an action runs on: this one, or the one a re-feed built (:func:`_feed_to`)."""
        rdd = self._raytfnode_feed["rdd"]
        return self if rdd is None else rdd

    def _run_watched(self, action, args, kwargs):
        feed = self._raytfnode_feed
        if getattr(_in_action, "active", False):
            return action(self._fed_rdd(), *args, **kwargs)
        cluster = feed["cluster"]
        cluster._check_running()
        if feed["target"].feed_id in feed["failed"]:
            # the queues gave up on a failed action's feed: run this one as a new feed
            _feed_to(feed, cluster._target(feed["target"].qname, feed["target"].feed_timeout,
                                           follow_restarts=feed["target"].directory_name is not None))

        def step(target):
            if target is not feed["target"] and not feed["target"].directory_name:
                _feed_to(feed, target)   # a restart: the new nodes have new queue actors
            rdd = self._fed_rdd()
            target = feed["target"]      # a target that follows restarts stays (and so do cached partitions)

            def run():
                _in_action.active = True
                try:
                    return action(rdd, *args, **kwargs)
                finally:
                    _in_action.active = False

            group = "raytfnode-{}-inference-{}".format(target.feed_id, next(_action_numbers))
            job = _SparkJob(rdd.context, group, "raytfnode inference: {}".format(action.__name__), run)
            return cluster._watch(job, target, "inference")

        try:
            return cluster._with_restarts(feed["target"], step)
        except BaseException:
            feed["failed"].add(feed["target"].feed_id)
            raise


def _feed_to(feed, target):
    """Points the results' actions at a new feed (a new feed id, or a restarted cluster's queues)."""
    feed["target"], feed["rdd"] = target, feed["build"](target)


def _watched(action):
    @functools.wraps(action)
    def method(self, *args, **kwargs):
        return self._run_watched(action, args, kwargs)
    return method


for _name in ACTIONS:
    setattr(InferenceResults, _name, _watched(getattr(PipelinedRDD, _name)))
