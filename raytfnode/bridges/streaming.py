"""Streaming bridge: Spark Structured Streaming DataFrames and the original's DStreams.

``cluster.train(streaming_df)`` starts a query whose ``foreachBatch`` feeds every
micro-batch through the DataFrame path of a static feed (Arrow, chunks, the
coordinator's balanced split, the queues' byte bound) and returns a
:class:`StreamingFeed` at once, so the driver goes on. ``cluster.train(dstream)``
does the same per RDD of the DStream (``foreachRDD``).

Exactly once per micro-batch: each micro-batch is fed as a feed of its own whose
chunk keys name the stream and the batch id. A batch fed whole is recorded with
the cluster's coordinator, so Spark replaying it (same ``batch_id``, after a
failure and a restart from the checkpoint location) skips it; a batch that failed
half way is fed again with the same chunk keys, and the queues drop the chunks
that were read already. The stream's identity is its checkpoint location, so the
ledger survives a restart of the query as long as the TF cluster runs.

Backpressure: ``foreachBatch`` returns only when the batch's rows were read, so a
slow trainer holds the query back; while a batch is fed, producers wait for room
under the queues' byte bound. Nothing accumulates outside Spark's source.

Epochs: by default a stream is one epoch. Its rows are leveled across the fed
nodes over the whole stream (within one row), and the end of the stream puts an
end-of-epoch marker and then an end-of-feed marker in every fed node's queue: one
pass of ``DataFeed.as_dataset`` (``model.fit(ds, epochs=1)``) trains on the whole
stream, and a ``next_batch`` loop ends with ``should_stop()``. With
``epoch_per_batch=True`` every micro-batch ends with an end-of-epoch marker (each
pass is one micro-batch, leveled within one row) and the end of the stream puts
the end-of-feed marker.

The stream ends cleanly when the query stops (its source is exhausted with
``availableNow``, or :meth:`StreamingFeed.stop`, or ``cluster.shutdown()``), when a
node calls ``DataFeed.terminate()``, or when every fed node's ``map_fun``
returned. A node failure stops the query within a second or so, and
:meth:`StreamingFeed.await_termination` raises the node's ``NodeError``; with
``TFCluster.run(..., max_failures=N)`` the cluster restarts instead (every node,
as for ``train()``; ``map_fun`` resumes from ``ctx.checkpoint_dir``) and the stream
goes on: batches fed whole before the failure are not fed again (the ledger moves
to the new coordinator), the batch in flight is fed whole to the new nodes, and
the query itself never stops. :meth:`StreamingFeed.progress` lists the restarts.
"""
import dataclasses
import hashlib
import logging
import os
import threading
import time
import uuid
import weakref

import ray
from ray.exceptions import RayActorError

from ..errors import BadInputError, FeedError, NodeError, RayTFNodeError, actor_death_message
from ..feed_queue import END_EPOCH, END_FEED
from ..refs import discard
from .errors import unwrap

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.25

_feeds = weakref.WeakKeyDictionary()   # cluster -> its StreamingFeeds, for shutdown()


def is_dstream(data):
    """Whether ``data`` is a Spark Streaming ``DStream``."""
    return type(data).__module__.startswith("pyspark.streaming") and hasattr(data, "foreachRDD")


def is_streaming_dataframe(data):
    """Whether ``data`` is a streaming (Structured Streaming) DataFrame."""
    return type(data).__module__.startswith("pyspark.sql") and bool(getattr(data, "isStreaming", False))


def stream_key(qname, checkpoint_location=None):
    """The identity of a stream in the coordinator's ledger.

    With a checkpoint location it is derived from it (and the queue), so a query
    restarted from that location is the same stream and skips the batches fed
    already; without one it is new on every call (a query without a checkpoint
    starts over, and its batch ids start again at 0).
    """
    if checkpoint_location:
        digest = hashlib.sha1("{}\0{}".format(qname, os.path.abspath(checkpoint_location)
                                              if "://" not in checkpoint_location else checkpoint_location)
                              .encode()).hexdigest()
        return "stream-" + digest[:12]
    return "stream-" + uuid.uuid4().hex[:12]


class _StreamStopped(FeedError):
    """A micro-batch that reached a stopping stream: it is left uncommitted, for a restart to feed."""


def _first_line(exc):
    text = str(exc)
    return "{}: {}".format(type(exc).__name__, text.splitlines()[0] if text else "")


