"""Spark bridge: RDDs through ``mapPartitionsWithIndex``, DataFrames through ``mapInArrow``.

The feeding functions run in Spark's Python workers (RayDP executors, or any
Spark whose workers reach the Ray cluster, local mode included). They connect
to Ray once per worker process and feed the partition they are given; they
know nothing of TensorFlow.

A DataFrame is read as Arrow record batches: numeric columns become numpy
arrays and array columns 2-D (N-D) arrays without a Python object per row.
"""
import logging
import pickle

from .. import result_blocks
from ..errors import BadInputError
from ..feed_tasks import describe_partitions, feeding_tasks
from ..feeding import feed_inference_blocks, feed_inference_partition, feed_train_partition
from ..zipcache import reuse_unchanged_archive_directories

logger = logging.getLogger(__name__)


class _SparkJob:
    """One Spark job in its own job group, so it can be cancelled from another thread."""

    def __init__(self, sc, group, description, action):
        self.sc = sc
        self.group = group
        self.description = description
        self.action = action

    def __call__(self):
        self.sc.setJobGroup(self.group, self.description, interruptOnCancel=True)
        try:
            return self.action()
        finally:
            self.sc.setLocalProperty("spark.jobGroup.id", None)

    def cancel(self):
        self.sc.cancelJobGroup(self.group)


def _task_context():
    from pyspark import TaskContext
    return TaskContext.get()


#: up to this many source partitions each feeding task carries the indices of the partitions it reads, which
#: errors name; beyond, only how many (the list travels with every task), and errors name the count
_NAMED_PARENTS_UP_TO = 2000


def _parent_indices(jvm, partition):
    """The source partitions a JVM ``CoalescedRDDPartition`` reads, in one py4j call.

    Asking for each parent (``parents().apply(i).index()``) cost two calls per source partition: 0.12 s of
    the driver for 400 cached DataFrame partitions against 0.005 s this way.
    """
    text = jvm.java.util.Arrays.toString(partition.parentsIndices())
    return [int(index) for index in text.strip("[]").split(",") if index.strip()]


def _training_plan(data, num_partitions, cores, feed_tasks, coalesce, jvm_partitions, jvm):
    """What a training epoch feeds: ``(data, groups)``; ``groups[task]`` says which source partitions a task reads.

    ``groups`` is ``None`` when each partition is fed in its own task (see
    :mod:`raytfnode.feed_tasks`); else ``groups[task]`` is the list of the
    partitions' indices, or (beyond ``_NAMED_PARENTS_UP_TO`` partitions) their
    number. ``coalesce(n)`` coalesces ``data``; ``jvm_partitions(coalesced)``
    gives its JVM partitions, whose parents are the partitions each task reads;
    ``jvm`` is the py4j gateway's JVM view.
    """
    tasks = feeding_tasks(num_partitions, cores, feed_tasks)
    if tasks >= num_partitions:
        return data, None
    coalesced = coalesce(tasks)
    named = num_partitions <= _NAMED_PARENTS_UP_TO
    try:
        partitions = jvm_partitions(coalesced)
        groups = []
        for task in range(len(partitions)):
            parents = _parent_indices(jvm, partitions[task])
            groups.append(parents if named else len(parents))
    except Exception as exc:  # noqa: BLE001  (py4j: a plan whose partitions are not a plain coalesce)
        logger.info("feeding each of the %d partitions in its own Spark task: the coalesced plan did not say "
                    "which partitions each task reads (%s)", num_partitions, exc)
        return data, None
    covered = (sorted(i for group in groups for i in group) == list(range(num_partitions)) if named
               else sum(groups) == num_partitions)
    if len(groups) != tasks or not covered:
        logger.info("feeding each of the %d partitions in its own Spark task: the coalesced plan's %d tasks "
                    "do not read each partition once", num_partitions, len(groups))
        return data, None
    logger.info("feeding %d partitions through %d Spark tasks on %d Spark cores (each task reads a run of "
                "partitions; train(feed_tasks=0) feeds each partition in its own task)", num_partitions, tasks, cores)
    return coalesced, groups


