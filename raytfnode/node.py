"""The TF node actor: one Ray actor per TF task.

The actor reserves a port, learns its GPUs from Ray, receives its
``TF_CONFIG`` from the driver and runs ``map_fun(args, ctx)`` on a daemon
thread, so it keeps answering control calls (``join``, ``status``) while
TensorFlow works, and ``ray.kill`` ends it at once even inside
``server.join()``.
"""
import gc
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import traceback

import ray

from .context import TFNodeContext
from .logs import QUIET, quiet_node_stderr
from .manager import TFManager

logger = logging.getLogger(__name__)


def _load_payload(payload, node_name):
    """``(map_fun, tf_args)`` from their pickle; an import this machine cannot do becomes a clear error."""
    from ray import cloudpickle
    try:
        return cloudpickle.loads(payload)
    except ImportError as exc:
        from .errors import BadInputError
        module = getattr(exc, "name", None) or str(exc)
        raise BadInputError(
            "TF node {} cannot import module {!r}, which map_fun (or tf_args) comes from: it is not on the "
            "Python path of the node's machine. Ship it with TFCluster.run(..., runtime_env={{'py_modules': "
            "[{}]}}) or runtime_env={{'working_dir': '<the directory holding it>'}} (the role --py-files had "
            "for TensorFlowOnSpark). ({}: {})".format(node_name, module, module, type(exc).__name__, exc)) from None


def _gpu_ids():
    return [str(g) for g in ray.get_gpu_ids()]


#: how long a node waits for the coordination leader to begin ``map_fun`` (see :meth:`_TFNode.start`)
LEADER_WAIT_SECONDS = 120.0


