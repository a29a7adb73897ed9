"""Training parameters of ``RnaFmStructurePredictor``: checks and resolved options."""

from __future__ import annotations

from numbers import Integral, Real
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._adapters import LORA_TARGETS
from ._choices import default_batch_tokens
from ._models import DTYPES
from ._structure_training import PairData, PairTrainOptions, pair_steps

__all__ = [
    "DEFAULT_BATCH_PAIRS",
    "DEFAULT_POS_WEIGHT",
    "count_steps",
    "is_real",
    "positive_int",
    "train_options",
]

# Training: map elements per optimizer step (max(L) * sum(L) over the batch's sequences):
# one 512-nt sequence, or 16 of 128 nt.
DEFAULT_BATCH_PAIRS = 512 * 512
# Weight of a paired candidate in the loss (unpaired: 1); see the docstring of pos_weight.
DEFAULT_POS_WEIGHT = 8.0
DEFAULT_LEARNING_RATES = {"head": 1e-3, "lora": 1e-3}


def train_options(est: Any, device: torch.device) -> SimpleNamespace:
    """Check the training parameters of ``est`` and resolve its :class:`PairTrainOptions`."""
    positive_int(est, "head_blocks", est.head_blocks)
    positive_int(est, "head_channels", est.head_channels)
    positive_int(est, "lora_rank", est.lora_rank)
    positive_int(est, "max_epochs", est.max_epochs)
    positive_int(est, "batch_pairs", est.batch_pairs, none=True)
    positive_int(est, "n_iter_no_change", est.n_iter_no_change, none=True)
    est._check_choice("lora_targets", est.lora_targets, tuple(LORA_TARGETS))
    for name, low, high, what in (
        ("pos_weight", 1e-12, np.inf, "a positive float"),
        ("lora_alpha", 1e-12, np.inf, "a positive float"),
        ("weight_decay", 0.0, np.inf, "a float >= 0"),
        ("warmup_fraction", 0.0, 1.0, "a float in [0, 1)"),
        ("validation_fraction", 0.0, 1.0, "a float in [0, 1)"),
        ("tol", 0.0, np.inf, "a float >= 0"),
    ):
        value = getattr(est, name)
        if not (is_real(value) and low <= float(value) < high):
            raise est._fail(name, what, value)
    for name in ("learning_rate", "head_learning_rate"):
        value = getattr(est, name)
        if value is not None and not (is_real(value) and float(value) > 0):
            raise est._fail(name, "a positive float or None", value)
    for name in ("verbose", "checkpointing"):
        if not isinstance(getattr(est, name), bool | np.bool_ | Integral):
            raise est._fail(name, "a bool", getattr(est, name))
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    lr = est.learning_rate or DEFAULT_LEARNING_RATES[est.train]
    if est.train == "head":  # only the head is trained: learning_rate is its rate
        head_lr = est.head_learning_rate or lr
    else:
        head_lr = est.head_learning_rate or DEFAULT_LEARNING_RATES["head"]
    train = PairTrainOptions(
        max_epochs=int(est.max_epochs),
        learning_rate=float(lr),
        head_learning_rate=float(head_lr),
        weight_decay=float(est.weight_decay),
        warmup_fraction=float(est.warmup_fraction),
        batch_pairs=int(est.batch_pairs or DEFAULT_BATCH_PAIRS),
        n_iter_no_change=est.n_iter_no_change,
        tol=float(est.tol),
        autocast=None if est.dtype == "float32" else DTYPES[est.dtype],
        seed=seed,
        pos_weight=float(est.pos_weight),
        min_separation=int(est.min_loop_length) + 1,
        verbose=bool(est.verbose),
    )
    tokens = default_batch_tokens(est.batch_tokens, device.type)
    return SimpleNamespace(train=train, seed=seed, batch_tokens_encoder=int(tokens))


def is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and np.isfinite(float(value))


def positive_int(
    est: Any,
    name: str,
    value: object,
    *,
    none: bool = False,
    zero: bool = False,
) -> None:
    ok = (none and value is None) or (
        isinstance(value, Integral) and not isinstance(value, bool) and value >= (0 if zero else 1)
    )
    if not ok:
        what = "an int >= 0" if zero else "a positive int"
        raise est._fail(name, what + (" or None" if none else ""), value)


def count_steps(data: PairData, options: PairTrainOptions) -> int:
    return pair_steps(data.lengths, options.batch_pairs, options.seed, options.max_epochs)