def _where(groups, task):
    """The source partitions feeding task ``task`` reads, as errors name them."""
    if groups is None:
        return "partition {}".format(task)
    group = groups[task]
    if isinstance(group, int):
        return "feeding task {} of {}, which reads {} of the source's {} partitions (rows counted across them)".format(
            task, len(groups), group, sum(groups))
    return "feeding task {} of {}, which reads {} in that order (rows counted across them)".format(
        task, len(groups), describe_partitions(group))


def _counting_partitions(stats, groups):
    """Per-task stats with the number of source partitions each task read (the report counts partitions)."""
    if groups is not None:
        for stat in stats:
            group = groups[stat["partition"]]
            stat["partitions"] = group if isinstance(group, int) else len(group)
    return stats


class SparkRDDSource:
    """An RDD of rows: tuples, lists, numpy arrays or scalars."""

    def __init__(self, rdd):
        self.rdd = rdd
        self.feed_tasks = None    # train(feed_tasks=...): see raytfnode.feed_tasks
        self._plan = None

    def validate(self, input_mapping):
        return None

    def _training(self):
        if self._plan is None:
            self._plan = _training_plan(self.rdd, self.rdd.getNumPartitions(), self.rdd.context.defaultParallelism,
                                        self.feed_tasks, self.rdd.coalesce, lambda c: c._jrdd.rdd().partitions(),
                                        self.rdd.context._jvm)
        return self._plan

    def train_job(self, target, epoch):
        rdd, groups = self._training()

        def feed(index, rows):
            reuse_unchanged_archive_directories()
            yield feed_train_partition(target, epoch, index, rows=rows, where=_where(groups, index))

        group = "raytfnode-{}-{}".format(target.feed_id, epoch)
        return _SparkJob(self.rdd.context, group, "raytfnode train epoch {}".format(epoch),
                         lambda: _counting_partitions(rdd.mapPartitionsWithIndex(feed).collect(), groups))

    def inference(self, target, cluster):
        from .spark_results import InferenceResults
        return InferenceResults.adopt(self._inference_rdd(target), cluster, target, self._inference_rdd)

    def _inference_rdd(self, target):
        def infer(index, rows):
            reuse_unchanged_archive_directories()
            run_id = "stage-{}".format(_task_context().stageId())
            yield from feed_inference_partition(target, index, rows=rows, run_id=run_id)

        return self.rdd.mapPartitionsWithIndex(infer, preservesPartitioning=True)


