"""The TF cluster on Ray: node actors, their queues, feeding and shutdown.

``run()`` places one :mod:`raytfnode.node` actor per TF task with the Ray
resources the caller asks for, plus one queue actor per node and a
coordinator, all in a namespace of their own. The driver gathers the nodes'
addresses, builds the cluster spec and each node's ``TF_CONFIG``, and starts
``map_fun`` everywhere. While it feeds or waits, the driver watches every
node, so a failed or dead node is reported within a second or two with its
role, index and remote traceback, and nothing of the cluster is left behind.
"""
import concurrent.futures
import functools
import gc
import logging
import os
import time
import uuid
import weakref

import ray
from ray.exceptions import GetTimeoutError, RayActorError
from ray._raylet import PlacementGroupID
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy, PlacementGroupSchedulingStrategy

from . import logs
from . import roles as roles_lib
from .chunks import DEFAULT_CHUNK_BYTES
from .coordinator import CoordinatorActor
from .errors import (BadInputError, ClusterStoppedError, FeedError, FeedTimeoutError, NodeError, RayTFNodeError,
                     ReservationTimeoutError, ShutdownTimeoutError, actor_death_message)
from .feed_queue import END_EPOCH, END_FEED, NodeQueuesActor
from .directory import DirectoryActor
from .guard import GuardedHandle, new_secret, plain
from .epoch_cache import node_budgets
from .feed_tasks import check_feed_tasks
from .feeding import FeedTarget, feed_cached_epoch
from .manager import manager_address
from .node import TFNodeActor
from .progress import FeedProgress
from .refs import discard
from .resources import (check_driver_node_fits, check_feasible, check_placement_feasible, describe_request,
                        node_request, object_store_bytes, placement_waves)
from .restart import Failure, RestartPolicy
from .shipping import upload_local_code

logger = logging.getLogger(__name__)

WATCH_SECONDS = 0.25
PROBE_SECONDS = 3.0
DEFAULT_EPOCHS = 10
COLLECT_AFTER_SECONDS = 1.0   # a reservation not ready by then runs the cycle collector once (see _reserve)
CONTROL_QUEUES = ("output", "error")


class InputMode:
    """Enum for the input modes of data feeding."""

    TENSORFLOW = 0  #: TensorFlow application is responsible for reading any data.
    SPARK = 1       #: Spark (or Ray Data) is responsible for feeding data to the TensorFlow application.


