"""Quiet by default, loud on request: what reaches the console from the driver and from TF node processes.

The line filter and the level are pure; the node-process filter runs in a child
Python that imports the real TensorFlow (which, on this machine without GPUs,
prints the cuInit probe error) with the filter a TF node installs.
"""
import logging
import subprocess
import sys
import textwrap

import pytest
from conftest import subprocess_env

from raytfnode import logs

CUINIT = ("E0000 00:00:1796231479.623451    6382 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
          "Failed call to cuInit: UNKNOWN ERROR (303)")
CUDART_INFO = ("I0000 00:00:1796231463.893542    6215 cudart_stub.cc:31] Could not find cuda drivers on your "
               "machine, GPU will not be used.")
PREINIT = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
TF_ERROR = "E0000 00:00:1796231479.623451    6382 op_kernel.cc:1857] OP_REQUIRES failed at save_restore.cc: NOT_FOUND"


def test_level_from_argument_then_environment():
    assert logs.resolve_level(None, {}) == logs.QUIET
    assert logs.resolve_level(None, {"RAYTFNODE_VERBOSE": "1"}) == logs.VERBOSE
    assert logs.resolve_level(None, {"RAYTFNODE_LOG_LEVEL": "debug"}) == logs.VERBOSE
    assert logs.resolve_level(None, {"RAYTFNODE_LOG_LEVEL": "WARNING"}) == logs.QUIET
    assert logs.resolve_level("quiet", {"RAYTFNODE_VERBOSE": "1"}) == logs.QUIET   # the keyword wins
    assert logs.resolve_level(logging.INFO, {}) == logs.VERBOSE
    with pytest.raises(ValueError, match="log_level must be one of"):
        logs.resolve_level("chatty", {})


def test_quiet_drops_startup_info_and_cpu_probe_but_keeps_errors():
    keep = [line for line in (PREINIT, CUDART_INFO, CUINIT, TF_ERROR, "Traceback (most recent call last):",
                              "chief:0 trained: {'loss': 0.01}")
            if logs.keep_node_line(line + "\n", logs.QUIET, has_gpu=False)]
    assert keep == [TF_ERROR, "Traceback (most recent call last):", "chief:0 trained: {'loss': 0.01}"]


def test_cuinit_failure_shows_on_a_node_that_has_a_gpu():
    assert logs.keep_node_line(CUINIT, logs.QUIET, has_gpu=True)
    assert not logs.keep_node_line(CUINIT, logs.QUIET, has_gpu=False)


def test_verbose_keeps_every_line():
    assert all(logs.keep_node_line(line, logs.VERBOSE, has_gpu=False) for line in (PREINIT, CUDART_INFO, CUINIT))


def test_environment_defaults_keep_tf_cpp_logging_at_warnings_only_when_quiet():
    assert logs.env_defaults(logs.QUIET) == {"TF_CPP_MIN_LOG_LEVEL": "1"}
    assert logs.env_defaults(logs.VERBOSE) == {"TF_CPP_MIN_LOG_LEVEL": "0"}


def test_raydp_configs_name_sparks_own_log4j2_file_and_the_callers_keys_win():
    import zipfile
    from pathlib import Path

    import pyspark

    configs = logs.raydp_configs({"spark.ui.enabled": "false"})
    assert configs == {"spark.log4j.config.file.name": logs.SPARK_LOG4J2_DEFAULTS, "spark.ui.enabled": "false"}
    assert logs.raydp_configs({"spark.log4j.config.file.name": "mine.properties"}) == {
        "spark.log4j.config.file.name": "mine.properties"}
    # the file named is on Spark's class path (in spark-core's jar), so the JVMs find it
    core, = (Path(pyspark.__file__).parent / "jars").glob("spark-core_*.jar")
    assert logs.SPARK_LOG4J2_DEFAULTS in zipfile.ZipFile(core).namelist()


def test_ray_token_notice_filtered_but_disabled_warning_kept():
    logs.apply_driver_defaults("quiet")
    auth = logging.getLogger("ray._private.authentication.authentication_token_setup")
    enabled = auth.makeRecord(auth.name, logging.WARNING, __file__, 1,
                              "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled "
                              "to opt out.", (), None)
    disabled = auth.makeRecord(auth.name, logging.WARNING, __file__, 1,
                               "Token authentication is disabled for this Ray cluster.", (), None)
    assert not auth.filter(enabled)
    assert auth.filter(disabled)


NODE_PROCESS = textwrap.dedent("""
    import os, sys
    from raytfnode import logs
    logs.quiet_node_stderr(sys.argv[1], has_gpu=False)
    os.environ["CUDA_VISIBLE_DEVICES"] = ""          # what a node without Ray GPUs gets
    import tensorflow as tf
    print(int(tf.constant(1) + 1), file=sys.stderr, flush=True)    # the first op probes CUDA
    os.write(2, b"E0000 00:00:1.0 1 op_kernel.cc:1] a real TensorFlow error\\n")
    raise RuntimeError("map_fun failed")
""")


def _node_stderr(level):
    env = subprocess_env()
    env.pop("TF_CPP_MIN_LOG_LEVEL")      # the node sets its own default
    done = subprocess.run([sys.executable, "-c", NODE_PROCESS, level], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    return done.stderr


@pytest.mark.timeout(600)
def test_node_process_with_real_tensorflow_quiet_then_verbose():
    quiet = _node_stderr("quiet")
    assert "cuInit" not in quiet and "cudart_stub" not in quiet and "absl::InitializeLog" not in quiet, quiet
    assert "a real TensorFlow error" in quiet
    assert "RuntimeError: map_fun failed" in quiet
    assert "\n2\n" in "\n" + quiet
    verbose = _node_stderr("verbose")
    assert "failed call to cuInit" in verbose, verbose    # this machine has no GPU: TF probes and fails
    assert "RuntimeError: map_fun failed" in verbose
