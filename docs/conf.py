"""Sphinx configuration of the rnafm_sklearn documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (``pip install -e
".[docs]"`` first). Offline: the gallery runs every script of ``examples/`` on the tiny random
checkpoint of the tests, never on downloaded weights.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # the checkout's package, also when it is not installed

project = "rnafm_sklearn"
author = "rnafm_sklearn developers"
copyright = "rnafm_sklearn developers"  # noqa: A001 (Sphinx's name)
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

# --- the gallery -----------------------------------------------------------------------------

TINY_CHECKPOINT = ROOT / "tests" / "fixtures" / "RNA-FM_tiny.pth"
_GALLERY_OUT = Path(tempfile.mkdtemp(prefix="rnafm-gallery-"))

# Shorter runs of the slow examples (they take the same options standalone); any other script
# gets only --model and --output-dir.
QUICK_ARGS = {
    "finetune_riboswitch.py": ["--epochs", "1"],
    "zero_shot_scoring.py": ["--max-sequences", "40"],
}


def reset_argv(gallery_conf, script_vars):
    """Command-line arguments of each example: the tiny checkpoint and a scratch folder."""
    name = Path(script_vars["src_file"]).name
    out = _GALLERY_OUT / name.removesuffix(".py")
    return ["--model", str(TINY_CHECKPOINT), "--output-dir", str(out), *QUICK_ARGS.get(name, [])]


def _run_examples_as_scripts():
    """Run each example as ``python examples/NAME.py`` would: ``__file__`` set, exit handled.

    sphinx-gallery runs a script in the Sphinx process without ``__file__`` (the examples find
    the repository's data next to themselves) and does not catch ``SystemExit``: the
    examples' ``sys.exit(main())`` would end the whole build silently. Status 0 ends the
    example; any other status is an error, which fails the build like an exception would.
    """
    from sphinx_gallery import gen_rst

    run = gen_rst._exec_and_get_memory
    if getattr(run, "_rnafm_wrapped", False):
        return

    def exec_and_get_memory(*args, **kwargs):
        script_vars = kwargs["script_vars"]
        script_vars["fake_main"].__dict__.setdefault("__file__", str(script_vars["src_file"]))
        try:
            return run(*args, **kwargs)
        except SystemExit as exc:
            if exc.code in (0, None):
                return False, 0.0
            raise RuntimeError(f"the example exited with status {exc.code!r}") from None

    exec_and_get_memory._rnafm_wrapped = True
    gen_rst._exec_and_get_memory = exec_and_get_memory


_run_examples_as_scripts()

RANDOM_WEIGHTS_NOTE = (
    "Figure made with the tiny random checkpoint of the tests "
    "(``tests/fixtures/RNA-FM_tiny.pth``), not with RNA-FM's weights: it shows what the "
    "example draws, not RNA-FM's results. Run the script with the real model for those."
)


def random_weights_scraper(block, block_vars, gallery_conf):
    """matplotlib's figures, each captioned as made with random weights."""
    from sphinx_gallery.scrapers import matplotlib_scraper

    rst = matplotlib_scraper(block, block_vars, gallery_conf)
    if not rst.strip():
        return rst
    return rst + f"\n.. note::\n\n   {RANDOM_WEIGHTS_NOTE}\n\n"


sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": str(DOCS / "auto_examples"),
    "filename_pattern": re.escape(os.sep) + r"[^_][^" + re.escape(os.sep) + r"]*\.py$",
    "ignore_pattern": r"(__init__|conftest)\.py$",
    "reset_argv": reset_argv,
    "image_scrapers": (random_weights_scraper,),
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


def _clean_gallery_output(app, exception):
    shutil.rmtree(_GALLERY_OUT, ignore_errors=True)


def setup(app):
    app.connect("build-finished", _clean_gallery_output)