class TFCluster:
    """A running TF cluster on Ray. Made by :func:`run`; do not construct it directly."""

    def __init__(self):
        self.sc = None
        self.input_mode = None
        self.cluster_id = None
        self.namespace = None
        self.roles = []
        self.cluster_info = []     # per executor id: reserve() answer plus role
        self.cluster_spec = {}
        self.queues = ()
        self.nodes = []            # node actor handles, by executor id
        self.queue_actors = []     # queue actor handles (GuardedHandle: they carry the secret), by executor id
        self.coordinator = None    # the coordinator actor (GuardedHandle); None for InputMode.TENSORFLOW
        self._secret = None        # the cluster's secret: its queue actors and coordinator answer only it
        self.directory = None      # the actor naming the current attempt's actors (raytfnode.directory);
        #                            None when the cluster cannot restart (max_failures=0) or be fed
        self.placement_group = None
        self.tensorboard_node = None
        self._tensorboard_url = None
        self._joins = {}           # executor id -> pending join ref
        self._outcomes = {}        # executor id -> ("ok",) | ("error", message, traceback) | ("dead", message)
        self._stopped = False
        self._queue_bytes = None
        self._chunk_bytes = DEFAULT_CHUNK_BYTES
        self._data_locality = True
        self._joined_blocks = None  # Ray Datasets' small blocks joined once (bridges.raydata.JoinedBlocks)
        self._launch_config = {}   # what run() was given, to start the nodes again on a restart
        self.attempt = 0           # restarts so far
        self.failures = []         # restart.Failure of every attempt that failed
        self._policy = RestartPolicy(0)
        self._probed = False       # silent nodes were probed for this attempt's failure
        self._stray_refs = []      # refs given up on (dead nodes): read before release, so Ray prints nothing
        self._recovering = None    # the restart record waiting for the new nodes to consume
        self._progress = None      # run(progress=...): None follows RAYTFNODE_PROGRESS
        self._finalizer = None     # releases the cluster's actors if it is dropped without shutdown()

    # ------------------------------------------------------------ helpers

    def _name(self, executor_id):
        job_name, task_index = self.roles[executor_id]
        return roles_lib.node_name(job_name, task_index)

    def _fed(self):
        return roles_lib.feedable(self.roles)

    def _check_running(self):
        if self._stopped:
            raise ClusterStoppedError("this TFCluster was shut down; start a new one with TFCluster.run()")

    def _poll_nodes(self, timeout=0.0):
        """Collects outcomes of nodes whose map_fun ended (or whose actor died)."""
        pending = {ref: eid for eid, ref in self._joins.items()}
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
        for ref in ready:
            executor_id = pending[ref]
            try:
                outcome = ray.get(ref)
            except RayActorError as exc:
                outcome = ("dead", actor_death_message(exc), None, time.time())
            if outcome is None:  # join returned on its own timeout: ask again
                self._joins[executor_id] = self.nodes[executor_id].join.remote(None)
                continue
            self._record(executor_id, outcome)

    def _record(self, executor_id, outcome):
        """Keeps a node's outcome; a dead node's producers must fail now, not at feed_timeout."""
        stray = self._joins.pop(executor_id, None)
        if stray is not None:
            self._stray_refs.append(stray)
        self._outcomes[executor_id] = outcome
        if outcome[0] == "dead":
            try:
                self.queue_actors[executor_id].set_error.remote(outcome[1])
            except Exception:  # noqa: BLE001
                pass

    def _probe_silent_nodes(self):
        """After a node error, finds nodes that died without a word (a lost machine) among the rest.

        A machine that leaves the cluster takes its node with it, and its peers'
        collectives break at once: their errors often reach the driver before Ray
        declares the dead actor dead. Every node without an outcome is asked for
        its status; one whose actor is gone, or whose machine Ray no longer lists as
        alive, or that does not answer within a few seconds, is recorded as dead.
        """
        self._probed = True
        silent = [eid for eid in range(len(self.nodes)) if eid not in self._outcomes]
        if not silent:
            return
        asks = {self.nodes[eid].status.remote(): eid for eid in silent}
        ready, unanswered = ray.wait(list(asks), num_returns=len(asks), timeout=PROBE_SECONDS)
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        for ref in ready:
            try:
                ray.get(ref)
            except RayActorError as exc:
                self._record(asks[ref], ("dead", actor_death_message(exc), None, time.time()))
        for ref in unanswered:
            self._stray_refs.append(ref)
            eid = asks[ref]
            machine = self.cluster_info[eid].get("node_id") if eid < len(self.cluster_info) else None
            where = "its machine (Ray node {}) left the Ray cluster".format(machine) if machine not in alive else \
                "it stopped answering for {:.0f} s (its machine, Ray node {}, is likely lost)".format(
                    PROBE_SECONDS, machine)
            self._record(eid, ("dead", "its actor is gone: " + where, None, time.time()))

    def _first_error(self):
        """The failure to report: a node that died (the usual root cause) before nodes whose map_fun raised.

        Among errors, the earliest comes first; the others are attached as
        ``related`` (a survivor whose collective broke when its peer died).
        """
        failed = {eid: outcome for eid, outcome in self._outcomes.items() if outcome[0] in ("error", "dead")}
        if not failed:
            return None
        if not self._probed and not any(outcome[0] == "dead" for outcome in failed.values()):
            self._probe_silent_nodes()
            failed = {eid: outcome for eid, outcome in self._outcomes.items() if outcome[0] in ("error", "dead")}
        order = sorted(failed, key=lambda eid: (failed[eid][0] != "dead", failed[eid][-1], eid))
        errors = [NodeError(*self.roles[eid], failed[eid][1], failed[eid][2]) for eid in order]
        head = errors[0]
        return NodeError(head.job_name, head.task_index, head.message, head.remote_traceback, related=errors[1:],
                         attempts=[failure.error for failure in self.failures if failure.attempt < self.attempt])

    def _raise_node_error(self):
        self._poll_nodes()
        error = self._first_error()
        if error is not None:
            raise error

    # ---------------------------------------------------------- feeding

    def _target(self, qname, feed_timeout, follow_restarts=False):
        """The target of a new feed; ``follow_restarts``: its producers find the current attempt's actors
        through the cluster's directory (a lazy feed that may outlive a restart), when the cluster may
        restart at all (``max_failures``); without restarts the attempt's actors are the only ones."""
        fed = self._fed()
        return FeedTarget(
            namespace=self.namespace,
            ray_address=ray.get_runtime_context().gcs_address,
            queue_names=tuple(self._queue_actor_name(i) for i in fed),
            node_names=tuple(self._name(i) for i in fed),
            coordinator_name=self._coordinator_name(),
            qname=qname,
            feed_id=uuid.uuid4().hex[:12],
            feed_timeout=float(feed_timeout),
            chunk_bytes=self._chunk_bytes,
            auth_mode=os.environ.get("RAY_AUTH_MODE"),
            secret=self._secret,
            directory_name=self._directory_name() if follow_restarts and self._policy.restarts else None,
            slot_machines=tuple(self.cluster_info[i].get("node_id") for i in fed),
            data_locality=self._data_locality,
        )

    def _actor_prefix(self):
        """``raytfnode-<cluster id>``, plus ``-a<attempt>`` after a restart (each attempt has its own actors)."""
        base = "raytfnode-{}".format(self.cluster_id)
        return base if not self.attempt else "{}-a{}".format(base, self.attempt)

    def _queue_actor_name(self, executor_id):
        return "{}-queues-{}".format(self._actor_prefix(), executor_id)

    def _directory_name(self):
        """The directory actor's name: one for the cluster's life, across attempts."""
        return "raytfnode-{}-directory".format(self.cluster_id)

    def _coordinator_name(self):
        return "{}-coordinator".format(self._actor_prefix())

    def _check_feed_args(self, qname, feed_timeout):
        self._check_running()
        if self.input_mode != InputMode.SPARK:
            raise BadInputError("this cluster was started with InputMode.TENSORFLOW, where the TF nodes read their "
                                "own data; start it with input_mode=InputMode.SPARK to feed it")
        if qname not in self.queues or qname in CONTROL_QUEUES:
            raise BadInputError("cannot feed queue {!r}: the cluster's data queues are {}; add it to "
                                "TFCluster.run(queues=...)".format(
                                    qname, [q for q in self.queues if q not in CONTROL_QUEUES]))
        if not feed_timeout or feed_timeout <= 0:
            raise BadInputError("feed_timeout must be a positive number of seconds, got {!r}".format(feed_timeout))

    def _before_feeding(self, qname):
        """``(input_mapping the fed nodes gave for qname, node that terminated the feed or None, stats)``.

        One round of calls to the fed nodes' queues answers all three: ``stats`` holds their counters
        (as :meth:`_fed_stats`), the baseline of the feed that follows.
        """
        stats = self._fed_stats(qname)
        mapping = next((stat.get("input_mapping") for stat in stats if stat.get("input_mapping")), None)
        return mapping, self._terminated_by(stats), stats

    def _terminated_by(self, stats):
        """The fed node that called ``DataFeed.terminate()`` (which ends the cluster's feeding), or ``None``.

        Each node's queue knows whether its node terminated (and tells the coordinator, which the
        producers ask); the driver reads it from the counters it asks for anyway, saving a round trip.
        """
        return next((stat["node"] for stat in stats if stat.get("terminated")), None)

    def _watch(self, job, target, description, progress=None):
        """Runs ``job(cancel_event)`` on a thread while watching the nodes; returns its result."""
        own_progress = progress is None
        if own_progress:
            progress = FeedProgress([self.queue_actors[i] for i in self._fed()], target.node_names, description,
                                    enabled=self._progress)
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raytfnode-feed") as pool:
            future = pool.submit(job)
            next_timeout_check = time.monotonic() + 1.0
            try:
                while True:
                    try:
                        return future.result(timeout=WATCH_SECONDS)
                    except concurrent.futures.TimeoutError:
                        pass
                    self._poll_nodes()
                    error = self._first_error()
                    if error is not None:
                        raise error
                    progress.update()
                    self._check_recovered()
                    if time.monotonic() >= next_timeout_check:
                        next_timeout_check = time.monotonic() + 1.0
                        self._raise_feed_failure(target)
            except BaseException as exc:
                self._cancel_queues(target, exc)
                self._cancel_feed(job)
                error = self._explain_failure(exc)
                if error is exc:
                    raise
                raise error from exc
            finally:
                if own_progress:
                    progress.close()

    def _raise_feed_failure(self, target):
        """Fails the feed as soon as one producer hit bad input or feed_timeout, instead of after Spark's retries."""
        try:
            message = ray.get(self.coordinator.bad_input_of.remote(target.feed_id), timeout=5)
        except GetTimeoutError:
            message = None
        except RayActorError:
            raise self._dead_bookkeeping() or ClusterStoppedError("the coordinator of TF cluster {} is gone".format(
                self.cluster_id)) from None
        if message:
            raise BadInputError(message)
        try:
            messages = ray.get([self.queue_actors[i].feed_timeout.remote(target.feed_id) for i in self._fed()],
                               timeout=5)
        except GetTimeoutError:
            return
        except RayActorError:
            raise self._dead_bookkeeping() or ClusterStoppedError("a queue actor of TF cluster {} is gone".format(
                self.cluster_id)) from None
        for message in messages:
            if message:
                raise FeedTimeoutError(message)

    def _dead_bookkeeping(self, timeout=5.0):
        """The error for a dead coordinator or queue actor of the current attempt, or ``None`` when all answer.

        These actors live on the driver's machine and outlive any node; one that died (killed, out of
        memory) fails every feed, and the nodes reading from a dead queue fail as its consequence. A dead
        queue actor fails its node (:class:`NodeError`, which a restart can recover); the coordinator,
        the cluster. An actor that does not answer within ``timeout`` s counts as busy, not dead.
        """
        if not self.queue_actors:
            return None
        checks = _bookkeeping_pings(self, self._fed())
        ready, _ = ray.wait([ref for ref, _, _ in checks], num_returns=len(checks), timeout=timeout)
        for ref, eid, actor in checks:
            if ref in ready:
                try:
                    ray.get(ref)
                except RayActorError as exc:
                    return _bookkeeping_death(self, eid, actor, exc, "")
        return None

    def _cancel_queues(self, target, exc):
        """Wakes every producer of this feed that waits on a queue (on a stalled node it would wait feed_timeout)."""
        reason = "{}: {}".format(type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
        for eid in self._fed():
            try:
                self.queue_actors[eid].cancel_feed.remote(target.feed_id, reason[:300])
            except Exception:  # noqa: BLE001  (a dead queue actor has nobody waiting on it)
                pass

    @staticmethod
    def _cancel_feed(job):
        cancel = getattr(job, "cancel", None)
        if cancel is not None:
            try:
                cancel()
            except Exception:  # noqa: BLE001
                logger.exception("cancelling the feeding job failed")

    def _explain_failure(self, exc):
        """The error to show for a failed feed: a node's own error when there is one.

        A producer that stopped on a node's error raises that node's ``NodeError``,
        which may be a survivor's (its collective broke when a peer died): the
        driver's own record, which puts a dead node first, names the root cause.
        """
        if isinstance(exc, BadInputError):
            return exc
        dead = self._dead_bookkeeping()
        if dead is not None:   # the nodes reading from it fail too, as consequences
            return dead
        deadline = time.monotonic() + 3.0
        while True:  # a node error may be recorded a moment after the feeding task saw it
            self._poll_nodes(timeout=0.2)
            error = self._first_error()
            if error is not None or time.monotonic() > deadline:
                break
        if error is not None:
            return error
        if isinstance(exc, NodeError):
            return exc
        for eid in self._fed():
            try:
                recorded = ray.get(self.queue_actors[eid].get_error.remote(), timeout=5)
            except Exception:  # noqa: BLE001
                continue
            if recorded:
                job_name, task_index = self.roles[eid]
                return NodeError(job_name, task_index, recorded[0], recorded[1])
        if isinstance(exc, (RayTFNodeError, KeyboardInterrupt)):
            return exc
        from .bridges.errors import unwrap
        return unwrap(exc)

    def train(self, dataRDD=None, num_epochs=0, feed_timeout=600, qname="input", *, data=None, progress=None,
              epoch_cache_bytes=None, feed_tasks=None, **stream_options):
        """*For InputMode.SPARK only*. Feeds ``data`` to the TF nodes for training and waits until it was read.

        Every row of every epoch reaches exactly one fed node (chief/master/workers),
        spread so that the nodes hold the same number of rows per epoch (within one
        row); each epoch ends with an end-of-epoch marker that
        ``DataFeed.epoch_batches`` and the ``tf.data`` helper stop at.

        With ``run(..., max_failures=N)`` a node failure restarts the cluster and
        the feed resumes at the epoch the restarted ``map_fun`` resumes at (see
        :meth:`raytfnode.context.TFNodeContext.resume_feed`), each epoch from its start.

        A streaming DataFrame or a DStream is fed micro-batch by micro-batch while the
        call returns at once; see :mod:`raytfnode.bridges.streaming`.

        Args:
          :dataRDD: a Spark RDD, a Spark DataFrame, a Ray Dataset, or a list of partitions (lists of rows),
            or a streaming DataFrame or DStream; ``data=`` is the same argument by raytfnode's earlier name.
          :num_epochs: number of times to feed the data; ``0`` keeps TensorFlowOnSpark's default of 10.
          :feed_timeout: seconds a producer waits on a node that reads nothing before failing.
          :qname: the queue to feed, ``'input'`` or another name given to ``run(queues=...)``.
          :progress: show the feed's progress (epoch, rows, rows/s, ETA); ``None`` takes ``run(progress=...)``.
          :epoch_cache_bytes: with more than one epoch to feed, each node's queue keeps a copy of the rows it
            was fed in the first epoch, up to this many bytes, and the later epochs are fed from those copies
            (each epoch in a new chunk order, each node the same rows) instead of reading the source again.
            ``None`` shares a quarter of the object store of the driver's machine (where the queue actors
            run) among the fed nodes; ``0`` feeds every
            epoch from the source. An epoch that does not fit is fed from the source every time. A Ray
            Dataset is read every epoch; its blocks under half a chunk are joined once into blocks of up to
            four chunks, kept while the cluster runs and the Dataset lives, within the same bytes on each
            machine, shared by the live Datasets (``None``: a quarter of its object store; ``0`` feeds the
            small blocks as they are).
            See :mod:`raytfnode.epoch_cache` and :mod:`raytfnode.bridges.raydata`.
          :feed_tasks: for a Spark RDD or DataFrame, how many Spark tasks feed an epoch. ``None`` feeds each
            partition in its own task while there are no more partitions than Spark cores; beyond, one task
            per core reads a run of partitions, so the epoch is fed in one wave of tasks (a feeding task holds
            its core until its rows were read, and a Spark task costs about 0.1 s before its first row).
            ``0`` feeds each partition in its own task (errors then name the partition and the row in it); a
            positive number caps the tasks. See :mod:`raytfnode.feed_tasks`.
          :stream_options: for a stream only: ``checkpoint_location``, ``trigger`` (a dict such as
            ``{'availableNow': True}``), ``query_name``, ``epoch_per_batch``.

        Returns:
          A dict with ``rows`` (the rows of the epochs fed, each epoch counted once), ``consumed`` (rows the
          nodes read, over all attempts) and ``skipped`` rows (counted rows of fed epochs that no node read
          after ``DataFeed.terminate()``), ``epochs`` (distinct epochs fed to the end), ``skipped_epochs``
          (epochs not fed at all after ``terminate()``), ``seconds`` and ``restarts`` (one record per restart: ``attempt``, ``node``, ``error``, ``resume_epoch``,
          ``recovery_seconds`` from the failure seen to the new nodes consuming, ``rows_refed``),
          ``cached_epochs`` (epochs fed from the epoch cache), ``epoch_cache`` (why it was not used, or
          ``None``) and ``partitions`` (the source's partitions fed, summed over the epochs fed);
          for a stream, its running :class:`raytfnode.bridges.streaming.StreamingFeed`.
        """
        data = _data_argument(dataRDD, data)
        self._check_feed_args(qname, feed_timeout)
        if not isinstance(num_epochs, int) or num_epochs < 0:
            raise BadInputError("num_epochs must be an integer >= 0, got {!r}".format(num_epochs))
        from .bridges import source_for
        source = source_for(data, self.sc)
        if check_feed_tasks(feed_tasks) is not None:
            if not hasattr(source, "feed_tasks"):
                what = "a stream" if getattr(source, "streaming", False) else "a " + type(data).__name__
                raise BadInputError("feed_tasks applies to a static Spark RDD or DataFrame, not to {}".format(what))
            source.feed_tasks = feed_tasks
        input_mapping, terminated, baseline = self._before_feeding(qname)
        source.validate(input_mapping)
        if getattr(source, "streaming", False):
            return source.train_stream(self, qname, feed_timeout, num_epochs=num_epochs, **stream_options)
        if stream_options:
            raise BadInputError("options {} apply to a stream only".format(sorted(stream_options)))
        if num_epochs == 0:
            logger.info("num_epochs=0: feeding the data %d times (TensorFlowOnSpark's default)", DEFAULT_EPOCHS)
            num_epochs = DEFAULT_EPOCHS
        if epoch_cache_bytes is not None and (not isinstance(epoch_cache_bytes, int) or epoch_cache_bytes < 0):
            raise BadInputError("epoch_cache_bytes must be None (automatic), 0 (off) or a number of bytes, got "
                                "{!r}".format(epoch_cache_bytes))
        self._refuse_if_terminated(terminated)
        if hasattr(source, "joined"):
            if self._joined_blocks is None:
                from .bridges.raydata import JoinedBlocks
                self._joined_blocks = JoinedBlocks()
            source.joined, source.epoch_cache_bytes = self._joined_blocks, epoch_cache_bytes
        report = {"epochs": 0, "rows": 0, "consumed": 0, "skipped": 0, "skipped_epochs": 0, "partitions": 0,
                  "seconds": 0.0, "restarts": [], "cached_epochs": 0, "epoch_cache": None}
        epoch_rows = {}       # epoch -> rows fed in it (completed epochs)
        position = {"epoch": 0, "fed_at_epoch_start": 0}
        started = time.monotonic()
        epoch = 0
        failure = None
        while True:
            if failure is not None:
                epoch, failure = self._restart_training(failure, report, epoch_rows, position, num_epochs)
                if failure is not None:
                    continue
            try:
                self._raise_node_error()
                counters, baseline = baseline, None   # after a restart the new queues are read afresh
                self._feed_epochs(source, qname, feed_timeout, epoch, num_epochs, report, epoch_rows, position,
                                  progress, epoch_cache_bytes, counters)
                self._raise_node_error()
                break
            except NodeError as error:
                failure = error
        report["seconds"] = time.monotonic() - started
        if report["skipped"]:
            logger.info("train(): %d rows skipped after DataFeed.terminate()", report["skipped"])
        return report

    def _restart_training(self, failure, report, epoch_rows, position, num_epochs):
        """Restarts the cluster after ``failure`` (or raises when the policy allows no more) for ``train()``.

        Returns:
          ``(epoch to resume feeding at, None)``, or ``(None, NodeError)`` when a node of the new attempt
          failed before it said where it resumes.
        """
        record = self._restart(failure)
        record["rows_refed"] = max(0, record.pop("fed_rows") - position["fed_at_epoch_start"])
        report["restarts"].append(record)
        try:
            record["resume_epoch"] = self._resume_epoch()
        except NodeError as error:
            return None, error
        epoch = min(record["resume_epoch"], num_epochs)
        record["rows_refed"] += sum(rows for e, rows in epoch_rows.items() if epoch <= e < position["epoch"])
        return epoch, None

    @staticmethod
    def _refuse_if_terminated(terminated):
        """A node's ``DataFeed.terminate()`` (by node ``terminated``) ends the cluster's feeding for good: a
        later feed is an error."""
        if terminated is not None:
            raise FeedError("node {} called DataFeed.terminate(), which ends this cluster's feeding: a later "
                            "train() or inference() would skip every row. Start a new cluster (TFCluster.run) "
                            "to feed more data".format(terminated))

    def _feed_epochs(self, source, qname, feed_timeout, first_epoch, num_epochs, report, epoch_rows, position,
                     show=None, epoch_cache_bytes=None, baseline=None):
        """Feeds epochs ``first_epoch..num_epochs-1`` to the current attempt's nodes.

        The first of them comes from ``source``; the others from the nodes' epoch
        caches when every node kept all of its rows (:mod:`raytfnode.epoch_cache`),
        else from ``source`` again. ``baseline`` is the queues' counters read before
        this call (``None``: read now), the feed's baseline.
        """
        target = self._target(qname, feed_timeout)
        # before the producers start: the progress baseline and the restart bookkeeping
        stats = baseline if baseline is not None else self._fed_stats()
        display = FeedProgress([self.queue_actors[i] for i in self._fed()], target.node_names, "train",
                               num_epochs=num_epochs, enabled=self._progress if show is None else show,
                               baseline=stats)
        caching = num_epochs - first_epoch > 1 and self._start_epoch_cache(target, first_epoch, epoch_cache_bytes,
                                                                           report)
        replay = False
        try:
            for epoch in range(first_epoch, num_epochs):
                position["epoch"] = epoch
                position["fed_at_epoch_start"] = sum(stat.get("fed_rows", 0) for stat in stats)
                if replay:
                    job = functools.partial(_replayed_epoch, target, epoch)
                else:
                    job = source.train_job(target, epoch)
                display.start_epoch(epoch)
                stats = self._watch(job, target, "epoch {}/{}".format(epoch + 1, num_epochs), display)
                self._check_recovered()   # an epoch shorter than one watch interval is seen here
                if replay:
                    report["cached_epochs"] += 1
                elif caching:
                    replay = caching = self._seal_epoch_cache(target, report)
                rows = sum(part["rows"] for part in stats)
                display.end_epoch(rows)
                epoch_rows[epoch] = rows       # an epoch fed again after a restart counts once
                report["epochs"] = len(epoch_rows)
                report["partitions"] += sum(part.get("partitions", 1) for part in stats)
                report["rows"] = sum(epoch_rows.values())
                report["consumed"] += sum(part["consumed"] for part in stats)
                report["skipped"] += sum(part["skipped"] for part in stats)
                if not all(part.get("marked_end") for part in stats):   # else the job queued it
                    self._put_markers(qname, [(END_EPOCH, target.feed_id, epoch)])
                if epoch + 1 == num_epochs:
                    break
                stats = self._fed_stats()
                if self._terminated_by(stats) is not None:
                    report["skipped_epochs"] = num_epochs - epoch - 1
                    if report["skipped_epochs"]:
                        logger.info("feeding was terminated: the %d remaining epochs are not fed",
                                    report["skipped_epochs"])
                    break
        finally:
            display.close()
            try:
                self.coordinator.forget.remote(target.feed_id)
                for eid in self._fed():
                    self.queue_actors[eid].cache_drop.remote(qname, target.feed_id)
            except Exception:  # noqa: BLE001  (a restart replaced the coordinator and the queues)
                pass

    def _start_epoch_cache(self, target, epoch, epoch_cache_bytes, report):
        """Asks every fed node's queue to keep epoch ``epoch``; False when the cache is off (no budget)."""
        fed = self._fed()
        store_bytes = object_store_bytes()
        # the queue actors run on the driver's machine (see _start_actors): their copies are in its store
        here = ray.get_runtime_context().get_node_id()
        budgets = node_budgets([here] * len(fed), store_bytes, epoch_cache_bytes)
        if not all(budgets):
            report["epoch_cache"] = "off (epoch_cache_bytes=0)" if epoch_cache_bytes == 0 else \
                "off: no object store size known for a node's machine"
            return False
        ray.get([self.queue_actors[eid].cache_epoch.remote(target.qname, target.feed_id, epoch, budget)
                 for eid, budget in zip(fed, budgets)])
        return True

    def _seal_epoch_cache(self, target, report):
        """After the first epoch: whether every fed node kept all of its rows (the later epochs replay them)."""
        fed = self._fed()
        seals = ray.get([self.queue_actors[eid].cache_seal.remote(target.qname, target.feed_id) for eid in fed])
        missing = [(self._name(eid), seal["why_not"]) for eid, seal in zip(fed, seals) if not seal["complete"]]
        if missing:
            report["epoch_cache"] = "not used: {}".format("; ".join("{}: {}".format(*m) for m in missing))
            logger.info("the later epochs are fed from the source again: %s", report["epoch_cache"])
            for eid in fed:
                self.queue_actors[eid].cache_drop.remote(target.qname, target.feed_id)
            return False
        logger.info("the later epochs are fed from the epoch cache: %s",
                    ", ".join("{} {} rows in {:.1f} MiB".format(self._name(eid), seal["rows"], seal["bytes"] / 2 ** 20)
                              for eid, seal in zip(fed, seals)))
        return True

    # ---------------------------------------------------------- restarts

    def _fed_stats(self, qname=None):
        """Counters of the fed nodes' queues (``{}`` for a queue actor that does not answer).

        ``qname`` adds each node's ``input_mapping`` for that queue.
        """
        refs = [self.queue_actors[eid].stats.remote(qname) for eid in self._fed()]
        stats = []
        for ref in refs:
            try:
                stats.append(ray.get(ref, timeout=5))
            except Exception:  # noqa: BLE001
                stats.append({})
        return stats

    def _restart(self, error):
        """Stops every node and starts a new set after ``error``, or raises it when the policy says no.

        Returns the restart's record for ``train()``'s report (with ``fed_rows``: rows
        the failed attempt's nodes were fed, for the caller's accounting). Call it outside
        the ``try`` that catches node errors: its own error is the final one.
        """
        seen_at = time.time()
        stats = self._fed_stats()
        read_data = any(stat.get("reads", 0) or stat.get("consumed_rows", 0) for stat in stats)
        self.failures.append(Failure(self.attempt, error, read_data, seen_at))
        why_not = self._policy.why_not(self.failures)
        if why_not is not None:
            if self._policy.max_failures == 0:
                raise error
            raise NodeError(error.job_name, error.task_index, "{} (not restarted: {})".format(error.message, why_not),
                            error.remote_traceback, related=error.related,
                            attempts=[failure.error for failure in self.failures[:-1]]) from None
        logger.warning("TF node %s failed on attempt %d: %s. Restarting the cluster (restart %d of %s)",
                       error.node, self.attempt, error.message.splitlines()[0] if error.message else "",
                       len(self.failures), "unlimited" if self._policy.max_failures < 0 else self._policy.max_failures)
        self._release(final=False)
        self.attempt += 1
        try:
            _launch(self)
        except ReservationTimeoutError as exc:
            raise ReservationTimeoutError("cannot restart the cluster after {} failed ({}): {}".format(
                error.node, _first_line_of(error.message), exc)) from error
        record = {"attempt": self.attempt, "node": error.node, "error": error.message, "seen_at": seen_at,
                  "resume_epoch": 0, "recovery_seconds": None,
                  "fed_rows": sum(stat.get("fed_rows", 0) for stat in stats)}
        self._recovering = record
        return record

    def _resume_epoch(self):
        """The epoch the restarted nodes resume at: reported by the first fed node, else 0 once it reads.

        A Keras ``BackupAndRestore(ctx.checkpoint_dir)`` backup is read when the node
        starts; a ``map_fun`` with its own checkpoint calls ``ctx.resume_feed(epoch)``
        before reading. One that reads without saying starts over at epoch 0.
        """
        if self.input_mode != InputMode.SPARK:
            return 0
        chief = self._fed()[0]
        queue = self.queue_actors[chief]
        while True:
            resume_epoch, stats = ray.get([queue.kv_get.remote("resume_epoch"), queue.stats.remote()])
            if resume_epoch is not None:
                return int(resume_epoch)
            if stats.get("reads") or chief in self._outcomes:
                return 0
            self._poll_nodes(timeout=0.1)
            error = self._first_error()
            if error is not None:
                raise error

    def _put_markers(self, qname, markers):
        """Queues ``markers`` in order on every fed node's queue ``qname``, and waits until they are queued.

        The queue actors are async, and Ray runs an async actor's calls in no set order, even those
        of one caller: an end-of-epoch marker sent without waiting could be queued after the next
        epoch's first chunks, which the node would then count in the epoch before (seen once in
        the suite: a node counted 9 of 10 epochs). A queue actor that does not answer within
        ``PROBE_SECONDS`` is left to the feed's own checks, which name a dead one.
        """
        refs = [self.queue_actors[eid].put_markers.remote(qname, list(markers)) for eid in self._fed()]
        # a dead queue actor's error is not raised here: the next feed or shutdown names it
        self._stray_refs.extend(discard(refs, PROBE_SECONDS))

    def _check_recovered(self):
        """Records when the restarted nodes consume again (the end of a recovery)."""
        if self._recovering is None:
            return
        stats = self._fed_stats()
        if any(stat.get("consumed_rows", 0) for stat in stats):
            self._recovering["recovery_seconds"] = time.time() - self._recovering["seen_at"]
            self._recovering = None

    def inference(self, dataRDD=None, feed_timeout=600, qname="input", *, data=None, **stream_options):
        """*For InputMode.SPARK only*. Feeds ``data`` for inference and returns the results.

        Results come back one per input row, in input order per partition:
        for an RDD (or a DataFrame) a lazy RDD whose partition i holds the results
        of input partition i; for a Ray Dataset a Ray Dataset; for a list of
        partitions a list of result lists. Partitions run concurrently across the
        fed nodes.

        An action on the returned RDD (``collect()``, ``count()``, ``saveAsTextFile()``,
        ...) runs under the cluster's watch: a node failure cancels the Spark job and
        raises the node's ``NodeError`` within seconds and, with
        ``run(..., max_failures=N)``, restarts the cluster and runs the action again
        (see :mod:`raytfnode.bridges.spark_results`).

        Args:
          :dataRDD: a Spark RDD, a Spark DataFrame, a Ray Dataset, or a list of partitions (or ``data=``).
          :feed_timeout: seconds a producer waits on a node that answers nothing before failing.
          :qname: the queue to feed.
          :stream_options: for a streaming DataFrame (whose results come back as a streaming
            DataFrame): ``output_schema`` (the result columns) and ``keep_columns`` (input columns
            to keep beside each result).
        """
        data = _data_argument(dataRDD, data)
        self._check_feed_args(qname, feed_timeout)
        from .bridges import source_for
        source = source_for(data, self.sc)
        input_mapping, terminated, _ = self._before_feeding(qname)
        source.validate(input_mapping)
        if stream_options and not getattr(source, "streaming", False):
            raise BadInputError("options {} apply to a stream only".format(sorted(stream_options)))
        if getattr(source, "streaming", False):
            return source.inference(self._target(qname, feed_timeout), self, **stream_options)
        self._raise_node_error()
        self._refuse_if_terminated(terminated)
        return source.inference(self._target(qname, feed_timeout, follow_restarts=True), self)

    def _with_restarts(self, target, step):
        """Calls ``step(target)`` until it returns; a node failure restarts the cluster (``max_failures``).

        ``step`` is called again with a target for the new nodes; it must do only the
        work the failed call left undone (an inference source re-runs the partitions
        whose results did not come back).
        """
        failure = None
        while True:
            if failure is not None:
                self._restart(failure)   # raises when the policy says no more
                failure = None
                target = self._target(target.qname, target.feed_timeout)
            try:
                self._raise_node_error()
                return step(target)
            except NodeError as error:
                failure = error

    def shutdown(self, ssc=None, grace_secs=0, timeout=259200):
        """Stops the cluster: ends the feeds, waits for the nodes' ``map_fun``, releases every actor.

        Fed nodes (chief/master/workers) get an end-of-feed marker and are waited
        for; ``ps`` and ``evaluator`` nodes, which usually never return, get
        ``grace_secs`` more and are then stopped. The first node error is raised
        after everything was released.

        Args:
          :ssc: a ``StreamingContext`` (or a ``StreamingQuery`` / ``StreamingFeed`` of ``train``), waited
            for until it ends, every fed node's ``map_fun`` returned or a node called ``terminate()``,
            then stopped gracefully. Streams still feeding the cluster are stopped first.
          :grace_secs: seconds to let ``ps``/``evaluator`` nodes finish on their own.
          :timeout: seconds to wait for the nodes; then every actor is stopped and
            :class:`raytfnode.errors.ShutdownTimeoutError` is raised (the process goes on).
            ``-1`` (or any value <= 0) waits with no timeout, as in TensorFlowOnSpark.
        """
        if self._stopped:
            return
        started = time.monotonic()
        error = None
        try:
            from .bridges.streaming import end_streams
            end_streams(self, ssc)
            if self.input_mode == InputMode.SPARK:
                for eid in self._fed():
                    for qname in self.queues:
                        if qname not in CONTROL_QUEUES:
                            self.queue_actors[eid].put_marker.remote(qname, (END_FEED,))
            workers = set(self._fed())
            deadline = started + timeout if timeout and timeout > 0 else float("inf")
            while not workers.issubset(self._outcomes):
                if time.monotonic() > deadline:
                    running = [self._name(eid) for eid in sorted(workers - set(self._outcomes))]
                    raise ShutdownTimeoutError(
                        "shutdown(timeout={}) expired with map_fun still running on {}; every actor of the "
                        "cluster was stopped".format(timeout, ", ".join(running)))
                self._poll_nodes(timeout=max(0.0, min(WATCH_SECONDS, deadline - time.monotonic())))
                if self._first_error() is not None:
                    break
            others = set(range(len(self.roles))) - workers
            grace_deadline = time.monotonic() + grace_secs
            while others and not others.issubset(self._outcomes) and time.monotonic() < grace_deadline:
                self._poll_nodes(timeout=WATCH_SECONDS)
            error = self._first_error()
            if error is not None:   # a node that failed because its queue actor died: the death is the cause
                error = self._dead_bookkeeping() or error
        except BaseException as exc:
            error = exc
        finally:
            self._release(final=True)
        logger.info("cluster %s shut down in %.2f s", self.cluster_id, time.monotonic() - started)
        if error is not None:
            raise error

    def _release(self, final=True):
        """Stops TensorBoard and kills every actor and the placement group of the current attempt.

        ``final=False`` (a restart) keeps the cluster usable for the next attempt.
        """
        if final:
            self._stopped = True
            if self._finalizer is not None:
                self._finalizer.detach()
                _open_clusters.discard(self._finalizer)
            if self._joined_blocks is not None:
                self._joined_blocks.clear()
        if self.tensorboard_node is not None:
            try:
                ray.get(self.tensorboard_node.stop_tensorboard.remote(), timeout=5)
            except Exception:  # noqa: BLE001
                pass
            self.tensorboard_node = None
        for handle in self.queue_actors:
            try:
                handle.close.remote()
            except Exception:  # noqa: BLE001
                pass
        directory = [self.directory] if final and self.directory is not None else []
        for handle in list(self.nodes) + list(self.queue_actors) + ([self.coordinator] if self.coordinator else []) \
                + directory:
            try:
                ray.kill(plain(handle), no_restart=True)
            except Exception:  # noqa: BLE001
                pass
        if self.placement_group is not None:
            try:
                remove_placement_group(self.placement_group)
            except Exception:  # noqa: BLE001
                pass
            self.placement_group = None
        self._stray_refs.extend(self._joins.values())
        self._joins.clear()
        self._settle_stray_refs()

    def _settle_stray_refs(self):
        """Reads the refs given up on, so that Ray does not print their errors as unhandled ones."""
        refs, self._stray_refs = self._stray_refs, []
        discard(refs, 2.0)

    def tensorboard_url(self):
        """URL of the TensorBoard server of the cluster, or ``None`` when ``tensorboard=False``."""
        return self._tensorboard_url

    def node_status(self):
        """Status of every node: name, whether ``map_fun`` runs, its outcome, ``TF_CONFIG`` and GPUs."""
        self._check_running()
        return ray.get([node.status.remote() for node in self.nodes])


def _default_fs(sc):
    """Spark's ``fs.defaultFS`` as TensorFlowOnSpark gives it: ``file:///`` becomes ``file://``."""
    if sc is None:
        return "file://"
    try:
        default_fs = sc._jsc.hadoopConfiguration().get("fs.defaultFS") or "file://"
    except Exception:  # noqa: BLE001
        return "file://"
    if default_fs.startswith("file://") and len(default_fs) > 7 and default_fs.endswith("/"):
        default_fs = default_fs[:-1]
    return default_fs


def _data_argument(dataRDD, data):
    if dataRDD is not None and data is not None:
        raise BadInputError("give the data once, as dataRDD (TensorFlowOnSpark's name) or data, not both")
    if dataRDD is None and data is None:
        raise BadInputError("no data to feed: pass dataRDD (an RDD, a DataFrame, a Ray Dataset or a list of "
                            "partitions)")
    return dataRDD if dataRDD is not None else data


def _spark_context(sc):
    if sc is None:
        return None
    return getattr(sc, "sparkContext", sc)


def run(sc, map_fun, tf_args, num_executors, num_ps, tensorboard=False, input_mode=InputMode.TENSORFLOW,
        log_dir=None, driver_ps_nodes=False, master_node=None, reservation_timeout=600,
        queues=("input", "output", "error"), eval_node=False, release_port=True, *, num_cpus=1, num_gpus=0,
        resources=None, memory=None, role_resources=None, placement_strategy=None, queue_max_bytes=64 << 20,
        chunk_bytes=DEFAULT_CHUNK_BYTES, working_dir=None, import_tensorflow=True, env_vars=None, log_level=None,
        progress=None, runtime_env=None, data_locality=True, max_failures=0, checkpoint_dir=None,
        tensorboard_host="127.0.0.1"):
    """Starts the TensorFlow cluster on Ray and runs ``map_fun`` on every node.

    Args:
      :sc: a SparkContext or SparkSession (RayDP's or any Spark whose Python workers
        reach this Ray cluster), or ``None`` for a program without Spark.
      :map_fun: user-supplied TensorFlow "main" function, called as ``map_fun(tf_args, ctx)``.
      :tf_args: ``argparse`` args, or command-line ``ARGV``; a list becomes ``sys.argv`` on the nodes.
      :num_executors: number of TF nodes (Ray actors) to start.
      :num_ps: number of ``ps`` nodes.
      :tensorboard: boolean indicating if the chief (or ``worker:0``) should start TensorBoard.
      :input_mode: ``InputMode.SPARK`` (fed by ``train``/``inference``) or ``InputMode.TENSORFLOW``.
      :log_dir: directory for TensorBoard logs (default ``<working dir>/tensorboard``).
      :driver_ps_nodes: run the ``ps`` nodes on the Ray node of the driver (outside any
        ``placement_strategy`` group, which then places the other nodes); a ps request that machine
        cannot hold fails at once.
      :master_node: name of the "master" or "chief" node in the cluster template, or ``None``.
      :reservation_timeout: seconds to wait for every node actor to be placed and started.
      :queues: names of the queues of each node; data queues beyond ``'input'`` can be fed by name.
      :eval_node: run one node as the ``evaluator``.
      :release_port: release the node's reserved port before ``map_fun``; with ``False`` the
        ``map_fun`` calls ``ctx.release_port()`` itself.

    Ray-only keyword arguments:
      :num_cpus, num_gpus, memory, resources: Ray resources of every node actor.
      :role_resources: per-role overrides, e.g. ``{'ps': {'num_cpus': 0.5}}``.
      :placement_strategy: ``'PACK'``, ``'SPREAD'``, ``'STRICT_PACK'`` or ``'STRICT_SPREAD'``: place the
        nodes through a placement group with that strategy.
      :queue_max_bytes: bound on the chunk bytes each node's queue holds, counting the chunks its
        reader took until it has read them. A feed pins about this much per fed node in the object
        store, plus a chunk per producer and per reader; read chunks then wait for Ray's batched free
        unpinned, and the store evicts them when it needs the room.
      :chunk_bytes: target size of a chunk (32 MiB; split across the fed nodes, each piece costs a few actor calls).
      :working_dir: working directory of the nodes for relative paths (default: the driver's).
      :import_tensorflow: import TensorFlow in every node before ``map_fun`` runs (``run()`` does not wait
        for it: the feed starts meanwhile). The other nodes then begin ``map_fun`` only after the node
        TensorFlow makes its coordination leader did, so ``MultiWorkerMirroredStrategy`` does not wait a
        second for a node that registered too early (see :func:`raytfnode.roles.coordination_leader`).
      :env_vars: extra environment variables for the node processes.
      :log_level: ``'quiet'`` (default) keeps TensorFlow's and Ray's start-up chatter out of the console,
        ``'verbose'`` shows everything; ``None`` follows ``RAYTFNODE_LOG_LEVEL`` / ``RAYTFNODE_VERBOSE``
        (see :mod:`raytfnode.logs`).
      :progress: show the progress of ``train``/``inference`` feeds; ``None`` follows ``RAYTFNODE_PROGRESS``
        (on unless ``0``).
      :runtime_env: Ray runtime environment of the node actors (``working_dir``, ``py_modules``,
        ``pip``, ``env_vars``): how ``map_fun``'s own modules reach machines that do not have them,
        the role ``--py-files`` had for TensorFlowOnSpark.
      :data_locality: plan each epoch of stored blocks (a Ray Dataset's): on a cluster of several
        machines a block's rows go to nodes on the block's machine as far as the per-epoch balance
        allows, on one machine each node reads whole blocks in a contiguous stretch; ``False`` splits
        every block across all nodes.
      :max_failures: cluster restarts allowed when a node fails during ``train()``/``inference()``:
        ``0`` fails fast, ``N`` restarts up to N times, ``-1`` without limit (Ray Train's meaning).
        A restart stops every node, starts a new set (new ports and ``TF_CONFIG``) and runs
        ``map_fun`` again with ``ctx.attempt`` counting up.
      :checkpoint_dir: directory for checkpoints that stays the same across restarts, given to
        ``map_fun`` as ``ctx.checkpoint_dir`` (default ``<working dir>/checkpoints/<cluster id>``).
      :tensorboard_host: the address TensorBoard listens on. TensorBoard has no authentication, so the
        default is the loopback address of the chief's machine, as TensorBoard's own default; reach it
        through an SSH tunnel or port forward to that machine. ``'0.0.0.0'`` (or a node address) opens it
        to the network.

    Returns:
      A :class:`TFCluster`, once every node runs its ``map_fun``.
    """
    template, log_level, queues = _checked_run_args(map_fun, input_mode, num_executors, num_ps, master_node,
                                                    eval_node, log_level, queues)
    policy = RestartPolicy(max_failures)
    if not ray.is_initialized():
        logger.info("Ray is not running: starting a local Ray instance")
        ray.init()
    cluster = TFCluster()
    cluster.sc = _spark_context(sc)
    cluster.input_mode = input_mode
    cluster.queues = queues
    cluster.cluster_id = uuid.uuid4().hex[:10]
    cluster.namespace = "raytfnode-" + cluster.cluster_id
    cluster._secret = new_secret()
    cluster.roles = roles_lib.node_roles(template)
    cluster._chunk_bytes = chunk_bytes
    cluster._data_locality = bool(data_locality)
    cluster._policy = policy
    cluster._progress = progress
    working_dir = working_dir or os.getcwd()
    cluster._launch_config = {
        "payload": _payload(map_fun, tf_args),
        "requests": [node_request(job_name, num_cpus, num_gpus, memory, resources, role_resources)
                     for job_name, _ in cluster.roles],
        "placement_strategy": placement_strategy,
        "driver_ps_nodes": driver_ps_nodes,
        "queue_max_bytes": queue_max_bytes,
        "runtime_env": _runtime_env(runtime_env, env_vars),
        "reservation_timeout": reservation_timeout,
        "import_tensorflow": import_tensorflow,
        "release_port": release_port,
        "tensorboard": tensorboard,
        "tensorboard_host": tensorboard_host,
        "master_node": master_node,
        "log_level": log_level,
        "context_fields": _context_fields(cluster, working_dir, tensorboard, log_dir, checkpoint_dir),
    }
    _release_dropped_clusters()
    _launch(cluster)
    # A cluster dropped without shutdown() would keep its nodes' resources while the driver lives: its
    # actors hold handles to one another, so Ray never counts them unreferenced.
    cluster._finalizer = weakref.finalize(cluster, _dropped_clusters.append, (cluster.namespace, cluster.cluster_id))
    cluster._finalizer.atexit = False
    _open_clusters.add(cluster._finalizer)
    return cluster


def _replayed_epoch(target, epoch):
    """The job of an epoch fed from the epoch cache: its stats, as a source's job returns them."""
    return [feed_cached_epoch(target, epoch)]


_dropped_clusters = []   # (namespace, cluster id) of clusters garbage-collected without shutdown()
_open_clusters = set()   # the finalizers of clusters run() returned: alive until shutdown() or collection


def _droppable_cluster_exists(launching):
    """Whether a cluster other than ``launching`` was started and neither shut down nor collected.

    Only such a cluster, dropped inside a reference cycle, is released by running the cycle collector; a
    full collection costs the driver a tenth of a second or more (more with a large heap), so ``run()``
    skips it when there is none.
    """
    _open_clusters.difference_update([finalizer for finalizer in list(_open_clusters) if not finalizer.alive])
    return any(finalizer is not launching._finalizer for finalizer in _open_clusters)


def _release_dropped_clusters():
    """Stops the actors and placement groups of clusters the program dropped without ``shutdown()``.

    Their finalizers only note them (a finalizer runs wherever the collector
    runs, not a place for Ray calls); ``run()`` releases them, before it
    reserves and again when its reservation waits.
    """
    while _dropped_clusters:
        namespace, cluster_id = _dropped_clusters.pop()
        logger.warning("TF cluster %s was dropped without shutdown(): stopping its nodes", cluster_id)
        try:
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor.get("namespace") == namespace:
                    try:
                        ray.kill(ray.get_actor(actor["name"], namespace=namespace), no_restart=True)
                    except ValueError:   # gone meanwhile
                        pass
            prefix = "raytfnode-{}".format(cluster_id)
            for group_id, group in ray.util.placement_group_table().items():
                if (group.get("name") or "").startswith(prefix) and group.get("state") != "REMOVED":
                    remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(group_id))))
        except Exception:  # noqa: BLE001  (what cannot be released now stays until the driver exits)
            logger.exception("could not release the dropped TF cluster %s", cluster_id)


