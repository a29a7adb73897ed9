"""Sphinx configuration of the rnafm_sklearn documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (``pip install -e
".[docs]"`` first). Offline: the gallery runs every script of ``examples/`` on the tiny random
checkpoint of the tests, never on downloaded weights.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, also when it is not installed
sys.path.insert(0, str(DOCS / "sphinxext"))

project = "rnafm_sklearn"
author = "rnafm_sklearn developers"
copyright = "rnafm_sklearn developers"  # noqa: A001 (Sphinx's name)
import rnafm_gallery  # noqa: E402

import rnafm_sklearn  # noqa: E402

release = rnafm_sklearn.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**.md5"]
templates_path = ["_templates"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"inherited-members": False}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False  # autosummary's class template lists them
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

intersphinx_mapping = {}  # offline build: no inventories fetched

html_theme = "pydata_sphinx_theme"
html_title = f"rnafm_sklearn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version", "theme-version"],
}
html_show_sourcelink = False

sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(DOCS / "auto_examples"),
    "filename_pattern": re.escape(os.sep) + r"[^_][^" + re.escape(os.sep) + r"]*\.py$",
    "ignore_pattern": r"(__init__|conftest)\.py$",
    "reset_argv": "rnafm_gallery.reset_argv",
    "image_scrapers": ("rnafm_gallery.random_weights_scraper",),
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "remove_config_comments": True,
    "download_all_examples": False,
    "show_memory": False,
    "plot_gallery": "True",
    "min_reported_time": 1,
    "capture_repr": (),
    "matplotlib_animations": False,
}


def _skip_foreign_methods(app, what, name, obj, skip, options):
    """List a class's methods written in rnafm_sklearn (its own and its private bases');
    those inherited from scikit-learn or torch are documented there."""
    if what == "method" and not (getattr(obj, "__module__", None) or "").startswith(
        "rnafm_sklearn"
    ):
        return True
    return None


def setup(app):
    rnafm_gallery.run_examples_as_scripts()
    app.connect("build-finished", rnafm_gallery.clean_output)
    app.connect("autodoc-skip-member", _skip_foreign_methods)
