"""Helper functions to abstract API changes between TensorFlow versions, intended for end-user TF code.

Keeps ``tensorflowonspark.compat``: ``export_saved_model``, ``disable_auto_shard``
and ``is_gpu_available``, for the TensorFlow 2 line (2.1 and later) only.
"""


def export_saved_model(model, export_dir, is_chief=False):
    """Saves a Keras ``model`` as a SavedModel in ``export_dir`` on the chief.

    Every node of a ``MultiWorkerMirroredStrategy`` must call ``save`` (it runs
    collectives); non-chief nodes save to a throw-away local directory,
    ``worker_model``, as in TensorFlowOnSpark.

    Args:
      :model: a Keras model (``tf.keras``; with ``TF_USE_LEGACY_KERAS=1`` a ``tf_keras`` model).
      :export_dir: directory of the SavedModel.
      :is_chief: whether this node is the chief (``ctx.job_name == 'chief'`` or ``ctx.task_index == 0``
        of the workers when there is no chief).

    Returns:
      The directory the model was saved to.
    """
    export_dir = export_dir if is_chief else "worker_model"
    if hasattr(model, "export") and not _is_legacy_keras(model):
        model.export(export_dir)        # Keras 3: a SavedModel for inference ('serve' signature)
    else:
        model.save(export_dir, save_format="tf")
    return export_dir


def _is_legacy_keras(model):
    return type(model).__module__.startswith(("tf_keras", "keras.src.engine", "tensorflow.python.keras"))


def disable_auto_shard(options):
    """Turns off the auto-sharding of a ``tf.data.Options`` (each node reads only the data it is fed)."""
    import tensorflow as tf

    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF


def is_gpu_available():
    """True when TensorFlow sees a GPU in this process (the GPUs Ray gave the node)."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU")) > 0
