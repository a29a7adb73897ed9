"""Training a pair head: per-nucleotide states, a class-weighted pair loss, early stopping on F1.

Knows nothing of scikit-learn: ``RnaFmStructurePredictor.fit`` validates input, turns the
structures into pair lists and calls :func:`train_pair_head`. Two sources of states share one
loop, as in ``_training``: states computed once from the frozen encoder (``train="head"``) and
a differentiable encoder with adapters (:func:`token_states`, the training twin of
``Runner.per_token``: same pieces, windows and stitching, with autograd). The batching,
learning-rate schedule and early-stopping rule are those of ``_training.train``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._encoder import RnaFmEncoder
from ._inference import Plan, Runner
from ._schedule import epoch_rng, warmup_linear_decay
from ._training import TrainResult, _autocast, check_finite, optimizer_step
from ._windows import pack_batches, stitch

__all__ = [
    "PairData",
    "PairTrainOptions",
    "PairTrainResult",
    "pad_states",
    "pair_loss",
    "pair_batches",
    "pair_steps",
    "pair_targets",
    "token_states",
    "train_pair_head",
]


@dataclass(frozen=True)
class PairTrainOptions:
    """How to train a pair head (resolved by the estimator; see its docstring)."""

    max_epochs: int
    learning_rate: float  # peak rate of the adapters
    head_learning_rate: float  # peak rate of the head
    weight_decay: float
    warmup_fraction: float
    batch_pairs: int  # map elements per step: max(L) * sum(L) <= batch_pairs
    n_iter_no_change: int | None
    tol: float
    autocast: torch.dtype | None
    seed: int
    pos_weight: float  # loss weight of a paired (i, j) relative to an unpaired one
    min_separation: int  # pairs (i, j) with j - i >= min_separation count in the loss
    verbose: bool = False
    progress: Callable[[int], None] | None = None


@dataclass
class PairData:
    """Rows to train on or validate: states (frozen) or token lists (adapters), and pairs."""

    lengths: list[int]
    pairs: list[np.ndarray]  # (n_pairs, 2) int, i < j, 0-based
    states: list[torch.Tensor] | None = None  # (L, E) float32 on the device, frozen encoder
    tokens: Sequence[bytes] | None = None  # token lists, differentiable encoder

    def __len__(self) -> int:
        return len(self.lengths)


@dataclass
class PairTrainResult(TrainResult):
    """What :func:`train_pair_head` learned (CPU tensors), its learning curve, and the
    validation maps of the kept epoch."""

    validation_probabilities: list[np.ndarray] | None = None  # at the best epoch


def token_states(
    encoder: RnaFmEncoder, runner: Runner, token_lists: Sequence[bytes], plan: Plan
) -> list[torch.Tensor]:
    """Per sequence, ``(L, E)`` float32 states of ``plan.layers[0]`` with autograd.

    The numbers of ``Runner.per_token`` (up to float rounding): the same pieces (windows for a
    long sequence), each nucleotide's state from the window that owns it. All pieces of the
    given sequences run as one padded batch.
    """
    pieces, ids = runner.padded_pieces(token_lists, plan.window_stride)
    states = encoder(ids, layers=plan.layers[:1])[plan.layers[0]].float()  # (P, T, E)
    return [h for h, _, _ in stitch(pieces, states, len(token_lists))]


def pad_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(B, Lmax, E)`` zero-padded states and the ``(B,)`` lengths."""
    lengths = torch.tensor([s.shape[0] for s in states], device=states[0].device)
    out = states[0].new_zeros((len(states), int(lengths.max()), states[0].shape[1]))
    for b, s in enumerate(states):
        out[b, : s.shape[0]] = s
    return out, lengths


def pair_targets(
    pairs: Sequence[np.ndarray], lengths: Sequence[int], device: torch.device
) -> torch.Tensor:
    """``(B, Lmax, Lmax)`` float 0/1 targets: 1 at ``(i, j)`` and ``(j, i)`` of every pair."""
    width = max(lengths)
    out = torch.zeros((len(pairs), width, width), device=device)
    for b, p in enumerate(pairs):
        if len(p):
            idx = torch.as_tensor(np.asarray(p, dtype=np.int64), device=device)
            out[b, idx[:, 0], idx[:, 1]] = 1.0
            out[b, idx[:, 1], idx[:, 0]] = 1.0
    return out


