"""Masked-LM scoring speed: rnafm_sklearn vs the official RNA-FM code driven the ESM way.

Builds a full-size RNA-FM (12 layers, 640 hidden, 20 heads, FFN 5120, random BERT-scale
weights, masked-LM head) with the official ``rna-fm`` package, saves it in the official
checkpoint layout, loads it with the official loader and with ours, and times:

* **masked-marginal**: one real wild type (the first pure-ACGU 5S rRNA of RF00001 with
  100-120 nt) and all its ``3 L`` single mutants. Official: what ESM's variant-prediction
  script does - per position ``i`` a copy of the tokens with ``i`` masked, one forward pass
  (batch of 1), ``log_softmax`` over the A/C/G/U logits (renormalised, as ours), and the
  three mutants at ``i`` scored as ``lp[alt] - lp[ref]``. Ours:
  ``score_variants([wt] * 3L, all_single_mutants(wt), method="masked-marginal")``.
* **pseudo-log-likelihood** (PLL) of real Rfam sequences. Official: per sequence, per A/C/G/U
  position one masked forward pass (batch of 1), ``log_softmax`` over A/C/G/U, summed. Ours:
  ``RnaFmLikelihood(kind="pseudo")``, one sequence per call.

A PLL costs one full forward pass per position (the 1 000 sequences: 39 M forward tokens,
hours for any implementation on 2 cores), so both are timed on a fixed random sample of the
1 000 Rfam sequences (default 3 tRNA, 2 5S rRNA, 1 RNase P: the 1 000's proportions) and the
time for all 1 000 is projected from it. The implementations are interleaved unit by unit
(official, ours fp32, ours bf16 on the wild type or on one sequence, then the next unit or
round), so that the load of a shared machine hits all of them alike.

Reports medians over rounds (wall and CPU seconds, scores/s, masked positions/s, forward
tokens/s, share of the matmul limit), the ratios to the official code (of the wall times, of
the CPU times - which other processes on a busy machine inflate less - and min / median / max
of the ratios of each (round, unit) pair),
the largest |ours - official| (fp32: the parity check), the Spearman correlation with ours
fp32 (bf16: the precision check), the peak RSS of this process, and the RSS of PLL runs over
``n`` and ``2 n`` sequences, each in a fresh process (peak reset once the model is loaded),
to show that memory follows the batch budget, not the number of sequences.

    python benchmarks/scoring.py            # ~12 min on 2 quiet cores (28 min on a busy one)
    python benchmarks/scoring.py --quick    # ~2 min
    python benchmarks/scoring.py --threads 1   # CPU-time ratios robust to other processes
    python benchmarks/scoring.py --mm-memory   # only the masked-marginal memory check
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _common import full_size_checkpoint, rfam
from _official import load_official, official_tokens
from scipy.stats import spearmanr
from throughput import linear_flops_per_token, matmul_rate

from rnafm_sklearn import RnaFmLikelihood, read_fasta, score_variants
from rnafm_sklearn._choices import DEFAULT_BATCH_TOKENS
from rnafm_sklearn._lm import MASKED_BATCH_TOKENS_BF16_CPU
from rnafm_sklearn._mutations import all_single_mutants

ROOT = Path(__file__).resolve().parents[1]
NUCLEOTIDES = "ACGU"
MUTATION = re.compile(r"([ACGU])(\d+)([ACGU])")


def wild_type() -> str:
    """The first 5S rRNA (RF00001) of 100-120 nt made only of A, C, G and U."""
    for s in read_fasta(ROOT / "data" / "rnafm-rfam3" / "RF00001.fasta"):
        if 100 <= len(s) <= 120 and set(s) <= set(NUCLEOTIDES):
            return s
    raise SystemExit("no 5S rRNA of 100-120 nt in data/rnafm-rfam3/RF00001.fasta")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- official
@torch.no_grad()
def official_masked_log_probs(model, alpha, seq: str) -> np.ndarray:
    """``(L, 4)``: per position, log p(A/C/G/U) with that position alone masked (ESM style).

    One masked copy per position, one forward pass each (batch of 1); positions that do not
    hold A/C/G/U are skipped (rows of NaN), as ours skips them.
    """
    tokens = official_tokens(alpha, [seq])
    ids = [alpha.get_idx(c) for c in NUCLEOTIDES]
    out = np.full((len(seq), 4), np.nan)
    for i, c in enumerate(seq):
        if c not in NUCLEOTIDES:
            continue
        masked = tokens.clone()
        masked[0, i + 1] = alpha.mask_idx
        logits = model(masked)["logits"][0, i + 1, ids]
        out[i] = torch.log_softmax(logits.float(), dim=-1).numpy()
    return out


def official_masked_marginal(model, alpha, wt: str, mutations: list[str]) -> np.ndarray:
    lp = official_masked_log_probs(model, alpha, wt)
    scores = []
    for m in mutations:
        ref, pos, alt = MUTATION.fullmatch(m).groups()
        i = int(pos) - 1
        scores.append(lp[i, NUCLEOTIDES.index(alt)] - lp[i, NUCLEOTIDES.index(ref)])
    return np.array(scores)


def official_pll(model, alpha, seqs: list[str]) -> np.ndarray:
    out = []
    for s in seqs:
        lp = official_masked_log_probs(model, alpha, s)
        out.append(sum(lp[i, NUCLEOTIDES.index(c)] for i, c in enumerate(s) if c in NUCLEOTIDES))
    return np.array(out)


# ------------------------------------------------------------------------------- helpers
def n_positions(seqs: list[str]) -> int:
    """Masked passes a PLL needs: the A/C/G/U positions."""
    return sum(sum(c in NUCLEOTIDES for c in s) for s in seqs)


def forward_tokens(seqs: list[str]) -> int:
    """Tokens run through the encoder by a PLL: one copy of ``L + 2`` tokens per position."""
    return sum(sum(c in NUCLEOTIDES for c in s) * (len(s) + 2) for s in seqs)


def pll_subset(df, counts: dict[str, int], seed: int = 0) -> list[str]:
    """A fixed random sample of the 1 000, ``counts[family]`` sequences of each family."""
    parts = [df[df.y == fam].sample(n, random_state=seed) for fam, n in counts.items() if n]
    return [s for part in parts for s in part.sequence]


def interleaved(impls: dict, units: list, rounds: int) -> tuple[dict, dict, dict, dict]:
    """Run every implementation on each unit in turn (official, ours fp32, ours bf16, then the
    next unit), ``rounds`` times.

    Returns the median over rounds of the total wall seconds and of the total CPU seconds
    (all threads of this process), the wall seconds of every (round, unit) and the outputs
    of the last round, concatenated.
    """
    wall: dict[str, list[float]] = {name: [] for name in impls}
    cpu: dict[str, list[float]] = {name: [] for name in impls}
    paired: dict[str, list[float]] = {name: [] for name in impls}
    outputs: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        results: dict[str, list[np.ndarray]] = {name: [] for name in impls}
        w = {name: 0.0 for name in impls}
        c = {name: 0.0 for name in impls}
        for unit in units:
            for name, f in impls.items():
                t, u = time.perf_counter(), time.process_time()
                results[name].append(np.atleast_1d(np.asarray(f(unit), np.float64)))
                dt = time.perf_counter() - t
                c[name] += time.process_time() - u
                w[name] += dt
                paired[name].append(dt)
        for name in impls:
            wall[name].append(w[name])
            cpu[name].append(c[name])
            outputs[name] = np.concatenate(results[name])
    median = statistics.median
    return (
        {k: median(v) for k, v in wall.items()},
        {k: median(v) for k, v in cpu.items()},
        paired,
        outputs,
    )


CHILD = """
import sys
from rnafm_sklearn import RnaFmLikelihood

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