class _NodeWatch:
    """Watches the cluster's nodes with join calls of its own (the driver's watch loop runs on another thread)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.pending = {node.join.remote(None): eid for eid, node in enumerate(cluster.nodes)}
        self.outcomes = {}
        self.lock = threading.Lock()   # the monitor and Spark's callback thread both poll

    def poll(self):
        """Collects outcomes; returns the first node failure as a ``NodeError``, or ``None``."""
        with self.lock:
            return self._poll()

    def _poll(self):
        if self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=0)
            for ref in ready:
                eid = self.pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except RayActorError as exc:
                    outcome = ("dead", actor_death_message(exc), None)
                    try:   # producers waiting on this node fail now
                        self.cluster.queue_actors[eid].set_error.remote(outcome[1])
                    except Exception:  # noqa: BLE001
                        pass
                if outcome is None:
                    self.pending[self.cluster.nodes[eid].join.remote(None)] = eid
                    continue
                self.outcomes[eid] = outcome
        for eid, outcome in sorted(self.outcomes.items()):
            if outcome[0] in ("error", "dead"):
                job_name, task_index = self.cluster.roles[eid]
                return NodeError(job_name, task_index, outcome[1], outcome[2])
        return None

    def discard(self):
        """Reads the join calls on nodes that a restart stopped, so Ray reports none as an unhandled error."""
        with self.lock:
            refs, self.pending = list(self.pending), {}
        discard(refs, 2.0)

    def fed_nodes_finished(self):
        """Whether every fed node's ``map_fun`` returned."""
        return all(eid in self.outcomes for eid in self.cluster._fed())


