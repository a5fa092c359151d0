"""Exceptions raised by raytfnode.

Every error a user can meet is one of these types, so a program can catch a
node failure, a timeout or bad input separately. Messages name the node
(``worker:1``) or the partition involved and say what to change.
"""


class RayTFNodeError(RuntimeError):
    """Base class of every raytfnode error."""


class NodeError(RayTFNodeError):
    """A TF node failed: its ``map_fun`` raised, or its actor died.

    Attributes:
      :job_name: the node's role (``chief``, ``worker``, ``ps``, ``evaluator``).
      :task_index: the node's index within its role.
      :remote_traceback: the traceback text from the node's process, or ``None``
        when the process died without one (killed, out of memory, machine lost).
      :related: failures of other nodes seen with this one, most likely its
        consequences (a survivor whose collective broke when its peer died).
      :attempts: with ``max_failures``, the failure of every earlier attempt of
        the cluster, oldest first (each a ``NodeError``).
    """

    def __init__(self, job_name, task_index, message, remote_traceback=None, related=(), attempts=()):
        self.job_name = job_name
        self.task_index = task_index
        self.message = message
        self.remote_traceback = remote_traceback
        self.related = list(related)
        self.attempts = list(attempts)
        text = "TF node {}:{} failed: {}".format(job_name, task_index, message)
        if self.related:
            text += "\n\nThen, most likely as consequences:\n" + "\n".join(
                "  {} failed: {}".format(other.node, _first_line(other.message)) for other in self.related)
        if self.attempts:
            text += "\n\nEarlier attempts of the cluster (max_failures):\n" + "\n".join(
                "  attempt {}: {} failed: {}".format(i, earlier.node, _first_line(earlier.message))
                for i, earlier in enumerate(self.attempts))
        if remote_traceback:
            text += "\n\nRemote traceback of {}:{}:\n{}".format(job_name, task_index, remote_traceback.rstrip())
        super().__init__(text)

    def __reduce__(self):
        return (NodeError, (self.job_name, self.task_index, self.message, self.remote_traceback, self.related,
                            self.attempts))

    @property
    def node(self):
        """The node's name, ``'<job_name>:<task_index>'``."""
        return "{}:{}".format(self.job_name, self.task_index)


ACTOR_DEATH_CAUSES = "the process was killed, ran out of memory, or its machine was lost"


def actor_death_message(exc, subject="its actor", causes=ACTOR_DEATH_CAUSES):
    """What to say of an actor that died (``exc`` is Ray's ``RayActorError``): ``subject`` died (Ray's words); causes."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    why = [lines[0]] if lines else [type(exc).__name__]
    why += [line for line in lines[1:] if line.startswith("The actor is dead because")][:1]   # Ray's reason
    return "{} died ({}); {}".format(subject, " ".join(why), causes)


def _first_line(text):
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


class FeedTimeoutError(RayTFNodeError, TimeoutError):
    """Feeding waited longer than ``feed_timeout`` on a node that took no data."""


class ShutdownTimeoutError(RayTFNodeError, TimeoutError):
    """``shutdown(timeout=...)`` expired before every ``map_fun`` returned."""


class ReservationTimeoutError(RayTFNodeError, TimeoutError):
    """TF node actors could not all be placed within ``reservation_timeout``."""


class BadInputError(RayTFNodeError, ValueError):
    """Input data or an argument that raytfnode cannot use; the message says what to change."""


class ClusterStoppedError(RayTFNodeError):
    """An operation on a cluster (or a queue of one) that was already shut down."""


class FeedError(RayTFNodeError):
    """Feeding a partition failed for a reason other than a node error."""
