"""TFModel: a Spark ML Model that answers a DataFrame with an exported SavedModel."""
import logging
import weakref

from pyspark.ml.pipeline import Model

from .params import (HasBatchSize, HasExportDir, HasInferenceActors, HasInputMapping, HasModelDir,
                     HasOutputMapping, HasRayResources, HasSignatureDefKey, HasTagSet, Namespace, TFParams)
from ..worker_ray import pass_auth_to_spark_workers
from .persistence import TFStageReadWrite
from .serving import ServingPlan, answer_batches
from .signature import plan_inputs, plan_outputs, read_signature, spark_type

logger = logging.getLogger(__name__)


def _session(dataset):
    return dataset.sparkSession


class TFModel(Model, TFParams, HasInputMapping, HasOutputMapping, HasBatchSize, HasModelDir, HasExportDir,
              HasSignatureDefKey, HasTagSet, HasRayResources, HasInferenceActors, TFStageReadWrite):
    """Spark ML Model backed by a TensorFlow SavedModel on disk (``export_dir``).

    ``transform(df)`` returns ``df`` with one new column per ``output_mapping`` entry
    (``{output tensor: column}``), computed from the columns named by ``input_mapping``
    (``{column: input tensor}``) through the signature ``signature_def_key`` (default
    ``serving_default``) of the MetaGraph ``tag_set``. Each output row belongs to the
    input row beside it. Flat array columns are reshaped to the input's shape.

    By default the model runs in Spark's Python workers, loaded once per worker process
    and reused by every later partition and batch. With ``num_gpus > 0`` or
    ``inference_actors > 0`` it runs in a pool of Ray actors that hold the model (each
    with ``num_cpus``/``num_gpus``/``resources``): Spark tasks send them Arrow batches
    and get the predictions back. The pool starts at the first such ``transform`` and
    lives until :meth:`close` (or until the model is garbage collected, or the driver ends).

    Args:
      :tf_args: Dictionary of arguments specific to TensorFlow "main" function.
    """

    def __init__(self, tf_args):
        super().__init__()
        self.args = Namespace(tf_args)
        self._pool = None
        self._pool_key = None
        self._pool_finalizer = None

    def _pickled_fields(self):
        return {"tf_args": self.args}

    @classmethod
    def _from_pickled_fields(cls, fields):
        return cls(fields["tf_args"])

    def _plan(self, columns):
        """The :class:`ServingPlan` for a DataFrame with ``columns``, checked against the SavedModel."""
        export_dir = self.getExportDir()
        inputs, outputs = read_signature(export_dir, self.getTagSet(), self.getSignatureDefKey())
        return ServingPlan(export_dir=export_dir, tag_set=self.getTagSet(),
                           signature_def_key=self.getSignatureDefKey(),
                           inputs=tuple(plan_inputs(self.getInputMapping(), inputs, columns, export_dir)),
                           outputs=tuple(plan_outputs(self.getOutputMapping(), outputs, columns, export_dir)),
                           batch_size=self.getBatchSize())

    def _pool_size(self):
        actors = self.getInferenceActors()
        return actors if actors > 0 else (1 if self.getNumGPUs() > 0 else 0)

    def _actor_pool(self, plan):
        """The pool for ``plan`` (started on first use; a change of model or resources starts a new one)."""
        from .actors import InferencePool

        key = (plan, self._pool_size(), self.getNumCPUs(), self.getNumGPUs(),
               tuple(sorted((self.getResources() or {}).items())))
        if self._pool is None or self._pool_key != key:
            self.close()
            self._pool = InferencePool(plan, key[1], num_cpus=self.getNumCPUs(), num_gpus=self.getNumGPUs(),
                                       resources=self.getResources() or None)
            self._pool_key = key
            self._pool_finalizer = weakref.finalize(self, InferencePool.close, self._pool)
        return self._pool

    def _transform(self, dataset):
        """``dataset`` with the output columns appended, computed through Arrow (``mapInArrow``)."""
        import dataclasses

        plan = self._plan(dataset.columns)
        if self._pool_size():
            plan = dataclasses.replace(plan, actors=self._actor_pool(plan).address)
            pass_auth_to_spark_workers(dataset.sparkSession.sparkContext)   # the workers call the pool's actors
        schema = ", ".join(["`{}` {}".format(f.name, f.dataType.simpleString()) for f in dataset.schema.fields]
                           + ["`{}` {}".format(column, spark_type(info)) for info, column in plan.outputs])
        logger.info("transform: inputs %s, outputs %s, on %s", plan.inputs, plan.outputs,
                    "Ray actors" if plan.actors else "Spark's Python workers")

        def answer(batches):
            from pyspark import TaskContext
            yield from answer_batches(batches, plan, "partition {}".format(TaskContext.get().partitionId()))

        return dataset.mapInArrow(answer, schema)

    def actor_status(self):
        """Per inference actor: its GPU ids, process id, and rows/batches answered; ``[]`` without a pool."""
        return self._pool.status() if self._pool is not None else []

    def close(self):
        """Stops the inference actors, if any (DataFrames transformed with them can no longer be computed)."""
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = self._pool_key = self._pool_finalizer = None

    def copy(self, extra=None):
        """A copy of this model with ``extra`` Params; the copy starts its own actor pool when it needs one."""
        that = super().copy(extra)
        that._pool = that._pool_key = that._pool_finalizer = None
        return that