class StreamingFeed:
    """A stream feeding the TF nodes: returned by ``cluster.train(streaming_df)`` or ``cluster.train(dstream)``.

    Attributes:
      :query: the running ``StreamingQuery`` (``None`` for a DStream).
      :ssc: the ``StreamingContext`` of a DStream (``None`` for a query).
      :stream_key: the stream's identity in the coordinator's ledger of fed batches.
    """

    def __init__(self, cluster, qname, feed_timeout, epoch_per_batch, key):
        self.cluster = cluster
        self.qname = qname
        self.feed_timeout = float(feed_timeout)
        self.epoch_per_batch = bool(epoch_per_batch)
        self.stream_key = key
        self.query = None
        self.ssc = None
        self._lock = threading.Lock()
        self._current = None        # the batch feed id being fed, or None
        self._idle = threading.Event()   # set while no batch is fed
        self._idle.set()
        self._error = None          # the error that failed the stream
        self._ended = threading.Event()
        self._stopping = False
        self._stop_reason = None
        self._batches = 0
        self._replayed = 0
        self._rows = 0
        self._rows_per_slot = [0] * len(cluster._fed())
        self._last_batch_id = None
        self._watch = _NodeWatch(cluster)
        self._watch_attempt = cluster.attempt
        self._restart_lock = threading.Lock()
        self.restarts = []              # one record per cluster restart while streaming
        self._monitor = None

    # ------------------------------------------------------------ feeding

    def _batch_target(self, batch_id):
        target = self.cluster._target(self.qname, self.feed_timeout)
        return dataclasses.replace(target, feed_id="{}-b{}".format(self.stream_key, batch_id))

    def feed_batch(self, source, batch_id):
        """Feeds one micro-batch (a static DataFrame or RDD source) and waits until its rows were read.

        Called by Spark on the driver (``foreachBatch`` / ``foreachRDD``); a batch
        fed whole before (a replay) is skipped.
        """
        coordinator = self.cluster.coordinator
        with self._lock:
            if self._error is not None:
                raise self._error
            if self._stopping:   # stop() waits for the batch in flight; a later one is left to a restart
                raise _StreamStopped("stream {} is stopping: batch {} is left for a restart".format(
                    self.stream_key, batch_id))
        if ray.get(coordinator.stream_batch.remote(self.stream_key, batch_id)) is not None:
            logger.info("stream %s: batch %s was fed already; skipping its replay", self.stream_key, batch_id)
            self._replayed += 1
            return
        target = self._batch_target(batch_id)
        if not self.epoch_per_batch:
            coordinator.share_level.remote(target.feed_id, (self.stream_key, "stream"))
        with self._lock:
            self._current = target.feed_id
            self._idle.clear()
        attempt = self.cluster.attempt
        try:
            stats = source.train_job(target, 0).action()
        except BaseException as exc:
            if self._stopping and self._error is None:
                raise _StreamStopped("stream {} was stopped while batch {} was fed".format(
                    self.stream_key, batch_id)) from None
            error = self._explain(exc) if self.cluster.attempt == attempt else None
            if error is None or (isinstance(error, NodeError) and self._recover(error, attempt)):
                logger.info("stream %s: feeding batch %s again, whole, to the restarted nodes",
                            self.stream_key, batch_id)
                stats = None
            else:
                self._fail(error)
                error = self._error or error   # the policy's final error when restarts ran out
                if error is exc:
                    raise
                raise error from None
        finally:
            with self._lock:
                self._current = None
                self._idle.set()
        if stats is None:
            return self.feed_batch(source, batch_id)
        counts = ray.get(coordinator.finish_stream_batch.remote(self.stream_key, batch_id, target.feed_id))
        if self.epoch_per_batch and sum(counts):
            self.cluster._put_markers(self.qname, [(END_EPOCH, target.feed_id, 0)])
        self._batches += 1
        self._rows += sum(part["rows"] - part["skipped"] for part in stats)
        self._rows_per_slot = [total + count for total, count in zip(self._rows_per_slot, counts)]
        self._last_batch_id = batch_id

    def _explain(self, exc):
        """The error to raise for a failed batch: a node's own error when there is one."""
        if isinstance(exc, (NodeError, BadInputError)):
            return exc
        dead = self.cluster._dead_bookkeeping()
        if dead is not None:   # a dead coordinator or queue actor; the nodes' errors are its consequences
            return dead
        deadline = time.monotonic() + 3.0
        while True:   # a node's error may reach its queue a moment after the producer saw it
            error = self._watch.poll()
            if error is not None or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if error is not None:
            return error
        if isinstance(exc, RayTFNodeError):
            return exc
        unwrapped = unwrap(exc)
        return unwrapped if isinstance(unwrapped, RayTFNodeError) else FeedError(
            "stream {} failed while feeding a micro-batch: {}".format(self.stream_key, _first_line(exc)))

    def _recover(self, error, attempt):
        """Restarts the cluster after ``error`` when ``run(max_failures=)`` allows; whether the stream goes on.

        Called by Spark's batch thread and the monitor, whichever sees the failure
        first; the second finds the cluster past ``attempt`` and just goes on.
        """
        with self._restart_lock:
            if self.cluster.attempt != attempt:
                return True
            if self.cluster._policy.max_failures == 0:
                return False
            try:
                ledger = ray.get(self.cluster.coordinator.stream_ledger.remote(self.stream_key), timeout=30)
            except Exception:  # noqa: BLE001  (without the ledger a restart could feed batches twice)
                logger.exception("stream %s: the ledger of fed batches could not be read", self.stream_key)
                return False
            try:
                record = self.cluster._restart(error)
            except RayTFNodeError as final:   # the policy said no: this error ends the stream
                self._fail(final)
                return False
            ray.get(self.cluster.coordinator.restore_stream_ledger.remote(self.stream_key, ledger))
            self._watch.discard()
            self._watch = _NodeWatch(self.cluster)
            self._watch_attempt = self.cluster.attempt
            record.pop("fed_rows", None)
            self.restarts.append(record)
            logger.warning("stream %s: the cluster restarted (attempt %d) after %s failed; the stream goes on",
                           self.stream_key, self.cluster.attempt, error.node)
            return True

    # ------------------------------------------------------------ watching

    def _start(self):
        self._monitor = threading.Thread(target=self._run_monitor, daemon=True,
                                         name="raytfnode-stream-" + self.stream_key)
        self._monitor.start()
        _feeds.setdefault(self.cluster, []).append(self)

    def _source_active(self):
        if self.query is not None:
            return self.query.isActive
        state = str(self.ssc._jssc.getState())
        return state != "STOPPED"

    def _run_monitor(self):
        try:
            while self._source_active():
                watched_attempt = self._watch_attempt
                error = self._watch.poll()
                if error is not None and self._recover(error, watched_attempt):
                    continue
                if error is not None:
                    self._fail(error)
                    self._stop_source(graceful=False)
                    break
                self.cluster._check_recovered()   # a restart's recovery ends when the new nodes consume
                if not self._stopping:
                    terminated = ray.get(self.cluster.coordinator.terminated.remote())
                    if terminated is not None:
                        self._request_stop("node {} called DataFeed.terminate()".format(terminated))
                    elif self._watch.fed_nodes_finished():
                        self._request_stop("every fed node's map_fun returned")
                time.sleep(WATCH_SECONDS)
            self._finish()
        except BaseException as exc:  # noqa: BLE001  (the monitor must always end the stream)
            logger.exception("watching stream %s failed", self.stream_key)
            dead = self.cluster._dead_bookkeeping() if isinstance(exc, RayActorError) else None
            self._fail(dead or FeedError("watching stream {} failed: {}".format(self.stream_key, _first_line(exc))))
            self._stop_source(graceful=False)
        finally:
            self._ended.set()

    def _request_stop(self, reason):
        self._stopping = True
        self._stop_reason = reason
        logger.info("stream %s: stopping, %s", self.stream_key, reason)
        threading.Thread(target=self._stop_source, kwargs={"graceful": True}, daemon=True).start()

    def _stop_source(self, graceful=True):
        with self._lock:
            self._stopping = True
        try:
            if self.query is not None:
                if graceful:   # let the batch in flight finish: it is then recorded, not left for a replay
                    self._idle.wait(self.feed_timeout)
                self.query.stop()
            elif self.ssc is not None and str(self.ssc._jssc.getState()) == "ACTIVE":
                self.ssc.stop(stopSparkContext=False, stopGraceFully=graceful)
        except Exception:  # noqa: BLE001
            logger.exception("stopping stream %s failed", self.stream_key)

    def _fail(self, error):
        """Records the stream's first error; a node's error also wakes the producers of the batch in flight.

        Other failures leave the batch's feed open: a restart of the query feeds its unread chunks.
        """
        with self._lock:
            if self._error is None:
                self._error = error
            current = self._current
        if current is not None and isinstance(error, NodeError):
            for eid in self.cluster._fed():
                try:
                    self.cluster.queue_actors[eid].cancel_feed.remote(current, _first_line(error)[:300])
                except Exception:  # noqa: BLE001
                    pass

    def _finish(self):
        """The source stopped: a clean end gives the nodes the end of the feed; a failure is recorded."""
        failure = self.query.exception() if self.query is not None else None
        if self._error is None and failure is not None and not (self._stopping and "_StreamStopped" in str(failure)):
            self._fail(self._explain(failure))
        if self._error is not None:
            logger.warning("stream %s ended with an error: %s", self.stream_key, _first_line(self._error))
            return
        markers = [(END_FEED,)] if self.epoch_per_batch else [(END_EPOCH, self.stream_key, 0), (END_FEED,)]
        self.cluster._put_markers(self.qname, markers)
        self.cluster.coordinator.forget.remote(self.stream_key)
        logger.info("stream %s ended after %d batches (%d rows): the nodes got the end of the feed",
                    self.stream_key, self._batches, self._rows)

    # ------------------------------------------------------------ public

    @property
    def is_active(self):
        """Whether the stream still feeds (its query or streaming context runs)."""
        return not self._ended.is_set()

    def stop(self):
        """Stops the query (or the streaming context, gracefully) and waits until the nodes got the end of the feed.

        Raises the stream's error, if it failed.
        """
        if not self._ended.is_set():
            self._stopping = True
            self._stop_reason = self._stop_reason or "stop() was called"
            self._stop_source(graceful=True)
        self.await_termination()

    def await_termination(self, timeout=None):
        """Waits until the stream ended; returns ``False`` on timeout.

        Raises the stream's error: the ``NodeError`` of a failed node, or the
        query's own failure as a :class:`raytfnode.errors.FeedError`.
        """
        if not self._ended.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    def exception(self):
        """The error that ended the stream, or ``None``."""
        return self._error

    def rows_per_node(self):
        """Rows this stream fed to each fed node in the micro-batches it fed whole: ``{'worker:0': rows, ...}``."""
        return dict(zip((self.cluster._name(eid) for eid in self.cluster._fed()), self._rows_per_slot))

    def progress(self):
        """Batches and rows fed so far, rows per node, the cluster's restarts and the query's last progress report."""
        report = {"stream": self.stream_key, "active": self.is_active, "batches": self._batches,
                  "replayed_batches_skipped": self._replayed, "rows": self._rows,
                  "last_batch_id": self._last_batch_id, "rows_per_node": self.rows_per_node(),
                  "stop_reason": self._stop_reason, "restarts": list(self.restarts)}
        if self.query is not None:
            report["query"] = self.query.lastProgress
        return report

    def __repr__(self):
        return "StreamingFeed({}, {}, {} batches, {} rows)".format(
            self.stream_key, "active" if self.is_active else "ended", self._batches, self._rows)