seqs = sys.stdin.read().split()
lik = RnaFmLikelihood(
    model=sys.argv[1], dtype=sys.argv[2], device="cpu",
    batch_tokens=None if sys.argv[3] == "default" else int(sys.argv[3]),
    progress=False,
)
lik.transform(["ACGUACGU"])  # loads the model
loaded = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
lik.transform(seqs)
print(loaded, status("VmHWM"))
"""


def rss_child(ckpt: str, dtype: str, budget: int | None, seqs: list[str]) -> tuple[float, float]:
    """RSS (MB) of a fresh process once the model is loaded, and its peak during the PLL
    (``budget=None``: the library's default)."""
    res = subprocess.run(
        [sys.executable, "-c", CHILD, ckpt, dtype, "default" if budget is None else str(budget)],
        input="\n".join(seqs),
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise SystemExit(res.stderr)
    loaded, peak = res.stdout.split()
    return float(loaded), float(peak)


MM_CHILD = """
import sys
import numpy as np
from rnafm_sklearn import score_variants

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

length, n_variants, n_positions = map(int, sys.argv[2:5])
rng = np.random.default_rng(0)
wt = "".join(rng.choice(list("ACGU"), length))
positions = rng.choice(np.arange(1, length + 1), n_positions, replace=False)
mutations = []
for k in range(n_variants):
    p = int(positions[k % n_positions])
    alt = [c for c in "ACGU" if c != wt[p - 1]][k // n_positions % 3]
    mutations.append(f"{wt[p - 1]}{p}{alt}")
options = dict(model=sys.argv[1], method="masked-marginal", long_sequences="window",
               device="cpu", progress=False)
score_variants([wt], [mutations[0]], **options)  # loads the model
loaded = status("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak (VmHWM) to the current RSS
scores = score_variants([wt] * n_variants, mutations, **options).to_numpy()
print(loaded, status("VmHWM"), float(np.abs(scores).sum()))
"""


def masked_marginal_rss(
    ckpt: str, length: int, n_variants: int, n_positions: int
) -> tuple[float, float]:
    """RSS (MB) of a fresh process with the model loaded, and its peak while masked-marginal
    scores ``n_variants`` variants at ``n_positions`` positions of one ``length``-nt wild type."""
    res = subprocess.run(
        [sys.executable, "-c", MM_CHILD, ckpt, str(length), str(n_variants), str(n_positions)],
        capture_output=True,
        text=True,
    )
    if res.returncode:
        raise SystemExit(res.stderr)
    loaded, peak, _ = res.stdout.split()
    return float(loaded), float(peak)


def mm_memory_table(ckpt: str, length: int, positions: int) -> None:
    print(f"\n## masked-marginal memory: one {length}-nt wild type, {positions} mutated positions")
    print("| variants | RSS with the model loaded | peak while scoring | growth |")
    print("|---|---|---|---|")
    for n in (positions, 3000, 6000):
        loaded, peak = masked_marginal_rss(ckpt, length, n, positions)
        print(f"| {n} | {loaded:.0f} MB | {peak:.0f} MB | {peak - loaded:.0f} MB |")


def table(title, impls, timing, out, n_scores, unit, n_pos, n_tokens, limits) -> None:
    med, cpu, paired, _ = timing
    off = "official (ESM style)"
    ref, f32 = out[off], out["ours fp32"]
    print(f"\n## {title}")
    print(
        f"| implementation | seconds | CPU seconds | {unit}/s | masked positions/s | "
        "forward tokens/s | of matmul limit | vs official | vs official, CPU time | "
        "paired ratios min / median / max | max abs diff vs official | Spearman vs ours fp32 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in impls:
        ratios = np.array(paired[off]) / np.array(paired[name])
        limit = limits["bfloat16" if "bf16" in name else "float32"]
        rho = spearmanr(out[name], f32).statistic if len(f32) > 2 else float("nan")
        print(
            f"| {name} | {med[name]:.1f} | {cpu[name]:.1f} | {n_scores / med[name]:.2f} | "
            f"{n_pos / med[name]:.1f} | {n_tokens / med[name]:.0f} | "
            f"{n_tokens / med[name] / limit:.0%} | {med[off] / med[name]:.2f}x | "
            f"{cpu[off] / cpu[name]:.2f}x | {ratios.min():.2f} / {np.median(ratios):.2f} / "
            f"{ratios.max():.2f} | {np.abs(out[name] - ref).max():.1e} | {rho:.6f} |"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="1 round, 2 short PLL sequences")
    p.add_argument("--rounds", type=int, default=3, help="masked-marginal rounds (default 3)")
    p.add_argument("--pll-rounds", type=int, default=1, help="PLL rounds (default 1)")
    p.add_argument(
        "--pll-subset",
        default="3,2,1",
        help="PLL sequences timed both ways per family RF00005,RF00001,RF00010 (default 3,2,1)",
    )
    p.add_argument(
        "--batch-tokens", type=int, default=None, help="ours: token budget (default: library's)"
    )
    p.add_argument("--rss-n", type=int, default=4, help="n of the n / 2n memory check")
    p.add_argument("--rss-dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every implementation (default: torch's). 1 thread keeps the "
        "CPU-time ratios honest on a shared machine: no thread spins at a barrier waiting "
        "for a core that another process holds",
    )
    p.add_argument(
        "--mm-memory",
        nargs="?",
        const="full-size",
        metavar="MODEL",
        help="only the masked-marginal memory check (a 2 000-nt wild type, 20 mutated "
        "positions, 20 / 3 000 / 6 000 variants, each run in a fresh process) on the full-size "
        "random model or on MODEL (e.g. tests/fixtures/RNA-FM_tiny.pth)",
    )
    args = p.parse_args(argv)
    if args.mm_memory:
        model = args.mm_memory
        mm_memory_table(str(full_size_checkpoint()) if model == "full-size" else model, 2000, 20)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.pll_rounds, args.pll_subset, args.rss_n = 1, 1, "1,1,0", 2
    per_family = [int(k) for k in args.pll_subset.split(",")]
    if len(per_family) != 3:
        p.error(f"--pll-subset takes three counts (RF00005,RF00001,RF00010); got {args.pll_subset}")
    counts = dict(zip(("RF00005", "RF00001", "RF00010"), per_family, strict=True))
    torch.manual_seed(0)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    ckpt = full_size_checkpoint()
    official, alpha = load_official(ckpt)

    wt = wild_type()
    mutations = all_single_mutants(wt)
    df = rfam(1000)  # the 1 000 sequences, across the three families
    pool = df.sequence.tolist()
    subset = pll_subset(df, counts)
    common = dict(model=str(ckpt), device="cpu", progress=False, batch_tokens=args.batch_tokens)
    budget = args.batch_tokens or DEFAULT_BATCH_TOKENS["cpu"]
    # the masked passes in bf16 get a larger default budget (the PLL's and masked-marginal's)
    masked_budget = {
        "float32": budget,
        "bfloat16": args.batch_tokens or MASKED_BATCH_TOKENS_BF16_CPU,
    }
    off = "official (ESM style)"

    def ours_mm(dtype):
        return lambda _: score_variants(
            [wt] * len(mutations), mutations, method="masked-marginal", dtype=dtype, **common
        )["score_masked_marginal"].to_numpy()

    def ours_pll(dtype):
        lik = RnaFmLikelihood(kind="pseudo", dtype=dtype, **common)
        return lambda seq: lik.transform([seq])[:, 0]

    mm = {
        off: lambda _: official_masked_marginal(official, alpha, wt, mutations),
        "ours fp32": ours_mm("float32"),
        "ours bf16": ours_mm("bfloat16"),
    }
    pll = {
        off: lambda seq: official_pll(official, alpha, [seq]),
        "ours fp32": ours_pll("float32"),
        "ours bf16": ours_pll("bfloat16"),
    }
    for f in pll.values():  # warm-up: loads our weights (fp32, bf16), every path run once
        f(pool[0][:20])
    for f in mm.values():
        if f is not mm[off]:
            f(None)

    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; full-size random RNA-FM (12 x 640, 20 heads, FFN 5120, "
        "masked-LM head), official checkpoint layout; load average at start "
        f"{load0:.1f}"
    )
    fpt = linear_flops_per_token()
    limits = {d: matmul_rate(getattr(torch, d), "onednn") / fpt for d in ("float32", "bfloat16")}
    print(
        "# matmul limit (best oneDNN product at the FFN shape / encoder FLOPs per token): "
        f"fp32 {limits['float32']:.0f}, bf16 {limits['bfloat16']:.0f} forward tokens/s"
    )
    print(
        "# official = the official `fm` model driven as ESM's variant-prediction script: one "
        "masked copy per position, one forward pass each (batch of 1); ours: batch budget of "
        f"the masked passes {masked_budget['float32']} tokens in fp32, "
        f"{masked_budget['bfloat16']} in bf16; only the masked rows go through the last layer "
        "and the head. Implementations interleaved unit by unit (shared machine: absolute "
        "rates are noisy, ratios less so; CPU seconds, which a busy machine inflates less, "
        "are shown beside wall seconds)."
    )

    timing = interleaved(mm, [None], args.rounds)
    med, out = timing[0], timing[3]
    table(
        f"masked-marginal: one 5S rRNA wild type (L = {len(wt)} nt), all {len(mutations)} "
        f"single mutants; median of {args.rounds} round(s)",
        mm, timing, out, len(mutations), "variants", n_positions([wt]),
        forward_tokens([wt]), limits,
    )
    mm_out, mm_ratio = out, {name: med[off] / med[name] for name in mm}

    timing = interleaved(pll, subset, args.pll_rounds)
    med, out = timing[0], timing[3]
    table(
        f"PLL: {len(subset)} of the 1 000 Rfam sequences (fixed random sample, per family "
        f"{counts}; lengths {', '.join(str(len(s)) for s in subset)}; "
        f"{n_positions(subset)} masked positions); unit = one sequence; "
        f"median of {args.pll_rounds} round(s)",
        pll, timing, out, len(subset), "sequences", n_positions(subset),
        forward_tokens(subset), limits,
    )
    pll_ratio = {name: med[off] / med[name] for name in pll}
    diff_pll = np.abs(out["ours fp32"] - out[off]).max()
    per_nt = np.abs(out["ours fp32"] - out[off]) / [n_positions([s]) for s in subset]
    print(f"\nPLL ours fp32 vs official, per masked position: max {per_nt.max():.1e}")
    diff_mm = np.abs(mm_out["ours fp32"] - mm_out[off]).max()
    rho_mm = spearmanr(mm_out["ours bf16"], mm_out["ours fp32"]).statistic

    total, tokens = n_positions(pool), forward_tokens(pool)
    rates = {name: forward_tokens(subset) / med[name] for name in pll}
    print(
        f"\nPLL of all 1 000 sequences ({total} masked positions, {tokens / 1e6:.1f} M forward "
        "tokens) is NOT run, by any implementation: at the subset's forward tokens/s it would "
        "take " + ", ".join(f"{name} {tokens / r / 3600:.1f} h" for name, r in rates.items())
    )
    print(
        f"\npeak RSS of this process (official + ours fp32 + ours bf16 loaded): "
        f"{peak_rss_mb():.0f} MB"
    )

    print(
        f"\n## memory: ours, PLL in a fresh process, {args.rss_dtype}, batch budget of the masked "
        f"passes {masked_budget[args.rss_dtype]} tokens; sequences of <= 130 nt from the 1 000"
    )
    print("| sequences | masked positions | RSS with the model loaded | peak during the PLL |")
    print("|---|---|---|---|")
    short = [s for s in pool if len(s) <= 130]
    for n in (args.rss_n, 2 * args.rss_n):
        loaded, peak = rss_child(str(ckpt), args.rss_dtype, args.batch_tokens, short[:n])
        print(f"| {n} | {n_positions(short[:n])} | {loaded:.0f} MB | {peak:.0f} MB |")

    print("\n## targets")
    for name, goal in (("ours fp32", 3), ("ours bf16", 5)):
        got = min(mm_ratio[name], pll_ratio[name])
        print(
            f"- {name} >= {goal}x the official: masked-marginal {mm_ratio[name]:.2f}x, PLL "
            f"{pll_ratio[name]:.2f}x: {'met' if got >= goal else 'MISSED'}"
        )
    print(f"- fp32 PLL equals the official one: max |diff| {diff_pll:.1e} per sequence, "
          f"{per_nt.max():.1e} per position")
    print(f"- fp32 masked-marginal scores equal the official ones: max |diff| {diff_mm:.1e} "
          f"(target <= 1e-4): {'met' if diff_mm <= 1e-4 else 'MISSED'}")
    print(f"- bf16 masked-marginal Spearman vs fp32: {rho_mm:.6f} (target >= 0.999): "
          f"{'met' if rho_mm >= 0.999 else 'MISSED'}")
    print(f"# wall time {time.perf_counter() - t0:.0f} s; load average at end "
          f"{os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
