"""User code for the TF nodes: local ``py_modules`` and ``working_dir`` of a ``runtime_env``, uploaded once.

Ray accepts local directories and modules in a ``runtime_env`` only at the job
level (``ray.init(runtime_env=...)``); an actor's own ``runtime_env`` must name
packages already in the cluster (``gcs://`` URIs). ``TFCluster.run`` takes
local paths, as ``--py-files`` took local files for TensorFlowOnSpark, so they
are packaged and uploaded here the way ``ray.init`` does it, and the node
actors get the URIs.
"""
import logging
import os
import shutil
import tempfile

logger = logging.getLogger(__name__)


def upload_local_code(runtime_env):
    """``runtime_env`` with local ``py_modules`` and ``working_dir`` replaced by URIs of uploaded packages."""
    if not runtime_env or not (runtime_env.get("py_modules") or runtime_env.get("working_dir")):
        return runtime_env
    # Ray's own upload step of ray.init (no public function does it for one actor's runtime_env)
    from ray._private.runtime_env.py_modules import upload_py_modules_if_needed
    from ray._private.runtime_env.working_dir import upload_working_dir_if_needed

    include_gitignore = os.environ.get("RAY_RUNTIME_ENV_IGNORE_GITIGNORE", "0") != "1"
    scratch_dir = tempfile.mkdtemp(prefix="raytfnode-upload-")
    try:
        runtime_env = upload_py_modules_if_needed(dict(runtime_env), include_gitignore=include_gitignore,
                                                  scratch_dir=scratch_dir, logger=logger)
        runtime_env = upload_working_dir_if_needed(runtime_env, include_gitignore=include_gitignore,
                                                   scratch_dir=scratch_dir, logger=logger)
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)
    runtime_env.pop("excludes", None)
    return runtime_env
