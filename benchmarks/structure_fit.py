"""Structure prediction: cost of ``fit`` (head / LoRA) and a comparison with ViennaRNA.

* **Fit cost**: a full-size random RNA-FM structure checkpoint (12 layers x 640, the
  official 32 x 64 ResNet head) in the official layout; for each length in 100 / 300 / 512 nt
  and ``train`` in head / lora, a fresh process fits ``RnaFmStructurePredictor`` once to
  load the weights and create the kernels, then times a fit of one epoch on ``--n`` random
  sequences of that length (one sequence per optimizer step): the seconds of the epoch
  (frozen states included for ``head``), seconds per training step, and the peak RSS (and
  the RSS after loading, for reference).
* **ViennaRNA** (``pip install ViennaRNA``; its licence is not OSI-approved: a benchmark-only
  extra, never imported by the library): ``RNA.fold`` on bpRNA TS0 sequences, seconds per
  sequence and mean per-sequence base-pair F1, next to ours on the same sequences with the
  random full-size checkpoint (our F1 here says nothing about RNA-FM: the weights are
  random; see docs/user_guide/structure.md for published real-weight numbers).

    python benchmarks/structure_fit.py               # fit cost + ViennaRNA on 200 sequences
    python benchmarks/structure_fit.py --quick       # n=1, 50 sequences
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _common import ROOT
from _official_structure import make_official_structure  # noqa: E402  (tests/ on the path)

DATA = ROOT / "data" / "bprna-ts0" / "bprna_ts0.csv"


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fit_once(model: str, length: int, mode: str, n: int) -> dict:
    """One configuration (run in its own process: the peak RSS is its own)."""
    import torch

    from rnafm_sklearn import RnaFmStructurePredictor
    from rnafm_sklearn._models import get_encoder

    rng = np.random.default_rng(length)
    X = ["".join(rng.choice(list("ACGU"), length)) for _ in range(n)]
    y = ["(" * 10 + "." * (length - 20) + ")" * 10 for _ in range(n)]
    get_encoder(model, torch.device("cpu"), torch.float32)
    loaded = rss_mb()
    est = RnaFmStructurePredictor(
        model=model, train=mode, max_epochs=1, random_state=0, progress=False,
        batch_pairs=length * length, lora_rank=8, device="cpu",
    )  # fmt: skip
    # a first fit loads the head and creates the kernels: what is timed is an epoch
    est.fit(X[:1], y[:1])
    t = time.perf_counter()
    est.fit(X, y)
    seconds = time.perf_counter() - t
    return {
        "length": length,
        "train": mode,
        "n": n,
        "fit_s": round(seconds, 2),
        "s_per_step": round(seconds / n, 2),
        "peak_rss_mb": round(rss_mb()),
        "rss_after_load_mb": round(loaded),
    }


def fit_costs(model: Path, n: int, lengths: list[int]) -> list[dict]:
    rows = []
    for length in lengths:
        for mode in ("head", "lora"):
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(model), str(length), mode, str(n)],
                capture_output=True, text=True, check=True, env={**os.environ},
            )  # fmt: skip
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    return rows


def vienna_vs_ours(model: Path, n: int) -> list[dict]:
    import RNA

    from rnafm_sklearn import RnaFmStructurePredictor, base_pair_f1

    df = pd.read_csv(DATA, dtype=str)
    df = df[df.sequence.str.len() <= 512].sample(n, random_state=0)
    t = time.perf_counter()
    vienna = [RNA.fold(s)[0] for s in df.sequence]
    t_vienna = (time.perf_counter() - t) / n
    est = RnaFmStructurePredictor(model=model, progress=False, device="cpu")
    est.predict(df.sequence[:2])  # load once
    t = time.perf_counter()
    ours = est.predict(df.sequence)
    t_ours = (time.perf_counter() - t) / n
    truth = df.structure.tolist()
    return [
        {"method": "ViennaRNA RNA.fold (MFE)", "s_per_seq": round(t_vienna, 4),
         "f1": round(base_pair_f1(truth, vienna), 3)},
        {"method": "RnaFmStructurePredictor, RANDOM weights", "s_per_seq": round(t_ours, 4),
         "f1": round(base_pair_f1(truth, list(ours)), 3)},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--skip-fit", action="store_true")
    p.add_argument("--skip-vienna", action="store_true")
    p.add_argument("--lengths", type=int, nargs="+", default=[100, 300, 512])
    args = p.parse_args(argv)
    if args.one:
        model, length, mode, n = args.one
        print(json.dumps(fit_once(model, int(length), mode, int(n))))
        return 0
    folder = Path(tempfile.mkdtemp())
    model, _, _ = make_official_structure(folder, embed_dim=640, heads=20, ffn=5120)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    if not args.skip_fit:
        rows = fit_costs(model, 1 if args.quick else 2, args.lengths)
        print(pd.DataFrame(rows).to_string(index=False))
    if not args.skip_vienna:
        print(pd.DataFrame(vienna_vs_ours(model, 50 if args.quick else 200)).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