# ------------------------------------------------------------------ sources


class StreamingDataFrameSource:
    """A streaming DataFrame: each micro-batch is fed through the DataFrame (Arrow) path."""

    streaming = True

    def __init__(self, df):
        from .spark import SparkDataFrameSource
        self.df = df
        self.static = SparkDataFrameSource(df)

    def validate(self, input_mapping):
        self.static.validate(input_mapping)

    def train_stream(self, cluster, qname, feed_timeout, num_epochs=0, checkpoint_location=None, trigger=None,
                     query_name=None, epoch_per_batch=False):
        """Starts the query that feeds every micro-batch; returns its :class:`StreamingFeed`."""
        from .spark import SparkDataFrameSource
        if num_epochs:
            logger.warning("num_epochs=%s does not apply to a stream: every micro-batch is fed once", num_epochs)
        feed = StreamingFeed(cluster, qname, feed_timeout, epoch_per_batch, stream_key(qname, checkpoint_location))

        def each_batch(batch_df, batch_id):
            feed.feed_batch(SparkDataFrameSource(batch_df), batch_id)

        writer = self.df.writeStream.foreachBatch(each_batch)
        if checkpoint_location:
            writer = writer.option("checkpointLocation", checkpoint_location)
        if trigger:
            writer = writer.trigger(**trigger)
        if query_name:
            writer = writer.queryName(query_name)
        feed.query = writer.start()
        feed._start()
        return feed

    def inference(self, target, cluster, output_schema=None, keep_columns=()):
        """A streaming DataFrame of results: ``keep_columns`` of each input row, then its result."""
        return stream_inference(self.df, target, output_schema, keep_columns)


