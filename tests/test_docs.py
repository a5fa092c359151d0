"""The documentation site builds from the docstrings with warnings as errors.

A docstring that breaks reStructuredText, a reference to a module or a page
that does not exist, or a new page left out of the table of contents fails
here, as it would fail the published build.
"""
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.timeout(600)
def test_docs_build_without_warnings(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", str(tmp_path / "doctrees"), str(DOCS), str(tmp_path / "html")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert done.returncode == 0, "sphinx failed:\n" + done.stdout[-8000:]
    api = (tmp_path / "html" / "api.html").read_text()
    # the API page really holds the docstrings, not only headings
    for name in ("raytfnode.cluster.run", "raytfnode.datafeed.DataFeed.next_batch", "raytfnode.errors.NodeError",
                 "raytfnode.context.TFNodeContext"):
        assert 'id="{}"'.format(name) in api, name
    for page in ("porting", "architecture", "examples", "quickstart", "troubleshooting"):
        assert (tmp_path / "html" / (page + ".html")).exists(), page
