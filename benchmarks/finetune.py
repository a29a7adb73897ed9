"""Fine-tuning cost: training throughput and memory per ``train=``, prediction speed after LoRA.

Builds a full-size RNA-FM (12 layers, 640 hidden, 20 heads, FFN 5120, random BERT-scale
weights) with the official ``rna-fm`` package in the official checkpoint layout, and:

* **Training throughput**, for ``train`` in head / lora / top:2 / all and ``dtype`` in
  float32 / bfloat16: each configuration in a fresh process (so that its peak RSS is its
  own) fits ``RnaFmClassifier`` for ``--epochs`` epochs on ``--n`` real Rfam sequences
  (their family as the label) and reports sequence tokens per second of the whole fit
  (for ``head`` the one frozen forward pass per sequence and the head's epochs; otherwise
  also the one frozen pass over the training rows that sets the head's input statistics),
  the steady-state training rate (sequence tokens per second of one epoch after the first:
  forward + backward + optimizer step), and the peak RSS (and the RSS once the model is
  loaded, for reference).
* **Prediction after a LoRA fit vs RnaFmEmbedder**: in one process, a LoRA classifier fitted
  for one epoch, then ``clf.predict(X)`` and ``RnaFmEmbedder().transform(X)`` on the same
  sequences, interleaved for ``--rounds`` rounds; medians and the ratio (target: within 10 %,
  i.e. the adapters are folded into the weights and the packed oneDNN / bf16 kernels run).

    python benchmarks/finetune.py            # ~8 min on 2 quiet cores
    python benchmarks/finetune.py --quick    # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import full_size_checkpoint, rfam

from rnafm_sklearn import RnaFmClassifier, RnaFmEmbedder

MODES = ("head", "lora", "top:2", "all")
DTYPES = ("float32", "bfloat16")


def rss_mb() -> float:
    """Peak resident set size of this process, MB (Linux: ru_maxrss is in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def data(n: int) -> tuple[list[str], list[str]]:
    df = rfam(n, seed=0)
    return df.sequence.tolist(), df.y.tolist()


def child(checkpoint: str, mode: str, dtype: str, n: int, epochs: int) -> dict:
    """One training configuration (run in its own process)."""
    X, y = data(n)
    tokens = sum(len(s) for s in X)
    clf = RnaFmClassifier(
        model=checkpoint, train=mode, dtype=dtype, max_epochs=epochs, random_state=0,
        progress=False, device="cpu",
    )  # fmt: skip
    RnaFmEmbedder(model=checkpoint, dtype=dtype, device="cpu").fit(X[:1])  # load the weights
    loaded = current_rss_mb()
    epoch_times: list[float] = []
    start = time.perf_counter()
    original = sys.stderr.write

    # per-epoch times from the verbose lines (one per epoch)
    def stamp(text: str) -> int:
        if text.startswith("epoch "):
            epoch_times.append(time.perf_counter())
        return len(text)

    clf.set_params(verbose=True)
    sys.stderr.write = stamp  # type: ignore[method-assign]
    try:
        clf.fit(X, y)
    finally:
        sys.stderr.write = original  # type: ignore[method-assign]
    total = time.perf_counter() - start
    steady = [b - a for a, b in zip(epoch_times, epoch_times[1:], strict=False)]
    return {
        "mode": mode,
        "dtype": dtype,
        "sequences": n,
        "tokens": tokens,
        "epochs": epochs,
        "fit_s": total,
        "tokens_per_s": tokens * epochs / total,
        "epoch_s": statistics.median(steady) if steady else total / epochs,
        "rss_loaded_mb": loaded,
        "rss_peak_mb": rss_mb(),
        "loss": clf.loss_curve_,
    }


def predict_vs_embedder(checkpoint: str, n: int, rounds: int, dtype: str) -> dict:
    X, y = data(n)
    clf = RnaFmClassifier(
        model=checkpoint, train="lora", dtype=dtype, max_epochs=1, random_state=0,
        progress=False, device="cpu",
    ).fit(X[: max(8, n // 4)], y[: max(8, n // 4)])  # fmt: skip
    emb = RnaFmEmbedder(model=checkpoint, dtype=dtype, progress=False, device="cpu")
    clf.predict(X[:2]), emb.transform(X[:2])  # build the inference copies, warm up oneDNN
    times: dict[str, list[float]] = {"predict": [], "embedder": []}
    for _ in range(rounds):
        for name, work in (("predict", clf.predict), ("embedder", emb.transform)):
            t = time.perf_counter()
            work(X)
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = sum(len(s) for s in X)
    return {
        "dtype": dtype,
        "tokens": tokens,
        "predict_s": med["predict"],
        "embedder_s": med["embedder"],
        "predict_tok_s": tokens / med["predict"],
        "embedder_tok_s": tokens / med["embedder"],
        "ratio": med["predict"] / med["embedder"],
        "rounds": times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequences and rounds")
    parser.add_argument("--n", type=int, default=None, help="training sequences (default 48)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help="prediction rounds (default 3)")
    parser.add_argument("--child", nargs=3, metavar=("CHECKPOINT", "MODE", "DTYPE"))
    args = parser.parse_args(argv)
    n = args.n or (16 if args.quick else 48)
    epochs = args.epochs or 2
    rounds = args.rounds or (1 if args.quick else 3)
    if args.child:
        print(json.dumps(child(*args.child, n=n, epochs=epochs)))
        return 0

    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, Python {platform.python_version()}")  # fmt: skip
    checkpoint = str(full_size_checkpoint())
    X, _ = data(n)
    lengths = [len(s) for s in X]
    print(f"# {n} Rfam sequences, {sum(lengths)} nt (median {int(np.median(lengths))}, "
          f"max {max(lengths)}), {epochs} epochs per fit")  # fmt: skip
    rows = []
    for dtype in DTYPES:
        for mode in MODES:
            cmd = [sys.executable, __file__, "--child", checkpoint, mode, dtype, "--n", str(n),
                   "--epochs", str(epochs)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode:
                print(f"{mode} {dtype} failed:\n{out.stderr[-2000:]}")
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            steady = row["tokens"] / row["epoch_s"] if row["mode"] != "head" else float("nan")
            print(
                f"train={row['mode']:<6} {row['dtype']:<9} epoch {row['epoch_s']:5.1f} s = "
                f"{steady:6.0f} tok/s (fwd+bwd); whole fit {row['fit_s']:5.1f} s = "
                f"{row['tokens_per_s']:5.0f} tok/s; RSS loaded {row['rss_loaded_mb']:5.0f} MB, "
                f"peak {row['rss_peak_mb']:5.0f} MB",
                flush=True,
            )
    for dtype in DTYPES:
        p = predict_vs_embedder(checkpoint, n, rounds, dtype)
        print(
            f"predict after LoRA fit, {dtype}: {p['predict_tok_s']:.0f} tok/s vs RnaFmEmbedder "
            f"{p['embedder_tok_s']:.0f} tok/s -> time ratio {p['ratio']:.3f} "
            f"(medians of {rounds}; rounds {json.dumps(p['rounds'])})",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())