class DStreamSource:
    """A Spark Streaming ``DStream``: each RDD is fed through the RDD path (``foreachRDD``)."""

    streaming = True

    def __init__(self, dstream):
        self.dstream = dstream

    def validate(self, input_mapping):
        return None

    def train_stream(self, cluster, qname, feed_timeout, num_epochs=0, epoch_per_batch=False):
        """Feeds every RDD of the DStream once the streaming context starts; returns its :class:`StreamingFeed`."""
        from .spark import SparkRDDSource
        if num_epochs:
            logger.warning("num_epochs=%s does not apply to a stream: every micro-batch is fed once", num_epochs)
        feed = StreamingFeed(cluster, qname, feed_timeout, epoch_per_batch, stream_key(qname))
        feed.ssc = self.dstream._ssc

        def each_rdd(batch_time, rdd):
            if rdd.isEmpty():
                return
            batch_id = int(batch_time.timestamp() * 1000)   # the batch time identifies a DStream's batch
            feed.feed_batch(SparkRDDSource(rdd), batch_id)

        self.dstream.foreachRDD(each_rdd)
        feed._start()
        return feed

    def inference(self, target, cluster, **options):
        raise BadInputError("inference on a DStream is not supported: map each RDD with "
                            "dstream.transform(lambda rdd: cluster.inference(rdd)), or use a streaming DataFrame")


# ---------------------------------------------------------------- inference


