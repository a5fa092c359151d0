"""TFManager: the ``mgr`` of the documented API, backed by a node's queue actor.

In TensorFlowOnSpark a ``TFManager`` was a ``multiprocessing.Manager`` server
per Spark executor. Here it is a thin, picklable facade over one
``_NodeQueues`` Ray actor, so it works in the node's ``map_fun`` and in any
Ray task or actor it is handed to::

    mgr = TFManager.start(authkey=b'secret', queues=['input', 'output'])
    q = mgr.get_queue('input')
    for i in range(10):
        q.put(i)
    q.put(None)                       # end of feed
    feed = DataFeed(mgr)
    feed.next_batch(2)                # [0, 1]

Another process of the same Ray cluster reaches a running manager by its
address and key (``mgr.address`` and ``mgr.authkey``, also ``cluster_info[i]['addr']``
and ``cluster_info[i]['authkey']`` of a ``TFCluster``)::

    mgr = TFManager.connect(address, authkey)

An address is ``'<Ray namespace>/<queue actor name>'``: queue actors are named
Ray actors, so any driver, task or actor connected to the cluster finds them;
the actor answers only calls that carry its key (see :mod:`raytfnode.guard`).
"""
import logging
import queue as stdlib_queue
import uuid

import ray

from .errors import BadInputError, ClusterStoppedError
from .feed_queue import CHUNK, END_FEED, ITEM, NodeQueuesActor
from .guard import GuardedHandle, as_secret, new_secret, plain
from .stored import chunk_of

logger = logging.getLogger(__name__)

DEFAULT_QUEUES = ("input", "output", "error")
MANAGER_NAMESPACE = "raytfnode-managers"


def manager_address(namespace, actor_name):
    """The address of the queue actor ``actor_name`` in Ray namespace ``namespace``."""
    return "{}/{}".format(namespace, actor_name)


def _parse_address(address):
    if not isinstance(address, str) or address.count("/") != 1 or not all(address.split("/")):
        raise BadInputError("a TFManager address is '<Ray namespace>/<queue actor name>' (mgr.address or "
                            "cluster_info[i]['addr']), got {!r}".format(address))
    return address.split("/")


class TFManager:
    """Shared queues and state of one TF node.

    Args:
      :actor: the node's ``_NodeQueues`` actor handle.
      :node_name: the node's name (``'worker:0'``), for messages.
    """

    def __init__(self, actor, node_name="local:0", address=None):
        self._actor = actor
        self.node_name = node_name
        self._address = address

    @property
    def authkey(self):
        """The key that :meth:`connect` needs for this manager (its cluster's secret), as bytes."""
        return getattr(self._actor, "secret", None)

    @property
    def address(self):
        """This manager's address for :meth:`connect`: ``'<Ray namespace>/<queue actor name>'``."""
        if self._address is None:
            self._address = _address_of(self._actor)
        return self._address

    @classmethod
    def connect(cls, address, authkey=None):
        """Connects to the running manager at ``address`` (``mgr.address``, or ``cluster_info[i]['addr']``).

        Args:
          :address: ``'<Ray namespace>/<queue actor name>'``.
          :authkey: the manager's key: ``cluster_info[i]['authkey']`` (a node of a ``TFCluster``),
            ``mgr.authkey``, or the key given to :meth:`start` (bytes or str).

        Returns:
          A ``TFManager`` of the same queues and state. Ray is joined (``address='auto'``) when this process
          is not connected yet. A wrong key is refused at the first call
          (:class:`raytfnode.guard.AccessDeniedError`).

        Raises:
          :raytfnode.errors.ClusterStoppedError: when no manager runs at ``address``.
          :raytfnode.errors.BadInputError: for a malformed address or no key.
        """
        namespace, name = _parse_address(address)
        if authkey is None:
            raise BadInputError("TFManager.connect needs the manager's authkey: cluster_info[i]['authkey'] of its "
                                "TFCluster, mgr.authkey, or the key given to TFManager.start")
        if not ray.is_initialized():
            ray.init(address="auto")
        try:
            actor = ray.get_actor(name, namespace=namespace)
        except ValueError:
            raise ClusterStoppedError("no TFManager runs at {}: its node or cluster was shut down (or the address "
                                      "is of another Ray cluster)".format(address)) from None
        return cls(GuardedHandle(actor, as_secret(authkey)), name, address)

    @classmethod
    def start(cls, authkey=None, queues=DEFAULT_QUEUES, mode="local", max_bytes=64 << 20, node_name="local:0"):
        """Starts a manager: a new queue actor on the current Ray cluster.

        Args:
          :authkey: the key (bytes or str) that the manager's queue actor demands of every call, as the
            original's ``multiprocessing`` manager did; :meth:`connect` needs it. ``None``: a random key
            (``mgr.authkey``).
          :queues: names of the queues to create.
          :mode: ``'local'`` or ``'remote'``; both give the same Ray-backed manager.
          :max_bytes: bound on the bytes of chunks queued per queue.

        Returns:
          A ``TFManager``. Ray is started locally if it is not running yet.
        """
        if mode not in ("local", "remote"):
            raise ValueError("mode must be 'local' or 'remote', got {!r}".format(mode))
        if not ray.is_initialized():
            logger.info("Ray is not running: starting a local Ray instance for TFManager")
            ray.init()
        name = "raytfnode-manager-" + uuid.uuid4().hex[:12]
        secret = as_secret(authkey) or new_secret()
        actor = NodeQueuesActor.options(name=name, namespace=MANAGER_NAMESPACE).remote(
            secret, node_name, list(queues), max_bytes)
        return cls(GuardedHandle(actor, secret), node_name, manager_address(MANAGER_NAMESPACE, name))

    def get_queue(self, name):
        """The named queue, with the interface of a joinable ``queue.Queue``."""
        return JoinableQueue(self._actor, name)

    def get(self, key):
        """The value stored under ``key`` (``'state'`` holds the node state), or ``None``."""
        return ray.get(self._actor.kv_get.remote(key))

    def set(self, key, value):
        """Stores ``value`` under ``key``."""
        ray.get(self._actor.kv_set.remote(key, value))

    def shutdown(self):
        """Stops the queue actor of a manager made by :meth:`start`."""
        ray.kill(plain(self._actor))

    def __repr__(self):
        return "TFManager(node={})".format(self.node_name)