def _checked_run_args(map_fun, input_mode, num_executors, num_ps, master_node, eval_node, log_level, queues):
    """``run()``'s arguments that can be wrong, checked before anything starts.

    Returns:
      ``(cluster template, resolved log level, queue names)``; raises :class:`BadInputError` that
      says what to change.
    """
    if not callable(map_fun):
        raise BadInputError("map_fun must be a function map_fun(args, ctx), got {!r}".format(map_fun))
    if input_mode not in (InputMode.SPARK, InputMode.TENSORFLOW):
        raise BadInputError("input_mode must be InputMode.SPARK or InputMode.TENSORFLOW, got {!r}".format(input_mode))
    try:
        template = roles_lib.cluster_template(num_executors, num_ps, master_node, eval_node)
        log_level = logs.apply_driver_defaults(log_level)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    queues = tuple(queues)
    if "input" not in queues:
        raise BadInputError("queues must include 'input', got {}".format(list(queues)))
    return template, log_level, queues


def _context_fields(cluster, working_dir, tensorboard, log_dir, checkpoint_dir):
    """The paths every node's context gets: ``defaultFS``, working, TensorBoard and checkpoint directories."""
    if tensorboard and not log_dir:
        log_dir = os.path.join(working_dir, "tensorboard")
    return {
        "defaultFS": _default_fs(cluster.sc),
        "working_dir": working_dir,
        "log_dir": log_dir,
        "checkpoint_dir": checkpoint_dir or os.path.join(working_dir, "checkpoints", cluster.cluster_id),
    }


