"""Sphinx configuration of the documentation site (``make docs``)."""

import sys
from pathlib import Path

import multi

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "multi"
author = "the multi developers"
release = version = multi.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "fabric_options",
]
myst_heading_anchors = 3
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"multi {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# The examples print only what they print themselves: no rank prefixes, no summary.
doctest_global_setup = "from multi import Verbosity\nVerbosity().set(0)"
smartquotes = False  # option names such as --png stay as written
