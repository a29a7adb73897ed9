"""The documentation: user-guide code runs, the API reference is complete, README and CI agree.

Python blocks (```python) of the user guide and getting-started pages are executed, page by
page, with "rna-fm" / "mrna-fm" resolved to the tiny random checkpoints (no network), in a
scratch folder that sees the repository's ``data/``. ```py blocks are examples that need outside
resources (a cluster) and are not run; ``rnafm-embed`` lines of ```bash blocks run through the
command line's entry point in the same process.
"""

from __future__ import annotations

import ast
import re
import shlex

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES, ROOT, TINY_PTH

import rnafm_sklearn
import rnafm_sklearn._checkpoint as checkpoint
from rnafm_sklearn import _cli, read_structures, write_structures

DOCS = ROOT / "docs"
MRNA_TINY_PTH = FIXTURES / "mRNA-FM_tiny.pth"
GUIDE_PAGES = sorted((DOCS / "user_guide").glob("*.md")) + [DOCS / "getting_started.md"]
README_LIMIT = 10 * 1024


def blocks(path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", path.read_text(), flags=re.S | re.M)


@pytest.fixture(scope="session")
def tiny_structure(tmp_path_factory):
    """A random structure checkpoint in the official layout (tiny backbone, full-size head)."""
    from _official_structure import make_official_structure

    path, _, _ = make_official_structure(tmp_path_factory.mktemp("structure"))
    return path


@pytest.fixture
def tiny_pretrained(tmp_path, monkeypatch, tiny_structure):
    """'rna-fm', 'mrna-fm' and 'rna-fm-ss' name tiny random checkpoints; cwd is a scratch
    folder with data/ and the files the pages name as the user's own: my_structures.ct (five
    short bpRNA TS0 records) and RNA-FM-ResNet_bpRNA.pth (the tiny structure checkpoint)."""
    tiny = {"rna-fm": TINY_PTH, "mrna-fm": MRNA_TINY_PTH, "rna-fm-ss": tiny_structure}
    monkeypatch.setattr(checkpoint, "pretrained_path", lambda name, **kw: tiny[name])
    monkeypatch.setattr(checkpoint, "cached_pretrained_path", lambda name: tiny[name])
    (tmp_path / "data").symlink_to(ROOT / "data")
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    (tmp_path / "RNA-FM-ResNet_bpRNA.pth").symlink_to(tiny_structure)
    sample = read_structures(FIXTURES / "structures" / "bprna_ts0_sample.dbn")
    short = sample.loc[sample["sequence"].str.len().sort_values().index[:5]]
    write_structures(short, tmp_path / "my_structures.ct", format="ct")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli_inputs(folder):
    """The files the command-line page's examples read."""
    (folder / "sequences.fasta").write_text(">a\nGGGAAACUCC\n>b\nACGUACGUAA\n")
    pd.DataFrame({"sequence": ["GGGAAACUCC"] * 2, "mutations": ["A4G", "G2C:C9U"]}).to_csv(
        folder / "variants.csv", index=False
    )
    (folder / "RNA-FM_pretrained.pth").symlink_to(TINY_PTH)


@pytest.mark.parametrize("page", GUIDE_PAGES, ids=lambda p: p.stem)
def test_guide_code_blocks_execute(page, tiny_pretrained, capsys):
    python, commands = blocks(page, "python"), []
    for block in blocks(page, "bash"):
        commands += [line for line in block.splitlines() if line.startswith("rnafm-embed ")]
    if not python and not commands:
        pytest.skip(f"{page.name} has no code to run")
    namespace: dict = {"__name__": "__main__"}
    for block in python:
        exec(compile(block, str(page), "exec"), namespace)
    if commands:
        cli_inputs(tiny_pretrained)
    for line in commands:
        assert _cli.main(shlex.split(line)[1:]) == 0, line
    capsys.readouterr()


def test_cli_page_commands_write_their_outputs(tiny_pretrained, capsys):
    """The command-line page's examples do what the page says (not only exit 0)."""
    cli_inputs(tiny_pretrained)
    (command_block,) = blocks(DOCS / "user_guide" / "cli.md", "bash")
    for line in command_block.splitlines():
        assert _cli.main(shlex.split(line)[1:]) == 0
    features = pd.read_parquet("features.parquet")
    assert list(features["id"]) == ["a", "b"] and features.shape[1] == 1 + 32
    scores = pd.read_csv("scores.csv")
    assert np.isfinite(scores["score_masked_marginal"]).all() and len(scores) == 2
    assert {"ll_unmasked", "ll_unmasked_per_nt"} <= set(pd.read_csv("ll.csv").columns)
    assert (tiny_pretrained / "rnafm-native" / "config.json").exists()
    capsys.readouterr()


def test_guide_index_lists_every_page():
    """A page missing from the toctree would be a build warning, i.e. a failed CI docs build."""
    index = (DOCS / "user_guide" / "index.md").read_text()
    toctree = re.search(r"```\{toctree\}\n(.*?)```", index, flags=re.S).group(1)
    entries = [line.strip() for line in toctree.splitlines() if line and line[0] != ":"]
    assert entries[-1] == "*"  # new pages are picked up without an edit
    listed = [e for e in entries if e != "*"]
    assert all((DOCS / "user_guide" / f"{e}.md").exists() for e in listed), listed
    pages = {p.stem for p in (DOCS / "user_guide").glob("*.md")} - {"index"}
    assert pages - set(listed), "the final '*' must match a page, or the build warns"


def api_names() -> set[str]:
    """Every name in the autosummary lists of the API reference."""
    text = (DOCS / "api.md").read_text()
    names = set()
    for directive in re.findall(r"\.\. autosummary::\n((?:[ \t]+.*\n|\n)+)", text):
        for line in directive.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                names.add(line)
    return names


def test_api_reference_lists_every_public_name():
    listed = api_names()
    missing = [name for name in rnafm_sklearn.__all__ if name not in listed]
    assert missing == [], f"add to docs/api.md: {missing}"
    assert "dask.embed" in listed
    assert all(hasattr(rnafm_sklearn, n) or n.startswith("dask.") for n in listed), listed


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; the limit is {README_LIMIT}"


def ci_commands() -> list[str]:
    """The commands of .ci/run, with continuation lines joined."""
    text = (ROOT / ".ci" / "run").read_text().replace("\\\n", " ")
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def test_readme_setup_commands_are_what_ci_runs():
    """The README's two set-up commands, as .ci/run runs them (the example offline)."""
    setup = (ROOT / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    (block,) = blocks_in(setup, "bash")
    install_and_example, tests = [line.strip() for line in block.strip().splitlines()]
    install, example = install_and_example.split(" && ")
    assert install == 'pip install torch==2.13.0 -e ".[test]"'
    assert tests == "python -m pytest"
    run = ci_commands()
    assert install in run and tests in run
    # CI runs the same example, on the tiny checkpoint (no weights can be downloaded there)
    assert any(c.startswith(example + " --model tests/fixtures/RNA-FM_tiny.pth") for c in run)


def blocks_in(text: str, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.S | re.M)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.stem)
def test_examples_fit_the_gallery(path):
    """The gallery needs a docstring that opens with a title (a line underlined with "="):
    without it the page has no title and the docs build fails. main(argv) takes the options."""
    tree = ast.parse(path.read_text())
    lines = (ast.get_docstring(tree) or "").splitlines()
    assert len(lines) > 1 and lines[0].strip(), f"{path.name}: no docstring"
    assert lines[1] == "=" * len(lines[0]), f"{path.name}: underline the docstring's first line"
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "main" in functions and functions["main"].args.args[0].arg == "argv", path.name


def test_single_version():
    """The version is written once (rnafm_sklearn/__init__.py); pyproject reads it."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    attr = project["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    assert attr == "rnafm_sklearn.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+", rnafm_sklearn.__version__)
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {rnafm_sklearn.__version__} " in changelog and "## Unreleased" in changelog


def public_callables():
    """Every public function, class and method of the package: a class's methods written in
    rnafm_sklearn (its own and its private bases'), those the API reference lists."""
    import inspect

    import rnafm_sklearn.dask

    out = [("dask.embed", rnafm_sklearn.dask.embed)]
    for name in rnafm_sklearn.__all__:
        obj = getattr(rnafm_sklearn, name)
        if inspect.isclass(obj) and issubclass(obj, BaseException):
            continue  # an exception's docstring says when it is raised
        if inspect.isclass(obj):
            out.append((name, obj))
            for attr in dir(obj):
                value = inspect.getattr_static(obj, attr)
                if attr.startswith("_") or not (
                    inspect.isfunction(value) or isinstance(value, (classmethod, property))
                ):
                    continue
                func = value.fget if isinstance(value, property) else getattr(obj, attr)
                if (getattr(func, "__module__", None) or "").startswith("rnafm_sklearn"):
                    out.append((f"{name}.{attr}", getattr(obj, attr)))
        elif callable(obj):
            out.append((name, obj))
    return out


def missing_sections(name, obj) -> list[str]:
    import inspect

    doc = inspect.getdoc(obj) or ""
    if isinstance(obj, property):
        return [] if doc else ["a docstring"]
    has = {s for s in ("Parameters", "Returns", "Raises", "Examples") if f"{s}\n---" in doc}
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    needed = {"Examples"} | ({"Parameters"} if params else set())
    if not inspect.isclass(obj):
        needed |= {"Returns", "Raises"}
    return sorted(needed - has)


def test_public_docstrings_are_complete():
    """numpydoc sections of every public object: what the API reference shows."""
    missing = {n: m for n, o in public_callables() if (m := missing_sections(n, o))}
    assert missing == {}


def test_gallery_runs_examples_on_the_tiny_checkpoint(monkeypatch):
    """The docs build gives every example the tiny checkpoint; exit 0 ends it, not the build."""
    gen_rst = pytest.importorskip("sphinx_gallery.gen_rst")  # the [docs] extra
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location(
        "rnafm_gallery", DOCS / "sphinxext" / "rnafm_gallery.py"
    )
    gallery = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gallery)
    argv = gallery.reset_argv({}, {"src_file": str(ROOT / "examples" / "new_example.py")})
    assert argv[:2] == ["--model", str(TINY_PTH)] and argv[2] == "--output-dir"

    def fake_run(*, script_vars, status):
        assert script_vars["fake_main"].__file__ == "ex.py"  # the examples find data/ from it
        raise SystemExit(status)

    monkeypatch.setattr(gen_rst, "_exec_and_get_memory", fake_run)
    gallery.run_examples_as_scripts()
    run = gen_rst._exec_and_get_memory
    script_vars = {"fake_main": types.ModuleType("__main__"), "src_file": "ex.py"}
    assert run(script_vars=script_vars, status=0) == (False, 0.0)
    with pytest.raises(RuntimeError, match="exited with status 2"):
        run(script_vars=script_vars, status=2)


def test_api_templates_are_where_sphinx_finds_them():
    """``:template: class.rst`` is looked up as ``_templates/class.rst``: a template Sphinx
    cannot find falls back, without a warning, to a bare page that lists no methods."""
    names = set(re.findall(r":template: (\S+)", (DOCS / "api.md").read_text()))
    assert names == {"class.rst", "function.rst", "data.rst"}
    assert all((DOCS / "_templates" / name).is_file() for name in names)
    template = (DOCS / "_templates" / "class.rst").read_text()
    assert "automethod" in template and "own_methods" in template
