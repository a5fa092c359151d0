"""Path handling for TF nodes: pure functions."""
import getpass
import logging
import re

logger = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def has_scheme(path):
    """True when ``path`` starts with a filesystem scheme such as ``hdfs://`` or ``file://``."""
    return bool(_SCHEME.match(path))


def absolute_path(default_fs, working_dir, path, user=None):
    """Turns ``path`` into an absolute path with a filesystem scheme.

    Args:
      :default_fs: the default filesystem, e.g. ``'hdfs://namenode:8020'`` or ``'file://'``.
      :working_dir: the node's working directory, used for relative paths on ``file://``.
      :path: the path to convert.
      :user: the user name for ``/user/<user>/`` on HDFS; the current user by default.

    Returns:
      ``path`` itself when it has a scheme; ``default_fs + path`` when it is
      absolute; otherwise ``<default_fs>/user/<user>/<path>`` on ``hdfs://`` and
      ``viewfs://``, and ``file://<working_dir>/<path>`` on ``file://``.
    """
    if has_scheme(path):
        return path
    fs = default_fs.rstrip("/")
    if fs.endswith(":"):  # 'file:///' (Hadoop's default fs.defaultFS) -> 'file://'
        fs += "//"
    if path.startswith("/"):
        return fs + path
    if fs.startswith(("hdfs://", "viewfs://")):
        return "{}/user/{}/{}".format(fs, user or getpass.getuser(), path)
    if fs.startswith("file://"):
        directory = working_dir.strip("/")
        return "file:///{}{}".format(directory + "/" if directory else "", path)
    logger.warning("unknown scheme %s for relative path %s", default_fs, path)
    return "{}/{}".format(fs.rstrip("/"), path)
