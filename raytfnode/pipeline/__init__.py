"""Spark ML Pipelines with raytfnode: ``TFEstimator`` (distributed training) and ``TFModel`` (inference).

It keeps the API of ``tensorflowonspark.pipeline``: the same Params and
``Has*`` mixins, ``Namespace``, ``TFParams.merge_args_params()``,
``TFEstimator(train_fn, tf_args, export_fn=None)`` and ``TFModel(tf_args)``.
Beyond it: both stages save and load (alone or in a ``Pipeline``), the Ray
resources of the nodes and ``feed_timeout`` are Params, and ``TFModel`` can
answer on GPU-annotated Ray actors that hold the model.
"""
from .estimator import TFEstimator
from .model import TFModel
from .params import (HasBatchSize, HasClusterSize, HasEpochs, HasExportDir, HasFeedTimeout, HasGraceSecs,
                     HasInferenceActors, HasInputMapping, HasInputMode, HasMasterNode, HasModelDir, HasNumPS,
                     HasOutputMapping, HasProtocol, HasRayResources, HasReaders, HasSignatureDefKey, HasSteps,
                     HasTagSet, HasTensorboard, HasTFRecordDir, Namespace, TFParams, TFTypeConverters)
from .signature import read_signature

__all__ = [
    "HasBatchSize", "HasClusterSize", "HasEpochs", "HasExportDir", "HasFeedTimeout", "HasGraceSecs",
    "HasInferenceActors", "HasInputMapping", "HasInputMode", "HasMasterNode", "HasModelDir", "HasNumPS",
    "HasOutputMapping", "HasProtocol", "HasRayResources", "HasReaders", "HasSignatureDefKey", "HasSteps",
    "HasTagSet", "HasTensorboard", "HasTFRecordDir", "Namespace", "TFEstimator", "TFModel", "TFParams",
    "TFTypeConverters", "read_signature",
]
