"""How loud raytfnode and the stack under it are: quiet by default, everything on request.

A new user's console used to fill with start-up lines that report nothing
wrong: TensorFlow's C++ ``I...`` lines and, on a machine without GPUs, its
``E... failed call to cuInit: ... UNKNOWN ERROR (303)`` probe, once per node;
Ray's notice that token authentication is on. Quiet (the default) keeps those
out of the console; verbose shows everything as the tools print it.

Quiet never hides a real error: Python exceptions, warnings and errors of
TensorFlow, Ray and Spark all still show. Only these are dropped:

* TensorFlow C++ messages below warnings (``TF_CPP_MIN_LOG_LEVEL=1`` unless set),
  and the ``I...`` lines and the ``WARNING: All log messages before
  absl::InitializeLog()`` notice that TensorFlow prints before its logging is
  set up (``TF_CPP_MIN_LOG_LEVEL`` cannot reach those);
* the ``failed call to cuInit`` line, only on a node that Ray gave no GPU (its
  ``CUDA_VISIBLE_DEVICES`` is empty, so TensorFlow runs on the CPU whatever the
  probe says); a node with a GPU shows it, because there it is a real failure;
* Ray's "Token authentication is enabled" notice (the warning Ray prints when
  authentication is *disabled* still shows).

The level comes from ``TFCluster.run(log_level=...)`` or the environment:
``RAYTFNODE_LOG_LEVEL=verbose`` (or ``info``/``debug``) or ``RAYTFNODE_VERBOSE=1``
bring everything back; ``RAYTFNODE_LOG_LEVEL=quiet`` (or ``warning``) is the default.
Verbose also shows raytfnode's own INFO lines (cluster start-up, shutdown).

Left as they are, because no setting reaches them: Ray's ``gcs_client.cc ...
GcsClient has no Cluster ID set`` line, which every process that connects to Ray
(RayDP's JVMs, Spark's Python workers) prints while its client starts, before
``RAY_BACKEND_LOG_LEVEL`` is applied; that variable only adds a line of its own
(``Set ray log level from environment variable``) to each of them.
"""
import atexit
import logging
import os
import re
import sys
import threading

QUIET = "quiet"
VERBOSE = "verbose"

LEVEL_ENV = "RAYTFNODE_LOG_LEVEL"
VERBOSE_ENV = "RAYTFNODE_VERBOSE"

_LEVEL_NAMES = {
    "quiet": QUIET, "warning": QUIET, "warn": QUIET, "error": QUIET,
    "verbose": VERBOSE, "info": VERBOSE, "debug": VERBOSE,
}
_TRUE = ("1", "true", "yes", "on")

# absl/glog line prefix: severity letter, MMDD, time, thread id, file:line]
_ABSL_INFO = re.compile(r"^I\d{4} [\d:.]+ +\d+ [\w./+-]+:\d+\] ")
_ABSL_PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_CUINIT_FAILED = re.compile(r"^E\d{4} [\d:.]+ +\d+ cuda_\w+\.cc:\d+\] failed call to cuInit")
_TOKEN_AUTH_ENABLED = "Token authentication is enabled for this Ray cluster"


def resolve_level(log_level=None, environ=None):
    """The log level to use: ``'quiet'`` or ``'verbose'``.

    Args:
      :log_level: ``None`` (take it from the environment), ``'quiet'``/``'warning'``/``'error'``,
        ``'verbose'``/``'info'``/``'debug'``, or a ``logging`` level number (below WARNING is verbose).
      :environ: the environment to read (default ``os.environ``).

    Raises:
      ValueError: for a name that is none of these.
    """
    environ = os.environ if environ is None else environ
    if log_level is None:
        if environ.get(VERBOSE_ENV, "").strip().lower() in _TRUE:
            return VERBOSE
        log_level = environ.get(LEVEL_ENV) or QUIET
    if isinstance(log_level, int):
        return VERBOSE if log_level < logging.WARNING else QUIET
    name = str(log_level).strip().lower()
    if name not in _LEVEL_NAMES:
        raise ValueError("log_level must be one of {} (or {}=1), got {!r}".format(
            sorted(_LEVEL_NAMES), VERBOSE_ENV, log_level))
    return _LEVEL_NAMES[name]


def env_defaults(level):
    """Environment variables that set TensorFlow's C++ logging for ``level``.

    They are defaults: a variable the user set already wins.
    """
    if level == VERBOSE:
        return {"TF_CPP_MIN_LOG_LEVEL": "0"}
    return {"TF_CPP_MIN_LOG_LEVEL": "1"}


def keep_node_line(line, level, has_gpu):
    """Whether a line a TF node process writes to stderr reaches the user's console."""
    if level == VERBOSE:
        return True
    text = line.rstrip("\r\n")
    if text == _ABSL_PREINIT or _ABSL_INFO.match(text):
        return False
    if not has_gpu and _CUINIT_FAILED.match(text):
        return False
    return True


SPARK_LOG4J2_DEFAULTS = "org/apache/spark/log4j2-defaults.properties"


