"""Memory and time of ``RnaFmEmbedder.transform`` on many sequences and on one very long one.

Full-size RNA-FM (12 x 640, random weights, official checkpoint layout). Two measurements, each
in a fresh subprocess so that peak RSS (``ru_maxrss``) belongs to that run alone:

* ``many``: N distinct sequences of mixed length (default 20 000): real Rfam sequences, real
  mRNAs (504-1588 nt, so some are windowed) and point-mutated copies of them to make every
  sequence unique (no deduplication shortcut), with ``long_sequences="window"``;
* ``long``: one 30 000-nt sequence (real mRNA repeated), windowed; also 10 000 and 20 000 nt
  to show the cost is linear in length.

    python benchmarks/streaming.py                     # ~30 min on 2 cores (bf16)
    python benchmarks/streaming.py --n 2000 --dtype float32
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
from _common import full_size_checkpoint, mrna233, rfam


def mixed_sequences(n: int, seed: int = 0) -> list[str]:
    pool = rfam().sequence.tolist() + mrna233().RNA_sequence.tolist()[:40]
    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out = []
    while len(out) < n:
        s = list(pool[int(rng.integers(len(pool)))])
        for pos in rng.integers(0, len(s), size=3):  # three point mutations
            s[pos] = "ACGU"[int(rng.integers(4))]
        s = "".join(s)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def child(args: argparse.Namespace) -> None:
    from rnafm_sklearn import RnaFmEmbedder

    if args.what == "many":
        seqs = mixed_sequences(args.n)
    else:
        seqs = ["".join(mrna233().RNA_sequence)[: args.length]]
    emb = RnaFmEmbedder(
        model=args.model, long_sequences="window", dtype=args.dtype, device="cpu", progress=False
    )
    emb.fit(seqs[:1])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    X = emb.transform(seqs)
    elapsed = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tokens = sum(len(s) for s in seqs)
    print(
        json.dumps(
            {
                "what": args.what,
                "sequences": len(seqs),
                "nucleotides": tokens,
                "longer_than_1022": sum(len(s) > 1022 for s in seqs),
                "seconds": round(elapsed, 1),
                "nt_per_s": round(tokens / elapsed),
                "peak_rss_mb": round(peak),
                "rss_after_model_load_mb": round(before),
                "output_shape": list(X.shape),
            }
        )
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--lengths", default="10000,20000,30000")
    p.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    p.add_argument("--child", choices=("many", "long"), dest="what")
    p.add_argument("--length", type=int)
    p.add_argument("--model")
    args = p.parse_args(argv)
    if args.what:
        child(args)
        return 0
    ckpt = full_size_checkpoint()
    runs = [["--child", "many", "--n", str(args.n)]]
    runs += [["--child", "long", "--length", x] for x in args.lengths.split(",") if x]
    for extra in runs:
        cmd = [sys.executable, __file__, *extra, "--model", str(ckpt), "--dtype", args.dtype]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        print(out.stdout.strip(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