def _payload(map_fun, tf_args):
    """``map_fun`` and ``tf_args`` pickled once, unpickled by each node (where an import error is explained)."""
    from ray import cloudpickle
    try:
        return cloudpickle.dumps((map_fun, tf_args))
    except Exception as exc:  # noqa: BLE001  (any pickling failure is the caller's to fix)
        raise BadInputError("map_fun and tf_args must be picklable to reach the TF nodes: {}: {}".format(
            type(exc).__name__, exc)) from None


def _runtime_env(runtime_env, env_vars):
    """The node actors' runtime_env: the caller's, with ``env_vars`` merged in (``None``: reuse idle workers)."""
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise BadInputError("runtime_env must be a dict such as {{'py_modules': [...]}}, got {!r}".format(
            runtime_env))
    merged = dict(runtime_env or {})
    if env_vars:
        merged["env_vars"] = dict(merged.get("env_vars") or {}, **dict(env_vars))
    return upload_local_code(merged) or None


def _launch(cluster):
    """Places the nodes of the current attempt, builds the cluster spec and starts ``map_fun`` everywhere."""
    config = cluster._launch_config
    requests = config["requests"]
    cluster._outcomes = {}
    cluster._joins = {}
    cluster._probed = False
    started = time.monotonic()
    try:   # a restart's check can fail too: what the failed attempt left (its directory) is released then
        check_feasible(requests, [roles_lib.node_name(*r) for r in cluster.roles])
        grouped = [request for request, (job, _) in zip(requests, cluster.roles)
                   if not (config["driver_ps_nodes"] and job == "ps")]   # driver_ps_nodes: ps outside the group
        check_placement_feasible(grouped, config["placement_strategy"])
        # the directory is needed only by a fed cluster that may restart (only a feed restarts a cluster,
        # and only a lazy feed's producers look the attempt's actors up); created now, so its worker process
        # starts beside the nodes' (each new worker process delays the nodes' start by about 0.25 s on 2 cores)
        if cluster.directory is None and cluster._policy.restarts and _fed_by_driver(cluster):
            cluster.directory = GuardedHandle(DirectoryActor.options(
                name=cluster._directory_name(), namespace=cluster.namespace,
                scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                   soft=False)).remote(cluster._secret),
                cluster._secret)
        waited = _start_actors(cluster, requests, config["placement_strategy"], config["driver_ps_nodes"],
                               config["queue_max_bytes"], config["runtime_env"], config["reservation_timeout"],
                               config["log_level"])
        infos = _reserve(cluster, requests, config["reservation_timeout"], config["import_tensorflow"],
                         config["payload"], waited)
        cluster.cluster_info = [dict(info, job_name=job, task_index=index, authkey=cluster._secret,
                                     addr=manager_address(cluster.namespace, cluster._queue_actor_name(eid)))
                                for eid, (info, (job, index)) in enumerate(zip(infos, cluster.roles))]
        addresses = ["{}:{}".format(info["host"], info["port"]) for info in infos]
        cluster.cluster_spec = roles_lib.cluster_spec(cluster.roles, addresses)
        fed = cluster._fed()
        context_fields = dict(config["context_fields"], attempt=cluster.attempt)
        leader = roles_lib.coordination_leader(cluster.roles) if config["import_tensorflow"] else None
        starts = [node.start.remote(cluster.cluster_spec,   # reserve() loaded map_fun
                                    dict(context_fields, detect_resume=cluster.attempt > 0 and eid == fed[0]),
                                    config["release_port"],
                                    cluster.queue_actors[leader] if leader not in (None, eid) else None)
                  for eid, node in enumerate(cluster.nodes)]
        _wait_started(cluster, starts)
        cluster._joins = {eid: node.join.remote(None) for eid, node in enumerate(cluster.nodes)}
        _wait_bookkeeping_ready(cluster, fed)
        for queue, node in zip(cluster.queue_actors, cluster.nodes):
            queue.watch_node.remote(node)   # producers learn of a dead node even when no driver watches
        if config["tensorboard"]:
            names = [job for job, _ in cluster.roles]
            master_node = config["master_node"]
            chief = names.index(master_node) if master_node in names else names.index("worker")
            cluster.tensorboard_node = cluster.nodes[chief]
            cluster._tensorboard_url = ray.get(cluster.tensorboard_node.start_tensorboard.remote(
                config["context_fields"]["log_dir"], config["tensorboard_host"]))
            logger.info("TensorBoard at %s", cluster._tensorboard_url)
    except BaseException:
        cluster._release(final=True)
        raise
    logger.info("TF cluster %s (attempt %d) up in %.2f s: %s", cluster.cluster_id, cluster.attempt,
                time.monotonic() - started, cluster.cluster_spec)



