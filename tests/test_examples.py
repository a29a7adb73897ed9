"""Every example runs end to end on the tiny checkpoint and produces its outputs."""

import importlib.util
import sys

import matplotlib
import numpy as np
import pandas as pd
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
    argv = ["--model", str(TINY_PTH), "--output-dir", str(tmp_path), "--per-family", "60"]
    assert ex.main(argv) == 0  # 180 of the 2124 sequences: the same comparison, ~10x cheaper
    out = capsys.readouterr().out
    assert out.startswith("180 sequences, ")
    for name in ("RNA-FM embedding", "3-mer counts", "length only"):
        assert name in out
    check_png(tmp_path / "rfam_confusion_matrix.png")
    check_png(tmp_path / "rfam_pca.png")
    scores = (tmp_path / "rfam_scores.csv").read_text()
    assert "accuracy" in scores
    with pytest.raises(SystemExit):
        ex.main([*argv[:-1], "4"])
    assert "--per-family must be at least 5" in capsys.readouterr().err


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


def test_pandas_grid_search(tmp_path, capsys):
    ex = load("pandas_grid_search")
    argv = ["--model", str(TINY_PTH), "--output-dir", str(tmp_path), "--max-sequences", "40"]
    assert ex.main(argv) == 0  # 40 of the 193 long mRNAs: the same search, 5x less embedding
    out = capsys.readouterr().out
    assert "feature table: (40, " in out and "index 'Barcode'" in out and "best:" in out
    results = (tmp_path / "grid_search_results.csv").read_text().splitlines()
    assert results[0] == "pooling,layers,mean R2,sd,rank" and len(results) == 5
    with pytest.raises(SystemExit):
        ex.main([*argv[:-1], "5"])
    assert "--max-sequences must be at least 10" in capsys.readouterr().err


def test_zero_shot_scoring(tmp_path, capsys):
    ex = load("zero_shot_scoring")
    argv = ["--model", str(TINY_PTH), "--output-dir", str(tmp_path), "--max-sequences", "40"]
    assert ex.main(argv) == 0
    out = capsys.readouterr().out
    assert "tRNA AB003409.1/96-167: 72 nt, 216 single substitutions scored" in out
    assert "most tolerant positions" in out and "least tolerant positions" in out
    assert "40 mRNAs" in out and "length + GC + RNA-FM likelihood" in out
    check_png(tmp_path / "trna_substitution_heatmap.png")
    assert (tmp_path / "cache").is_dir()  # re-runs read the likelihoods from here
    import pandas as pd

    trna = pd.read_csv(tmp_path / "trna_substitution_scores.csv")
    assert list(trna.columns) == ["mutation", "position", "wild_type", "mutant", "score"]
    wild_type = ex.read_fasta(ex.TRNA_FASTA)[ex.DEFAULT_TRNA]
    assert len(trna) == 3 * len(wild_type) and np.isfinite(trna.score).all()
    assert (trna.wild_type == [wild_type[p - 1] for p in trna.position]).all()
    matrix = ex.score_matrix(trna, len(wild_type))  # the heat map's cells
    assert np.isnan(matrix).sum() == len(wild_type)  # exactly the wild-type cells are blank
    assert [ex.NUCLEOTIDES[i] for i in np.isnan(matrix).argmax(axis=0)] == list(wild_type)
    row = trna.iloc[100]
    assert matrix["ACGU".index(row.mutant), row.position - 1] == row.score
    table = pd.read_csv(tmp_path / "zero_shot_degradation_scores.csv", index_col="model")
    assert list(table.columns) == ["r2", "spearman_rho"] and len(table) == 3
    assert table.r2.isna().tolist() == [True, False, False]  # zero-shot: no prediction of k
    per_mrna = pd.read_csv(tmp_path / "zero_shot_degradation_per_mrna.csv", index_col="Barcode")
    assert len(per_mrna) == 40
    assert {"length", "gc", "k_deg", "ll_unmasked", "ll_unmasked_per_nt"} <= set(per_mrna)
    rho = per_mrna.ll_unmasked_per_nt.corr(per_mrna.k_deg, method="spearman")
    assert table.spearman_rho.iloc[0] == pytest.approx(rho)
    fig = ex.plot_heatmap(matrix, wild_type, ex.DEFAULT_TRNA)
    ax, ax_mean = fig.axes[:2]
    assert ax.get_ylabel().startswith("substituted base") and "position" in ax_mean.get_xlabel()
    assert ex.DEFAULT_TRNA in ax.get_title() and "masked-marginal" in ax.get_title()
    norm = ax.images[0].norm
    assert norm.vmin == -norm.vmax  # diverging colours centred at 0
    plt.close("all")


def test_finetune_riboswitch(tmp_path, capsys):
    ex = load("finetune_riboswitch")
    # 10 per family (not 12): the fewest whose 15 % validation split still holds all 32 classes
    argv = ["--model", str(TINY_PTH), "--output-dir", str(tmp_path), "--epochs", "1"]
    assert ex.main([*argv, "--per-class", "10"]) == 0
    out = capsys.readouterr().out
    assert "320 sequences of 32 families" in out
    folds = pd.read_csv(tmp_path / "finetune_riboswitch_folds.csv")
    # every model on the same 3 folds, each with a score and a wall time
    assert all(sorted(g) == [0, 1, 2] for _, g in folds.groupby("model").fold)
    assert set(folds.model) == {
        "(a) frozen embedding + logistic",
        "(b) RnaFmClassifier head",
        "(c) RnaFmClassifier lora",
        "3-mer counts",
        "length only",
    }
    assert folds.balanced_accuracy.between(0, 1).all() and (folds.seconds > 0).all()
    check_png(tmp_path / "finetune_riboswitch_learning_curves.png")
    plt.close("all")


def test_examples_stop_cleanly_without_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in (
        "rfam_family_classification",
        "mrna_degradation_regression",
        "pandas_grid_search",
        "zero_shot_scoring",
        "finetune_riboswitch",
    ):
        assert load(name).main(["--output-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert "Cannot run without the model weights" in err and "Traceback" not in err
        assert "Give this example a local checkpoint with --model /path/to/" in err, name


def test_secondary_structure(tmp_path, capsys):
    ex = load("secondary_structure")
    assert ex.main(["--model", str(TINY_PTH), "--output-dir", str(tmp_path), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "RANDOM weights" in out and "composition only" in out and "fitted head" in out
    assert len(list((tmp_path / "structures_ct").glob("*.ct"))) == 20
    lines = (tmp_path / "structures.fa").read_text().splitlines()
    assert sum(line.startswith(">") for line in lines) == 20 and len(lines) == 60
    check_png(tmp_path / "structure_map.png")
    assert "F1" in (tmp_path / "structure_scores.csv").read_text()
    plt.close("all")
