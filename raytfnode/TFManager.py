"""TFManager: the shared queues and state of a TF node (``TFManager.start``, ``TFManager.connect``), backed by Ray actors.

Compatibility module name; the implementation lives in :mod:`raytfnode.manager`.
"""
from .manager import DEFAULT_QUEUES, JoinableQueue, TFManager

start = TFManager.start
connect = TFManager.connect

__all__ = ["DEFAULT_QUEUES", "JoinableQueue", "TFManager", "connect", "start"]