def _plain(value):
    """A numpy value as the Python value Arrow takes."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None else value


def result_rows(values, names):
    """Result values (one per input row) as dicts of the result columns ``names``.

    A dict is taken as it is; with one result column any value is that column; with
    several a tuple or list gives the columns in order.
    """
    rows = []
    for value in values:
        if isinstance(value, dict):
            rows.append({name: _plain(value.get(name)) for name in names})
        elif len(names) == 1:
            rows.append({names[0]: _plain(value)})
        else:
            value = _plain(value)
            if not isinstance(value, (list, tuple)) or len(value) != len(names):
                raise BadInputError("a result {!r} does not match the output_schema columns {}; return a tuple of "
                                    "{} values or a dict per input row".format(value, names, len(names)))
            rows.append(dict(zip(names, value)))
    return rows


def stream_inference(df, target, output_schema, keep_columns):
    """``df.mapInArrow`` that feeds each partition of each micro-batch to a node and yields its results."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StructType, _parse_datatype_string

    if output_schema is None:
        raise BadInputError("inference on a streaming DataFrame needs output_schema: the result columns, e.g. "
                            "output_schema='prediction long' or a StructType")
    schema = output_schema if isinstance(output_schema, StructType) else _parse_datatype_string(output_schema)
    if not isinstance(schema, StructType):
        schema = StructType().add("result", schema)
    keep_columns = list(keep_columns or ())
    missing = [c for c in keep_columns if c not in df.columns]
    if missing:
        raise BadInputError("keep_columns names column(s) {} that the DataFrame does not have; its columns are "
                            "{}".format(missing, df.columns))
    clash = [f.name for f in schema.fields if f.name in keep_columns]
    if clash:
        raise BadInputError("output_schema column(s) {} are also in keep_columns; rename them".format(clash))
    kept_fields = [df.schema[c] for c in keep_columns]
    out_schema = StructType(kept_fields + list(schema.fields))
    arrow_out = to_arrow_schema(out_schema)
    arrow_results = to_arrow_schema(schema)
    names = [f.name for f in schema.fields]

    def infer(batches):
        import pyarrow as pa
        from pyspark import TaskContext

        from ..feeding import feed_inference_partition
        from ..zipcache import reuse_unchanged_archive_directories
        from .spark import _arrow_chunks

        reuse_unchanged_archive_directories()
        context = TaskContext.get()
        index = context.partitionId()
        kept = []

        def keeping(source):
            for batch in source:
                if keep_columns:
                    kept.append(batch.select(keep_columns))
                yield batch

        where = "partition {}".format(index)
        results = feed_inference_partition(target, index, chunks=_arrow_chunks(keeping(batches), where, target),
                                           run_id="stage-{}".format(context.stageId()))
        kept_table = None
        offset = 0
        block = []
        for value in results:
            block.append(value)
            if len(block) < 65536:
                continue
            if keep_columns and kept_table is None:
                kept_table = pa.Table.from_batches(kept)
            yield from _result_batches(block, offset, kept_table, arrow_results, arrow_out, names)
            offset += len(block)
            block = []
        if block:
            if keep_columns and kept_table is None:
                kept_table = pa.Table.from_batches(kept)
            yield from _result_batches(block, offset, kept_table, arrow_results, arrow_out, names)

    return df.mapInArrow(infer, out_schema)


def _result_batches(values, offset, kept_table, arrow_results, arrow_out, names):
    import pyarrow as pa

    results = pa.Table.from_pylist(result_rows(values, names), schema=arrow_results)
    columns = list(results.columns)
    if kept_table is not None:
        columns = list(kept_table.slice(offset, len(values)).columns) + columns
    return pa.Table.from_arrays(columns, schema=arrow_out).to_batches()


# ----------------------------------------------------------------- shutdown


def feeds_of(cluster):
    """The streaming feeds started on ``cluster``."""
    return list(_feeds.get(cluster, ()))


def end_streams(cluster, stream=None, poll_nodes=None):
    """``shutdown(ssc)``: waits for ``stream`` to end, then stops every other stream of the cluster.

    ``stream`` is a ``StreamingContext`` (the original's form), a ``StreamingQuery``
    or a :class:`StreamingFeed`. It is waited for until it stops on its own (source
    exhausted, stopped by the caller), every fed node's ``map_fun`` returned, or a
    node called ``DataFeed.terminate()``: then it is stopped gracefully. A node
    failure stops it and is raised.
    """
    feeds = feeds_of(cluster)
    if stream is not None:
        own = [f for f in feeds if stream is f or stream is f.query or stream is f.ssc
               or (f.query is not None and getattr(stream, "id", None) == f.query.id)]
        if own:
            for feed in own:
                feed.await_termination()
        else:
            _await_foreign(cluster, stream)
    error = None
    for feed in feeds:
        try:
            feed.stop()
        except NodeError as exc:
            error = error or exc
        except RayTFNodeError as exc:   # the caller met it already from the feed
            logger.warning("stream %s had failed: %s", feed.stream_key, _first_line(exc))
    _feeds.pop(cluster, None)
    if error is not None:
        raise error


def _await_foreign(cluster, stream):
    """Waits for a stream raytfnode does not feed (a context or query the caller started) as the original did."""
    watch = _NodeWatch(cluster)
    is_context = hasattr(stream, "awaitTerminationOrTimeout") and hasattr(stream, "_jssc")
    while True:
        if is_context:
            if stream.awaitTerminationOrTimeout(1):
                return
        else:
            if stream.awaitTermination(1):
                return
        error = watch.poll()
        stop = error is not None or watch.fed_nodes_finished() or \
            ray.get(cluster.coordinator.terminated.remote()) is not None
        if stop:
            if is_context:
                stream.stop(stopSparkContext=False, stopGraceFully=error is None)
            else:
                stream.stop()
            if error is not None:
                raise error
            return
