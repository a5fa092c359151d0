"""``tensorflowonspark`` for the processes the original tests start (Ray workers, Spark workers): raytfnode.

The runner puts the directory above this one first on ``PYTHONPATH``, so the TF nodes' own
``from tensorflowonspark import TFNode`` (inside the original tests' map_funs) gets raytfnode's
modules, also where the real TensorFlowOnSpark happens to be installed.
"""
import importlib
import sys

import raytfnode

for _name in ("TFCluster", "TFNode", "TFManager", "TFParallel", "dfutil", "compat", "pipeline"):
    try:
        sys.modules[__name__ + "." + _name] = importlib.import_module("raytfnode." + _name)
    except ImportError:
        pass
sys.modules[__name__] = raytfnode
