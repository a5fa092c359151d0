"""Spark's Python workers: re-read a zip archive's directory before a task only when the archive changed.

Before every task PySpark's worker calls ``importlib.invalidate_caches()``. On Python 3.11 that makes
every cached ``zipimport.zipimporter`` re-read its whole archive directory at once, and Spark puts its
spark-core jar (tens of thousands of entries) on the workers' path, with one importer per package
directory looked up in it. Measured on a 2-core machine: about 110 ms of every Spark Python task, so a
job of 400 small partitions spent most of its time there. Python 3.12 made the re-read lazy
(CPython gh-103200); :func:`reuse_unchanged_archive_directories` gives a worker the same effect by
keeping the directory it already read while the archive's size, inode and modification time are
unchanged. An archive rewritten in place (``SparkContext.addPyFile`` of a new version) is still
re-read, so a module added to it becomes importable as before.

The feeding and inference tasks call it; it stays in force for the rest of the (reused) worker's life,
for every later task of any Spark job, and does nothing on Python 3.12 and later.
"""
import os
import sys
import zipimport

_MARK = "_raytfnode_reuses_unchanged"


def _archive_stamp(archive):
    """What tells a rewritten archive from the one read before: (size, inode, mtime in ns), or None."""
    try:
        stat = os.stat(archive)
    except OSError:
        return None
    return stat.st_size, stat.st_ino, stat.st_mtime_ns


def reuse_unchanged_archive_directories():
    """Makes ``zipimporter.invalidate_caches`` re-read an archive only when it changed (Python < 3.12).

    Returns True when this call installed it, False when it was in force already or is not needed.
    """
    if sys.version_info >= (3, 12):
        return False
    importer_class = zipimport.zipimporter
    if getattr(importer_class.invalidate_caches, _MARK, False):
        return False
    rereading_invalidate = importer_class.invalidate_caches
    stamps_read = {}   # archive path -> its stamp when its directory was last read

    def invalidate_caches(self):
        stamp = _archive_stamp(self.archive)
        files = zipimport._zip_directory_cache.get(self.archive)
        if stamp is not None and files is not None and stamps_read.get(self.archive) == stamp:
            self._files = files
            return
        rereading_invalidate(self)
        stamps_read[self.archive] = stamp

    invalidate_caches.__doc__ = rereading_invalidate.__doc__
    setattr(invalidate_caches, _MARK, True)
    importer_class.invalidate_caches = invalidate_caches
    return True
