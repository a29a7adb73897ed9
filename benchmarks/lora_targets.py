"""Which layers should LoRA adapt by default? ``lora_targets`` measured on two tasks (issue 23 C.3).

(1) The motif task of ``tests/test_finetune_training.py`` (``GA`` present or not, both classes
    with the same compositions: frozen features + logistic regression reach ~0.56): 600
    training and 200 test rows of 10 nt, max pooling, learning rate 3e-3, 60 epochs.
(2) The riboswitch task of ``examples/finetune_riboswitch.py`` (32 Rfam families; 3-fold
    stratified CV, balanced accuracy), with the estimator's defaults (learning rate 1e-3)
    for ``--epochs`` epochs.

Each with ``lora_targets`` in attention / ffn / all (``--targets``) and ``--seeds`` random
states; the mean (and min) test score of each. The tiny checkpoint has random weights: it
measures what the adapters can learn, not what the pretrained model knows.

    python benchmarks/lora_targets.py [--model tests/fixtures/RNA-FM_tiny.pth] [--seeds 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "examples")]

from finetune_riboswitch import load_riboswitches  # noqa: E402
from test_finetune_training import motif_task  # noqa: E402

from rnafm_sklearn import RnaFmClassifier  # noqa: E402

TARGETS = ("attention", "ffn", "all")


def motif(model: str, targets: str, seed: int, epochs: int) -> float:
    X, y = motif_task(800)
    clf = RnaFmClassifier(
        model=model, train="lora", lora_targets=targets, pooling="max", learning_rate=3e-3,
        max_epochs=epochs, random_state=seed, progress=False,
    )  # fmt: skip
    return clf.fit(X[:600], y[:600]).score(X[600:], y[600:])


def riboswitch(model: str, targets: str, seed: int, epochs: int, per_class: int) -> float:
    df = load_riboswitches(per_class)
    scores = []
    for train, test in StratifiedKFold(3, shuffle=True, random_state=0).split(df, df.family):
        clf = RnaFmClassifier(
            model=model, train="lora", lora_targets=targets, max_epochs=epochs,
            random_state=seed, progress=False,
        )  # fmt: skip
        clf.fit(df.sequence.iloc[train], df.family.iloc[train])
        pred = clf.predict(df.sequence.iloc[test])
        scores.append(balanced_accuracy_score(df.family.iloc[test], pred))
    return float(np.mean(scores))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default=str(ROOT / "tests/fixtures/RNA-FM_tiny.pth"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--task", choices=("motif", "riboswitch", "both"), default="both")
    p.add_argument("--motif-epochs", type=int, default=60)
    p.add_argument("--epochs", type=int, default=10, help="riboswitch epochs")
    p.add_argument("--per-class", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)
    tasks = ["motif", "riboswitch"] if args.task == "both" else [args.task]
    for task in tasks:
        for targets in args.targets:
            scores, start = [], time.perf_counter()
            for seed in range(args.seeds):
                if task == "motif":
                    scores.append(motif(args.model, targets, seed, args.motif_epochs))
                else:
                    scores.append(
                        riboswitch(args.model, targets, seed, args.epochs, args.per_class)
                    )
                print(f"  {task} {targets} seed {seed}: {scores[-1]:.3f}", flush=True)
            took = (time.perf_counter() - start) / args.seeds
            print(
                f"{task:<10} lora_targets={targets:<9} mean {np.mean(scores):.3f} "
                f"min {np.min(scores):.3f} over {args.seeds} seeds ({took:.0f} s per fit)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