def raydp_configs(configs=None):
    """Spark configs for ``raydp.init_spark(configs=...)``: ``configs`` over raytfnode's defaults.

    RayDP 1.6 points Spark's JVMs at a log4j2 file, ``log4j2-default.properties``,
    that no jar on their class path holds, so every Spark session on RayDP starts
    with ``ERROR StatusConsoleListener Reconfiguration failed: No configuration
    found``. The default here names the file Spark itself ships
    (``spark.log4j.config.file.name``), which ends that line and leaves Spark's
    own logging as it would be without RayDP. A key in ``configs`` wins.

    Args:
      :configs: the Spark configs the caller wants (a dict of strings), or ``None``.

    Returns:
      A new dict to pass as ``raydp.init_spark(..., configs=...)``.
    """
    merged = {"spark.log4j.config.file.name": SPARK_LOG4J2_DEFAULTS}
    merged.update(configs or {})
    return merged


class _TokenNoticeFilter(logging.Filter):
    """Drops Ray's "token authentication is enabled" notice (not the warning that it is disabled)."""

    def filter(self, record):
        return not str(record.msg).startswith(_TOKEN_AUTH_ENABLED)


_token_filter = _TokenNoticeFilter()
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


def apply_driver_defaults(log_level=None):
    """Sets the driver process up for ``log_level`` (``None``: from the environment); returns the level.

    Quiet: environment defaults for the processes started from here on (Ray, Spark's
    JVM and workers, TF nodes) and Ray's token notice filtered out. Verbose: raytfnode's
    own INFO lines go to stderr as well. Called on ``import raytfnode`` and by ``run()``.
    """
    level = resolve_level(log_level)
    for name, value in env_defaults(level).items():
        os.environ.setdefault(name, value)
    auth_logger = logging.getLogger(_RAY_AUTH_LOGGER)
    ours = logging.getLogger("raytfnode")
    if level == QUIET:
        if _token_filter not in auth_logger.filters:
            auth_logger.addFilter(_token_filter)
    else:
        auth_logger.removeFilter(_token_filter)
        if ours.level == logging.NOTSET or ours.level > logging.INFO:
            ours.setLevel(logging.INFO)
        if not ours.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            ours.addHandler(handler)
    return level


class _StderrLineFilter:
    """Copies a process's file descriptor 2 through a pipe, dropping the lines ``keep`` rejects.

    The reader is a daemon thread that holds the GIL only to test one line at a time; the
    pipe is enlarged to 1 MiB where Linux allows, so a burst of output from C++ code that
    holds the GIL cannot fill it. Any failure in the filter turns it into a plain copy.
    """

    def __init__(self, keep):
        self.keep = keep
        self.original = os.dup(2)
        read_end, write_end = os.pipe()
        try:
            import fcntl
            fcntl.fcntl(write_end, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
        except (ImportError, OSError):
            pass
        sys.stderr.flush()
        os.dup2(write_end, 2)
        os.close(write_end)
        self.thread = threading.Thread(target=self._copy, args=(read_end,), daemon=True,
                                       name="raytfnode-stderr-filter")
        self.thread.start()
        atexit.register(self.drain)

    def drain(self, timeout=2.0):
        """Puts the original stderr back and waits for the lines still in the pipe.

        Runs at interpreter exit: an uncaught exception's traceback is written just
        before it, and the daemon reader would otherwise die with it unread.
        """
        try:
            sys.stderr.flush()
        except Exception:  # noqa: BLE001  (a closed stderr: nothing to flush)
            pass
        os.dup2(self.original, 2)     # closes our end of the pipe: the reader sees its end
        self.thread.join(timeout)

    def _copy(self, read_end):
        pending = b""
        filtering = True
        while True:
            data = os.read(read_end, 65536)
            if not data:
                if pending:
                    os.write(self.original, pending)
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            out = []
            for raw in lines:
                try:
                    if not filtering or self.keep(raw.decode("utf-8", "replace")):
                        out.append(raw + b"\n")
                except Exception:  # noqa: BLE001  (a broken filter must not eat output)
                    filtering = False
                    out.append(raw + b"\n")
            if out:
                os.write(self.original, b"".join(out))


_node_filter = None


def quiet_node_stderr(level, has_gpu):
    """In a TF node process: filters its stderr for ``level`` (once per process) and sets TF's C++ log level.

    Must run before TensorFlow is imported in the process for ``TF_CPP_MIN_LOG_LEVEL``
    to count; the stderr filter works whenever it is installed.
    """
    global _node_filter
    for name, value in env_defaults(level).items():
        if name.startswith("TF_"):
            os.environ.setdefault(name, value)
    if level == VERBOSE or _node_filter is not None:
        return
    _node_filter = _StderrLineFilter(lambda line: keep_node_line(line, level, has_gpu))


__all__ = ["QUIET", "VERBOSE", "LEVEL_ENV", "VERBOSE_ENV", "resolve_level", "env_defaults", "keep_node_line",
           "apply_driver_defaults", "quiet_node_stderr", "raydp_configs"]
