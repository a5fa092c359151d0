"""This module provides helper functions for the TensorFlow application.

Primarily, these functions help with:

* starting the TensorFlow ``tf.distribute.Server`` for the node (with the GPUs
  Ray assigned to it, and its role in the cluster);
* managing input/output data for ``InputMode.SPARK`` (:class:`DataFeed`).

It keeps the documented API of ``tensorflowonspark.TFNode``.
"""
import logging
import warnings
import weakref

from . import paths
from .datafeed import DataFeed

logger = logging.getLogger(__name__)

__all__ = ["DataFeed", "hdfs_path", "start_cluster_server", "export_saved_model", "release_port",
           "next_batch", "batch_results", "terminate"]


def hdfs_path(ctx, path):
    """Convenience function to create a TensorFlow-compatible absolute HDFS path from relative paths.

    Args:
      :ctx: TFNodeContext containing the metadata specific to this node in the cluster.
      :path: path to convert.

    Returns:
      An absolute path prefixed with the correct filesystem scheme: a path with a
      scheme as it is; ``/x`` under ``ctx.defaultFS``; a relative path under
      ``/user/<user>/`` on ``hdfs://``/``viewfs://`` and under ``ctx.working_dir`` on ``file://``.
    """
    return paths.absolute_path(ctx.defaultFS, ctx.working_dir, path)


def start_cluster_server(ctx, num_gpus=1, rdma=False):
    """Function that wraps the creation of the TensorFlow server for a node in a distributed TensorFlow cluster.

    Works on TensorFlow 2 (where TensorFlowOnSpark refused): the node's GPUs are
    the ones Ray assigned (already in ``CUDA_VISIBLE_DEVICES``); the reserved port
    is released just before the server binds it.

    Args:
      :ctx: TFNodeContext containing the metadata specific to this node in the cluster.
      :num_gpus: number of GPUs desired; a warning is logged when Ray assigned fewer.
      :rdma: boolean indicating if RDMA 'iverbs' should be used for cluster communications.

    Returns:
      A tuple of ``(cluster_spec, server)``: a ``tf.train.ClusterSpec`` and a started ``tf.distribute.Server``.
    """
    import tensorflow as tf

    if num_gpus and len(ctx.gpu_ids) < num_gpus:
        logger.warning("node %s:%s asked for %d GPUs but Ray assigned %s; start the cluster with num_gpus=%d",
                       ctx.job_name, ctx.task_index, num_gpus, ctx.gpu_ids or "none", num_gpus)
    cluster_spec = tf.train.ClusterSpec(ctx.cluster_spec)
    ctx.release_port()
    server = tf.distribute.Server(cluster_spec, job_name=ctx.job_name, task_index=ctx.task_index,
                                  protocol="grpc+verbs" if rdma else "grpc", start=True)
    return cluster_spec, server


def export_saved_model(sess, export_dir, tag_set, signatures):
    """Convenience function to export a saved_model using provided arguments.

    The caller specifies the saved_model signatures in a simplified python dictionary form, as follows::

      signatures = {
        'signature_def_key': {
          'inputs': { 'input_tensor_alias': input_tensor_name },
          'outputs': { 'output_tensor_alias': output_tensor_name },
          'method_name': 'method'
        }
      }

    And this function will generate the signature_def_map and export the saved_model.

    ``sess`` may be a ``tf.compat.v1.Session`` (tensors given by name, ``'x:0'``
    or ``'x'``, or as tensor objects of its graph), or, on TensorFlow 2, a Keras
    model (tensors are the model's inputs and outputs, by name or as objects; a
    model with one input or output takes it under any name). A ``tf.Module``
    is not taken: save it with ``tf.saved_model.save``. Without ``method_name`` a
    signature gets its key as method name, as in TensorFlowOnSpark.

    Args:
      :sess: a ``tf.compat.v1.Session`` or a Keras model.
      :export_dir: path to save exported saved_model.
      :tag_set: string tag_set to identify the exported graph (comma-separated tags).
      :signatures: simplified dictionary representation of a TensorFlow signature_def_map.

    Returns:
      ``export_dir``, holding the saved_model.
    """
    from . import savedmodel
    return savedmodel.export(sess, export_dir, tag_set, signatures)


def release_port(ctx):
    """Closes the temporary socket created to assign a port to the TF node."""
    ctx.release_port()


_feeds = weakref.WeakKeyDictionary()   # mgr -> {queue name: the DataFeed the deprecated functions read it with}
_last_read = weakref.WeakKeyDictionary()   # mgr -> the queue name the deprecated functions read last


def _feed(mgr, qname_in="input"):
    """The deprecated functions' DataFeed of queue ``qname_in``: one per queue, kept while ``mgr`` lives.

    Keeping one per queue (not replacing it when ``qname`` changes) keeps what
    it read ahead; were it replaced, the new feed would take back those entries
    (see :class:`raytfnode.datafeed.DataFeed`), at the cost of a round trip.
    """
    feeds = _feeds.setdefault(mgr, {})
    feed = feeds.get(qname_in)
    if feed is None:
        feed = feeds[qname_in] = DataFeed(mgr, train_mode=True, qname_in=qname_in)
    return feed


def next_batch(mgr, batch_size, qname="input"):
    """*DEPRECATED*. Use TFNode.DataFeed class instead."""
    warnings.warn("TFNode.next_batch is deprecated; use TFNode.DataFeed", DeprecationWarning, stacklevel=2)
    _last_read[mgr] = qname
    return _feed(mgr, qname).next_batch(batch_size)


def batch_results(mgr, results, qname="output"):
    """*DEPRECATED*. Use TFNode.DataFeed class instead."""
    warnings.warn("TFNode.batch_results is deprecated; use TFNode.DataFeed", DeprecationWarning, stacklevel=2)
    feed = _feed(mgr, _last_read.get(mgr, "input"))
    feed.qname_out = qname
    feed.batch_results(results)


def terminate(mgr, qname="input"):
    """*DEPRECATED*. Use TFNode.DataFeed class instead."""
    warnings.warn("TFNode.terminate is deprecated; use TFNode.DataFeed", DeprecationWarning, stacklevel=2)
    _feed(mgr, qname).terminate()
