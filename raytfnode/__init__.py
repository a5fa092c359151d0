"""raytfnode: distributed TensorFlow on Ray, fed from Spark or Ray Data.

Port a TensorFlowOnSpark program by changing its import::

    from raytfnode import TFCluster, TFNode
"""
from . import errors, logs
from .errors import (BadInputError, ClusterStoppedError, FeedError, FeedTimeoutError, NodeError,
                     RayTFNodeError, ReservationTimeoutError, ShutdownTimeoutError)

__version__ = "0.1.0"

# quiet start-up by default (RAYTFNODE_LOG_LEVEL=verbose or RAYTFNODE_VERBOSE=1 for everything): see raytfnode.logs
logs.apply_driver_defaults()

__all__ = [
    "BadInputError", "ClusterStoppedError", "FeedError", "FeedTimeoutError", "NodeError", "RayTFNodeError",
    "ReservationTimeoutError", "ShutdownTimeoutError", "errors", "logs",
]