class _TFNode:
    """Actor body. Created by :func:`raytfnode.cluster.run`; not meant to be used directly."""

    def __init__(self, job_name, task_index, executor_id, queues_actor, log_level=QUIET):
        self.job_name = job_name
        self.task_index = task_index
        self.executor_id = executor_id
        self.name = "{}:{}".format(job_name, task_index)
        self.queues = queues_actor
        self.gpu_ids = _gpu_ids()
        # TensorFlow's start-up lines and, without a GPU, its cuInit probe error stay out of the console
        quiet_node_stderr(log_level, has_gpu=bool(self.gpu_ids))
        # before TensorFlow is imported anywhere in this process (set here, not in a runtime_env, so the
        # actor can start in one of Ray's idle worker processes instead of a new one)
        if "tensorflow" in sys.modules:
            logger.warning("node %s starts in a Ray worker that imported TensorFlow already: "
                           "CUDA_VISIBLE_DEVICES and TF_USE_LEGACY_KERAS=1 may come too late", self.name)
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
        self.socket = None
        self.thread = None
        self.finished = threading.Event()
        self.outcome = None             # None while running; ("ok",) or ("error", message, traceback)
        self.started_at = None
        self.tensorboard = None
        self.import_tensorflow = False
        self.loaded = None              # (map_fun, tf_args), loaded by reserve()
        self.import_thread = None       # imports TensorFlow from reserve() on (import_tensorflow)
        self.import_failure = None      # what that import raised, re-raised on the map_fun thread
        self.import_seconds = None      # seconds the import of TensorFlow took (import_tensorflow), once done
        self.leader_queues = None       # the coordination leader's queue actor (start()), for the other nodes

    def reserve(self, import_tensorflow, payload):
        """Reserves a port (held open until ``release_port``) and loads ``map_fun``.

        ``payload`` is ``cloudpickle.dumps((map_fun, tf_args))``: it is unpickled here, so a module
        this machine cannot import fails ``run()`` with a message that names it. With ``import_tensorflow`` the node then starts importing TensorFlow on a
        thread of its own, while ``run()`` builds the cluster spec and starts the other nodes; the
        ``map_fun`` thread waits for that import (an import error fails ``map_fun`` with its
        traceback). The payload is loaded first because two threads importing the same packages at
        once can hand one of them a partly initialized module (a ``map_fun`` module that imports
        ``tf_keras`` before ``tensorflow``). ``run()`` returns without waiting for the import, so
        the driver starts feeding while the nodes import (TensorFlowOnSpark's nodes import it
        inside ``map_fun``, once their cluster is up).

        Returns a dict with the node's ``host``, ``port``, ``gpu_ids``, Ray ``node_id``,
        ``pid`` and assigned ``resources``.
        """
        host = ray.util.get_node_ip_address()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("", 0))
        self.socket = sock
        self.import_tensorflow = import_tensorflow
        self.loaded = _load_payload(payload, self.name)
        if import_tensorflow and self.import_thread is None:
            self.import_thread = threading.Thread(target=self._import_tensorflow, daemon=True,
                                                  name="import-tensorflow-" + self.name)
            self.import_thread.start()
        context = ray.get_runtime_context()
        return {
            "host": host,
            "port": sock.getsockname()[1],
            "gpu_ids": self.gpu_ids,
            "node_id": context.get_node_id(),
            "pid": os.getpid(),
            "resources": context.get_assigned_resources(),
        }

    def start(self, spec, context_fields, release_port=True, leader_queues=None):
        """Sets ``TF_CONFIG`` and starts ``map_fun(tf_args, ctx)``, which ``reserve`` loaded, on a daemon thread.

        ``leader_queues`` is the queue actor of the node TensorFlow makes its coordination service leader
        (:func:`raytfnode.roles.coordination_leader`), given to the other nodes when they import TensorFlow
        before ``map_fun``: such a node begins ``map_fun`` once the leader did. The nodes finish their
        imports in no set order, and under ``MultiWorkerMirroredStrategy`` a node that registers before
        the leader's service is up waits about a second for its next try (0.75-0.96 s after the later
        node began, in 6 of 14 launches measured here, against 0.07-0.09 s when the leader began first).
        """
        from .roles import tf_config
        map_fun, tf_args = self.loaded
        os.environ["TF_CONFIG"] = tf_config(spec, self.job_name, self.task_index)
        context_fields = dict(context_fields)
        if context_fields.pop("detect_resume", False):
            from .restart import keras_backup_resume_epoch
            resume_epoch = keras_backup_resume_epoch(context_fields.get("checkpoint_dir"))
            if resume_epoch is not None:
                context_fields["resume_epoch"] = resume_epoch
                ray.get(self.queues.kv_set.remote("resume_epoch", resume_epoch))
        ctx = TFNodeContext(executor_id=self.executor_id, job_name=self.job_name, task_index=self.task_index,
                            cluster_spec=spec, mgr=TFManager(self.queues, self.name), tmp_socket=self.socket,
                            gpu_ids=self.gpu_ids, resources=ray.get_runtime_context().get_assigned_resources(),
                            **context_fields)
        if release_port:
            ctx.release_port()
        if isinstance(tf_args, list):
            sys.argv = tf_args
        if self.import_tensorflow:   # producers' feed_timeout waits for map_fun, not for the import
            ray.get(self.queues.node_importing.remote())
        self.leader_queues = leader_queues
        self.started_at = time.time()
        self.thread = threading.Thread(target=self._run, args=(map_fun, tf_args, ctx), daemon=True,
                                       name="map_fun-" + self.name)
        self.thread.start()
        return self.name

    def _import_tensorflow(self):
        """Imports TensorFlow with the cycle collector paused, then freezes what the import built.

        The import builds about 500,000 long-lived objects, and the collector examined them over and
        over while they came (0.5-0.7 s of a 2.6-3.4 s import here, five full collections among
        them); only about 1,600 of them were garbage at the end. Frozen (``gc.freeze()``), they also
        stay out of every later collection while ``map_fun`` trains. Measured on 2 cores (6 alternated
        pairs of 2-node in-memory Keras trainings): the first step came 0.77 s earlier (median 6.25
        against 7.02 s), in every pair.
        """
        started = time.monotonic()
        collecting = gc.isenabled()
        gc.disable()
        try:
            import tensorflow  # noqa: F401
        except BaseException as exc:  # noqa: BLE001  (raised again on the map_fun thread, traceback and all)
            self.import_failure = exc
        finally:
            gc.freeze()
            if collecting:
                gc.enable()
        self.import_seconds = time.monotonic() - started

    def _run(self, map_fun, tf_args, ctx):
        try:
            if self.import_tensorflow:
                self.import_thread.join()   # map_fun starts once TensorFlow is imported
                if self.import_failure is not None:
                    raise self.import_failure
                self._wait_for_leader()   # before node_reading: feed_timeout does not count while it waits
                ray.get(self.queues.node_reading.remote(), timeout=60)
            map_fun(tf_args, ctx)
        except BaseException as exc:  # noqa: BLE001  (everything must reach the driver)
            remote_traceback = traceback.format_exc()
            message = "{}: {}".format(type(exc).__name__, exc)
            self.outcome = ("error", message, remote_traceback, time.time())
            logger.error("map_fun of %s failed:\n%s", self.name, remote_traceback)
            try:
                ray.get(self.queues.set_error.remote(message, remote_traceback), timeout=10)
            except Exception:  # noqa: BLE001  (the queue actor may be gone at shutdown)
                pass
        else:
            self.outcome = ("ok",)
            try:
                ray.get(self.queues.node_finished.remote(), timeout=10)
            except Exception:  # noqa: BLE001
                pass
        finally:
            self.finished.set()

    def _wait_for_leader(self):
        """Waits (at most ``LEADER_WAIT_SECONDS``) until the coordination leader began ``map_fun``; a leader
        that failed or whose queue actor is gone ends the wait (the driver reports the failure)."""
        if self.leader_queues is None:
            return
        try:
            ray.get(self.leader_queues.wait_map_fun_started.remote(LEADER_WAIT_SECONDS),
                    timeout=LEADER_WAIT_SECONDS + 10)
        except Exception:  # noqa: BLE001  (the wait is an optimization: map_fun runs either way)
            logger.debug("node %s did not hear that the coordination leader began map_fun", self.name,
                         exc_info=True)

    def join(self, timeout=None):
        """Waits up to ``timeout`` s for ``map_fun``; returns ``None`` while it runs, else its outcome."""
        self.finished.wait(timeout)
        return self.outcome

    def status(self):
        return {"name": self.name, "running": self.thread is not None and not self.finished.is_set(),
                "outcome": self.outcome, "import_seconds": self.import_seconds,
                "env_tf_config": json.loads(os.environ.get("TF_CONFIG", "null")),
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def start_tensorboard(self, log_dir, host="127.0.0.1"):
        """Starts TensorBoard on this node for ``log_dir``, listening on ``host``; returns its URL once it serves.

        ``'0.0.0.0'`` listens on every interface; the URL then names the node's address.
        """
        if self.import_thread is not None:
            self.import_thread.join()   # TensorFlow's own import loads tensorboard's modules: never two importers
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise RuntimeError("tensorboard=True needs the tensorboard package on the nodes: "
                               "pip install 'raytfnode[tensorboard]'") from None
        os.makedirs(log_dir, exist_ok=True)
        reach = ray.util.get_node_ip_address() if host in ("0.0.0.0", "", "::") else host
        probe = socket.socket()
        probe.bind((host, 0))
        port = probe.getsockname()[1]
        probe.close()
        command = [sys.executable, "-m", "tensorboard.main", "--logdir", log_dir, "--host", host,
                   "--port", str(port)]
        self.tensorboard = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        url = "http://{}:{}".format(reach, port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.tensorboard.poll() is not None:
                raise RuntimeError("TensorBoard exited with code {} on {}".format(self.tensorboard.returncode,
                                                                                  self.name))
            try:
                with socket.create_connection((reach, port), timeout=1):
                    return url
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("TensorBoard did not start serving on {} within 60 s".format(url))

    def stop_tensorboard(self):
        if self.tensorboard is not None and self.tensorboard.poll() is None:
            self.tensorboard.terminate()
            try:
                self.tensorboard.wait(5)
            except subprocess.TimeoutExpired:
                self.tensorboard.kill()
        self.tensorboard = None


TFNodeActor = ray.remote(max_concurrency=8)(_TFNode)
