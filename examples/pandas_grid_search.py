"""A pandas table with a sequence column and numeric columns, tuned with GridSearchCV.
===================================================================================

Shows: ``ColumnTransformer`` that embeds the ``sequence`` column with RNA-FM next to scaled
numeric columns, ``GridSearchCV`` over the embedder's ``pooling`` and ``layers`` with the
persistent cache on (each sequence is embedded once per setting, not once per fold and
candidate), ``set_output(transform="pandas")``, and a result table.

Data: the 193 labelled mRNAs of data/mrna233-degradation with their experiment group and length
as extra columns, predicting ``k_deg_per_hour``.

Run time on 2 CPU cores: about 25 minutes with the real RNA-FM (4 settings x 193 long mRNAs,
windowed; re-runs take seconds thanks to the cache), about 10 seconds with
``--model tests/fixtures/RNA-FM_tiny.pth``. ``--max-sequences N`` runs the same search on a
random subset of N mRNAs (seed 0; at least 10 for the 5 folds), e.g. for a quick check.

    python examples/pandas_grid_search.py [--model rna-fm] [--output-dir out/examples]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from rnafm_sklearn import RnaFmEmbedder, WeightsUnavailableError

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "data" / "mrna233-degradation" / "233x_sequences_degdata_081120.csv"


def load_table() -> pd.DataFrame:
    df = pd.read_csv(CSV)
    df = df[df.k_deg_per_hour.notna() & (df.single_exp_fit_ok == 1)]
    return pd.DataFrame(
        {
            "sequence": df.RNA_sequence,
            "group": df["Expt type"],
            "length": df.RNA_sequence.str.len(),
            "gc": df.RNA_sequence.apply(lambda s: (s.count("G") + s.count("C")) / len(s)),
            "k_deg": df.k_deg_per_hour,
        }
    ).set_index(df.Barcode)


def build(model: str, cache: str) -> Pipeline:
    features = ColumnTransformer(
        [
            ("rna", RnaFmEmbedder(model=model, long_sequences="window", cache=cache), "sequence"),
            ("num", StandardScaler(), ["length", "gc"]),
            ("grp", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["group"]),
        ]
    )
    return Pipeline(
        [
            ("features", features),
            ("scale", StandardScaler()),
            ("ridge", RidgeCV(np.logspace(-1, 4, 16))),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a local checkpoint path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--cache", help="embedding cache folder (default: OUTPUT_DIR/cache)")
    p.add_argument(
        "--max-sequences", type=int, help="search on a random subset of the mRNAs (seed 0)"
    )
    args = p.parse_args(argv)
    if args.max_sequences is not None and args.max_sequences < 10:
        p.error("--max-sequences must be at least 10 (5 folds of at least 2 mRNAs)")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    table = load_table()
    if args.max_sequences is not None and args.max_sequences < len(table):
        table = table.sample(args.max_sequences, random_state=0)
    pipe = build(args.model, args.cache or str(args.output_dir / "cache"))
    try:
        pipe.named_steps["features"].transformers[0][1].fit(table.sequence.iloc[:1])
    except WeightsUnavailableError as exc:
        print(
            "Cannot run without the model weights. Give this example a local checkpoint with "
            f"--model /path/to/RNA-FM_pretrained.pth (or a folder), or run it once online.\n{exc}",
            file=sys.stderr,
        )
        return 2

    # the sequence features as a DataFrame that keeps the Barcode index
    preview = pipe.named_steps["features"].set_output(transform="pandas").fit_transform(table)
    print(f"feature table: {preview.shape}, index {preview.index.name!r}, "
          f"first columns {list(preview.columns[:2])}")  # fmt: skip

    grid = GridSearchCV(
        pipe,
        {
            "features__rna__pooling": ["mean", "mean+max"],
            "features__rna__layers": [-1, [-2, -1]],  # last layer; last two layers
        },
        cv=KFold(5, shuffle=True, random_state=0),
        scoring="r2",
    )
    grid.fit(table, table.k_deg)
    results = pd.DataFrame(grid.cv_results_)[
        ["param_features__rna__pooling", "param_features__rna__layers", "mean_test_score",
         "std_test_score", "rank_test_score"]
    ].sort_values("rank_test_score")  # fmt: skip
    results.columns = ["pooling", "layers", "mean R2", "sd", "rank"]
    print(results.to_string(index=False))
    results.to_csv(args.output_dir / "grid_search_results.csv", index=False)
    print(f"best: {grid.best_params_} (R2 {grid.best_score_:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
