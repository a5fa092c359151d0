"""Restart policy: whether a failed TF cluster is started again, and where its feed resumes.

With ``TFCluster.run(..., max_failures=N)`` a node failure during ``train()``
or ``inference()`` stops every node and starts a new set (see
:mod:`raytfnode.cluster`). This module holds the decisions, apart from the
plumbing that tears nodes down and starts them, so each can be read and
tested alone:

* :class:`RestartPolicy` says restart or give up, from the failures so far;
* :func:`failure_place` names where a ``map_fun`` failed (so a program that
  fails the same way before reading any data on every attempt is not retried);
* :func:`keras_backup_resume_epoch` reads the epoch a Keras
  ``BackupAndRestore(ctx.checkpoint_dir)`` program resumes at, so the feed
  starts there with no code in ``map_fun``.
"""
import dataclasses
import os
import re

from .errors import BadInputError, ReservationTimeoutError

UNLIMITED = -1


@dataclasses.dataclass
class Failure:
    """One failure of one attempt of the cluster.

    Attributes:
      :attempt: the attempt that failed (0 for the first run).
      :error: the ``NodeError`` raised for it.
      :read_data: whether any fed node had read from its feed in that attempt.
      :seen_at: ``time.time()`` when the driver saw the failure.
    """

    attempt: int
    error: Exception
    read_data: bool
    seen_at: float

    @property
    def place(self):
        return failure_place(getattr(self.error, "remote_traceback", None))


_FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)', re.MULTILINE)


def failure_place(remote_traceback):
    """``'file:line in function: ExceptionType'`` of the innermost frame of a traceback, or ``None``."""
    if not remote_traceback:
        return None
    frames = _FRAME.findall(remote_traceback)
    lines = [line for line in remote_traceback.strip().splitlines() if line and not line.startswith(" ")]
    kind = lines[-1].split(":", 1)[0] if lines else "?"
    if not frames:
        return kind
    path, line, function = frames[-1]
    return "{}:{} in {}: {}".format(os.path.basename(path), line, function, kind)


class RestartPolicy:
    """Decides, from the failures so far, whether the cluster is started again.

    Args:
      :max_failures: restarts allowed: ``0`` fails fast (no restart), ``N`` allows N
        restarts, ``-1`` allows any number (Ray Train's ``FailureConfig`` meaning).
    """

    def __init__(self, max_failures=0):
        if not isinstance(max_failures, int) or isinstance(max_failures, bool) or max_failures < UNLIMITED:
            raise BadInputError("max_failures must be an integer >= -1 (-1: unlimited restarts), got {!r}".format(
                max_failures))
        self.max_failures = max_failures

    @property
    def restarts(self):
        """Whether a failure may start the cluster again (``max_failures`` is not 0)."""
        return self.max_failures != 0

    def why_not(self, failures):
        """``None`` when the latest of ``failures`` (a list of :class:`Failure`) may be restarted, else why not."""
        latest = failures[-1]
        if isinstance(latest.error, (BadInputError, ReservationTimeoutError)):
            return "a {} cannot be fixed by restarting".format(type(latest.error).__name__)
        raised = (getattr(latest.error, "message", "") or "").split(":", 1)[0]
        if raised in (BadInputError.__name__, ReservationTimeoutError.__name__):
            return "the node raised {}: bad input cannot be fixed by restarting".format(raised)
        if self.max_failures != UNLIMITED and len(failures) > self.max_failures:
            return "max_failures={} restarts are spent".format(self.max_failures)
        if len(failures) >= 2:
            previous = failures[-2]
            if not latest.read_data and not previous.read_data and latest.place is not None \
                    and latest.place == previous.place:
                return ("map_fun failed before reading any data on attempts {} and {} in the same place ({}): "
                        "a restart cannot fix that, so it is not retried".format(
                            previous.attempt, latest.attempt, latest.place))
        return None


BACKUP_EPOCH_VARIABLE = "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"


def keras_backup_resume_epoch(checkpoint_dir):
    """The epoch a Keras ``BackupAndRestore(checkpoint_dir)`` callback resumes ``fit`` at, or ``None``.

    ``BackupAndRestore`` (``tf_keras``, epoch-level ``save_freq``) keeps the chief's
    last backup under ``<checkpoint_dir>/chief`` with the last completed epoch in
    it; ``fit`` then starts at the epoch after it. ``None`` when there is no backup
    (a first run, or a ``fit`` that completed and deleted it). Needs TensorFlow.
    """
    if not checkpoint_dir:
        return None
    backup = os.path.join(checkpoint_dir, "chief")
    if "://" not in checkpoint_dir and not os.path.isdir(backup):
        return None   # a local directory without a backup: no need to load TensorFlow to know
    import tensorflow as tf

    if not tf.io.gfile.exists(backup):
        return None
    latest = tf.train.latest_checkpoint(backup)
    if latest is None:
        return None
    try:
        saved_epoch = int(tf.train.load_variable(latest, BACKUP_EPOCH_VARIABLE))
    except (tf.errors.NotFoundError, ValueError):
        return None
    return saved_epoch + 1 if saved_epoch >= 0 else None


__all__ = ["Failure", "RestartPolicy", "failure_place", "keras_backup_resume_epoch"]
