"""Training parameters of ``RnaFmClassifier`` and ``RnaFmRegressor``: defaults and checks.

:func:`fit_settings` checks every parameter of a fine-tuning estimator before any weights are
loaded (the shared ones through ``RnaFmEstimator``, the training ones here) and resolves them
into the :class:`Settings` of one fit: the model source, device, pooling plan, what to train
(``_adapters.TrainSpec``) and the ``_training.TrainOptions``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state

from ._adapters import LORA_TARGETS, TrainSpec, parse_train
from ._choices import default_batch_tokens
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError
from ._inference import Plan
from ._models import DTYPES, absolute_source
from ._training import TrainOptions

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_HEAD_LEARNING_RATE",
    "DEFAULT_LEARNING_RATES",
    "Settings",
    "check_training_params",
    "fit_settings",
]


# learning_rate=None: a rate per training mode (AdamW) for what it trains in the encoder. The
# adapters start from scratch (as a zero update) and take larger steps than unfrozen
# pretrained layers, as usual for fine-tuning transformers. The head (standardised input,
# trained from scratch) takes 1e-2: on frozen features it then matches a converged
# LogisticRegression within 10-20 epochs (examples/finetune_riboswitch.py, tiny model).
DEFAULT_LEARNING_RATES = {"lora": 1e-3, "top": 1e-4, "all": 3e-5}
DEFAULT_HEAD_LEARNING_RATE = 1e-2
# Rows per optimisation step, the same on every device. 16 is the small end of the batch sizes
# usual for fine-tuning transformers (16 or 32) and about what the CPU default token budget
# (1024) held before the two were separated, for sequences of ~60 nt: the default learning
# rates above were chosen under it.
DEFAULT_BATCH_SIZE = 16


@dataclass(frozen=True)
class Settings:
    """One fit's checked parameters, resolved (no weights loaded)."""

    source: str | os.PathLike  # ``model``, a local path made absolute
    config: RnaFmConfig
    device: torch.device
    plan: Plan
    spec: TrainSpec
    options: TrainOptions


def fit_settings(est: Any) -> Settings:
    """Check every parameter (no weights loaded) and resolve the training options."""
    est._check_pooling(est.pooling)
    config, device, stride = est._check_common(fit=True)
    source = absolute_source(est.model)
    plan = est._plan(stride, config.num_layers)
    try:
        spec = parse_train(est.train, config.num_layers)
    except ValueError as exc:
        raise InvalidParameterError(f"The 'train' parameter: {exc}") from None
    check_training_params(est)
    top_state = max(plan.layers)
    first_trained = {"lora": 1, "top": config.num_layers - spec.top + 1}.get(spec.mode, 0)
    if top_state < first_trained:
        raise InvalidParameterError(
            f"train={est.train!r} trains layer {first_trained} and above, but "
            f"layers={est.layers!r} pools hidden state {top_state}, which does not depend "
            "on them: nothing would be learned in the encoder. Pool a later layer or use "
            "train='head'."
        )
    seed = int(check_random_state(est.random_state).randint(np.iinfo(np.int32).max))
    if spec.mode == "head":  # only the head is trained: learning_rate is its rate
        lr = head_lr = est.head_learning_rate or est.learning_rate or DEFAULT_HEAD_LEARNING_RATE
    else:
        lr = est.learning_rate or DEFAULT_LEARNING_RATES[spec.mode]
        head_lr = est.head_learning_rate or DEFAULT_HEAD_LEARNING_RATE
    budget = default_batch_tokens(est.batch_tokens, device.type)
    autocast = None if est.dtype == "float32" else DTYPES[est.dtype]
    options = TrainOptions(
        max_epochs=int(est.max_epochs),
        learning_rate=float(lr),
        head_learning_rate=float(head_lr),
        weight_decay=float(est.weight_decay),
        warmup_fraction=float(est.warmup_fraction),
        batch_size=int(est.batch_size),
        batch_tokens=int(budget),
        n_iter_no_change=est.n_iter_no_change,
        tol=float(est.tol),
        autocast=autocast,
        seed=seed,
        verbose=bool(est.verbose),
    )
    return Settings(source, config, device, plan, spec, options)


def check_training_params(est: Any) -> None:
    """The training parameters (those ``RnaFmEstimator`` does not check)."""

    def positive_int(name: str, value: object, none: bool = False) -> None:
        ok = (none and value is None) or (
            isinstance(value, Integral) and not isinstance(value, bool) and value > 0
        )
        if not ok:
            raise est._fail(name, "a positive int" + (" or None" if none else ""), value)

    def real(name: str, value: object, low: float, high: float, what: str) -> None:
        ok = isinstance(value, Real) and not isinstance(value, bool)
        if not ok or not low <= float(value) < high:
            raise est._fail(name, what, value)

    positive_int("head_hidden", est.head_hidden, none=True)
    positive_int("lora_rank", est.lora_rank)
    real("lora_alpha", est.lora_alpha, 1e-12, float("inf"), "a positive float")
    est._check_choice("lora_targets", est.lora_targets, tuple(LORA_TARGETS))
    positive_int("max_epochs", est.max_epochs)
    positive_int("batch_size", est.batch_size)
    for name in ("learning_rate", "head_learning_rate"):
        if getattr(est, name) is not None:
            real(name, getattr(est, name), 1e-30, float("inf"), "a positive float or None")
    real("weight_decay", est.weight_decay, 0.0, float("inf"), "a float >= 0")
    real("warmup_fraction", est.warmup_fraction, 0.0, 1.0, "a float in [0, 1)")
    real("validation_fraction", est.validation_fraction, 0.0, 1.0, "a float in [0, 1)")
    positive_int("n_iter_no_change", est.n_iter_no_change, none=True)
    real("tol", est.tol, 0.0, float("inf"), "a float >= 0")
    for name in ("verbose", "warm_start", "checkpointing"):
        if not isinstance(getattr(est, name), bool | np.bool_ | Integral):
            raise est._fail(name, "a bool", getattr(est, name))
