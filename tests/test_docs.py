"""README code blocks and docstring examples run, so they cannot rot."""

import doctest
import importlib
import re

import pytest
from conftest import ROOT, TINY_PTH

import rnafm_sklearn
import rnafm_sklearn._checkpoint as checkpoint

MODULES = [
    "_alphabet",
    "_family",
    "_mutations",
    "_encoder",
    "_checkpoint",
    "_hub",
    "_io",
    "_embedder",
    "_scoring",
    "_cache",
    "_models",
    "dask",
]


def readme_blocks() -> list[str]:
    """The ```python blocks (```py marks examples that need outside resources, e.g. a cluster)."""
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_python_blocks():
    assert len(readme_blocks()) >= 1


def test_readme_python_blocks_execute(tmp_path, monkeypatch, capsys):
    """'rna-fm' resolves to the tiny random checkpoint here (no network in tests)."""
    monkeypatch.setattr(checkpoint, "pretrained_path", lambda name: TINY_PTH)
    monkeypatch.setattr(checkpoint, "cached_pretrained_path", lambda name: TINY_PTH)
    (tmp_path / "data").symlink_to(ROOT / "data")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in readme_blocks():
        exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert re.search(r"accuracy \d\.\d{3}", out)
    effects = namespace["effects"]  # the three variants' scores
    assert len(effects) == 3 and effects["score"].notna().all()
    assert all(m in out for m in namespace["mutations"])
    assert len(namespace["clf"].predict(["ACGU"])) == 1  # the fine-tuned classifier
    assert set(namespace["clf"].classes_) == {"RF00001", "RF00005", "RF00010"}
    assert (tmp_path / "rnafm-cache" / "rnafm-embeddings.sqlite3").exists()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(f"rnafm_sklearn.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_every_public_object_has_an_example():
    def is_exception(obj):
        return isinstance(obj, type) and issubclass(obj, BaseException)

    missing = [
        n
        for n in rnafm_sklearn.__all__
        if callable(obj := getattr(rnafm_sklearn, n))
        and not is_exception(obj)
        and ">>>" not in (obj.__doc__ or "")
    ]
    assert missing == []
