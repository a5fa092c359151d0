"""Ray Data bridge: a Ray Dataset's blocks fed by Ray tasks, no Spark needed.

The dataset is materialized once (its blocks stay in the object store for all
epochs); each epoch runs one small Ray task per block that checks the block and
feeds row ranges of it by reference (:mod:`raytfnode.stored`): no byte of a
block is copied on the way to the readers, which see its columns as views. The
block index plays the partition's part, so a retried task reproduces its chunk
keys.
"""
import ray

from ..errors import BadInputError
from ..feeding import feed_inference_partition, feed_train_partition
from ..stored import stored_block_rows

MAX_TASKS_IN_FLIGHT = 4


@ray.remote(num_cpus=0, max_retries=2)
def _feed_block(target, epoch, index, block, block_box):
    """Feeds ``block``: its value (passed as a ref, so Ray runs the task where the block is) to check it,
    and ``block_box`` (``[ref]``, passed unresolved) to hand the readers."""
    rows = stored_block_rows(block_box[0], block, target.chunk_rows, "block {}".format(index))
    return feed_train_partition(target, epoch, index, chunks=rows)


@ray.remote(num_cpus=0, max_retries=2, num_returns=2)
def _infer_block(target, index, block, block_box, run_id):
    import pandas as pd

    rows = stored_block_rows(block_box[0], block, target.chunk_rows, "block {}".format(index))
    results = list(feed_inference_partition(target, index, chunks=rows, run_id=run_id))
    column = pd.Series(results, dtype=object) if results and not _is_number(results[0]) else pd.Series(results)
    return pd.DataFrame({"result": column}), len(results)


def _is_number(value):
    import numbers

    import numpy as np
    return isinstance(value, (numbers.Number, np.number))


class _TaskJob:
    """Runs one task per block, a few at a time; ``cancel()`` cancels those in flight."""

    def __init__(self, submit, count):
        self.submit = submit
        self.count = count
        self.pending = []
        self.cancelled = False

    def __call__(self):
        results = [None] * self.count
        waiting = {}
        next_index = 0
        while next_index < self.count or waiting:
            while next_index < self.count and len(waiting) < MAX_TASKS_IN_FLIGHT and not self.cancelled:
                waiting[self.submit(next_index)] = next_index
                next_index += 1
            if self.cancelled:
                raise RuntimeError("feeding was cancelled")
            self.pending = list(waiting)
            ready, _ = ray.wait(self.pending, num_returns=1)
            for ref in ready:
                results[waiting.pop(ref)] = ray.get(ref)
        return results

    def cancel(self):
        self.cancelled = True
        for ref in self.pending:
            ray.cancel(ref, force=False)


class RayDatasetSource:
    """A Ray Dataset; its blocks are the partitions."""

    def __init__(self, dataset):
        self.dataset = dataset
        self._blocks = None

    def blocks(self):
        if self._blocks is None:
            self._blocks = self.dataset.to_arrow_refs()
        return self._blocks

    def validate(self, input_mapping):
        if input_mapping:
            columns = self.dataset.columns()
            missing = [c for c in input_mapping if c not in columns]
            if missing:
                raise BadInputError("input_mapping names column(s) {} that the Ray Dataset does not have; its "
                                    "columns are {}".format(missing, columns))

    def train_job(self, target, epoch):
        blocks = self.blocks()
        return _TaskJob(lambda i: _feed_block.remote(target, epoch, i, blocks[i], [blocks[i]]), len(blocks))

    def inference(self, target, cluster):
        import uuid

        blocks = self.blocks()
        run_id = uuid.uuid4().hex[:8]
        refs = [None] * len(blocks)

        def submit(i):
            refs[i], count = _infer_block.remote(target, i, blocks[i], [blocks[i]], run_id)
            return count

        cluster._watch(_TaskJob(submit, len(blocks)), target, "inference")
        return ray.data.from_pandas_refs(refs)
