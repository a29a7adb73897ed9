"""Secondary-structure prediction cost: ours vs the official ``fm.downstream`` predictor.

Builds the official ``Baseline(backbone_name="rna-fm",
pairwise_predictor_name="pc-resnet_1_sym_first:r-ss")`` at full size (12 layers, 640 hidden,
20 heads, FFN 5120; the ResNet head with 64 channels and 32 blocks) with random weights, saves
it in the layout of ``RNA-FM-ResNet_PDB-All.pth``, and loads the same file through rnafm_sklearn
(the registry: ``get_encoder`` + ``get_pair_head``). Timed: the whole predictor, token ids ->
(L, L) probabilities (backbone + head + sigmoid), one sequence at a time, under ``no_grad``
for both (the official ``Baseline.forward`` runs its head with autograd on otherwise).

* **Inference throughput** (:func:`inference_throughput`): sequences/s at L = 100 and 300,
  official float32, ours float32 and ours bfloat16, interleaved in one process (medians of
  ``--rounds``).
* **L = 1022** (:func:`inference_long`): each implementation in a fresh process, one after
  the other: time of one
  prediction and its peak memory (the growth of the peak RSS during the call, ``VmHWM`` reset
  through ``/proc/self/clear_refs`` after loading and a warm-up).

    python benchmarks/structure.py --quick   # L = 1022 dominates (~2.5e12 multiply-adds):
                                             # about 5 min on 2 idle cores
    python benchmarks/structure.py --no-long # L = 100 and 300 only (a few minutes)
    python benchmarks/structure.py --device cuda --rounds 5   # on a GPU (peak = GPU memory)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _official import official_tokens  # noqa: E402
from _official_structure import make_official_structure  # noqa: E402

from rnafm_sklearn import _models  # noqa: E402

FULL = {"embed_dim": 640, "heads": 20, "ffn": 5120}
IMPLS = ("official fp32", "ours fp32", "ours bf16")


def random_rna(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGU") for _ in range(n))


def build(folder: Path):
    """The full-size random official predictor, its file, and a predictor per implementation."""
    path, official, alpha = make_official_structure(folder, **FULL)
    return path, official, alpha


def official_predictor(official, alpha, device: str = "cpu"):
    """``f(sequence) -> (L, L)`` probabilities of the official predictor."""
    official = official.to(device)

    def run(seq: str) -> torch.Tensor:
        tokens = official_tokens(alpha, [seq]).to(device)
        with torch.no_grad():
            return torch.sigmoid(official({"token": tokens})["r-ss"][0])

    return run


def our_predictor(path: Path, dtype: torch.dtype, alpha, device: str = "cpu"):
    """``f(sequence) -> (L, L)`` probabilities of ours (the registry's encoder and head)."""
    where = torch.device(device)
    encoder = _models.get_encoder(path, where, dtype)
    head, _ = _models.get_pair_head(path, where, dtype)

    def run(seq: str) -> torch.Tensor:
        tokens = official_tokens(alpha, [seq]).to(where)  # the same ids as our alphabet's
        with torch.no_grad():
            states = encoder(tokens, layers=[-1])[12][:, 1:-1]
            return torch.sigmoid(head(states, torch.tensor([len(seq)])))[0]

    return run


def predictors(path: Path, official, alpha, device: str = "cpu") -> dict:
    """``impl -> f(sequence)`` for the three implementations."""
    return {
        "official fp32": official_predictor(official, alpha, device),
        "ours fp32": our_predictor(path, torch.float32, alpha, device),
        "ours bf16": our_predictor(path, torch.bfloat16, alpha, device),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, seq: str, device: str = "cpu") -> float:
    _sync(device)
    start = time.perf_counter()
    fn(seq)
    _sync(device)
    return time.perf_counter() - start


def inference_throughput(fns: dict, lengths, rounds: int, device: str = "cpu") -> dict:
    """Sequences/s per implementation and length (median of interleaved rounds)."""
    results = {}
    for n in lengths:
        seq = random_rna(n, n)
        for fn in fns.values():  # warm-up (oneDNN primitive caches, weight packing)
            fn(seq if n <= 100 else seq[:100])
        times = {impl: [] for impl in fns}
        for _ in range(rounds):
            for impl, fn in fns.items():
                times[impl].append(_timed(fn, seq, device))
        results[n] = {impl: 1.0 / statistics.median(t) for impl, t in times.items()}
        print(
            f"L={n}: " + ", ".join(f"{k} {v:.3f} seq/s" for k, v in results[n].items()), flush=True
        )
    return results


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _long_child(path: str, impl: str, n: int, device: str = "cpu") -> None:
    """In a fresh process: one prediction at length ``n``: seconds and peak growth (MB) of
    the resident memory (CPU) or of the allocated GPU memory (CUDA)."""
    if impl.startswith("official"):
        fn = official_predictor(*_load_official(Path(path)), device)
    else:
        from fm import Alphabet

        alpha = Alphabet.from_architecture("roberta_large", "rna")
        dtype = torch.bfloat16 if impl.endswith("bf16") else torch.float32
        fn = our_predictor(Path(path), dtype, alpha, device)
    fn(random_rna(50, 0))  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        seconds = _timed(fn, random_rna(n, n), device)
        peak = (torch.cuda.max_memory_allocated() - before) / 1024
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
        seconds = _timed(fn, random_rna(n, n), device)
        peak = _status_kb("VmHWM") - before
    print(json.dumps({"impl": impl, "seconds": seconds, "peak_mb": peak / 1024}))


def _load_official(path: Path):
    """The official Baseline holding the weights of ``path`` (its backbone file next to it)."""
    from unittest import mock

    import fm.downstream.baseline as fm_baseline
    from _official import load_official

    backbone, alpha = load_official(path.parent / "RNA-FM_backbone.pth")
    with mock.patch.object(fm_baseline, "choose_backbone", lambda _name: (backbone, alpha)):
        model = fm_baseline.Baseline(
            backbone_name="rna-fm",
            pairwise_predictor_name="pc-resnet_1_sym_first:r-ss",
            backbone_frozen=1,
        )
    model.load_state_dict(torch.load(path))
    return model.eval(), alpha


def inference_long(path: Path, impls=IMPLS, n: int = 1022, device: str = "cpu") -> dict:
    """Seconds and peak-memory growth of one prediction at ``n`` nt, each in a fresh process.

    The processes run one after the other (on 2 cores, concurrent ones would share them
    unevenly as each finishes): run this on an otherwise idle machine.
    """
    results = {}
    for impl in impls:
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(path), impl, str(n), device],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        if proc.returncode:
            raise RuntimeError(f"{impl} at L={n} failed (exit {proc.returncode})")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        results[impl] = row
        print(f"L={n} {impl}: {row['seconds']:.1f} s, peak +{row['peak_mb']:.0f} MB", flush=True)
    return results


