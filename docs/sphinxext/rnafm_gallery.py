"""sphinx-gallery helpers of the documentation build (referenced by name from conf.py).

Kept in a module, not in conf.py, so that Sphinx can cache the configuration (it cannot
pickle functions defined in conf.py).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY_CHECKPOINT = ROOT / "tests" / "fixtures" / "RNA-FM_tiny.pth"
_GALLERY_OUT = Path(tempfile.mkdtemp(prefix="rnafm-gallery-"))

# Shorter runs of the slow examples (they take the same options standalone); any other script
# gets only --model and --output-dir.
QUICK_ARGS = {  # as tests/test_examples.py runs them
    "finetune_riboswitch.py": ["--epochs", "1", "--per-class", "10"],
    "zero_shot_scoring.py": ["--max-sequences", "40"],
    "secondary_structure.py": ["--quick"],
    "pandas_grid_search.py": ["--max-sequences", "40"],
    "rfam_family_classification.py": ["--per-family", "60"],
}


def reset_argv(gallery_conf, script_vars):
    """Command-line arguments of each example: the tiny checkpoint and a scratch folder."""
    name = Path(script_vars["src_file"]).name
    out = _GALLERY_OUT / name.removesuffix(".py")
    return ["--model", str(TINY_CHECKPOINT), "--output-dir", str(out), *QUICK_ARGS.get(name, [])]


def run_examples_as_scripts():
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




def clean_output(app, exception):
    """Remove the examples' scratch outputs (the site keeps its own copies of the figures)."""
    shutil.rmtree(_GALLERY_OUT, ignore_errors=True)