def _wait_started(cluster, starts):
    """Waits for every node's ``start``; a node whose actor died is named."""
    for eid, ref in enumerate(starts):
        try:
            ray.get(ref)
        except RayActorError as exc:
            raise NodeError(*cluster.roles[eid], "its actor died while starting map_fun: {}".format(
                actor_death_message(exc))) from None


def _wait_bookkeeping_ready(cluster, fed):
    """Waits until the coordinator, every queue actor and the directory (if any) answer; one that died is named.

    ``run()`` returns with every actor of the cluster up: their processes start beside the nodes', and a
    feed started at once would otherwise wait for them, or meet Ray's bare ``RayActorError`` of one that
    died. A dead queue actor fails its node (:class:`NodeError`); the coordinator or the directory, the
    cluster.
    """
    checks = _bookkeeping_pings(cluster, range(len(cluster.queue_actors)))
    if cluster.directory is not None:
        checks.append((cluster.directory.point_to.remote(
            cluster.attempt, [cluster._queue_actor_name(eid) for eid in fed], cluster._coordinator_name()),
            None, "directory actor {} (which names the current attempt's actors)".format(cluster._directory_name())))
    for ref, eid, actor in checks:
        try:
            ray.get(ref)
        except RayActorError as exc:
            raise _bookkeeping_death(cluster, eid, actor, exc, "while the cluster started, ") from None


