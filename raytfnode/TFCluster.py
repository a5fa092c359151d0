"""This module provides a high-level API to manage the TensorFlow cluster.

It keeps the API of ``tensorflowonspark.TFCluster`` (``run``, ``TFCluster``,
``InputMode``); the implementation lives in :mod:`raytfnode.cluster`.
"""
from .cluster import InputMode, TFCluster, run

__all__ = ["InputMode", "TFCluster", "run"]
