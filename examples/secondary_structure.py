"""Secondary structure with RNA-FM: predict, write CT / dot-bracket, draw, and fit your own head.
==============================================================================================

On bpRNA TS0 (data/bprna-ts0: 1305 bpRNA-1m test structures, SPOT-RNA's split; see its
PROVENANCE.md), this example

1. predicts the structures of a held-out set with the structure head in ``--model`` (the
   official PDB-All head for ``rna-fm-ss``); with a backbone-only model it says so and goes on,
2. fits a small pair head (4 residual blocks x 16 channels, frozen backbone) on part of the
   set and scores it on the held-out rest (mean per-sequence base-pair F1), next to a
   composition-only baseline (the pair probability of each base combination, counted on the
   training structures, decoded the same way at its best threshold),
3. writes the predictions as CT files (one per sequence) and one dot-bracket FASTA,
4. draws one held-out sequence: the probability map beside the known structure, and an arc
   diagram (known pairs above, predicted below). The figure title says when the weights are
   random (the tiny test model of CI): then every score is meaningless.

Cost on 2 CPU cores with the real model (not measured here): the official head's prediction
takes about a second per 100-nt sequence; the fit of the small head on the default 300
sequences (<= 200 nt) a few minutes. ``--quick`` (used by the tests with the tiny random
model) takes 60 training and 20 held-out sequences of <= 120 nt and 3 epochs.

    python examples/secondary_structure.py [--model rna-fm-ss] [--n-train 300] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from rnafm_sklearn import (
    PRETRAINED,
    RnaFmStructurePredictor,
    WeightsUnavailableError,
    base_pair_f1,
    read_config,
    write_structures,
)
from rnafm_sklearn._decoding import decode_greedy
from rnafm_sklearn._pairs import dot_bracket_to_pairs

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "bprna-ts0" / "bprna_ts0.csv"


def load(max_length: int, n_train: int, n_test: int, seed: int = 0):
    """Training and held-out rows (sequences of ACGU only, <= ``max_length`` nt)."""
    df = pd.read_csv(DATA, dtype=str)
    df = df[(df.sequence.str.len() <= max_length) & ~df.sequence.str.contains("[^ACGU]")]
    df = df.sample(frac=1.0, random_state=seed)
    return df.iloc[:n_train], df.iloc[n_train : n_train + n_test]


def weights_label(model: str) -> str:
    """What the figure says about the weights."""
    if isinstance(model, str) and model in PRETRAINED:
        return f"released weights ({model})"
    config = read_config(model)
    if (config.num_layers, config.hidden_size) != (12, 640):
        return "RANDOM weights (a test model): every score here is meaningless"
    return f"weights from {Path(model).name} (not verified as the released ones)"


def composition_maps(train: pd.DataFrame, sequences) -> list[np.ndarray]:
    """p(pair | base_i, base_j) counted on the training structures, as probability maps."""
    code = {c: k for k, c in enumerate("ACGU")}
    paired, total = np.zeros((4, 4)), np.zeros((4, 4))
    for s, y in zip(train.sequence, train.structure, strict=True):
        idx = np.array([code[c] for c in s])
        i, j = np.triu_indices(len(s), 2)
        np.add.at(total, (idx[i], idx[j]), 1)
        for a, b in dot_bracket_to_pairs(y):
            paired[idx[a], idx[b]] += 1
    table = paired / np.maximum(total, 1)
    table = np.maximum(table, table.T)
    return [table[np.array([code[c] for c in s])[:, None], [code[c] for c in s]] for s in sequences]


def best_threshold_f1(maps, sequences, truth) -> tuple[float, float]:
    best = (0.0, 0.5)
    for t in np.linspace(0.02, 0.98, 49):
        pred = [
            decode_greedy(m, s, threshold=float(t)) for m, s in zip(maps, sequences, strict=True)
        ]
        best = max(best, (base_pair_f1(truth, pred), float(t)))
    return best


def plot(sequence: str, truth: str, probs: np.ndarray, predicted: str, title: str):
    import matplotlib.pyplot as plt
    from matplotlib.patches import Arc

    n = len(sequence)
    fig = plt.figure(figsize=(13, 8))
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    ax_p, ax_t, ax_a = (
        fig.add_subplot(grid[0, 0]),
        fig.add_subplot(grid[0, 1]),
        fig.add_subplot(grid[1, :]),
    )
    im = ax_p.imshow(probs, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax_p, fraction=0.046, label="pair probability")
    ax_p.set(title="predicted probabilities", xlabel="position j", ylabel="position i")
    known = np.zeros((n, n))
    for i, j in dot_bracket_to_pairs(truth):
        known[i, j] = known[j, i] = 1
    ax_t.imshow(known, cmap="Greys", vmin=0, vmax=1)
    ax_t.set(title="known structure (bpRNA)", xlabel="position j", ylabel="position i")
    for pairs, sign, colour, label in (
        (dot_bracket_to_pairs(truth), 1, "tab:blue", "known"),
        (dot_bracket_to_pairs(predicted), -1, "tab:red", "predicted"),
    ):
        for k, (i, j) in enumerate(pairs):
            ax_a.add_patch(
                Arc(((i + j) / 2, 0), j - i, (j - i) * 0.9, theta1=0 if sign > 0 else 180,
                    theta2=180 if sign > 0 else 360, color=colour, lw=1,
                    label=label if k == 0 else None)
            )  # fmt: skip
    ax_a.set(xlim=(-1, n), ylim=(-n / 2, n / 2), yticks=[], xlabel="position")
    ax_a.axhline(0, color="black", lw=0.5)
    ax_a.legend(loc="upper right")
    ax_a.set_title("arc diagram: known pairs above, predicted pairs below")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--model", default="rna-fm-ss", help="'rna-fm-ss', 'rna-fm' or a path")
    p.add_argument("--output-dir", default="out/examples", type=Path)
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--max-length", type=int, default=200)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="60 / 20 sequences <= 120 nt, 3 epochs")
    args = p.parse_args(argv)
    if args.quick:
        args.n_train, args.n_test, args.max_length, args.epochs = 60, 20, 120, 3
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ModuleNotFoundError:
        print("matplotlib is needed for the figures: pip install 'rnafm_sklearn[examples]'")
        return 2
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    train, test = load(args.max_length, args.n_train, args.n_test)
    print(f"bpRNA TS0: {len(train)} training and {len(test)} held-out structures "
          f"(<= {args.max_length} nt, ACGU only)")  # fmt: skip
    label = weights_label(args.model)
    print(f"model {args.model}: {label}")
    truth = test.structure.tolist()
    rows = []

    pretrained = RnaFmStructurePredictor(model=args.model, progress=False)
    try:
        f1 = pretrained.score(test.sequence, truth)
        rows.append(("structure head of --model, as released", f1))
    except WeightsUnavailableError as exc:
        print(f"Cannot run without the model weights:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # NotFittedError: a backbone-only model
        print(f"no pretrained head to score ({str(exc).splitlines()[0][:80]}...)")

    est = RnaFmStructurePredictor(
        model=args.model, head_blocks=4, head_channels=16, max_epochs=args.epochs,
        validation_fraction=0.2, random_state=0, progress=False,
    )  # fmt: skip
    if pretrained.__sklearn_is_fitted__():
        est.set_params(head_learning_rate=1e-4)  # fine-tune the released head gently
    est.fit(train.sequence, train.structure)
    rows.append((f"fitted head (threshold {est.threshold_:.2f})", est.score(test.sequence, truth)))
    base_f1, base_t = best_threshold_f1(
        composition_maps(train, test.sequence), test.sequence.tolist(), truth
    )
    rows.append((f"composition only (threshold {base_t:.2f}, chosen on the test set)", base_f1))
    scores = pd.DataFrame(rows, columns=["method", "mean base-pair F1"])
    print(scores.to_string(index=False, float_format="%.3f"))
    scores.to_csv(out / "structure_scores.csv", index=False)

    predicted = est.predict(test.sequence)
    frame = pd.DataFrame({"id": test.id, "sequence": test.sequence, "structure": predicted})
    write_structures(frame, out / "structures_ct", format="ct", one_file_per_record=True)
    write_structures(frame, out / "structures.fa", format="dot-bracket")
    print(f"wrote {out / 'structures_ct'}/<id>.ct and {out / 'structures.fa'}")

    k = int(np.argmax([len(s) for s in test.sequence[:10]]))  # a longer one of the first ten
    seq, known = test.sequence.iloc[k], truth[k]
    fig = plot(seq, known, est.predict_proba([seq])[0], predicted[k],
               f"bpRNA {test.id.iloc[k]} ({len(seq)} nt) - {label}")  # fmt: skip
    fig.savefig(out / "structure_map.png", dpi=100)
    print(f"wrote {out / 'structure_map.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