def _address_of(actor):
    """The address of a queue actor known only by its handle (a node's ``ctx.mgr``): found among named actors."""
    wanted = plain(actor)._actor_id
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if not entry["name"].startswith("raytfnode-"):
            continue
        try:
            found = ray.get_actor(entry["name"], namespace=entry["namespace"])
        except ValueError:
            continue
        if found._actor_id == wanted:
            return manager_address(entry["namespace"], entry["name"])
    raise ClusterStoppedError("this TFManager's queue actor has no name (or is gone); only managers of a running "
                              "node or from TFManager.start have an address")


class JoinableQueue:
    """A named queue of a node with the methods of ``queue.Queue`` (``JoinableQueue``).

    Items are pickled into the queue actor one by one: fine for control
    messages and tests, slow for data. Data goes through the chunk path
    (``TFCluster.train``, ``raytfnode.feeding``) instead.
    """

    def __init__(self, actor, name):
        self._actor = actor
        self.name = name

    def put(self, item, block=True, timeout=None):
        """Puts ``item`` (``None`` is the end-of-feed marker); raises ``queue.Full`` when it cannot."""
        if not ray.get(self._actor.put_item.remote(self.name, item, block, timeout)):
            raise stdlib_queue.Full()

    def put_nowait(self, item):
        self.put(item, block=False)

    def get(self, block=True, timeout=None):
        """Takes one item; raises ``queue.Empty`` when none comes within ``timeout``.

        A chunk put by a feeder comes back as a ``raytfnode.chunks.Chunk``; the
        end-of-feed marker comes back as ``None``.
        """
        found, kind, value = ray.get(self._actor.get_item.remote(self.name, block, timeout))
        if not found:
            raise stdlib_queue.Empty()
        if kind == ITEM:
            return value
        if kind == CHUNK:
            chunk = chunk_of(ray.get(value[2][0]), value[2])
            # consumed now; the caller's task_done() finishes the entry as for any item
            self._actor.ack.remote(self.name, [value[1]], value[3], False)
            return chunk
        if kind == END_FEED:
            return None
        return value

    def get_nowait(self):
        return self.get(block=False)

    def task_done(self):
        ray.get(self._actor.task_done.remote(self.name))

    def join(self, timeout=None):
        """Blocks until every item put was marked done; returns False on timeout."""
        return ray.get(self._actor.join.remote(self.name, timeout))

    def qsize(self):
        return ray.get(self._actor.qsize.remote(self.name))

    def empty(self):
        return self.qsize() == 0

    def full(self):
        return False
