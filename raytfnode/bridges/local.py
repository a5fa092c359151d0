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
        job = _Job(lambda index, rows: list(feed_inference_partition(target, index, rows=iter(rows))),
                   self.partitions)
        return cluster._watch(job, target, "inference")