def _fed_by_driver(cluster):
    """Whether ``train``/``inference`` can feed ``cluster`` (``InputMode.SPARK``): only then does it need a
    coordinator, and a directory to restart."""
    return cluster.input_mode == InputMode.SPARK


def _bookkeeping_pings(cluster, eids):
    """``(ref, executor id or None, description)``: ``__ray_ready__`` of the coordinator (if any) and of the
    queue actors of ``eids``, each with what errors call the actor."""
    pings = [(plain(cluster.coordinator).__ray_ready__.remote(), None,
              "coordinator {} (which splits each feed among the nodes)".format(cluster._coordinator_name()))
             ] if cluster.coordinator is not None else []
    return pings + [(plain(cluster.queue_actors[eid]).__ray_ready__.remote(), eid,
                     "queue actor {} (the node's feed queues)".format(cluster._queue_actor_name(eid)))
                    for eid in eids]


def _bookkeeping_death(cluster, eid, actor, exc, when):
    """The error for bookkeeping ``actor`` (its description) found dead: ``NodeError`` for node ``eid``'s
    queue actor, ``RayTFNodeError`` for the cluster's coordinator or directory (``eid`` None)."""
    if eid is not None:
        return NodeError(*cluster.roles[eid], actor_death_message(exc, when + "its " + actor))
    return RayTFNodeError("TF cluster {} failed: {}".format(
        cluster.cluster_id, actor_death_message(exc, when + "its " + actor)))


