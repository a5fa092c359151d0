"""Bridges: turn partitions of a data source into chunks for the feed queues.

A source object has three methods:

* ``validate(input_mapping)``: rejects data the nodes cannot use before any job starts;
* ``train_job(target, epoch)``: a callable that feeds one epoch and returns the
  per-partition stats, with a ``cancel()`` attribute;
* ``inference(target, cluster)``: the results, in the source's own kind.

A streaming source (a streaming DataFrame, a DStream; ``streaming = True``) has
``train_stream(cluster, qname, feed_timeout, ...)`` instead of ``train_job``: it
starts the stream and returns its :class:`raytfnode.bridges.streaming.StreamingFeed`.

Bridges know nothing of TensorFlow.
"""
from ..errors import BadInputError
from ..worker_ray import pass_auth_to_spark_workers


def _spark_context(data):
    """The SparkContext behind an RDD, a DataFrame or a DStream (``None`` for anything else)."""
    if hasattr(data, "sparkSession"):
        return data.sparkSession.sparkContext
    context = getattr(data, "context", None)
    if callable(context):            # a DStream's context() is its StreamingContext
        context = context()
    return getattr(context, "sparkContext", context) if context is not None else None


def source_for(data, sc=None):
    """The source object for ``data``: a Spark RDD, DataFrame (static or streaming) or DStream, a Ray Dataset, or a list of partitions."""
    kind = type(data).__module__ + "." + type(data).__name__
    if kind.startswith("pyspark."):
        spark_context = _spark_context(data)
        if spark_context is not None:
            pass_auth_to_spark_workers(spark_context)   # the workers that feed connect to Ray
    from .streaming import DStreamSource, StreamingDataFrameSource, is_dstream, is_streaming_dataframe
    if is_dstream(data):
        return DStreamSource(data)
    if is_streaming_dataframe(data):
        return StreamingDataFrameSource(data)
    if kind.startswith("pyspark.") and hasattr(data, "mapPartitionsWithIndex"):
        from .spark import SparkRDDSource
        return SparkRDDSource(data)
    if kind.startswith("pyspark.sql") and hasattr(data, "mapInArrow"):
        from .spark import SparkDataFrameSource
        return SparkDataFrameSource(data)
    if kind.startswith("ray.data") and hasattr(data, "materialize"):
        from .raydata import RayDatasetSource
        return RayDatasetSource(data)
    if isinstance(data, (list, tuple)) and all(isinstance(p, (list, tuple)) for p in data):
        from .local import LocalSource
        return LocalSource(data)
    raise BadInputError("cannot feed a {}: give a Spark RDD, a Spark DataFrame (static or streaming), a DStream, a Ray Dataset, or a list of "
                        "partitions (lists of rows)".format(kind))
