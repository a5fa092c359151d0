"""A source of partitions held by the driver: lists of rows, fed from driver threads.

Handy without Spark and in tests; the data path is the same as every bridge's.
"""
import concurrent.futures
import threading

from ..feeding import feed_inference_partition, feed_train_partition

MAX_CONCURRENT_PARTITIONS = 4


class _Job:
    def __init__(self, function, partitions):
        self.function = function
        self.partitions = partitions
        self.cancelled = threading.Event()

    def __call__(self):
        workers = min(MAX_CONCURRENT_PARTITIONS, max(1, len(self.partitions)))
        with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="raytfnode-local-feed") as pool:
            futures = [pool.submit(self.function, index, rows) for index, rows in enumerate(self.partitions)]
            return [future.result() for future in futures]

    def cancel(self):
        self.cancelled.set()


class LocalSource:
    """Partitions given as a list of lists of rows."""

    def __init__(self, partitions):
        self.partitions = [list(p) for p in partitions]

    def validate(self, input_mapping):
        return None

    def train_job(self, target, epoch):
        return _Job(lambda index, rows: feed_train_partition(target, epoch, index, rows=iter(rows)),
                    self.partitions)

    def inference(self, target, cluster):
        results = [None] * len(self.partitions)

        def step(target):   # after a restart, only the partitions without results run again
            def feed(_, todo):
                index, rows = todo
                results[index] = list(feed_inference_partition(target, index, rows=iter(rows)))

            todo = [(i, rows) for i, rows in enumerate(self.partitions) if results[i] is None]
            cluster._watch(_Job(feed, todo), target, "inference")
            return results

        return cluster._with_restarts(target, step)
