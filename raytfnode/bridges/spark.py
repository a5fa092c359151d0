"""Spark bridge: RDDs through ``mapPartitionsWithIndex``, DataFrames through ``mapInArrow``.

The feeding functions run in Spark's Python workers (RayDP executors, or any
Spark whose workers reach the Ray cluster, local mode included). They connect
to Ray once per worker process and feed the partition they are given; they
know nothing of TensorFlow.

A DataFrame is read as Arrow record batches: numeric columns become numpy
arrays and array columns 2-D (N-D) arrays without a Python object per row.
"""
import pickle

from .. import result_blocks
from ..errors import BadInputError
from ..feeding import feed_inference_blocks, feed_inference_partition, feed_train_partition
from ..zipcache import reuse_unchanged_archive_directories


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


class SparkRDDSource:
    """An RDD of rows: tuples, lists, numpy arrays or scalars."""

    def __init__(self, rdd):
        self.rdd = rdd

    def validate(self, input_mapping):
        return None

    def train_job(self, target, epoch):
        def feed(index, rows):
            reuse_unchanged_archive_directories()
            yield feed_train_partition(target, epoch, index, rows=rows)

        group = "raytfnode-{}-{}".format(target.feed_id, epoch)
        return _SparkJob(self.rdd.context, group, "raytfnode train epoch {}".format(epoch),
                         lambda: self.rdd.mapPartitionsWithIndex(feed).collect())

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

    def train_job(self, target, epoch):
        def feed(batches):
            import pyarrow as pa
            reuse_unchanged_archive_directories()
            index = _task_context().partitionId()
            where = "partition {}".format(index)
            stats = feed_train_partition(target, epoch, index, chunks=_arrow_chunks(batches, where, target))
            yield pa.RecordBatch.from_pylist([stats])

        def action():
            return [row.asDict() for row in self.df.mapInArrow(feed, _STATS_SCHEMA).collect()]

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
        return pickled.flatMap(lambda row: pickle.loads(row.results), preservesPartitioning=True)
