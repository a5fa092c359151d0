"""A ``tf.data.Dataset`` built on a DataFeed: the fast road for Keras programs.

Each pass over the dataset reads the feed up to the next end-of-epoch marker,
so ``model.fit(dataset, epochs=N)`` after ``cluster.train(data, num_epochs=N)``
sees exactly one epoch of this node's rows per Keras epoch, with no
``steps_per_epoch`` arithmetic. Auto-sharding is turned off: each node's feed
already holds only its own share of the rows.

Under ``MultiWorkerMirroredStrategy`` Keras treats each batch as a global batch
and splits it across all replicas: give ``batch_size`` as the global batch
size (per-replica batch x number of replicas), as for any Keras dataset. Nodes
whose row counts differ (by at most one row, by construction) end the epoch
together; TensorFlow pads the shorter side with empty steps.

Python hands ``tf.data`` one chunk at a time (``DataFeed.epoch_chunks``) and
``Dataset.rebatch`` cuts the batches in C++, across chunk boundaries: one
Python call per chunk instead of one per batch, which on a busy 2-core machine
was about 8% of the training's steps/s. A chunk's rows count as read when
``tf.data`` takes the chunk. With an ``output_signature`` whose batch dimension
is fixed, the batches are cut in Python (``DataFeed.epoch_batches``).
"""
import numpy as np

from .datafeed import check_batch_size
from .errors import BadInputError


def _spec(array):
    import tensorflow as tf

    if array.dtype == object:
        return tf.TensorSpec(shape=(None,), dtype=tf.string)
    return tf.TensorSpec(shape=(None,) + tuple(array.shape[1:]), dtype=tf.as_dtype(array.dtype))


def signature_of(feed):
    """The ``output_signature`` of ``feed``'s batches, read off the next chunk (waits for data)."""
    chunk = feed.peek_chunk()
    if chunk is None:
        raise BadInputError("cannot read the dataset's shapes: the feed is at the end of an epoch; pass "
                            "output_signature to as_dataset()")
    arrays = chunk.arrays(0, 1)
    if feed.input_tensors is not None:
        return {tensor: _spec(arrays[chunk.column_index(column, position)])
                for position, (column, tensor) in enumerate(zip(feed._input_columns, feed.input_tensors))}
    if chunk.row_kind == "single":
        return _spec(arrays[0])
    return tuple(_spec(a) for a in arrays)


def feed_dataset(feed, batch_size, output_signature=None):
    """A ``tf.data.Dataset`` of batches of ``feed``, ending at each end of epoch.

    Args:
      :feed: a :class:`raytfnode.datafeed.DataFeed` in train mode.
      :batch_size: rows per batch (the global batch size under a distribution strategy).
      :output_signature: the ``tf.TensorSpec`` structure of a batch; read off the
        first chunk when ``None`` (which waits until data arrives).

    Returns:
      A ``tf.data.Dataset`` yielding what ``DataFeed.next_batch_arrays`` returns:
      a tuple of arrays per column, one array, or a dict with ``input_mapping``.
    """
    import tensorflow as tf

    check_batch_size(batch_size)
    if output_signature is None:
        output_signature = signature_of(feed)

    whole_chunks = _batch_dimension_open(output_signature)

    def batches():
        # whole chunks: one Python call per chunk, not per batch; tf.data cuts the batches (across chunk
        # boundaries) in C++
        reads = feed.epoch_chunks() if whole_chunks else feed.epoch_batches(batch_size)
        for arrays in reads:
            yield _tensor_inputs(arrays)

    dataset = tf.data.Dataset.from_generator(batches, output_signature=output_signature)
    if whole_chunks:
        dataset = dataset.rebatch(batch_size)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(2)


def _batch_dimension_open(signature):
    """True when every spec of ``signature`` leaves its first (batch) dimension unknown."""
    import tensorflow as tf

    return all(spec.shape.rank is not None and spec.shape.rank > 0 and spec.shape[0] is None
               for spec in tf.nest.flatten(signature))


def _tensor_inputs(batch):
    if isinstance(batch, tuple):
        return tuple(_as_tensor_input(b) for b in batch)
    if isinstance(batch, dict):
        return {k: _as_tensor_input(v) for k, v in batch.items()}
    return _as_tensor_input(batch)


def _as_tensor_input(array):
    if array.dtype == object:
        return np.asarray([v if isinstance(v, (bytes, str)) else str(v) for v in array])
    return array
