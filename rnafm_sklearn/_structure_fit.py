"""What ``RnaFmStructurePredictor.fit`` does between its checks and the training loop.

The estimator validates parameters, sequences and structures; :func:`fit_structure` then
loads the base weights, starts the head (from the one stored with ``model``, else fresh),
computes the frozen states once (``train="head"``) or adds LoRA adapters (``train="lora"``),
holds out validation rows, runs ``_structure_training.train_pair_head`` and calibrates the
threshold on the validation rows. It changes nothing on the estimator: the estimator commits
the returned :class:`StructureFit` in one step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from ._adapters import TrainSpec, trainable_encoder
from ._encoder_config import RnaFmConfig
from ._inference import Plan, Runner
from ._input import _deduplicate
from ._models import DTYPES, absolute_source, get_encoder, weights_fingerprint
from ._pairs import base_pair_f1
from ._structure_heads import (
    UNKNOWN_ORIGIN_THRESHOLD,
    build_head,
    head_forward,
    head_spec,
    pretrained_head,
)
from ._structure_options import count_steps
from ._structure_predict import decode
from ._structure_training import (
    PairData,
    PairTrainOptions,
    PairTrainResult,
    train_pair_head,
)

if TYPE_CHECKING:
    from ._structure import RnaFmStructurePredictor

__all__ = ["StructureFit", "fit_structure"]


@dataclass(frozen=True)
class StructureFit:
    """What a fit produced, for the estimator to commit."""

    source: str | os.PathLike  # ``model``, a local path made absolute
    fingerprint: str  # of the base weights
    head_spec: dict[str, int]
    result: PairTrainResult
    threshold: float  # calibrated on the validation rows, else the head's own
    validated: bool  # validation rows were held out


def fit_structure(
    est: RnaFmStructurePredictor,
    tokens: list[bytes],
    pairs: list[np.ndarray],
    config: RnaFmConfig,
    device: torch.device,
    stride: int,
    options: SimpleNamespace,
) -> StructureFit:
    """Train a pair head (and adapters) on validated token lists and their pairs.

    ``options`` is ``_structure_options.train_options(est, device)``.
    """
    mode = est.train
    source = absolute_source(est.model)  # a local path stays valid after unpickling
    base = get_encoder(source, device, DTYPES[est.dtype] if mode == "head" else torch.float32)
    fingerprint = weights_fingerprint(base)
    plan = Plan(layers=(config.num_layers,), window_stride=stride)
    train_rows, val_rows = _split(est.validation_fraction, len(tokens), options.seed)

    generator = torch.Generator().manual_seed(options.seed)
    start = pretrained_head(source, torch.device("cpu"), torch.float32)
    spec = (
        head_spec(start[0])
        if start is not None
        else {
            "embed_dim": config.hidden_size,
            "channels": int(est.head_channels),
            "blocks": int(est.head_blocks),
        }
    )
    head = build_head(spec, generator=generator)
    if start is not None:  # a copy: the registry's head is never trained in place
        head.load_state_dict(start[0].state_dict())
    head = head.to(device)
    runner = Runner(base, batch_tokens=options.batch_tokens_encoder)
    encoder, params, states = None, {}, None
    if mode == "head":
        unique, inverse = _deduplicate(tokens)
        frozen = est._runner(base)
        per_unique = est._run(frozen, len(unique), "seq", lambda: frozen.per_token(unique, plan))
        states = [torch.from_numpy(per_unique[j]).to(device) for j in inverse.tolist()]
    else:
        encoder, params = trainable_encoder(
            base,
            TrainSpec("lora"),
            up_to_layer=config.num_layers,
            lora_rank=int(est.lora_rank),
            lora_alpha=float(est.lora_alpha),
            lora_targets=est.lora_targets,
            generator=generator,
        )
        encoder.checkpointing = bool(est.checkpointing)
        runner = Runner(encoder, batch_tokens=options.batch_tokens_encoder)

    def rows(idx: np.ndarray) -> PairData:
        return PairData(
            lengths=[len(tokens[i]) for i in idx],
            pairs=[pairs[i] for i in idx],
            states=None if states is None else [states[i] for i in idx],
            tokens=None if states is not None else [tokens[i] for i in idx],
        )

    data = rows(train_rows)
    validation = rows(val_rows) if val_rows is not None else None
    threshold = _start_threshold(start)
    decode_threshold = threshold if est.threshold is None else float(est.threshold)

    def score(probs: list[np.ndarray], d: PairData) -> float:
        return _mean_f1(probs, d, [tokens[i] for i in val_rows], decode_threshold, est)

    progress = SimpleNamespace(progress=None)
    steps = count_steps(data, options.train)
    devices = [device] if device.type == "cuda" else []
    # dropout draws from the global generator: seeded here, restored afterwards
    with est._progress(progress, steps, "step"), torch.random.fork_rng(devices=devices):
        torch.manual_seed(options.seed)
        train_opts = options.train
        if progress.progress is not None:
            train_opts = PairTrainOptions(**{**train_opts.__dict__, "progress": progress.progress})
        result = train_pair_head(
            head=head,
            forward=head_forward,
            encoder=encoder,
            encoder_params=params,
            runner=runner,
            plan=plan,
            data=data,
            validation=validation,
            score=score,
            options=train_opts,
        )
    if validation is not None and est.threshold is None and result.validation_probabilities:
        threshold = _calibrate(
            result.validation_probabilities, validation, [tokens[i] for i in val_rows], est
        )
    return StructureFit(
        source=source,
        fingerprint=fingerprint,
        head_spec=dict(spec),
        result=result,
        threshold=float(threshold),
        validated=validation is not None,
    )


def _split(fraction: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rows = np.arange(n)
    if not fraction:
        return rows, None
    try:
        a, b = train_test_split(rows, test_size=fraction, random_state=seed)
    except ValueError as exc:
        raise ValueError(
            f"validation_fraction={fraction} cannot split {n} structures "
            f"({exc}). Use more rows, a larger validation_fraction or 0 (no validation)."
        ) from None
    return np.sort(a), np.sort(b)


def _start_threshold(start: tuple[nn.Module, float | None] | None) -> float:
    if start is not None and start[1] is not None:
        return float(start[1])
    return UNKNOWN_ORIGIN_THRESHOLD


def _mean_f1(
    probs: list[np.ndarray],
    data: PairData,
    tokens: list[bytes],
    threshold: float,
    est: RnaFmStructurePredictor,
) -> float:
    pred = [decode(est, p, t, threshold) for p, t in zip(probs, tokens, strict=True)]
    return float(np.mean(base_pair_f1(data.pairs, pred, average=False))) if pred else 0.0


def _calibrate(
    probs: list[np.ndarray], data: PairData, tokens: list[bytes], est: RnaFmStructurePredictor
) -> float:
    """The threshold (on a grid of 0.02 .. 0.98) with the highest mean validation F1."""
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
    scores = [_mean_f1(probs, data, tokens, float(t), est) for t in grid]
    return float(grid[int(np.argmax(scores))])