def _first_line_of(text):
    return text.strip().splitlines()[0] if text and text.strip() else ""


def _start_actors(cluster, requests, placement_strategy, driver_ps_nodes, queue_max_bytes, runtime_env,
                  reservation_timeout, log_level=logs.QUIET):
    names = [roles_lib.node_name(*r) for r in cluster.roles]
    fed = cluster._fed()
    # bookkeeping actors (0 CPU) on the driver's machine: they must outlive any machine of TF nodes, so a
    # lost machine fails its node, not the queues that every producer and the driver talk to
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    secret = cluster._secret   # the queue actors and the coordinator answer only calls that carry it
    # the coordinator splits the driver's feeds among the nodes: a cluster whose nodes read their own data
    # (InputMode.TENSORFLOW) is never fed and does without it (each new worker process delays the nodes'
    # start by about a quarter of a second on 2 cores)
    cluster.coordinator = None
    if _fed_by_driver(cluster):
        cluster.coordinator = GuardedHandle(CoordinatorActor.options(
            name=cluster._coordinator_name(), namespace=cluster.namespace, scheduling_strategy=here).remote(
                secret, len(fed)), secret)
    cluster.queue_actors = [
        GuardedHandle(NodeQueuesActor.options(name=cluster._queue_actor_name(eid), namespace=cluster.namespace,
                                              scheduling_strategy=here).remote(
            secret, names[eid], list(cluster.queues), queue_max_bytes, cluster.coordinator if eid in fed else None),
            secret)
        for eid in range(len(cluster.roles))
    ]
    strategies = _node_strategies(cluster, requests, placement_strategy, driver_ps_nodes, reservation_timeout)

    def start_node(eid):
        job_name, task_index = cluster.roles[eid]
        options = dict(requests[eid].actor_options(), name="{}-node-{}".format(cluster._actor_prefix(), eid),
                       namespace=cluster.namespace)
        if runtime_env:
            options["runtime_env"] = runtime_env
        if strategies[eid] is not None:
            options["scheduling_strategy"] = strategies[eid]
        return TFNodeActor.options(**options).remote(job_name, task_index, eid, cluster.queue_actors[eid], log_level)

    nodes = {eid: start_node(eid) for eid in range(len(requests)) if strategies[eid] is not None}
    free = [eid for eid in range(len(requests)) if strategies[eid] is None]   # placed by Ray's own scheduler
    waves = [[free[i] for i in wave] for wave in placement_waves([requests[eid] for eid in free])] if free else []
    started = time.monotonic()
    for number, wave in enumerate(waves):
        nodes.update((eid, start_node(eid)) for eid in wave)
        if number + 1 < len(waves):   # pinned nodes first: a node free to go anywhere must not take their machine
            _wait_placed(cluster, [nodes[eid].__ray_ready__.remote() for eid in wave], reservation_timeout)
    cluster.nodes = [nodes[eid] for eid in range(len(requests))]
    return time.monotonic() - started


