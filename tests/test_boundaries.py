"""Module boundaries: each concern imports only what it may (read from the source with ast).

The alphabet and the model families know nothing of torch, the cache nothing of model
formats, the encoder nothing of scikit-learn, and the CPU kernels nothing of the encoder.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rnafm_sklearn"


def imports(module: str) -> set[str]:
    """Every module a file imports, anywhere in it; relative imports as ``rnafm_sklearn.x``."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                found.add("rnafm_sklearn." + (node.module or ""))
            else:
                found.add(node.module)
    return found


def top(names: set[str]) -> set[str]:
    return {n.split(".")[0] if not n.startswith("rnafm_sklearn") else n for n in names}


FORBIDDEN = {
    "_family": {"torch", "sklearn", "numpy", "pandas", "rnafm_sklearn."},
    "_alphabet": {"torch", "sklearn", "numpy", "pandas", "rnafm_sklearn._encoder"},
    "_cache": {"torch", "sklearn", "rnafm_sklearn._checkpoint", "rnafm_sklearn._encoder",
               "rnafm_sklearn._models", "rnafm_sklearn._hub", "rnafm_sklearn._embedder"},
    "_cache_file": {"torch", "sklearn", "rnafm_sklearn._checkpoint", "rnafm_sklearn._encoder",
                    "rnafm_sklearn._models", "rnafm_sklearn._hub", "rnafm_sklearn._embedder"},
    "_io": {"torch", "sklearn"},
    "_cache_connection": {"torch", "sklearn", "rnafm_sklearn._checkpoint",
                          "rnafm_sklearn._encoder", "rnafm_sklearn._models", "rnafm_sklearn._hub",
                          "rnafm_sklearn._embedder"},
    # what the estimators read as X: numpy and pandas only
    "_input": {"torch", "sklearn", "rnafm_sklearn."},
    "_encoder": {"sklearn", "pandas", "rnafm_sklearn._checkpoint", "rnafm_sklearn._embedder",
                 "rnafm_sklearn._cache", "rnafm_sklearn._inference"},
    # the encoder's parts import downwards only: model -> layers -> attention (config: no torch)
    "_encoder_config": {"torch", "sklearn", "pandas", "rnafm_sklearn._encoder",
                        "rnafm_sklearn._encoder_layers", "rnafm_sklearn._encoder_attention",
                        "rnafm_sklearn._checkpoint", "rnafm_sklearn._embedder",
                        "rnafm_sklearn._cache", "rnafm_sklearn._inference"},
    "_encoder_layers": {"sklearn", "pandas", "rnafm_sklearn._encoder", "rnafm_sklearn._checkpoint",
                        "rnafm_sklearn._embedder", "rnafm_sklearn._cache",
                        "rnafm_sklearn._inference"},
    "_encoder_attention": {"sklearn", "pandas", "rnafm_sklearn._encoder",
                           "rnafm_sklearn._encoder_layers", "rnafm_sklearn._encoder_config",
                           "rnafm_sklearn._checkpoint", "rnafm_sklearn._embedder",
                           "rnafm_sklearn._cache", "rnafm_sklearn._inference"},
    "_inference": {"sklearn", "pandas", "rnafm_sklearn._embedder", "rnafm_sklearn._cache"},
    # pieces, windows and batches: no encoder, no package import at all
    "_windows": {"sklearn", "pandas", "numpy", "rnafm_sklearn."},
    # secondary-structure files, pair conversion and decoding: numpy (and pandas) only
    "_pairs": {"torch", "sklearn", "pandas", "rnafm_sklearn."},
    "_decoding": {"torch", "sklearn", "pandas", "rnafm_sklearn."},
    "_structure_files": {"torch", "sklearn", "rnafm_sklearn._encoder", "rnafm_sklearn._models",
                         "rnafm_sklearn._base", "rnafm_sklearn._inference"},
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_module_imports_nothing_it_must_not(module):
    found = top(imports(module))
    bad = {
        f for f in found for rule in FORBIDDEN[module] if f == rule or f.startswith(rule + ".")
    }
    if "rnafm_sklearn." in FORBIDDEN[module]:
        bad |= {f for f in found if f.startswith("rnafm_sklearn.")}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_kernels_know_nothing_of_the_package():
    kernels = [p.stem for p in PACKAGE.glob("_kernels*.py")]
    assert kernels, "the CPU kernels live in their own module"
    for module in kernels:
        assert not {f for f in imports(module) if f.startswith("rnafm_sklearn")}, module


def test_only_the_cli_prints():
    for path in PACKAGE.glob("*.py"):
        # the command line: main, its shared messages, and one module per large command
        if path.stem in ("_cli", "_cli_common", "_cli_score", "_cli_structure"):
            continue
        calls = [
            n
            for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
        ]
        assert not calls, path.name


@pytest.mark.parametrize(
    "module, name, home",
    [
        ("rnafm_sklearn._finetune", "RnaFmClassifier", "rnafm_sklearn._classifier"),
        ("rnafm_sklearn._finetune", "RnaFmRegressor", "rnafm_sklearn._regressor"),
        ("rnafm_sklearn._scoring", "RnaFmLikelihood", "rnafm_sklearn._likelihood"),
        ("rnafm_sklearn._scoring", "RnaFmVariantScorer", "rnafm_sklearn._variant_scorer"),
    ],
)
def test_pickles_of_0_1_0_find_their_classes(module, name, home):
    """0.1.0 pickled these estimators under their old module; unpickling looks them up there."""
    import io
    import pickle

    import rnafm_sklearn

    found = pickle.Unpickler(io.BytesIO()).find_class(module, name)
    assert found is getattr(rnafm_sklearn, name) and found.__module__ == home
    with pytest.raises(AttributeError, match="'Nothing'"):
        pickle.Unpickler(io.BytesIO()).find_class(module, "Nothing")
