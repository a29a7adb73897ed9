"""Classify three Rfam RNA families from RNA-FM embeddings (the README's main job).
================================================================================

Shows: ``Pipeline(RnaFmEmbedder, LogisticRegression)`` under 5-fold ``cross_val_score`` with the
persistent cache (every sequence is embedded once, not once per fold), next to a 3-mer
baseline and a sequence-length-only baseline; a cross-validated confusion matrix; and a PCA
of the embeddings coloured by family. Figures are written as PNG files.

Data: the 2124 sequences of 5S rRNA (RF00001), tRNA (RF00005) and bacterial RNase P RNA
(RF00010) from the official RNA-FM tutorial (data/rnafm-rfam3, MIT / Rfam CC0). Be honest about
this task: the families differ strongly in length (about 117, 73 and 380 nt), so the length
alone already separates them almost perfectly. It is a smoke test of the whole pipeline, not a
benchmark of RNA-FM.

Run time on 2 CPU cores: about 8 minutes with the real RNA-FM (downloaded once, 1.2 GB), about
10 seconds with ``--model tests/fixtures/RNA-FM_tiny.pth`` (random weights, as in CI).
``--per-family N`` runs the same comparison on N sequences of each family (sampled with seed 0;
at least 5 for the 5 folds), e.g. for a quick check.

    python examples/rfam_family_classification.py [--model rna-fm] [--output-dir out/examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import confusion_matrix
from sklearn.model_selection import StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from rnafm_sklearn import RnaFmEmbedder, WeightsUnavailableError, read_fasta

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"RF00001": "5S rRNA", "RF00005": "tRNA", "RF00010": "RNase P (bacterial A)"}


def load_rfam(data_dir: Path = ROOT / "data" / "rnafm-rfam3") -> pd.DataFrame:
    """One row per sequence: id (index), sequence, family name."""
    frames = [
        pd.DataFrame({"sequence": read_fasta(data_dir / f"{acc}.fasta"), "family": name})
        for acc, name in FAMILIES.items()
    ]
    return pd.concat(frames)


def _lengths(sequences) -> np.ndarray:
    return np.array([[len(s)] for s in sequences], dtype=float)


def models(embedder: RnaFmEmbedder) -> dict[str, Pipeline]:
    clf = LogisticRegression(max_iter=5000)
    return {
        "RNA-FM embedding": Pipeline(
            [("emb", embedder), ("scale", StandardScaler()), ("clf", clf)]
        ),
        "3-mer counts": make_pipeline(
            CountVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=False), clf
        ),
        "length only": make_pipeline(FunctionTransformer(_lengths), StandardScaler(), clf),
    }


def plot_confusion(y_true, y_pred, labels):
    """Confusion matrix (counts) as a matplotlib Figure."""
    import matplotlib.pyplot as plt

    cm = confusion_matrix(y_true, y_pred, labels=labels)
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    im = ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), n in np.ndenumerate(cm):
        ax.text(j, i, str(n), ha="center", va="center", color="white" if n > cm.max() / 2 else "k")
    ax.set_xlabel("predicted family")
    ax.set_ylabel("true family")
    ax.set_title("RNA-FM + logistic regression\n(out-of-fold predictions, 5-fold CV)", fontsize=10)
    fig.colorbar(im, ax=ax, label="sequences")
    return fig


def plot_projection(features: np.ndarray, families: pd.Series):
    """PCA of the embeddings, coloured by family, as a matplotlib Figure."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=0)
    xy = pca.fit_transform(StandardScaler().fit_transform(features))
    fig, ax = plt.subplots(figsize=(5.5, 4.5), layout="constrained")
    for name in FAMILIES.values():
        mask = (families == name).to_numpy()
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.6, label=f"{name} ({mask.sum()})")
    ev = pca.explained_variance_ratio_ * 100
    ax.set_xlabel(f"PC 1 ({ev[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.0f} % of variance)")
    ax.set_title("RNA-FM mean embeddings of three Rfam families", fontsize=10)
    ax.legend(markerscale=3, fontsize=8)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a local checkpoint path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--cache", help="embedding cache folder (default: OUTPUT_DIR/cache)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--per-family", type=int, help="N sequences of each family (seed 0)")
    args = p.parse_args(argv)
    if args.per_family is not None and args.per_family < 5:
        p.error("--per-family must be at least 5 (5 stratified folds)")
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ModuleNotFoundError:
        print("matplotlib is needed for the figures: pip install 'rnafm_sklearn[examples]'")
        return 2

    args.output_dir.mkdir(parents=True, exist_ok=True)
    df = load_rfam()
    if args.per_family is not None:
        df = pd.concat(
            g.sample(min(args.per_family, len(g)), random_state=0)
            for _, g in df.groupby("family", sort=False)
        )
    print(f"{len(df)} sequences, {df.sequence.str.len().min()}-{df.sequence.str.len().max()} nt")
    embedder = RnaFmEmbedder(
        model=args.model, dtype=args.dtype, cache=args.cache or str(args.output_dir / "cache")
    )
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    try:
        embedder.fit(df.sequence.iloc[:1])  # fails fast (and clearly) if the weights are missing
    except WeightsUnavailableError as exc:
        print(
            "Cannot run without the model weights. Give this example a local checkpoint with "
            f"--model /path/to/RNA-FM_pretrained.pth (or a folder), or run it once online.\n{exc}",
            file=sys.stderr,
        )
        return 2

    rows = []
    for name, pipe in models(embedder).items():
        scores = cross_val_score(pipe, df.sequence, df.family, cv=cv)
        rows.append({"model": name, "accuracy": scores.mean(), "sd": scores.std()})
    table = pd.DataFrame(rows).set_index("model")
    print(table.round(4).to_string())

    pred = cross_val_predict(models(embedder)["RNA-FM embedding"], df.sequence, df.family, cv=cv)
    fig = plot_confusion(df.family, pred, list(FAMILIES.values()))
    fig.savefig(args.output_dir / "rfam_confusion_matrix.png", dpi=120)
    fig = plot_projection(embedder.transform(df.sequence), df.family)
    fig.savefig(args.output_dir / "rfam_pca.png", dpi=120)
    table.to_csv(args.output_dir / "rfam_scores.csv")
    print(f"figures and scores written to {args.output_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
