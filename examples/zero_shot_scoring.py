"""Zero-shot scores from RNA-FM's masked-LM head, alone and as features of a supervised model.
===========================================================================================

Shows two things on the repository's real data:

1. **Variant effects along one tRNA** (``score_variants``, ``method="masked-marginal"``): every
   single substitution (3 per position) of one tRNA from data/rnafm-rfam3/RF00005.fasta
   (default: the file's first record, ``AB003409.1/96-167``, 72 nt; pick another with
   ``--sequence-id``) scored as ``log p(mutant) - log p(wild type)`` with the position masked;
   a heat map (rows A/C/G/U, columns positions, wild-type cells blank) and the per-position
   mean, with the most and least tolerant positions printed.
2. **Likelihood features next to others** (``RnaFmLikelihood`` in a ``ColumnTransformer``):
   the in-solution degradation rate ``k_deg_per_hour`` of the 193 labelled mRNAs of
   data/mrna233-degradation (504-1588 nt, 67 longer than 1022 nt: ``long_sequences="window"``)
   predicted with ``RidgeCV`` from (i) length + GC content and (ii) the same plus RNA-FM's
   per-sequence log-likelihood (sum and per-nucleotide mean), 5-fold CV (shuffled, seed 0),
   with R^2 and Spearman's rho of the out-of-fold predictions, next to the zero-shot Spearman
   rho of the per-nucleotide log-likelihood itself (no fitting).

Data: tRNA sequences from the official RNA-FM tutorial (Rfam, CC0; copied MIT) and the "233x"
mRNA set of Wayment-Steele et al. (2022) (MIT); see each folder's PROVENANCE.md. No public
variant-effect measurement is shipped with the repository, so the heat map shows what the model
predicts, not a benchmark against measured effects.

Cost (an *estimate* from the number of passes, not a measurement): with the real RNA-FM on
2 CPU cores, part 1 is 72 masked passes of 74 tokens (a few seconds); part 2 uses
``kind="unmasked"``, one pass per 1022-nt window: 264 passes, about 254 000 tokens, about 3
minutes at the ~1 570 tokens/s that the documentation's Benchmarks page gives for 1000-nt
sequences in float32 (a slower CPU takes several times longer), plus loading the model. The
likelihood values are cached under ``OUTPUT_DIR/cache``, so re-runs and the 5 CV folds
compute each mRNA once. ``kind="pseudo"`` (the pseudo-log-likelihood, one masked pass per
nucleotide) would need 192 272 passes, about 184 million tokens: more than a day on 2 cores,
which is why this example does not use it.

With ``--model tests/fixtures/RNA-FM_tiny.pth`` (random weights, as in CI) it runs in seconds,
and every score it prints is meaningless: CI only checks that the example runs.

    python examples/zero_shot_scoring.py [--model rna-fm] [--output-dir out/examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from rnafm_sklearn import RnaFmLikelihood, WeightsUnavailableError, read_fasta, score_variants
from rnafm_sklearn._mutations import all_single_mutants

ROOT = Path(__file__).resolve().parents[1]
TRNA_FASTA = ROOT / "data" / "rnafm-rfam3" / "RF00005.fasta"
MRNA_CSV = ROOT / "data" / "mrna233-degradation" / "233x_sequences_degdata_081120.csv"
DEFAULT_TRNA = "AB003409.1/96-167"
NUCLEOTIDES = "ACGU"
METHOD = "masked-marginal"


# ----------------------------------------------------------------------------- part 1: tRNA
def substitution_scores(wild_type: str, model: str) -> pd.DataFrame:
    """Masked-marginal score of every single substitution of ``wild_type``, one row each."""
    mutations = all_single_mutants(wild_type)
    scores = score_variants([wild_type] * len(mutations), mutations, method=METHOD, model=model)
    return pd.DataFrame(
        {
            "mutation": mutations,
            "position": [int(m[1:-1]) for m in mutations],
            "wild_type": [m[0] for m in mutations],
            "mutant": [m[-1] for m in mutations],
            "score": scores[f"score_{METHOD.replace('-', '_')}"].to_numpy(),
        }
    )


def score_matrix(scores: pd.DataFrame, length: int) -> np.ndarray:
    """``(4, length)``: rows A, C, G, U; NaN where nothing was scored (the wild-type letter)."""
    matrix = np.full((len(NUCLEOTIDES), length), np.nan)
    rows = scores["mutant"].map(NUCLEOTIDES.index).to_numpy()
    matrix[rows, scores["position"].to_numpy() - 1] = scores["score"].to_numpy()
    return matrix


def position_means(matrix: np.ndarray) -> np.ndarray:
    """Mean score per position over its scored substitutions (NaN where there is none)."""
    scored = np.isfinite(matrix)
    counts = scored.sum(axis=0)
    sums = np.where(scored, matrix, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(matrix.shape[1], np.nan), where=counts > 0)


def plot_heatmap(matrix: np.ndarray, wild_type: str, seq_id: str):
    """Heat map of substitution scores with the per-position mean below, as a Figure."""
    import matplotlib.pyplot as plt

    length = len(wild_type)
    limit = float(np.nanmax(np.abs(matrix))) if np.isfinite(matrix).any() else 1.0
    limit = limit or 1.0
    fig, (ax, ax_mean) = plt.subplots(
        2,
        1,
        figsize=(max(8.0, 0.16 * length + 2), 4.8),
        sharex=True,
        height_ratios=(2, 1),
        layout="constrained",
    )
    # wild-type cells have nothing to score: grey, unlike a score of 0 (white)
    cmap = plt.get_cmap("RdBu").with_extremes(bad="#d0d0d0")
    im = ax.imshow(
        np.ma.masked_invalid(matrix),
        cmap=cmap,
        vmin=-limit,
        vmax=limit,
        aspect="auto",
        interpolation="nearest",
        extent=(0.5, length + 0.5, len(NUCLEOTIDES) - 0.5, -0.5),
    )
    ax.set_yticks(range(len(NUCLEOTIDES)), list(NUCLEOTIDES))
    ax.set_ylabel("substituted base\n(grey: wild type)")
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(1, length + 1), list(wild_type), fontsize=6)
    top.set_xlabel("wild-type sequence", fontsize=8)
    ax.set_title(
        f"RNA-FM {METHOD} scores of all single substitutions, tRNA {seq_id} ({length} nt)",
        fontsize=10,
    )
    fig.colorbar(im, ax=ax, label="log p(mt) - log p(wt)\n(position masked)", shrink=0.9)
    mean = position_means(matrix)
    ax_mean.bar(
        range(1, length + 1), mean, width=0.85, color=np.where(mean < 0, "#b2182b", "#2166ac")
    )
    ax_mean.axhline(0, color="grey", lw=0.8)
    ax_mean.set_xlabel("position in the tRNA (1-based)")
    ax_mean.set_ylabel("mean score")
    ax_mean.set_xticks(range(5, length + 1, 5))
    ax_mean.set_xlim(0.5, length + 0.5)
    return fig


# ------------------------------------------------------------------- part 2: degradation
def load_mrna(path: Path = MRNA_CSV) -> pd.DataFrame:
    """The 193 labelled mRNAs: sequence, length, GC content and ``k_deg`` by barcode."""
    df = pd.read_csv(path)
    df = df[df.k_deg_per_hour.notna() & (df.single_exp_fit_ok == 1)]
    seq = df.RNA_sequence
    return pd.DataFrame(
        {
            "sequence": seq,
            "length": seq.str.len(),
            "gc": seq.apply(lambda s: (s.count("G") + s.count("C")) / len(s)),
            "k_deg": df.k_deg_per_hour,
        }
    ).set_index(df.Barcode)


def models(likelihood: RnaFmLikelihood) -> dict[str, Pipeline]:
    """(i) length + GC content; (ii) the same plus the likelihood of the ``sequence`` column."""
    alphas = np.logspace(-2, 4, 25)
    numeric = ("num", "passthrough", ["length", "gc"])
    return {
        "length + GC": Pipeline(
            [
                ("features", ColumnTransformer([numeric])),
                ("scale", StandardScaler()),
                ("ridge", RidgeCV(alphas=alphas)),
            ]
        ),
        "length + GC + RNA-FM likelihood": Pipeline(
            [
                ("features", ColumnTransformer([numeric, ("lik", likelihood, "sequence")])),
                ("scale", StandardScaler()),
                ("ridge", RidgeCV(alphas=alphas)),
            ]
        ),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a local checkpoint path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--cache", help="likelihood cache folder (default: OUTPUT_DIR/cache)")
    p.add_argument("--sequence-id", default=DEFAULT_TRNA, help="tRNA record for the heat map")
    p.add_argument(
        "--max-sequences", type=int, help="score a random subset of the mRNAs (seed 0)"
    )
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ModuleNotFoundError:
        print("matplotlib is needed for the figures: pip install 'rnafm_sklearn[examples]'")
        return 2
    trnas = read_fasta(TRNA_FASTA)
    if args.sequence_id not in trnas.index:
        p.error(f"--sequence-id {args.sequence_id!r} is not a record of {TRNA_FASTA}")
    if args.max_sequences is not None and args.max_sequences < 10:
        p.error("--max-sequences must be at least 10 (5-fold cross-validation)")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    likelihood = RnaFmLikelihood(
        model=args.model,
        kind="unmasked",
        long_sequences="window",
        cache=args.cache or str(args.output_dir / "cache"),
    )
    try:
        likelihood.fit(["ACGU"])  # fails fast (and clearly) if the weights are missing
    except WeightsUnavailableError as exc:
        print(
            "Cannot run without the model weights. Give this example a local checkpoint with "
            f"--model /path/to/RNA-FM_pretrained.pth (or a folder), or run it once online.\n{exc}",
            file=sys.stderr,
        )
        return 2
    except ValueError as exc:  # a checkpoint without the masked-LM head
        print(f"Cannot score with this checkpoint:\n{exc}", file=sys.stderr)
        return 2

    # 1. every single substitution along one tRNA
    wild_type = trnas[args.sequence_id]
    scores = substitution_scores(wild_type, args.model)
    print(
        f"tRNA {args.sequence_id}: {len(wild_type)} nt, {len(scores)} single substitutions "
        f"scored ({METHOD})"
    )
    matrix = score_matrix(scores, len(wild_type))
    per_position = pd.DataFrame(
        {"wild_type": list(wild_type), "mean_score": position_means(matrix)},
        index=pd.RangeIndex(1, len(wild_type) + 1, name="position"),
    ).dropna()
    ranked = per_position.sort_values("mean_score", ascending=False)
    print("most tolerant positions (highest mean score):")
    print(ranked.head(5).round(3).to_string())
    print("least tolerant positions (lowest mean score):")
    print(ranked.tail(5).iloc[::-1].round(3).to_string())
    fig = plot_heatmap(matrix, wild_type, args.sequence_id)
    fig.savefig(args.output_dir / "trna_substitution_heatmap.png", dpi=120)
    scores.to_csv(args.output_dir / "trna_substitution_scores.csv", index=False)

    # 2. zero-shot likelihood, alone and next to length + GC content
    df = load_mrna()
    if args.max_sequences is not None and args.max_sequences < len(df):
        df = df.sample(args.max_sequences, random_state=0)
    n_long = int((df.length > 1022).sum())
    print(f"{len(df)} mRNAs, {n_long} longer than 1022 nt (scored in overlapping windows)")
    features = pd.DataFrame(
        likelihood.transform(df.sequence),
        index=df.index,
        columns=likelihood.get_feature_names_out(),
    )
    y = df.k_deg.to_numpy()
    rows = [
        {
            "model": "zero-shot: ll_unmasked_per_nt (no fitting)",
            "r2": np.nan,
            "spearman_rho": spearmanr(features["ll_unmasked_per_nt"], y).statistic,
        }
    ]
    cv = KFold(5, shuffle=True, random_state=0)
    predictions = {}
    for name, model in models(likelihood).items():
        pred = cross_val_predict(model, df, y, cv=cv)
        predictions[name] = pred
        rows.append(
            {"model": name, "r2": r2_score(y, pred), "spearman_rho": spearmanr(pred, y).statistic}
        )
    table = pd.DataFrame(rows).set_index("model")
    print("k_deg_per_hour, out-of-fold (5-fold CV, shuffled, seed 0):")
    print(table.round(3).to_string(na_rep="-"))
    table.to_csv(args.output_dir / "zero_shot_degradation_scores.csv")
    per_mrna = df.drop(columns="sequence").join(features)
    for name, pred in predictions.items():
        per_mrna[f"predicted ({name})"] = pred
    per_mrna.to_csv(args.output_dir / "zero_shot_degradation_per_mrna.csv")
    print(f"figure and scores written to {args.output_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