def report(throughput: dict, long: dict) -> str:
    """A Markdown table with the ratios to the official float32 predictor."""
    lines = [
        "| L (nt) | official fp32 (seq/s) | ours fp32 | ours bf16 | fp32 ratio | bf16 ratio |",
        "|---|---|---|---|---|---|",
    ]
    rows = {n: r for n, r in throughput.items()}
    if long:
        rows[1022] = {impl: 1.0 / r["seconds"] for impl, r in long.items()}
    for n, r in rows.items():
        ref = r["official fp32"]
        cells = [f"{r[i]:.3g}" if i in r else "-" for i in IMPLS]
        ratios = [f"{r[i] / ref:.2f}x" if i in r else "-" for i in IMPLS[1:]]
        lines.append(f"| {n} | " + " | ".join(cells + ratios) + " |")
    if long:
        lines.append("")
        lines.append(
            "Peak memory growth at 1022 nt: "
            + ", ".join(f"{impl} {r['peak_mb']:.0f} MB" for impl, r in long.items())
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-long", action="store_true", help="skip L = 1022")
    parser.add_argument("--lengths", default="100,300", help="lengths timed in one process")
    parser.add_argument(
        "--long-impls", default=",".join(IMPLS), help="implementations run at L = 1022"
    )
    parser.add_argument("--checkpoint", help="reuse a structure file written by a previous run")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _long_child(args.child[0], args.child[1], int(args.child[2]), args.child[3])
        return
    rounds = args.rounds or (2 if args.quick else 5)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}: {where}")
    if args.checkpoint:
        path = Path(args.checkpoint)
        official, alpha = _load_official(path)
    else:
        path, official, alpha = build(Path(tempfile.mkdtemp()))
    print(f"structure file: {path}")
    lengths = [int(n) for n in args.lengths.split(",") if n]
    fns = predictors(path, official, alpha, args.device)
    throughput = inference_throughput(fns, lengths, rounds, args.device)
    del official, fns
    impls = args.long_impls.split(",")
    long = {} if args.no_long else inference_long(path, impls, device=args.device)
    print()
    print(report(throughput, long))


if __name__ == "__main__":
    main()
