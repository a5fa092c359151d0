"""How many Spark tasks feed a training epoch: one per partition, or one per Spark core when partitions are more.

A feeding task holds its Spark core until the nodes have read its rows (it
owns their objects until then; see :mod:`raytfnode.feeding`), and a Spark task
costs about 80-100 ms here before its first row (scheduling, a Python worker,
Arrow set-up), whatever is done with the rows. Partitions beyond the cores
therefore run in waves, each waiting for the nodes before the next starts:
4 cached partitions on 2 cores fed in 2 waves, each task 15-30 ms between
its last put and the nodes' last read, then 12 ms (an RDD) or 68 ms (a
DataFrame; medians) until the next wave's task began.

A training feed does not need the source's partitioning (rows are spread over
the nodes in chunks anyway), so a Spark source with more partitions than
Spark has cores is fed through one task per core, each reading a run of
partitions (``coalesce``, without a shuffle; consecutive ones unless Spark
groups cached partitions by the host that holds them). In one wave, 4
partitions on 2 cores fed faster in 8 or 9 of 9 alternated pairs for each of
MNIST and int64 rows from an RDD and a DataFrame (medians 0.64 against 0.75 s
for the MNIST DataFrame, 0.49 against 0.52 s for its RDD), and 8 and 400
partitions fed faster through 2 tasks than through 4 (6 or 7 of 7). 400
partitions each in a task of its own took 21 s, as long as Spark's own
``mapInArrow`` over them. Inference keeps one task per partition: its
results keep the input's partitioning.

Spark's ``coalesce`` knows hosts, not executors: with several executors on one
machine a feeding task reads the cached partitions the others hold through a
block fetch each. On RayDP on 2 cores, 60,000 MNIST rows cached in 400
partitions fed at 0.55x the rate of 4 partitions with two executors of one
core, and at 0.82x with one executor of two cores (Spark's own read: 0.43x and
0.81x). One executor per machine, with the machine's cores, suits a feed.

Chunk keys, exactly-once delivery and retries work per feeding task (a
retried task reads the same partitions in the same order); errors name the
source partitions the task reads, and rows are counted across them
(``train(feed_tasks=0)`` feeds each partition in its own task, whose errors
name the partition and the row in it).
"""
from .errors import BadInputError

_NAMED = 6   # scattered partitions an error names one by one


def check_feed_tasks(feed_tasks):
    """``feed_tasks`` as given to ``train()``, or :class:`BadInputError` saying what it may be."""
    if feed_tasks is None or (isinstance(feed_tasks, int) and not isinstance(feed_tasks, bool) and feed_tasks >= 0):
        return feed_tasks
    raise BadInputError("feed_tasks must be None (automatic), 0 (one Spark task per partition) or a positive "
                        "number of tasks, got {!r}".format(feed_tasks))


def feeding_tasks(num_partitions, cores, feed_tasks=None):
    """The number of Spark tasks that feed ``num_partitions`` partitions on ``cores`` Spark cores.

    ``feed_tasks=None`` is automatic: one task per partition while there are
    no more partitions than cores, else one task per core (the epoch runs in
    one wave of tasks). ``0`` is always one task per partition; a positive
    number is a cap.

      >>> feeding_tasks(400, 2), feeding_tasks(4, 2), feeding_tasks(2, 4), feeding_tasks(400, 2, 0)
      (2, 2, 2, 400)
      >>> feeding_tasks(400, 2, 16)
      16
    """
    check_feed_tasks(feed_tasks)
    if num_partitions <= 1 or feed_tasks == 0:
        return num_partitions
    if feed_tasks is None:
        return min(num_partitions, max(1, cores))
    return min(feed_tasks, num_partitions)


def describe_partitions(indices):
    """Source partitions read by one feeding task, for errors: ``'partition 7'``, ``'partitions 8-15'``.

      >>> describe_partitions([8, 9, 10]), describe_partitions([3]), describe_partitions([1, 4])
      ('partitions 8-10', 'partition 3', 'partitions 1, 4')

    Spark groups cached partitions by the host that holds them, so a run need not
    be consecutive; a long scattered run is named by its first few.
    """
    indices = list(indices)
    if len(indices) == 1:
        return "partition {}".format(indices[0])
    if indices == list(range(indices[0], indices[0] + len(indices))):
        return "partitions {}-{}".format(indices[0], indices[-1])
    if len(indices) > _NAMED:
        return "partitions {}, ... ({} partitions)".format(", ".join(str(i) for i in indices[:_NAMED]), len(indices))
    return "partitions {}".format(", ".join(str(i) for i in indices))
