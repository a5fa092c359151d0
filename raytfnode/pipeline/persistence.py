"""Saving and loading TFEstimator/TFModel, alone or inside a ``Pipeline``.

Params are saved as Spark ML saves them (``DefaultParamsWriter``: JSON in
``<path>/metadata``). What is not a Param (``tf_args``, and the estimator's
``train_fn``/``export_fn``) is pickled with cloudpickle into the same metadata,
base64-encoded, so a save works on any filesystem Spark writes to.

cloudpickle stores a function defined in ``__main__`` or inside another
function by value; a function of an importable module is stored by reference
and needs that module importable where the stage is loaded. A TFModel's
SavedModel is not copied: the loaded TFModel reads the same ``export_dir``.
"""
import base64

from pyspark import cloudpickle
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsReader, DefaultParamsWritable, DefaultParamsWriter

PICKLED_FIELDS = ("tf_args", "train_fn", "export_fn")


def _encode(value):
    return base64.b64encode(cloudpickle.dumps(value)).decode("ascii")


def _decode(text):
    return cloudpickle.loads(base64.b64decode(text.encode("ascii")))


class TFStageWriter(DefaultParamsWriter):
    """Writes the Params and the pickled ``tf_args`` (and functions) of a TFEstimator/TFModel."""

    def saveImpl(self, path):
        extra = {"raytfnode": {name: _encode(value) for name, value in self.instance._pickled_fields().items()}}
        DefaultParamsWriter.saveMetadata(self.instance, path, self.sc, extraMetadata=extra)


class TFStageReader(DefaultParamsReader):
    """Rebuilds a TFEstimator/TFModel from what :class:`TFStageWriter` saved."""

    def load(self, path):
        metadata = DefaultParamsReader.loadMetadata(path, self.sc)
        fields = {name: _decode(text) for name, text in metadata.get("raytfnode", {}).items()}
        instance = self.cls._from_pickled_fields(fields)
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance


class TFStageReadWrite(DefaultParamsReadable, DefaultParamsWritable):
    """``write()``/``save()`` and ``read()``/``load()`` for the TF pipeline stages."""

    def write(self):
        return TFStageWriter(self)

    @classmethod
    def read(cls):
        return TFStageReader(cls)
