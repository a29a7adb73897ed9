"""bf16 vs fp32: cosine similarity of pooled embeddings and the effect on a downstream CV score.

Full-size RNA-FM (random weights, official layout) on N real Rfam sequences (default 300,
three families): mean-pooled embeddings in fp32 and bf16, their cosine similarity (min and
median), and 5-fold logistic-regression accuracy on each.

    python benchmarks/precision.py          # ~2 min on 2 cores
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _common import full_size_checkpoint, rfam
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rnafm_sklearn import RnaFmEmbedder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    args = p.parse_args(argv)
    ckpt = full_size_checkpoint()
    df = rfam(args.n)
    X = {
        dt: RnaFmEmbedder(model=str(ckpt), dtype=dt, device="cpu", progress=False).transform(
            df.sequence
        )
        for dt in ("float32", "bfloat16")
    }
    a, b = X["float32"], X["bfloat16"]
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    acc = {dt: cross_val_score(clf, x, df.y, cv=cv).mean() for dt, x in X.items()}
    print(f"# {args.n} Rfam sequences, full-size random-weight RNA-FM, mean pooling")
    print(f"cosine(bf16, fp32): min {cos.min():.6f}, median {np.median(cos):.6f}")
    print(f"max abs difference: {np.abs(a - b).max():.3g}")
    print(f"5-fold accuracy: fp32 {acc['float32']:.4f}, bf16 {acc['bfloat16']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