def _arrow_chunks(batches, where, target):
    """Cuts Arrow record batches into chunks of about ``target.chunk_bytes`` (at most ``target.chunk_rows``).

    Large batches are sliced (no copy); small batches, and tails shorter than half a chunk, are
    joined with what follows, so a source that hands out small batches (Spark's
    ``maxRecordsPerBatch`` of 10,000 rows of one number is 80 kB) does not cost one object and a few
    actor calls per 80 kB. The boundaries depend only on the batches, so a retried task cuts the
    same chunks.
    """
    from ..chunks import chunk_from_arrow, concat_chunks

    offset = 0
    pending, pending_rows = [], 0
    for batch in batches:
        if not batch.num_rows:
            continue
        chunk = chunk_from_arrow(batch, where, offset)
        offset += batch.num_rows
        per_chunk = max(1, min(target.chunk_rows, target.chunk_bytes * chunk.num_rows // max(chunk.nbytes, 1)))
        start = 0
        if pending:
            start = min(per_chunk - pending_rows, chunk.num_rows)
            pending.append(chunk.slice(0, start))
            pending_rows += start
            if pending_rows < per_chunk:
                continue
            yield concat_chunks(pending)
            pending, pending_rows = [], 0
        while chunk.num_rows - start >= per_chunk:
            yield chunk.slice(start, start + per_chunk)
            start += per_chunk
        rest = chunk.num_rows - start
        if rest * 2 >= per_chunk:
            yield chunk.slice(start, chunk.num_rows)
        elif rest:
            pending, pending_rows = [chunk.slice(start, chunk.num_rows)], rest
    if pending:
        yield concat_chunks(pending)


_RESULTS_PER_RECORD = 65536   # results pickled into one Arrow record of the inference DataFrame
_STATS_SCHEMA = "partition long, epoch long, rows long, consumed long, skipped long"


class SparkDataFrameSource:
    """A DataFrame, read through Arrow (``mapInArrow``): rows are never pickled one by one."""

    def __init__(self, df):
        self.df = df
        self.feed_tasks = None    # train(feed_tasks=...): see raytfnode.feed_tasks
        self._plan = None

    def validate(self, input_mapping):
        if input_mapping:
            missing = [c for c in input_mapping if c not in self.df.columns]
            if missing:
                raise BadInputError("input_mapping names column(s) {} that the DataFrame does not have; its "
                                    "columns are {}".format(missing, self.df.columns))
        unsupported = [(f.name, f.dataType.simpleString()) for f in self.df.schema.fields
                       if f.dataType.typeName() in ("map", "struct")]
        if unsupported:
            raise BadInputError("cannot feed DataFrame columns of type map/struct: {}; select or flatten "
                                "them first".format(unsupported))

    def _training(self):
        if self._plan is None:
            self._plan = _training_plan(self.df, self.df.rdd.getNumPartitions(),
                                        self.df.sparkSession.sparkContext.defaultParallelism, self.feed_tasks,
                                        self.df.coalesce, lambda c: c._jdf.queryExecution().toRdd().partitions(),
                                        self.df.sparkSession.sparkContext._jvm)
        return self._plan

    def train_job(self, target, epoch):
        df, groups = self._training()

        def feed(batches):
            import pyarrow as pa
            reuse_unchanged_archive_directories()
            index = _task_context().partitionId()
            where = _where(groups, index)
            stats = feed_train_partition(target, epoch, index, chunks=_arrow_chunks(batches, where, target),
                                         where=where)
            yield pa.RecordBatch.from_pylist([stats])

        def action():
            return _counting_partitions([row.asDict() for row in df.mapInArrow(feed, _STATS_SCHEMA).collect()],
                                        groups)

        group = "raytfnode-{}-{}".format(target.feed_id, epoch)
        return _SparkJob(self.df.sparkSession.sparkContext, group, "raytfnode train epoch {}".format(epoch), action)

    def inference(self, target, cluster):
        from .spark_results import InferenceResults
        return InferenceResults.adopt(self._inference_rdd(target), cluster, target, self._inference_rdd)

    def _inference_rdd(self, target):
        def infer(batches):
            import pyarrow as pa
            reuse_unchanged_archive_directories()
            context = _task_context()
            index = context.partitionId()
            where = "partition {}".format(index)
            blocks = feed_inference_blocks(target, index, chunks=_arrow_chunks(batches, where, target),
                                           run_id="stage-{}".format(context.stageId()))
            for block in blocks:   # an array block pickles as one buffer, not row by row
                for piece in result_blocks.slices(block, _RESULTS_PER_RECORD):
                    yield pa.RecordBatch.from_pylist([{"results": pickle.dumps(piece, protocol=5)}])

        pickled = self.df.mapInArrow(infer, "results binary").rdd
        return pickled.mapPartitions(_unpickled_results, preservesPartitioning=True)


def _unpickled_results(records):
    """The results an inference task pickled into its ``results`` records, one by one.

    This runs in Spark Python workers of their own (an RDD's, not the Arrow ones of the feeding
    task), so they are spared re-reading Spark's jar directories before each task here too (see
    :mod:`raytfnode.zipcache`).
    """
    reuse_unchanged_archive_directories()
    for record in records:
        yield from pickle.loads(record.results)
