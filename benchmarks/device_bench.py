"""GPU throughput and memory: the official RNA-FM code vs rnafm_sklearn, same weights, one process.

The CUDA counterpart of ``throughput.py`` (whose helpers it reuses), run by
``benchmarks/device_check.sh``. A full-size RNA-FM with random BERT-scale weights is saved in the
official layout and loaded both ways; then, interleaved round by round on the same real
sequences (Rfam families + mRNA slices of 500-1022 nt):

* ``official, input order`` - the official README usage: batches of 8 in input order, the
  last layer's states copied to the host and mean-pooled there (``throughput.official_runner``);
* ``official, sorted``      - the same, driven with our length-sorted token-budget batches;
* ``ours fp32/bf16/fp16``   - ``RnaFmEmbedder(device="cuda", dtype=...).transform``
  (tokenising, batching and on-device pooling included).

Prints tokens/s (nucleotides + <cls> + <eos>; padding not counted), ratios, the share of the
GPU's measured matrix-multiply limit at the FFN shape (``torch.matmul`` of (tokens x 640) @
(640 x 5120), converted to tokens/s with the encoder's 197 MFLOP of linear layers per token),
the largest difference to the official output and each implementation's peak GPU memory
(``torch.cuda.max_memory_allocated``, reset before each one's timed runs).

Then a batch-budget sweep of ours in bf16 (tokens/s and peak memory per ``batch_tokens``) and
the fine-tuning cost on the GPU (``RnaFmClassifier`` head / lora / all, fp32 and bf16, one
epoch, tokens/s of the whole fit and peak memory).

    python benchmarks/device_bench.py            # ~2-3 min on one H100 (estimated)
    python benchmarks/device_bench.py --quick    # ~1 min
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from _common import cosine, full_size_checkpoint
from _official import load_official
from throughput import linear_flops_per_token, official_runner, real_sequences

from rnafm_sklearn import RnaFmEmbedder
from rnafm_sklearn._choices import DEFAULT_BATCH_TOKENS

DEVICE = "cuda"
BUDGET = DEFAULT_BATCH_TOKENS["cuda"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class OnDevice:
    """The official model on the GPU, called as ``throughput.official_runner`` calls it.

    Token ids go to the GPU; the requested representations come back to the host (the README
    usage ends in numpy arrays), where ``official_runner`` mean-pools them.
    """

    def __init__(self, model, device: torch.device):
        self.model, self.device = model.to(device), device

    def __call__(self, tokens: torch.Tensor, repr_layers: list[int]) -> dict:
        out = self.model(tokens.to(self.device), repr_layers=repr_layers)
        return {"representations": {k: v.cpu() for k, v in out["representations"].items()}}


def matmul_limit(dtype: torch.dtype, tokens: int = BUDGET, repeats: int = 20) -> float:
    """Best measured FLOP/s of ``torch.matmul`` at the FFN shape, (tokens x 640) @ (640 x 5120)."""
    x = torch.randn(tokens, 640, device=DEVICE, dtype=dtype)
    w = torch.randn(640, 5120, device=DEVICE, dtype=dtype)
    for _ in range(3):
        torch.matmul(x, w)
    best = float("inf")
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.matmul(x, w)
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return 2 * tokens * 640 * 5120 / best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer sequences, one round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--n", type=int, default=1000, help="number of real sequences")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("device_bench.py needs CUDA: torch.cuda.is_available() is False", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    n, rounds = (96, 1) if args.quick else (args.n, args.rounds)
    seqs = real_sequences(n)
    tokens = sum(len(s) + 2 for s in seqs)

    ckpt = full_size_checkpoint()
    model, alpha = load_official(ckpt)
    official = OnDevice(model, torch.device(DEVICE))
    impls = {
        "official, input order": official_runner(official, alpha, "input"),
        "official, sorted": official_runner(official, alpha, "sorted", budget=BUDGET),
    }
    precision = dict.fromkeys(impls, torch.float32)
    for name, dtype in DTYPES.items():
        e = RnaFmEmbedder(model=str(ckpt), device=DEVICE, dtype=name, progress=False)
        impls[f"ours {name}"] = e.transform
        precision[f"ours {name}"] = dtype

    fpt = linear_flops_per_token()
    limits = {d: matmul_limit(d) / fpt for d in DTYPES.values()}
    print(
        f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, "
        f"TF32 matmul allowed: {torch.backends.cuda.matmul.allow_tf32}"
    )
    rates = ", ".join(f"{name} {limits[d]:.0f}" for name, d in DTYPES.items())
    print(
        f"# matmul limit at the FFN shape ({BUDGET} x 640 @ 640 x 5120; {fpt / 1e6:.0f} MFLOP "
        f"of linear layers per token), tokens/s: {rates}"
    )

    for f in impls.values():
        f(seqs[:16])  # warm-up: weights loaded, kernels chosen
    outputs: dict[str, np.ndarray] = {}
    times: dict[str, list[float]] = {name: [] for name in impls}
    peaks = dict.fromkeys(impls, 0)  # above the memory resident before the run (all weights)
    for _ in range(rounds):
        for name, f in impls.items():  # interleaved
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            t = time.perf_counter()
            outputs[name] = f(seqs)  # numpy on the host: the work is finished
            times[name].append(time.perf_counter() - t)
            peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated() - resident)

    rate = {k: tokens / statistics.median(v) for k, v in times.items()}
    ref, ours32 = outputs["official, input order"], outputs["ours float32"]
    print(f"\n## real mixed: {n} sequences, {tokens} tokens, median of {rounds} round(s)")
    print(
        "| implementation | tokens/s | vs official (input order) | vs official (sorted) | "
        "of matmul limit | max abs diff vs official | min cosine vs ours fp32 | "
        "peak GPU MiB above the weights |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in impls:
        limit = limits[precision[name]]
        print(
            f"| {name} | {rate[name]:.0f} | {rate[name] / rate['official, input order']:.2f}x | "
            f"{rate[name] / rate['official, sorted']:.2f}x | {rate[name] / limit:.1%} | "
            f"{np.abs(outputs[name] - ref).max():.1e} | "
            f"{cosine(outputs[name], ours32).min():.6f} | {peaks[name] / 2**20:.0f} |"
        )
    print(
        f"\nGPU memory: {torch.cuda.memory_allocated() / 2**20:.0f} MiB resident (all models' "
        f"weights), largest peak above it {max(peaks.values()) / 2**20:.0f} MiB "
        f"(torch.cuda.max_memory_allocated)"
    )
    budget_sweep(str(ckpt), seqs, tokens, quick=args.quick)
    finetune_rates(str(ckpt), seqs[: 64 if args.quick else 256])
    return 0


def budget_sweep(ckpt: str, seqs: list[str], tokens: int, *, quick: bool) -> None:
    """bf16 tokens/s and peak memory per ``batch_tokens`` (the default is 32768 on CUDA)."""
    print("\n## batch budget, ours bf16 (one timed run each after a warm-up)")
    print("| batch_tokens | tokens/s | peak GPU MiB above the weights |")
    print("|---|---|---|")
    for budget in (8192, 32768) if quick else (8192, 16384, 32768, 65536, 131072):
        e = RnaFmEmbedder(
            model=ckpt, device=DEVICE, dtype="bfloat16", batch_tokens=budget, progress=False
        )
        e.transform(seqs[:16])
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        resident = torch.cuda.memory_allocated()
        t = time.perf_counter()
        e.transform(seqs)
        seconds = time.perf_counter() - t
        peak = (torch.cuda.max_memory_allocated() - resident) / 2**20
        print(f"| {budget} | {tokens / seconds:.0f} | {peak:.0f} |")


def finetune_rates(ckpt: str, seqs: list[str]) -> None:
    """Training tokens/s (forward + backward + step) of RnaFmClassifier on the GPU, one epoch."""
    from rnafm_sklearn import RnaFmClassifier

    y = [len(s) % 2 for s in seqs]  # any two classes: only the cost is measured
    tokens = sum(len(s) for s in seqs)
    print(f"\n## fine-tuning on the GPU: {len(seqs)} sequences, {tokens} nt, 1 epoch")
    # the models of the runs above stay loaded: the peak is taken above them
    print("| train= | dtype | tokens/s (whole fit) | peak GPU MiB above the models loaded before |")
    print("|---|---|---|---|")
    for mode in ("head", "lora", "all"):
        for dtype in ("float32", "bfloat16"):
            clf = RnaFmClassifier(
                model=ckpt, train=mode, dtype=dtype, device=DEVICE, max_epochs=1,
                random_state=0, progress=False,
            )  # fmt: skip
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            resident = torch.cuda.memory_allocated()
            t = time.perf_counter()
            clf.fit(seqs, y)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - t
            peak = (torch.cuda.max_memory_allocated() - resident) / 2**20
            print(f"| {mode} | {dtype} | {tokens / seconds:.0f} | {peak:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
