"""The Spark ML Params of :class:`TFEstimator` and :class:`TFModel`, ``Namespace`` and ``TFParams``.

In the style of ``pyspark.ml.param.shared``: every Param is declared once, with
its doc, type converter and default, in a mixin of its own that carries its
getter and setter. The names, docs and defaults are TensorFlowOnSpark's; the
Params after ``# Ray`` are raytfnode's additions.
"""
import argparse
import copy

from pyspark.ml.param.shared import Param, Params, TypeConverters


class TFTypeConverters:
    """Custom DataFrame TypeConverter for dictionary types (since this is not provided by Spark core)."""

    @staticmethod
    def toDict(value):
        if type(value) is dict:
            return value
        raise TypeError("Could not convert %s to dict" % (value,))


def _param(name, doc, converter):
    return Param(Params._dummy(), name, doc, typeConverter=converter)


class HasBatchSize(Params):
    """Mixin for param batch_size: number of records per batch (default 100)."""
    batch_size = _param("batch_size", "Number of records per batch", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(batch_size=100)

    def setBatchSize(self, value):
        return self._set(batch_size=value)

    def getBatchSize(self):
        return self.getOrDefault(self.batch_size)


class HasClusterSize(Params):
    """Mixin for param cluster_size: number of TF nodes (default 1)."""
    cluster_size = _param("cluster_size", "Number of nodes in the cluster", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(cluster_size=1)

    def setClusterSize(self, value):
        return self._set(cluster_size=value)

    def getClusterSize(self):
        return self.getOrDefault(self.cluster_size)


class HasEpochs(Params):
    """Mixin for param epochs: times the DataFrame is fed (default 1)."""
    epochs = _param("epochs", "Number of epochs to train", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(epochs=1)

    def setEpochs(self, value):
        return self._set(epochs=value)

    def getEpochs(self):
        return self.getOrDefault(self.epochs)


class HasGraceSecs(Params):
    """Mixin for param grace_secs (default 30)."""
    grace_secs = _param("grace_secs", "Number of seconds to wait after feeding data (for final tasks like "
                        "exporting a saved_model)", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(grace_secs=30)

    def setGraceSecs(self, value):
        return self._set(grace_secs=value)

    def getGraceSecs(self):
        return self.getOrDefault(self.grace_secs)


class HasInputMapping(Params):
    """Mixin for param input_mapping: ``{DataFrame column: tensor name}`` (default ``{}``)."""
    input_mapping = _param("input_mapping", "Mapping of input DataFrame column to input tensor",
                           TFTypeConverters.toDict)

    def __init__(self):
        super().__init__()
        self._setDefault(input_mapping={})

    def setInputMapping(self, value):
        return self._set(input_mapping=value)

    def getInputMapping(self):
        return self.getOrDefault(self.input_mapping)


class HasInputMode(Params):
    """Mixin for param input_mode: ``InputMode.SPARK`` (1, default) or ``InputMode.TENSORFLOW`` (0)."""
    input_mode = _param("input_mode", "Input data feeding mode (0=TENSORFLOW, 1=SPARK)", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(input_mode=1)

    def setInputMode(self, value):
        return self._set(input_mode=value)

    def getInputMode(self):
        return self.getOrDefault(self.input_mode)


class HasMasterNode(Params):
    """Mixin for param master_node: ``'chief'`` (default), ``'master'`` or ``None``."""
    master_node = _param("master_node", "Job name of master/chief worker node", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(master_node="chief")

    def setMasterNode(self, value):
        return self._set(master_node=value)

    def getMasterNode(self):
        return self.getOrDefault(self.master_node)


class HasModelDir(Params):
    """Mixin for param model_dir (default ``None``)."""
    model_dir = _param("model_dir", "Path to save/load model checkpoints", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(model_dir=None)

    def setModelDir(self, value):
        return self._set(model_dir=value)

    def getModelDir(self):
        return self.getOrDefault(self.model_dir)


class HasNumPS(Params):
    """Mixin for params num_ps (default 0) and driver_ps_nodes (default ``False``)."""
    num_ps = _param("num_ps", "Number of PS nodes in cluster", TypeConverters.toInt)
    driver_ps_nodes = _param("driver_ps_nodes", "Run PS nodes on driver locally", TypeConverters.toBoolean)

    def __init__(self):
        super().__init__()
        self._setDefault(num_ps=0, driver_ps_nodes=False)

    def setNumPS(self, value):
        return self._set(num_ps=value)

    def getNumPS(self):
        return self.getOrDefault(self.num_ps)

    def setDriverPSNodes(self, value):
        return self._set(driver_ps_nodes=value)

    def getDriverPSNodes(self):
        return self.getOrDefault(self.driver_ps_nodes)


class HasOutputMapping(Params):
    """Mixin for param output_mapping: ``{output tensor: DataFrame column}`` (default ``{}``)."""
    output_mapping = _param("output_mapping", "Mapping of output tensor to output DataFrame column",
                            TFTypeConverters.toDict)

    def __init__(self):
        super().__init__()
        self._setDefault(output_mapping={})

    def setOutputMapping(self, value):
        return self._set(output_mapping=value)

    def getOutputMapping(self):
        return self.getOrDefault(self.output_mapping)


class HasProtocol(Params):
    """Mixin for param protocol (default ``'grpc'``)."""
    protocol = _param("protocol", "Network protocol for Tensorflow (grpc|rdma)", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(protocol="grpc")

    def setProtocol(self, value):
        return self._set(protocol=value)

    def getProtocol(self):
        return self.getOrDefault(self.protocol)


class HasReaders(Params):
    """Mixin for param readers (default 1)."""
    readers = _param("readers", "number of reader/enqueue threads", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(readers=1)

    def setReaders(self, value):
        return self._set(readers=value)

    def getReaders(self):
        return self.getOrDefault(self.readers)


class HasSteps(Params):
    """Mixin for param steps (default 1000)."""
    steps = _param("steps", "Maximum number of steps to train", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(steps=1000)

    def setSteps(self, value):
        return self._set(steps=value)

    def getSteps(self):
        return self.getOrDefault(self.steps)


class HasTensorboard(Params):
    """Mixin for param tensorboard (default ``False``)."""
    tensorboard = _param("tensorboard", "Launch tensorboard process", TypeConverters.toBoolean)

    def __init__(self):
        super().__init__()
        self._setDefault(tensorboard=False)

    def setTensorboard(self, value):
        return self._set(tensorboard=value)

    def getTensorboard(self):
        return self.getOrDefault(self.tensorboard)


class HasTFRecordDir(Params):
    """Mixin for param tfrecord_dir (default ``None``)."""
    tfrecord_dir = _param("tfrecord_dir", "Path to temporarily export a DataFrame as TFRecords (for "
                          "InputMode.TENSORFLOW apps)", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(tfrecord_dir=None)

    def setTFRecordDir(self, value):
        return self._set(tfrecord_dir=value)

    def getTFRecordDir(self):
        return self.getOrDefault(self.tfrecord_dir)


# SavedModel Params

class HasExportDir(Params):
    """Mixin for param export_dir (default ``None``)."""
    export_dir = _param("export_dir", "Directory to export saved_model", TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(export_dir=None)

    def setExportDir(self, value):
        return self._set(export_dir=value)

    def getExportDir(self):
        return self.getOrDefault(self.export_dir)


class HasSignatureDefKey(Params):
    """Mixin for param signature_def_key (default ``None``: the SavedModel's ``serving_default``)."""
    signature_def_key = _param("signature_def_key", "Identifier for a specific saved_model signature",
                               TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(signature_def_key=None)

    def setSignatureDefKey(self, value):
        return self._set(signature_def_key=value)

    def getSignatureDefKey(self):
        return self.getOrDefault(self.signature_def_key)


class HasTagSet(Params):
    """Mixin for param tag_set (default ``None``: the SavedModel's only MetaGraph, else ``'serve'``)."""
    tag_set = _param("tag_set", "Comma-delimited list of tags identifying a saved_model metagraph",
                     TypeConverters.toString)

    def __init__(self):
        super().__init__()
        self._setDefault(tag_set=None)

    def setTagSet(self, value):
        return self._set(tag_set=value)

    def getTagSet(self):
        return self.getOrDefault(self.tag_set)


# Ray Params (raytfnode's additions)

class HasFeedTimeout(Params):
    """Mixin for param feed_timeout: seconds a feeding task waits on a node that reads nothing (default 600)."""
    feed_timeout = _param("feed_timeout", "Seconds a feeding task waits on a TF node that reads nothing",
                          TypeConverters.toFloat)

    def __init__(self):
        super().__init__()
        self._setDefault(feed_timeout=600.0)

    def setFeedTimeout(self, value):
        return self._set(feed_timeout=value)

    def getFeedTimeout(self):
        return self.getOrDefault(self.feed_timeout)


class HasRayResources(Params):
    """Mixin for the Ray resources of each actor: num_cpus (1), num_gpus (0), resources (``{}``)."""
    num_cpus = _param("num_cpus", "Ray CPUs of each TF node / inference actor", TypeConverters.toFloat)
    num_gpus = _param("num_gpus", "Ray GPUs of each TF node / inference actor", TypeConverters.toFloat)
    resources = _param("resources", "Custom Ray resources of each TF node / inference actor",
                       TFTypeConverters.toDict)

    def __init__(self):
        super().__init__()
        self._setDefault(num_cpus=1.0, num_gpus=0.0, resources={})

    def setNumCPUs(self, value):
        return self._set(num_cpus=value)

    def getNumCPUs(self):
        return self.getOrDefault(self.num_cpus)

    def setNumGPUs(self, value):
        return self._set(num_gpus=value)

    def getNumGPUs(self):
        return self.getOrDefault(self.num_gpus)

    def setResources(self, value):
        return self._set(resources=value)

    def getResources(self):
        return self.getOrDefault(self.resources)


class HasInferenceActors(Params):
    """Mixin for param inference_actors: Ray actors that answer ``transform()`` (default 0).

    0 answers in Spark's Python workers, unless ``num_gpus > 0``, which gives one
    actor; N > 0 gives a pool of N actors, each with ``num_cpus``/``num_gpus``/``resources``.
    """
    inference_actors = _param("inference_actors", "Number of model-holding Ray actors answering transform() "
                              "(0: Spark's Python workers, or 1 actor when num_gpus > 0)", TypeConverters.toInt)

    def __init__(self):
        super().__init__()
        self._setDefault(inference_actors=0)

    def setInferenceActors(self, value):
        return self._set(inference_actors=value)

    def getInferenceActors(self):
        return self.getOrDefault(self.inference_actors)


class Namespace:
    """Utility class to convert dictionaries to Namespace-like objects.

    Built from a dict, an ``argparse.Namespace``, another ``Namespace`` (their
    attributes) or a list (kept as ``argv``, for programs that parse their own
    command line). ``in`` tests attribute names (or ``argv`` items).
    """

    argv = None

    def __init__(self, d):
        if isinstance(d, list):
            self.argv = d
        elif isinstance(d, dict):
            self.__dict__.update(d)
        elif isinstance(d, (argparse.Namespace, Namespace)):
            self.__dict__.update(vars(d))
        else:
            raise TypeError("Unsupported Namespace args: {!r}; give a dict, a list (argv) or an "
                            "argparse.Namespace".format(d))

    def __iter__(self):
        return iter(self.argv) if self.argv else iter(list(self.__dict__))

    def __repr__(self):
        if self.argv:
            return "{}".format(self.argv)
        items = ("{}={!r}".format(k, self.__dict__[k]) for k in sorted(self.__dict__))
        return "{}({})".format(type(self).__name__, ", ".join(items))

    def __eq__(self, other):
        if self.argv:
            return self.argv == other
        return self.__dict__ == getattr(other, "__dict__", None)

    __hash__ = None


class TFParams(Params):
    """Mix-in class to store namespace-style args and merge them with Spark ML-style Params."""

    args = None

    def merge_args_params(self):
        """A copy of ``self.args`` with every Param's value (set or default) as an attribute of its name."""
        local_args = copy.copy(self.args)
        args_dict = vars(local_args)
        for param in self.params:
            args_dict[param.name] = self.getOrDefault(param.name)
        return local_args
