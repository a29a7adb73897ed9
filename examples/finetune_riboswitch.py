"""Fine-tune RNA-FM on 32 riboswitch families, next to frozen embeddings, on the same folds.
=========================================================================================

Compares, with 3-fold stratified cross-validation on the *same* folds and balanced accuracy:

(a) frozen RNA-FM embeddings + logistic regression (``Pipeline(RnaFmEmbedder, ...)``, with
    the embedding cache: each sequence is embedded once for all folds),
(b) ``RnaFmClassifier(train="head")``: the frozen encoder and a linear head trained with AdamW,
(c) ``RnaFmClassifier(train="lora")``: low-rank adapters in every layer (attention and
    feed-forward projections) plus the head,

next to two baselines that need no model (3-mer counts and length only, logistic regression),
with the wall time of every fold, and a learning-curve figure: per epoch, the training loss
and the validation accuracy (a held-out 15 % of each training fold) of (b) and (c).

Data: data/riboswitch32 (Riboflow's 32 Rfam riboswitch families, MIT; see PROVENANCE.md),
de-duplicated, ``--per-class`` sequences per family sampled with a fixed seed (default 12:
384 sequences). Length alone reaches about 0.17 balanced accuracy on the 32 classes and 3-mer
counts about 0.86 on the full set, so this task is not solved by length.

Cost on 2 CPU cores with the real RNA-FM (an estimate from the benchmark's throughput, not a
measurement): (a) ~1 minute, (b) ~1 minute plus seconds per fold, (c) ~4 minutes per fold
for 4 epochs; about 15 minutes in all. With ``--model tests/fixtures/RNA-FM_tiny.pth`` (random
weights, as in CI) it runs in seconds, and every score it prints is meaningless.

    python examples/finetune_riboswitch.py [--model rna-fm] [--per-class 12] [--epochs 4]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from rnafm_sklearn import RnaFmClassifier, RnaFmEmbedder, WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "riboswitch32"


def load_riboswitches(per_class: int, seed: int = 0) -> pd.DataFrame:
    """``per_class`` distinct sequences of each of the 32 families: sequence, family."""
    frames = []
    for path in sorted(DATA.glob("RF*.fa.gz")):
        s = pd.Series(_fasta_records(path)).drop_duplicates()
        frames.append(
            pd.DataFrame({"sequence": s, "family": path.name.split(".")[0]}).sample(
                min(per_class, len(s)), random_state=seed
            )
        )
    return pd.concat(frames)


def _fasta_records(path: Path) -> list[str]:
    """The sequences of a gzip FASTA file, in file order.

    ``read_fasta`` refuses these files: some Rfam records repeat an id (the same region listed
    twice), and an id-indexed Series would lose one. Here only distinct sequences matter.
    """
    records: list[str] = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.startswith(">"):
                records.append("")
            elif records:
                records[-1] += line.strip()
    return records


def _lengths(sequences) -> np.ndarray:
    return np.array([[len(s)] for s in sequences], dtype=float)


def models(args: argparse.Namespace, cache: str) -> dict[str, object]:
    logistic = LogisticRegression(max_iter=5000)
    common = dict(model=args.model, dtype=args.dtype, random_state=0, progress=False)
    tuned = dict(max_epochs=args.epochs, validation_fraction=0.15, n_iter_no_change=None)
    return {
        "(a) frozen embedding + logistic": Pipeline(
            [
                ("emb", RnaFmEmbedder(model=args.model, dtype=args.dtype, cache=cache)),
                ("scale", StandardScaler()),
                ("clf", logistic),
            ]
        ),
        "(b) RnaFmClassifier head": RnaFmClassifier(
            train="head", cache=cache, **common, **{**tuned, "max_epochs": 10 * args.epochs}
        ),
        "(c) RnaFmClassifier lora": RnaFmClassifier(train="lora", **common, **tuned),
        "3-mer counts": make_pipeline(
            CountVectorizer(analyzer="char", ngram_range=(3, 3), lowercase=False), logistic
        ),
        "length only": make_pipeline(FunctionTransformer(_lengths), StandardScaler(), logistic),
    }


def plot_learning_curves(curves: dict[str, list[tuple[list[float], list[float]]]]):
    """Training loss and validation accuracy per epoch, one line per fold, as a Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    colours = {name: f"C{i}" for i, name in enumerate(curves)}
    for name, folds in curves.items():
        for k, (loss, val) in enumerate(folds):
            label = name if k == 0 else None
            epochs = np.arange(1, len(loss) + 1)
            axes[0].plot(epochs, loss, "o-", ms=3, color=colours[name], alpha=0.8, label=label)
            axes[1].plot(epochs, val, "o-", ms=3, color=colours[name], alpha=0.8, label=label)
    axes[0].set(xlabel="epoch", ylabel="training loss (cross-entropy)", title="Training loss")
    axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Held-out 15 % of each fold")
    axes[1].set_ylim(0, 1)
    for ax in axes:
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("Fine-tuning RNA-FM on 32 riboswitch families (one line per CV fold)")
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a local checkpoint path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--per-class", type=int, default=12, help="sequences per family (32 families)")
    p.add_argument("--epochs", type=int, default=4, help="LoRA epochs (the head gets 10x)")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ModuleNotFoundError:
        print("matplotlib is needed for the figures: pip install 'rnafm_sklearn[examples]'")
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    df = load_riboswitches(args.per_class)
    lengths = df.sequence.str.len()
    print(
        f"{len(df)} sequences of {df.family.nunique()} families, "
        f"{lengths.min()}-{lengths.max()} nt (median {int(lengths.median())})"
    )
    try:  # fails fast (and clearly) if the weights are missing
        RnaFmEmbedder(model=args.model).fit(df.sequence.iloc[:1])
    except WeightsUnavailableError as exc:
        print(
            "Cannot run without the model weights. Give this example a local checkpoint with "
            f"--model /path/to/RNA-FM_pretrained.pth (or a folder), or run it once online.\n{exc}",
            file=sys.stderr,
        )
        return 2

    cache = str(args.output_dir / "cache")
    cv = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    folds = list(cv.split(df.sequence, df.family))
    rows, curves = [], {}
    for name, template in models(args, cache).items():
        for k, (train, test) in enumerate(folds):
            model = clone(template)
            start = time.perf_counter()
            model.fit(df.sequence.iloc[train], df.family.iloc[train])
            pred = model.predict(df.sequence.iloc[test])
            seconds = time.perf_counter() - start
            score = balanced_accuracy_score(df.family.iloc[test], pred)
            rows.append({"model": name, "fold": k, "balanced_accuracy": score, "seconds": seconds})
            print(f"{name:<34} fold {k}: balanced accuracy {score:.3f}, {seconds:7.1f} s")
            if isinstance(model, RnaFmClassifier):
                curves.setdefault(name, []).append(
                    (model.loss_curve_, model.validation_scores_)
                )
    per_fold = pd.DataFrame(rows)
    table = per_fold.groupby("model", sort=False).agg(
        balanced_accuracy=("balanced_accuracy", "mean"),
        sd=("balanced_accuracy", "std"),
        seconds_per_fold=("seconds", "mean"),
    )
    print(table.round(3).to_string())
    per_fold.to_csv(args.output_dir / "finetune_riboswitch_folds.csv", index=False)
    fig = plot_learning_curves(curves)
    fig.savefig(args.output_dir / "finetune_riboswitch_learning_curves.png", dpi=120)
    print(f"per-fold scores and the learning-curve figure written to {args.output_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