def pair_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    lengths: torch.Tensor,
    *,
    pos_weight: float,
    min_separation: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class-weighted binary cross-entropy over the candidate pairs of each map.

    Candidates are ``(i, j)`` with ``i + min_separation <= j < L`` (the upper triangle: the
    head's output is symmetric); a paired candidate weighs ``pos_weight``, an unpaired one 1.
    Returns the weighted mean over the batch's candidates and their total weight (so that an
    epoch's loss is a weighted mean over all candidates).
    """
    width = logits.shape[-1]
    pos = torch.arange(width, device=logits.device)
    upper = (pos[None, :] - pos[:, None]) >= min_separation  # (L, L)
    inside = pos[None, :] < lengths[:, None]  # (B, L)
    mask = upper[None] & inside[:, :, None] & inside[:, None, :]
    weights = torch.where(targets > 0, pos_weight, 1.0) * mask
    per_pair = F.binary_cross_entropy_with_logits(logits.float(), targets, reduction="none")
    total = weights.sum()
    return (per_pair * weights).sum() / total.clamp_min(1e-12), total.detach()


def pair_batches(lengths: Sequence[int], budget: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch's batches: a random order cut greedily so that ``max(L) * sum(L)`` (about
    ``B * L^2``, the map elements) stays within ``budget``; a row over it is a batch alone."""
    return pack_batches(lengths, budget, lengths, rng.permutation(len(lengths)).tolist())


def pair_steps(lengths: Sequence[int], budget: int, seed: int, epochs: int) -> int:
    """Optimizer steps of ``epochs`` epochs (batch counts vary with the order)."""
    return sum(len(pair_batches(lengths, budget, epoch_rng(seed, e))) for e in range(epochs))


HeadForward = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def train_pair_head(
    *,
    head: nn.Module,
    forward: HeadForward,
    encoder: RnaFmEncoder | None,
    encoder_params: dict[str, nn.Parameter],
    runner: Runner,
    plan: Plan,
    data: PairData,
    validation: PairData | None,
    score: Callable[[list[np.ndarray], PairData], float],
    options: PairTrainOptions,
) -> PairTrainResult:
    """Train ``head`` (and ``encoder_params``) on ``data``; keep the best validation epoch.

    ``forward(head, states (B, Lmax, E), lengths (B,))`` gives logits ``(B, Lmax, Lmax)``;
    ``score(probabilities, validation)`` (higher is better, e.g. mean base-pair F1) rates
    the validation rows after every epoch. Schedule (AdamW, linear warm-up then linear decay
    to zero), early stopping (``n_iter_no_change`` epochs without a gain above ``tol``) and
    float16 loss scaling as in ``_training.train``.
    """
    device = next(head.parameters()).device
    groups = [{"params": [p for p in head.parameters()], "lr": options.head_learning_rate}]
    if encoder_params:
        groups.append({"params": list(encoder_params.values()), "lr": options.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    budget = options.batch_pairs
    total = pair_steps(data.lengths, budget, options.seed, options.max_epochs)
    scheduler = warmup_linear_decay(optimizer, total, options.warmup_fraction)
    scaler = torch.amp.GradScaler(device.type, enabled=options.autocast == torch.float16)
    result = PairTrainResult(head={}, encoder={})
    best, since_best = -math.inf, 0
    for epoch in range(options.max_epochs):
        head.train()
        loss_sum = weight_sum = 0.0
        for batch in pair_batches(data.lengths, budget, epoch_rng(options.seed, epoch)):
            states = _batch_states(encoder, runner, plan, data, batch)
            x, lengths = pad_states(states)
            with _autocast(device, options.autocast):
                logits = forward(head, x, lengths)
            targets = pair_targets(
                [data.pairs[i] for i in batch], [data.lengths[i] for i in batch], device
            )
            loss, weight = pair_loss(
                logits.float(),
                targets,
                lengths,
                pos_weight=options.pos_weight,
                min_separation=options.min_separation,
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            step_loss = loss.item()
            optimizer_step(scaler, optimizer, step_loss, epoch, options)
            scheduler.step()
            loss_sum += step_loss * float(weight)
            weight_sum += float(weight)
            if options.progress is not None:
                options.progress(1)
        check_finite(head, encoder_params, epoch, options)
        result.loss_curve.append(loss_sum / max(weight_sum, 1e-12))
        result.n_iter = epoch + 1
        line = f"epoch {epoch + 1}/{options.max_epochs}: loss {result.loss_curve[-1]:.5f}"
        if validation is not None:
            probs = predict_probabilities(head, forward, encoder, runner, plan, validation, options)
            value = score(probs, validation)
            result.validation_scores.append(value)
            line += f", validation F1 {value:.5f}"
            since_best = 0 if value >= best + options.tol else since_best + 1
            if value > best:
                best, result.best_epoch = value, epoch
                result.head, result.encoder = _snapshot(head, encoder_params)
                result.validation_probabilities = probs
        if options.verbose:
            sys.stderr.write(line + "\n")
        if (
            validation is not None
            and options.n_iter_no_change is not None
            and since_best >= options.n_iter_no_change
        ):
            break
    if validation is None or result.best_epoch is None:
        result.head, result.encoder = _snapshot(head, encoder_params)
    head.eval()
    return result


def predict_probabilities(
    head: nn.Module,
    forward: HeadForward,
    encoder: RnaFmEncoder | None,
    runner: Runner,
    plan: Plan,
    data: PairData,
    options: PairTrainOptions,
) -> list[np.ndarray]:
    """Sigmoid of the head's logits for every row of ``data`` (eval mode, no gradients)."""
    device = next(head.parameters()).device
    head.eval()
    out: list[np.ndarray | None] = [None] * len(data)
    with torch.no_grad():
        for batch in pair_batches(data.lengths, options.batch_pairs, np.random.default_rng(0)):
            x, lengths = pad_states(_batch_states(encoder, runner, plan, data, batch))
            with _autocast(device, options.autocast):
                logits = forward(head, x, lengths).float()
            probs = torch.sigmoid(logits).cpu().numpy()
            for b, i in enumerate(batch):
                n = data.lengths[i]
                out[i] = probs[b, :n, :n]
    return out  # type: ignore[return-value]


def _batch_states(
    encoder: RnaFmEncoder | None, runner: Runner, plan: Plan, data: PairData, batch: list[int]
) -> list[torch.Tensor]:
    if data.states is not None:
        return [data.states[i] for i in batch]
    assert encoder is not None and data.tokens is not None
    return token_states(encoder, runner, [data.tokens[i] for i in batch], plan)


def _snapshot(
    head: nn.Module, encoder_params: dict[str, nn.Parameter]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    heads = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
    encoder = {k: v.detach().to("cpu", copy=True) for k, v in encoder_params.items()}
    return heads, encoder
