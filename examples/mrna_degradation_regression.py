"""Predict the in-solution degradation rate of 233 full-length mRNAs from RNA-FM embeddings.
=========================================================================================

Shows: long sequences (504-1588 nt; 91 of 233 exceed RNA-FM's 1022-nt window) embedded with
``long_sequences="window"``, ``RidgeCV`` in a ``Pipeline``, out-of-fold predictions from
5-fold cross-validation against the measurements as a scatter plot with Spearman's rho, and a
GC-content baseline next to it.

Data: Wayment-Steele et al. (2022), the "233x" mRNA set of the OpenVaccine challenge
(data/mrna233-degradation, MIT). Target: ``k_deg_per_hour`` for the 193 designs with a value and
a good single-exponential fit.

Run time on 2 CPU cores: about 9 minutes with the real RNA-FM (about 300 000 tokens with
windows), a few seconds with ``--model tests/fixtures/RNA-FM_tiny.pth`` (random weights).

    python examples/mrna_degradation_regression.py [--model rna-fm] [--output-dir out/examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from rnafm_sklearn import RnaFmEmbedder, WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "data" / "mrna233-degradation" / "233x_sequences_degdata_081120.csv"


def load_mrna233(path: Path = CSV) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df[df.k_deg_per_hour.notna() & (df.single_exp_fit_ok == 1)].set_index("Barcode")


def _gc(sequences) -> np.ndarray:
    return np.array([[(s.count("G") + s.count("C")) / len(s), len(s)] for s in sequences])


def plot_predictions(y, pred, rho: float, title: str):
    """Out-of-fold predictions vs measurements as a matplotlib Figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), layout="constrained")
    ax.scatter(y, pred, s=12, alpha=0.7)
    lo, hi = float(min(y.min(), pred.min())), float(max(y.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--", label="y = x")
    ax.set_xlabel("measured k_deg (1/h)")
    ax.set_ylabel("predicted k_deg (1/h), out of fold")
    ax.set_title(f"{title}\nSpearman rho = {rho:.2f} (5-fold CV, n = {len(y)})", fontsize=10)
    ax.legend(loc="upper left")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a local checkpoint path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--cache", help="embedding cache folder (default: OUTPUT_DIR/cache)")
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ModuleNotFoundError:
        print("matplotlib is needed for the figures: pip install 'rnafm_sklearn[examples]'")
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    df = load_mrna233()
    n_long = int((df.RNA_sequence.str.len() > 1022).sum())
    print(f"{len(df)} mRNAs, {n_long} longer than 1022 nt (embedded with overlapping windows)")

    embedder = RnaFmEmbedder(
        model=args.model,
        long_sequences="window",
        cache=args.cache or str(args.output_dir / "cache"),
    )
    try:
        embedder.fit(df.RNA_sequence.iloc[:1])
    except WeightsUnavailableError as exc:
        print(
            "Cannot run without the model weights. Give this example a local checkpoint with "
            f"--model /path/to/RNA-FM_pretrained.pth (or a folder), or run it once online.\n{exc}",
            file=sys.stderr,
        )
        return 2
    alphas = np.logspace(-2, 4, 25)
    models = {
        "RNA-FM (windows) + ridge": Pipeline(
            [("emb", embedder), ("scale", StandardScaler()), ("ridge", RidgeCV(alphas=alphas))]
        ),
        "GC content + length + ridge": make_pipeline(
            FunctionTransformer(_gc), StandardScaler(), RidgeCV(alphas=alphas)
        ),
    }
    cv = KFold(5, shuffle=True, random_state=0)
    y = df.k_deg_per_hour.to_numpy()
    rows = []
    for name, model in models.items():
        pred = cross_val_predict(model, df.RNA_sequence, y, cv=cv)
        rho = spearmanr(pred, y).statistic
        rows.append({"model": name, "spearman_rho": rho})
        if name.startswith("RNA-FM"):
            fig = plot_predictions(y, pred, rho, name)
            fig.savefig(args.output_dir / "mrna_degradation_scatter.png", dpi=120)
    table = pd.DataFrame(rows).set_index("model")
    print(table.round(3).to_string())
    table.to_csv(args.output_dir / "mrna_degradation_scores.csv")
    print(f"figure and scores written to {args.output_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
