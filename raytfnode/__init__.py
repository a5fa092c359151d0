"""raytfnode: distributed TensorFlow on Ray, fed from Spark or Ray Data.

Port a TensorFlowOnSpark program by changing its import::

    from raytfnode import TFCluster, TFNode
"""
from . import errors
from .errors import (BadInputError, ClusterStoppedError, FeedError, FeedTimeoutError, NodeError,
                     RayTFNodeError, ReservationTimeoutError, ShutdownTimeoutError)

__version__ = "0.1.0"

__all__ = [
    "BadInputError", "ClusterStoppedError", "FeedError", "FeedTimeoutError", "NodeError", "RayTFNodeError",
    "ReservationTimeoutError", "ShutdownTimeoutError", "errors",
]
