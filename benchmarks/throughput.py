"""Throughput of rnafm_sklearn vs the official RNA-FM code, same weights, one process.

Builds a full-size RNA-FM (12 layers, 640 hidden, 20 heads, random BERT-scale weights) with the
official ``rna-fm`` package, saves it in the official checkpoint layout, loads it both ways,
checks that the outputs agree, then times, interleaved round by round:

* ``official, input order``  - the official README usage: batches of 8 in input order;
* ``official, sorted``       - the official model driven with our length-sorted token-budget
  batches (isolates the model code from the batching);
* ``ours fp32`` / ``ours bf16`` - ``RnaFmEmbedder.transform`` (tokenising, batching, pooling
  included), with ``dtype="float32"`` / ``"bfloat16"``.

on (a) real sequences of mixed length (Rfam families of the official tutorial + mRNA slices)
and (b) synthetic 1000-nt sequences. Reports median tokens/s (real tokens: nucleotides +
<cls> + <eos>; padding not counted), sequences/s, ratios, and the ratio to this machine's
matrix-multiply limit: the best measured ``addmm`` rate (what ``F.linear`` calls; FFN shape,
1024 tokens) divided by the encoder's linear FLOPs per token (2 x (4 E^2 + 2 E F) x layers =
197 MFLOP); and the same with oneDNN's pre-packed product, the faster kernel we use. Peak RSS of
the process is reported at the end (ru_maxrss, both implementations loaded); memory on many
distinct sequences, each run in a fresh process, is ``benchmarks/streaming.py``.

    python benchmarks/throughput.py            # ~10 min on 2 cores
    python benchmarks/throughput.py --quick    # < 1 min
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import sys
import time

import numpy as np
import torch
from _common import cosine, full_size_checkpoint, mrna233, rfam
from _official import load_official, official_tokens

from rnafm_sklearn import RnaFmEmbedder
from rnafm_sklearn._choices import DEFAULT_BATCH_TOKENS
from rnafm_sklearn._windows import pack_batches


def linear_flops_per_token(E=640, F_=5120, L=12) -> float:
    return 2 * (4 * E * E + 2 * E * F_) * L


def matmul_rate(dtype: torch.dtype, kernel: str = "addmm", repeats: int = 10) -> float:
    """Best FLOP/s of one matrix product at the encoder's FFN shape (1024 tokens, 640 -> 5120).

    ``kernel="addmm"`` is what ``F.linear`` calls (the BLAS; the issue's definition of the
    limit); ``"onednn"`` is oneDNN with a pre-packed weight, the kernel our CPU path uses.
    """
    x = torch.randn(1024, 640, dtype=dtype)
    w = torch.randn(5120, 640, dtype=dtype)
    b = torch.randn(5120, dtype=dtype)
    if kernel == "addmm":
        out = torch.empty(1024, 5120, dtype=dtype)  # preallocated: time the arithmetic only

        def product():
            torch.addmm(b, x, w.t(), out=out)
    else:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, None)

        def product():
            torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")

    for _ in range(3):
        product()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        product()
        times.append(time.perf_counter() - t)
    return 2 * 1024 * 640 * 5120 / min(times)  # the best rate: an upper bound


def real_sequences(n: int, seed: int = 0) -> list[str]:
    pool = rfam().sequence.tolist()
    mrna = mrna233()
    rng = np.random.default_rng(seed)
    # mRNA slices of 500-1022 nt stand in for longer RNAcentral entries
    for s in mrna.RNA_sequence.sample(n // 10 + 1, random_state=seed):
        k = int(rng.integers(500, 1023))
        pool.append(s[:k])
    picks = rng.choice(len(pool), n, replace=False)
    return [pool[i] for i in picks]


def synthetic(n: int, length: int = 1000, seed: int = 1) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("ACGU"), length)) for _ in range(n)]


def official_runner(model, alpha, order: str, budget: int = DEFAULT_BATCH_TOKENS["cpu"]):
    def run(seqs):
        if order == "input":
            batches = [list(range(i, min(i + 8, len(seqs)))) for i in range(0, len(seqs), 8)]
        else:
            batches = pack_batches([len(s) + 2 for s in seqs], budget)
        out = [None] * len(seqs)
        with torch.no_grad():
            for b in batches:
                h = model(official_tokens(alpha, [seqs[i] for i in b]), repr_layers=[12])
                h = h["representations"][12]
                for row, i in enumerate(b):
                    out[i] = h[row, 1 : 1 + len(seqs[i])].mean(0).numpy()
        return np.stack(out)

    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer sequences and rounds (< 1 min)")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    ckpt = full_size_checkpoint()

    n_real, n_syn, rounds = (10, 2, 1) if args.quick else (70, 12, args.rounds)
    sets = {"real mixed": real_sequences(n_real), "synthetic 1000 nt": synthetic(n_syn)}
    official, alpha = load_official(ckpt)
    impls = {
        "official, input order": official_runner(official, alpha, "input"),
        "official, sorted": official_runner(official, alpha, "sorted"),
        "ours fp32": RnaFmEmbedder(model=str(ckpt), device="cpu", progress=False).transform,
        "ours bf16": RnaFmEmbedder(
            model=str(ckpt), device="cpu", dtype="bfloat16", progress=False
        ).transform,
    }
    fpt = linear_flops_per_token()
    limit32, limit16 = (matmul_rate(d) / fpt for d in (torch.float32, torch.bfloat16))
    best32, best16 = (matmul_rate(d, "onednn") / fpt for d in (torch.float32, torch.bfloat16))

    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}"
    )
    print(
        f"# matmul limit (F.linear/addmm): fp32 {limit32:.0f} tok/s, bf16 {limit16:.0f} tok/s; "
        f"with oneDNN packed weights: fp32 {best32:.0f}, bf16 {best16:.0f}"
    )
    for set_name, seqs in sets.items():
        tokens = sum(len(s) + 2 for s in seqs)
        for f in impls.values():
            f(seqs[:2])  # warm-up (loads our weights once)
        outputs: dict[str, np.ndarray] = {}
        times: dict[str, list[float]] = {name: [] for name in impls}
        for _ in range(rounds):
            for name, f in impls.items():  # interleaved
                t = time.perf_counter()
                outputs[name] = f(seqs)
                times[name].append(time.perf_counter() - t)
        ref = outputs["official, input order"]
        print(f"\n## {set_name}: {len(seqs)} sequences, {tokens} tokens, median of {rounds}")
        print(
            "| implementation | tokens/s | seq/s | vs official (input order) | vs official "
            "(sorted) | of matmul limit | of oneDNN limit | max abs diff vs official | "
            "cosine vs fp32 |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        base = {k: tokens / statistics.median(v) for k, v in times.items()}
        for name in impls:
            rate = base[name]
            limit, best = (limit16, best16) if "bf16" in name else (limit32, best32)
            diff = np.abs(outputs[name] - ref).max()
            a, b = outputs[name], outputs["ours fp32"]
            cos = cosine(a, b).min()
            print(
                f"| {name} | {rate:.0f} | {rate / tokens * len(seqs):.2f} | "
                f"{rate / base['official, input order']:.2f}x | "
                f"{rate / base['official, sorted']:.2f}x | {rate / limit:.0%} | "
                f"{rate / best:.0%} | {diff:.1e} | {cos:.6f} |"
            )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS of this process (both models loaded): {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
