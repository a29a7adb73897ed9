"""Every example runs end to end on the tiny checkpoint and produces its outputs."""

import importlib.util
import sys

import matplotlib
import numpy as np
import pytest
from conftest import ROOT, TINY_PTH

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

EXAMPLES = ROOT / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def check_png(path):
    assert path.exists() and path.stat().st_size > 10_000
    img = matplotlib.image.imread(path)  # a well-formed PNG decodes
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas


def test_rfam_family_classification(tmp_path, capsys):
    ex = load("rfam_family_classification")
    assert ex.main(["--model", str(TINY_PTH), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("RNA-FM embedding", "3-mer counts", "length only"):
        assert name in out
    check_png(tmp_path / "rfam_confusion_matrix.png")
    check_png(tmp_path / "rfam_pca.png")
    scores = (tmp_path / "rfam_scores.csv").read_text()
    assert "accuracy" in scores


def test_rfam_figures_have_labelled_axes():
    ex = load("rfam_family_classification")
    labels = list(ex.FAMILIES.values())
    fig = ex.plot_confusion(labels * 2, labels[::-1] * 2, labels)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted family" and ax.get_ylabel() == "true family"
    assert [t.get_text() for t in ax.get_xticklabels()] == labels
    rng = np.random.default_rng(0)
    import pandas as pd

    fig = ex.plot_projection(rng.normal(size=(30, 8)), pd.Series(labels * 10))
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("PC 1") and ax.get_ylabel().startswith("PC 2")
    assert len(ax.get_legend().get_texts()) == 3
    plt.close("all")


def test_mrna_degradation_regression(tmp_path, capsys):
    ex = load("mrna_degradation_regression")
    assert ex.main(["--model", str(TINY_PTH), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "67 longer than 1022 nt" in out and "spearman_rho" in out
    check_png(tmp_path / "mrna_degradation_scatter.png")
    fig = ex.plot_predictions(np.arange(5.0), np.arange(5.0) + 0.1, 0.9, "t")
    ax = fig.axes[0]
    assert "measured" in ax.get_xlabel() and "predicted" in ax.get_ylabel()
    assert "Spearman rho = 0.90" in ax.get_title()
    plt.close("all")


@pytest.mark.slow
def test_pandas_grid_search(tmp_path, capsys):
    ex = load("pandas_grid_search")
    assert ex.main(["--model", str(TINY_PTH), "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "index 'Barcode'" in out and "best:" in out
    results = (tmp_path / "grid_search_results.csv").read_text().splitlines()
    assert results[0] == "pooling,layers,mean R2,sd,rank" and len(results) == 5


def test_examples_stop_cleanly_without_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("rfam_family_classification", "mrna_degradation_regression", "pandas_grid_search"):
        assert load(name).main(["--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "Cannot run without the model weights" in err and "Traceback" not in err
