"""TFManager: the shared queues and state of a TF node (``TFManager.start``), backed by Ray actors.

Compatibility module name; the implementation lives in :mod:`raytfnode.manager`.
"""
from .manager import DEFAULT_QUEUES, JoinableQueue, TFManager

start = TFManager.start

__all__ = ["DEFAULT_QUEUES", "JoinableQueue", "TFManager", "start"]