def _node_strategies(cluster, requests, placement_strategy, driver_ps_nodes, reservation_timeout):
    """Each node's Ray scheduling strategy (``None``: Ray's default).

    ``driver_ps_nodes`` pins the ps nodes to the driver's machine; ``placement_strategy`` places the
    other nodes (all of them without ``driver_ps_nodes``) through one placement group.
    """
    strategies = [None] * len(requests)
    if driver_ps_nodes:
        here_id = ray.get_runtime_context().get_node_id()
        pinned = [eid for eid, (job, _) in enumerate(cluster.roles) if job == "ps"]
        check_driver_node_fits([requests[eid] for eid in pinned],
                               [roles_lib.node_name(*cluster.roles[eid]) for eid in pinned], here_id)
        for eid in pinned:
            strategies[eid] = NodeAffinitySchedulingStrategy(here_id, soft=False)
    grouped = [eid for eid in range(len(requests)) if strategies[eid] is None]
    if placement_strategy and grouped:
        bundles = [requests[eid].bundle() for eid in grouped]
        cluster.placement_group = placement_group(bundles, strategy=placement_strategy,
                                                  name=cluster._actor_prefix())
        ready, _ = ray.wait([cluster.placement_group.ready()], timeout=reservation_timeout)
        if not ready:
            raise ReservationTimeoutError(
                "the placement group of {} TF nodes ({} strategy, bundles {}) was not placed within "
                "reservation_timeout={} s; the cluster has {} available".format(
                    len(bundles), placement_strategy, bundles, reservation_timeout,
                    _short(ray.available_resources())))
        for index, eid in enumerate(grouped):
            strategies[eid] = PlacementGroupSchedulingStrategy(cluster.placement_group,
                                                               placement_group_bundle_index=index)
    return strategies


def _wait_placed(cluster, refs, timeout):
    """Waits up to ``timeout`` s for ``refs`` of ``cluster``'s node calls that run once Ray placed the node;
    the pending ones."""
    _, pending = ray.wait(refs, num_returns=len(refs), timeout=min(COLLECT_AFTER_SECONDS, timeout))
    if pending and timeout > COLLECT_AFTER_SECONDS:
        # A cluster the program dropped without shutdown() holds its resources until its handles go; one
        # caught in a reference cycle goes only when the cycle collector runs, and waiting here allocates
        # nothing that would make it run.
        if _droppable_cluster_exists(cluster):
            gc.collect()
        _release_dropped_clusters()
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=timeout - COLLECT_AFTER_SECONDS)
    return pending


def _reserve(cluster, requests, reservation_timeout, import_tensorflow, payload, waited=0.0):
    """Waits for every node to be placed, reserve its port and load ``payload`` (``map_fun``, ``tf_args``),
    ``reservation_timeout`` in all (``waited`` spent); a node that cannot load it fails with its own message."""
    from ray.exceptions import RayTaskError
    refs = [node.reserve.remote(import_tensorflow, payload) for node in cluster.nodes]
    pending = _wait_placed(cluster, refs, max(reservation_timeout - waited, 0.1))
    if pending:
        waiting = [roles_lib.node_name(*cluster.roles[refs.index(ref)]) for ref in pending]
        raise ReservationTimeoutError(
            "{} of {} TF nodes were not placed within reservation_timeout={} s: {} (each asks for {}); the Ray "
            "cluster has {} available of {}. Free resources, lower the request or add Ray nodes".format(
                len(pending), len(refs), reservation_timeout, ", ".join(waiting),
                describe_request(requests[refs.index(pending[0])]), _short(ray.available_resources()),
                _short(ray.cluster_resources())))
    infos = []
    for eid, ref in enumerate(refs):
        try:
            infos.append(ray.get(ref))
        except RayTaskError as exc:
            if isinstance(exc.cause, BadInputError):
                raise BadInputError(str(exc.cause)) from None
            raise
        except RayActorError as exc:
            job_name, task_index = cluster.roles[eid]
            raise NodeError(job_name, task_index, "its actor failed to start: {}".format(exc)) from None
    return infos


def _short(resources):
    keep = {k: v for k, v in resources.items() if not k.startswith("node:") and "memory" not in k
            and not k.startswith("accelerator_type")}
    return ", ".join("{}={:g}".format(k, v) for k, v in sorted(keep.items())) or "nothing"


__all__ = ["InputMode", "TFCluster", "run"]
