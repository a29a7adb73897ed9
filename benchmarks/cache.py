"""What the persistent cache saves: cold vs warm transform, and 5-fold CV with vs without it.

Full-size RNA-FM (random weights, official layout), N real Rfam sequences (default 150, three
families), fp32 on the CPU, all in one process, side by side:

* cold transform (empty cache) vs warm transform (every vector cached);
* ``cross_val_score(Pipeline(RnaFmEmbedder, LogisticRegression), cv=5)`` without a cache
  (every fold embeds its training and test sequences again) vs with a fresh cache.

    python benchmarks/cache.py            # ~4 min on 2 cores
    python benchmarks/cache.py --n 60     # ~1.5 min
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import full_size_checkpoint, rfam
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from rnafm_sklearn import RnaFmEmbedder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=150)
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    ckpt = str(full_size_checkpoint())
    df = rfam(args.n)
    RnaFmEmbedder(model=ckpt, progress=False).fit(df.sequence[:1])  # load the weights once

    def timed(f):
        t = time.perf_counter()
        out = f()
        return time.perf_counter() - t, out

    emb = RnaFmEmbedder(model=ckpt, cache=str(tmp / "c1"), progress=False)
    cold, X1 = timed(lambda: emb.transform(df.sequence))
    warm, X2 = timed(lambda: emb.transform(df.sequence))
    assert np.array_equal(X1, X2)

    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def cv_time(cache):
        pipe = Pipeline(
            [
                ("emb", RnaFmEmbedder(model=ckpt, cache=cache, progress=False)),
                ("clf", LogisticRegression(max_iter=3000)),
            ]
        )
        return timed(lambda: cross_val_score(pipe, df.sequence, df.y, cv=cv))

    t_plain, s_plain = cv_time(None)
    t_cached, s_cached = cv_time(str(tmp / "c2"))
    assert np.allclose(s_plain, s_cached)
    tokens = int(df.sequence.str.len().sum())
    print(f"# {args.n} real sequences ({tokens} nt), full-size model, fp32, CPU")
    print("| measurement | without cache | with cache | ratio |")
    print("|---|---|---|---|")
    print(f"| transform, cold vs warm | {cold:.1f} s | {warm * 1000:.1f} ms | {cold / warm:.0f}x |")
    print(f"| 5-fold cross_val_score | {t_plain:.1f} s | {t_cached:.1f} s | "
          f"{t_plain / t_cached:.1f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
