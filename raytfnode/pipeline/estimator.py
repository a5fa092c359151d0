"""TFEstimator: a Spark ML Estimator that trains on a raytfnode cluster and returns a TFModel."""
import logging

from pyspark.ml.pipeline import Estimator

from .. import cluster as cluster_lib
from ..errors import BadInputError
from .model import TFModel, _session
from .params import (HasBatchSize, HasClusterSize, HasEpochs, HasExportDir, HasFeedTimeout, HasGraceSecs,
                     HasInferenceActors, HasInputMapping, HasInputMode, HasMasterNode, HasModelDir, HasNumPS,
                     HasOutputMapping, HasProtocol, HasRayResources, HasReaders, HasSignatureDefKey, HasSteps,
                     HasTagSet, HasTensorboard, HasTFRecordDir, Namespace, TFParams)
from .persistence import TFStageReadWrite

logger = logging.getLogger(__name__)


class TFEstimator(Estimator, TFParams, HasInputMapping, HasClusterSize, HasNumPS, HasInputMode, HasMasterNode,
                  HasProtocol, HasGraceSecs, HasTensorboard, HasModelDir, HasExportDir, HasTFRecordDir,
                  HasBatchSize, HasEpochs, HasReaders, HasSteps, HasFeedTimeout, HasRayResources,
                  HasOutputMapping, HasSignatureDefKey, HasTagSet, HasInferenceActors, TFStageReadWrite):
    """Spark ML Estimator which launches a raytfnode cluster for distributed training.

    ``fit(df)`` starts ``cluster_size`` TF nodes (Ray actors with ``num_cpus``/``num_gpus``/``resources``)
    running ``train_fn(args, ctx)``, where ``args`` is ``tf_args`` merged with every Param
    (:meth:`merge_args_params`; an ARGV list is passed as it is). With ``InputMode.SPARK`` (the default)
    the columns named by ``input_mapping`` are fed ``epochs`` times through Arrow; the nodes read them
    with ``TFNode.DataFeed(ctx.mgr, input_mapping=args.input_mapping)`` or ``ctx.get_data_feed``. With
    ``InputMode.TENSORFLOW`` the nodes read their own data and the DataFrame is not fed.

    The returned :class:`TFModel` carries every Param the two share (export_dir, tag_set,
    signature_def_key, input/output mappings, batch_size, Ray resources).

    Args:
      :train_fn: TensorFlow "main" function for training, ``train_fn(args, ctx)``.
      :tf_args: Arguments specific to the TensorFlow "main" function (dict, argparse args or an ARGV list).
      :export_fn: TF1 export function of TensorFlowOnSpark; not supported (export from ``train_fn``).
    """

    train_fn = None
    export_fn = None

    def __init__(self, train_fn, tf_args, export_fn=None):
        super().__init__()
        self.train_fn = train_fn
        self.args = Namespace(tf_args)
        self.export_fn = export_fn

    def _pickled_fields(self):
        return {"train_fn": self.train_fn, "tf_args": self.args, "export_fn": self.export_fn}

    @classmethod
    def _from_pickled_fields(cls, fields):
        return cls(fields["train_fn"], fields["tf_args"], fields.get("export_fn"))

    def _fit(self, dataset):
        """Trains on a raytfnode cluster and returns a TFModel with the same args and Params."""
        if self.export_fn is not None:
            raise BadInputError("export_fn is TensorFlowOnSpark's TF1 export hook and is not supported on "
                                "TensorFlow 2; export the SavedModel from train_fn (e.g. on the chief)")
        local_args = self.merge_args_params()
        logger.info("train args + params: %s", local_args)
        tf_args = self.args.argv if self.args.argv else local_args
        input_mode = local_args.input_mode
        if input_mode == cluster_lib.InputMode.SPARK:
            data = self._selected_columns(dataset)
        elif input_mode == cluster_lib.InputMode.TENSORFLOW:
            data = None
            if local_args.tfrecord_dir:
                self._save_tfrecords(dataset, local_args.tfrecord_dir)
        else:
            raise BadInputError("input_mode must be InputMode.SPARK (1) or InputMode.TENSORFLOW (0), got "
                                "{!r}".format(input_mode))
        cluster = cluster_lib.run(
            _session(dataset), self.train_fn, tf_args, local_args.cluster_size, local_args.num_ps,
            local_args.tensorboard, input_mode, master_node=local_args.master_node,
            driver_ps_nodes=local_args.driver_ps_nodes, num_cpus=local_args.num_cpus,
            num_gpus=local_args.num_gpus, resources=local_args.resources or None)
        try:
            if data is not None:
                cluster.train(data, local_args.epochs, feed_timeout=local_args.feed_timeout)
        except BaseException:
            try:   # the feed's error is the one to show; this only releases the nodes
                cluster.shutdown(grace_secs=0, timeout=5)
            except Exception:  # noqa: BLE001
                logger.debug("shutdown after a failed fit", exc_info=True)
            raise
        cluster.shutdown(grace_secs=self.getGraceSecs())
        return self._copyValues(TFModel(self.args))

    def _selected_columns(self, dataset):
        """The DataFrame's ``input_mapping`` columns, in sorted order (the order DataFeed maps them in)."""
        mapping = self.getInputMapping()
        if not mapping:
            raise BadInputError("TFEstimator has no input_mapping; set it to {{column: tensor name}} for the "
                                "columns to feed (the DataFrame has {})".format(dataset.columns))
        missing = [column for column in sorted(mapping) if column not in dataset.columns]
        if missing:
            raise BadInputError("input_mapping names column(s) {} that the DataFrame does not have; its "
                                "columns are {}".format(missing, dataset.columns))
        return dataset.select(sorted(mapping))

    def _save_tfrecords(self, dataset, tfrecord_dir):
        """InputMode.TENSORFLOW with tfrecord_dir: writes the mapped columns as TFRecords for the nodes to read."""
        try:
            from .. import dfutil
        except ImportError:
            raise BadInputError("tfrecord_dir needs raytfnode.dfutil, which this installation lacks; write "
                                "the TFRecords yourself and leave tfrecord_dir unset") from None
        mapping = self.getInputMapping()
        dfutil.saveAsTFRecords(self._selected_columns(dataset) if mapping else dataset, tfrecord_dir)
