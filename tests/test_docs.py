"""README code blocks and docstring examples run, so they cannot rot."""

import doctest
import importlib
import pkgutil
import re

import pandas as pd
import pytest
from conftest import ROOT, TINY_PTH

import rnafm_sklearn
import rnafm_sklearn._checkpoint as checkpoint


def doctest_modules() -> list[str]:
    """Every module of the package whose docstrings hold examples, found, not listed by hand."""
    finder = doctest.DocTestFinder()
    found = []
    for info in pkgutil.walk_packages(rnafm_sklearn.__path__, "rnafm_sklearn."):
        if info.name.endswith(".__main__"):  # importing it runs the command line
            continue
        module = importlib.import_module(info.name)
        if any(t.examples for t in finder.find(module)):
            found.append(info.name)
    return found


MODULES = doctest_modules()


def readme_blocks() -> list[str]:
    """The ```python blocks (```py marks examples that need outside resources, e.g. a cluster)."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 1


FASTA_RECORDS = 10  # records of each FASTA file the blocks read here (3 files: 30 sequences)
FASTA_MAX_NT = 120  # each cropped to its first 120 nt (the RNase P records are 280-430 nt)


def test_readme_python_blocks_execute(tmp_path, monkeypatch, capsys):
    """'rna-fm' resolves to the tiny random checkpoint here (no network in tests).

    Every block runs as written, on less data: ``read_fasta`` gives the first
    ``FASTA_RECORDS`` records of each file, cropped to ``FASTA_MAX_NT`` (the LoRA
    cross-validation over 90 Rfam sequences of up to 430 nt took most of this test's time;
    10 per family still fill 5 stratified folds).
    """
    monkeypatch.setattr(checkpoint, "pretrained_path", lambda name: TINY_PTH)
    monkeypatch.setattr(checkpoint, "cached_pretrained_path", lambda name: TINY_PTH)
    read_fasta = rnafm_sklearn.read_fasta

    def fewer_records(*args, **kwargs):
        records = read_fasta(*args, **kwargs).head(FASTA_RECORDS)
        if isinstance(records, pd.Series):
            return records.str[:FASTA_MAX_NT]
        return records.assign(sequence=records["sequence"].str[:FASTA_MAX_NT])

    monkeypatch.setattr(rnafm_sklearn, "read_fasta", fewer_records)
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in readme_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert re.search(r"accuracy \d\.\d{3}", out)
    effects = namespace["effects"]  # the three variants' scores
    assert len(effects) == 3 and effects["score_masked_marginal"].notna().all()
    assert all(m in out for m in namespace["mutations"])
    assert len(namespace["clf"].predict(["ACGU"])) == 1  # the fine-tuned classifier
    assert set(namespace["clf"].classes_) == {"RF00001", "RF00005", "RF00010"}
    assert (tmp_path / "rnafm-cache" / "rnafm-embeddings.sqlite3").exists()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_the_modules_of_every_public_object_run_their_examples():
    """The discovery above finds the fine-tuning estimators' modules and that of their shared
    ``fit`` (it once was missing from a hand-kept list) and the module of every public object."""
    objects = [getattr(rnafm_sklearn, n) for n in rnafm_sklearn.__all__]
    owners = {o.__module__ for o in objects if callable(o) and not _is_exception(o)}
    fine_tuning = {f"rnafm_sklearn.{m}" for m in ("_finetune", "_classifier", "_regressor")}
    assert fine_tuning <= set(MODULES)
    assert owners <= set(MODULES), owners - set(MODULES)


def _is_exception(obj) -> bool:
    return isinstance(obj, type) and issubclass(obj, BaseException)


def test_every_public_object_has_an_example():
    """An ``Examples`` section (numpydoc) with at least one ``>>>`` line; exceptions excepted."""
    missing = [
        n
        for n in rnafm_sklearn.__all__
        if callable(obj := getattr(rnafm_sklearn, n))
        and not _is_exception(obj)
        and not re.search(r"\n\s*Examples\n\s*-{8}\n.*>>>", obj.__doc__ or "", flags=re.S)
    ]
    assert missing == []
