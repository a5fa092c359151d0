"""A source of partitions held by the driver: lists of rows, fed from driver threads.

Handy without Spark and in tests; the data path is the same as every bridge's.
"""
import concurrent.futures
import threading

from ..errors import FeedError
from ..feeding import feed_inference_partition, feed_train_partition

MAX_CONCURRENT_PARTITIONS = 4


class _Job:
    """Feeds ``(index, rows)`` partitions with ``function(index, rows)``, a few at a time, on driver threads.

    ``cancel()`` stops it: partitions not started yet never start, and a running one
    raises :class:`FeedError` at its next row.
    """

    def __init__(self, function, partitions):
        self.function = function
        self.partitions = list(partitions)
        self.cancelled = threading.Event()

    def __call__(self):
        workers = min(MAX_CONCURRENT_PARTITIONS, max(1, len(self.partitions)))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="raytfnode-local-feed") as pool:
            futures = [pool.submit(self._feed, index, rows) for index, rows in self.partitions]
            try:
                return [future.result() for future in futures]
            finally:
                for future in futures:
                    future.cancel()      # after a failure, or cancel(): the partitions not started yet

    def _feed(self, index, rows):
        self._raise_if_cancelled(index)
        return self.function(index, self._until_cancelled(index, rows))

    def _until_cancelled(self, index, rows):
        for row in rows:
            self._raise_if_cancelled(index)
            yield row

    def _raise_if_cancelled(self, index):
        if self.cancelled.is_set():
            raise FeedError("partition {}: the feed was cancelled".format(index))

    def cancel(self):
        self.cancelled.set()


class LocalSource:
    """Partitions given as a list of lists of rows."""

    def __init__(self, partitions):
        self.partitions = [list(p) for p in partitions]

    def validate(self, input_mapping):
        return None

    def train_job(self, target, epoch):
        return _Job(lambda index, rows: feed_train_partition(target, epoch, index, rows=rows),
                    enumerate(self.partitions))

    def inference(self, target, cluster):
        results = [None] * len(self.partitions)

        def step(target):   # after a restart, only the partitions without results run again
            def feed(index, rows):
                results[index] = list(feed_inference_partition(target, index, rows=rows))

            todo = [(i, rows) for i, rows in enumerate(self.partitions) if results[i] is None]
            cluster._watch(_Job(feed, todo), target, "inference")
            return results

        return cluster._with_restarts(target, step)
