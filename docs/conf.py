"""Sphinx configuration of the raytfnode documentation: Markdown pages (MyST) and the API from the docstrings.

Build it with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``;
tests/test_docs.py builds it the same way, so a broken reference fails the tests.
"""
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..")))

project = "raytfnode"
author = "raytfnode authors"
copyright = "2026, raytfnode authors"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
root_doc = "index"

# Docstrings follow TensorFlowOnSpark's style: "Args:" over an indented field list of ":name: text"
# entries, which is plain reStructuredText (napoleon would read those entries as Google-style
# parameters and break them).
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": False}

myst_heading_anchors = 3
html_theme = "alabaster"
html_title = "raytfnode"
