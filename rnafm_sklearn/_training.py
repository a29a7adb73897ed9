"""The fine-tuning loop: differentiable pooled features, a head, AdamW, early stopping.

Knows nothing of scikit-learn: the estimators (``_finetune``) validate input, encode
labels and call :func:`train` with token lists and target tensors. Two kinds of feature
source share one loop: precomputed features (frozen encoder, ``train="head"``) and a
differentiable encoder (:func:`pooled_features`, the training twin of ``Runner.pooled``:
same pieces, windows, stitching and pooling, with autograd).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ._encoder import RnaFmEncoder
from ._inference import Plan, Runner, _pool
from ._schedule import epoch_batches, epoch_rng, micro_batches, total_steps, warmup_linear_decay
from ._windows import stitch

__all__ = [
    "Data",
    "DivergedError",
    "Head",
    "TrainOptions",
    "TrainResult",
    "accuracy",
    "check_finite",
    "classification_loss",
    "optimizer_step",
    "pooled_features",
    "r2",
    "regression_loss",
    "train",
]


class Head(nn.Module):
    """Standardised input, then a linear layer, or a one-hidden-layer MLP (GELU) with ``hidden``.

    The input is standardised with fixed statistics (``(x - shift) / scale``, buffers set
    once by :meth:`standardize` from the training rows' initial features, as a
    ``StandardScaler`` in front of the head): pooled language-model features share a large
    common component and vary little around it, which an unscaled head learns slowly.
    """

    def __init__(
        self, in_features: int, out_features: int, hidden: int | None, generator: torch.Generator
    ):
        super().__init__()
        self.register_buffer("shift", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        dims = [in_features] if hidden is None else [in_features, hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims, [*dims[1:], out_features], strict=True):
            layers.append(_init_linear(nn.Linear(a, b), generator))
            layers.append(nn.GELU())
        self.net = nn.Sequential(*layers[:-1])

    def standardize(self, features: torch.Tensor, weights: torch.Tensor) -> None:
        """Set the input statistics: per-feature weighted mean and standard deviation.

        Rows count by their ``weights`` (a row of weight 0 changes nothing, as in the loss);
        a feature that does not vary gets scale 1.
        """
        x = features.detach().double()
        w = weights.detach().double().to(x.device)[:, None] / weights.sum()
        mean = (x * w).sum(0)
        std = ((x - mean).square() * w).sum(0).sqrt()
        std[std <= 1e-12 * (1 + mean.abs())] = 1.0
        self.shift.copy_(mean)
        self.scale.copy_(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.shift) / self.scale)


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear``'s default initial values, drawn from ``generator`` (reproducible)."""
    bound = 1 / math.sqrt(layer.in_features)
    with torch.no_grad():
        layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) * 2 * bound - bound)
        layer.bias.copy_(torch.rand(layer.bias.shape, generator=generator) * 2 * bound - bound)
    return layer


def pooled_features(
    encoder: RnaFmEncoder, runner: Runner, token_lists: Sequence[bytes], plan: Plan
) -> torch.Tensor:
    """``(len(token_lists), width)`` pooled features with autograd, in float32.

    The same numbers as ``Runner.pooled`` (up to float rounding): each sequence is cut into the
    same pieces (windows for a long one), each nucleotide's state is taken from the window
    that owns it, ``<cls>``/``<eos>`` averaged over windows, then pooled. All pieces of the
    given sequences run as one padded batch.
    """
    pieces, ids = runner.padded_pieces(token_lists, plan.window_stride)
    out = encoder(ids, layers=plan.layers)
    states = torch.stack([out[k] for k in plan.layers]).float()  # (G, P, T, E)
    if plan.aggregate == "mean":
        states = states.mean(0, keepdim=True)
    stitched = stitch(pieces, states, len(token_lists))
    return torch.stack([_pool(*seq, plan.poolings).reshape(-1) for seq in stitched])


@dataclass(frozen=True)
class TrainOptions:
    """How to train (resolved by the estimator; see its docstring for each meaning)."""

    max_epochs: int
    learning_rate: float  # peak rate of the encoder tensors (adapters, unfrozen layers)
    head_learning_rate: float  # peak rate of the head
    weight_decay: float
    warmup_fraction: float
    batch_tokens: int  # token budget of one forward/backward pass (memory only)
    n_iter_no_change: int | None
    tol: float
    autocast: torch.dtype | None  # bfloat16/float16 mixed precision, None: float32
    seed: int
    batch_size: int = 16  # rows per optimizer step: the schedule, the same on every device
    verbose: bool = False
    progress: Callable[[int], None] | None = None


@dataclass
class TrainResult:
    """What :func:`train` learned: trained tensors (on the CPU) and the learning curve."""

    head: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor]
    loss_curve: list[float] = field(default_factory=list)
    validation_scores: list[float] = field(default_factory=list)
    best_epoch: int | None = None  # 0-based; None without validation
    n_iter: int = 0

    def fitted_curves(self, validated: bool) -> dict[str, object]:
        """The estimator's scikit-learn-style fitted attributes of this learning curve.

        ``best_validation_score_`` is the score of the epoch whose weights were kept (NaN if
        no epoch scored a number); the validation attributes are None without validation.
        """
        scores = self.validation_scores
        best = None
        if validated:
            best = float("nan") if self.best_epoch is None else scores[self.best_epoch]
        return {
            "loss_curve_": self.loss_curve,
            "validation_scores_": scores if validated else None,
            "best_validation_score_": best,
            "best_epoch_": self.best_epoch,
            "n_iter_": self.n_iter,
        }


@dataclass
class Data:
    """Training or validation rows: token lists (or precomputed features), targets, weights."""

    tokens: Sequence[bytes] | None
    features: torch.Tensor | None
    targets: torch.Tensor  # class indices (long) or standardised values (float, (n, k))
    weights: torch.Tensor  # per-row loss weights (sample x class weight), float32
    costs: list[tuple[int, int]]  # (piece width, pieces) per row, for the token budget
    score_weights: torch.Tensor | None = None  # per-row validation-score weights (default: weights)

    def __len__(self) -> int:
        return len(self.targets)


def train(
    *,
    head: Head,
    encoder: RnaFmEncoder | None,
    encoder_params: dict[str, nn.Parameter],
    runner: Runner,
    plan: Plan,
    data: Data,
    validation: Data | None,
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float],
    options: TrainOptions,
) -> TrainResult:
    """Train ``head`` (and ``encoder_params``) to minimise ``loss`` on ``data``.

    ``loss(outputs, targets, weights)`` is a weighted mean over a batch; ``score`` (higher is
    better) rates the validation rows after every epoch. With ``validation`` the tensors of
    the best-scoring epoch (the first maximum) are returned, and training stops after
    ``n_iter_no_change`` epochs that do not beat the best score so far by more than ``tol``
    (scikit-learn's ``MLPClassifier`` rule). AdamW; the learning rate warms up linearly over
    ``warmup_fraction`` of all steps of ``max_epochs``, then decays linearly to zero: the
    last step of the last epoch runs at ``learning_rate / decay steps``. The head trains at
    ``head_learning_rate``, the encoder tensors at ``learning_rate`` (same schedule).
    Under float16 autocast the loss is scaled dynamically (``GradScaler``): steps whose
    gradients overflow are skipped, and still count in the schedule.

    Each step holds ``batch_size`` rows (a random order per epoch, :func:`epoch_batches`),
    run in micro-batches under ``batch_tokens`` whose gradients are accumulated (see
    :func:`_accumulate`). A non-finite loss (outside float16) or non-finite trained tensors
    after an epoch raise :class:`DivergedError` naming the learning rates.
    """
    device = next(head.parameters()).device
    groups = [{"params": list(head.parameters()), "lr": options.head_learning_rate}]
    if encoder_params:
        groups.append({"params": list(encoder_params.values()), "lr": options.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=options.weight_decay)
    total = total_steps(len(data), options.batch_size, options.max_epochs)
    scheduler = warmup_linear_decay(optimizer, total, options.warmup_fraction)
    # float16 (unlike bfloat16) has float32's precision but not its range: small gradients
    # flush to zero unless the loss is scaled up (and steps with inf/NaN gradients skipped)
    scaler = torch.amp.GradScaler(device.type, enabled=options.autocast == torch.float16)
    result = TrainResult(head={}, encoder={})
    best = -math.inf
    since_best = 0
    for epoch in range(options.max_epochs):
        head.train()
        total_loss = total_weight = 0.0
        for batch in epoch_batches(len(data), options.batch_size, epoch_rng(options.seed, epoch)):
            optimizer.zero_grad(set_to_none=True)
            step_loss, step_weight = _accumulate(
                head, encoder, runner, plan, data, batch, loss, scaler, options, device
            )
            optimizer_step(scaler, optimizer, step_loss, epoch, options)
            if scaler.is_enabled():  # a skipped first step (inf gradients) is not a misuse
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler", UserWarning)
                    scheduler.step()
            else:
                scheduler.step()
            total_loss += step_loss * step_weight
            total_weight += step_weight
            if options.progress is not None:
                options.progress(1)
        check_finite(head, encoder_params, epoch, options)
        result.loss_curve.append(total_loss / max(total_weight, 1e-12))
        result.n_iter = epoch + 1
        line = f"epoch {epoch + 1}/{options.max_epochs}: loss {result.loss_curve[-1]:.5f}"
        if validation is not None:
            value = _validate(head, encoder, runner, plan, validation, score, options, device)
            result.validation_scores.append(value)
            line += f", validation score {value:.5f}"
            # a NaN score is no improvement (``value < best + tol`` would be False for it)
            since_best = 0 if value >= best + options.tol else since_best + 1
            if value > best:
                best, result.best_epoch = value, epoch
                result.head, result.encoder = _snapshot(head, encoder_params)
        if options.verbose:
            sys.stderr.write(line + "\n")
        if (
            validation is not None
            and options.n_iter_no_change is not None
            and since_best >= options.n_iter_no_change
        ):
            break
    if validation is None or result.best_epoch is None:  # no score was a number: the last
        result.head, result.encoder = _snapshot(head, encoder_params)
    return result


class DivergedError(ValueError):
    """Training produced a non-finite loss or weights: the learning rate is too large."""


class _Rates(Protocol):
    """What the divergence checks read of a loop's options (fine-tuning or structure)."""

    learning_rate: float
    head_learning_rate: float


def _diverged(what: str, epoch: int, options: _Rates) -> str:
    rates = f"learning_rate={options.learning_rate:g}"
    if options.head_learning_rate != options.learning_rate:
        rates += f", head_learning_rate={options.head_learning_rate:g}"
    return (
        f"Training diverged in epoch {epoch + 1}: {what}. The learning rate is too large "
        f"({rates}): lower learning_rate (and head_learning_rate)."
    )


def optimizer_step(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    step_loss: float,
    epoch: int,
    options: _Rates,
) -> None:
    """One optimizer step (through the float16 loss scaler), or :class:`DivergedError`.

    Under float16 a non-finite loss is an overflow the scaler skips (the weights are checked
    after the epoch); otherwise it is divergence, and the step would spread NaN. A rate past
    float32's range (e.g. 1e38) overflows inside AdamW's update: divergence too. Shared by
    the fine-tuning loop and the structure head's.
    """
    if not scaler.is_enabled() and not math.isfinite(step_loss):
        raise DivergedError(_diverged(f"the loss is {step_loss}", epoch, options))
    try:
        scaler.step(optimizer)
    except RuntimeError as exc:
        if "overflow" not in str(exc):
            raise
        raise DivergedError(_diverged(f"the update overflowed ({exc})", epoch, options)) from None
    scaler.update()


def check_finite(
    head: nn.Module, encoder_params: dict[str, nn.Parameter], epoch: int, options: _Rates
) -> None:
    """:class:`DivergedError` when a trained tensor holds NaN or inf after ``epoch``."""
    bad = _non_finite(head, encoder_params)
    if bad is not None:
        raise DivergedError(_diverged(f"{bad} holds NaN or inf", epoch, options))


def _non_finite(head: nn.Module, encoder_params: dict[str, nn.Parameter]) -> str | None:
    """The name of the first trained tensor holding NaN or inf, or None."""
    tensors = [(f"head.{k}", p) for k, p in head.named_parameters()]
    tensors += [(k, p) for k, p in encoder_params.items()]
    with torch.no_grad():
        for name, tensor in tensors:
            if not bool(torch.isfinite(tensor).all()):
                return f"the trained tensor {name!r}"
    return None


def _accumulate(
    head: Head,
    encoder: RnaFmEncoder | None,
    runner: Runner,
    plan: Plan,
    data: Data,
    batch: list[int],
    loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    scaler: torch.amp.GradScaler,
    options: TrainOptions,
    device: torch.device,
) -> tuple[float, float]:
    """Backward pass of one step's rows, in micro-batches under the token budget.

    The step's loss is the weighted mean over all its rows; a micro-batch contributes its
    own weighted mean times its share of the step's weight, so the accumulated gradient is
    that of the whole step (up to float rounding), however the rows are split. Returns the
    step's loss and its total weight.
    """
    rows = torch.as_tensor(batch, device=device)
    step_weight = float(data.weights.index_select(0, rows).sum())
    if data.features is not None:  # precomputed features: the whole step at once
        groups = [list(range(len(batch)))]
    else:
        groups = micro_batches([data.costs[i] for i in batch], options.batch_tokens)
    step_loss = 0.0
    for group in groups:
        part = [batch[j] for j in group]
        idx = torch.as_tensor(part, device=device)
        w = data.weights.index_select(0, idx)
        with _autocast(device, options.autocast):
            out = head(_features(encoder, runner, plan, data, part, device))
        share = float(w.sum()) / max(step_weight, 1e-12)
        part_loss = loss(out.float(), data.targets.index_select(0, idx), w) * share
        scaler.scale(part_loss).backward()
        step_loss += part_loss.item()
    return step_loss, step_weight


def _features(
    encoder: RnaFmEncoder | None,
    runner: Runner,
    plan: Plan,
    data: Data,
    batch: list[int],
    device: torch.device,
) -> torch.Tensor:
    if data.features is not None:
        return data.features.index_select(0, torch.as_tensor(batch, device=device))
    assert encoder is not None and data.tokens is not None
    return pooled_features(encoder, runner, [data.tokens[i] for i in batch], plan)


def _validate(
    head: Head,
    encoder: RnaFmEncoder | None,
    runner: Runner,
    plan: Plan,
    data: Data,
    score: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], float],
    options: TrainOptions,
    device: torch.device,
) -> float:
    head.eval()
    outputs = []
    with torch.no_grad():
        for batch in micro_batches(data.costs, options.batch_tokens):
            with _autocast(device, options.autocast):
                out = head(_features(encoder, runner, plan, data, batch, device)).float()
            outputs.append((batch, out))
    order = torch.as_tensor([i for batch, _ in outputs for i in batch], device=device)
    values = torch.cat([out for _, out in outputs])
    ordered = torch.empty_like(values)
    ordered[order] = values
    weights = data.weights if data.score_weights is None else data.score_weights
    return score(ordered, data.targets, weights)


def _snapshot(
    head: Head, encoder_params: dict[str, nn.Parameter]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """CPU copies of the head's state and the trained encoder tensors."""
    heads = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
    encoder = {k: v.detach().to("cpu", copy=True) for k, v in encoder_params.items()}
    return heads, encoder


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# ------------------------------------------------------------------------- losses, scores
def classification_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean cross-entropy over rows (class weights are folded into ``w``)."""
    per_row = F.cross_entropy(logits, y, reduction="none")
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


def regression_loss(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted mean squared error over rows, averaged over outputs (standardised targets)."""
    per_row = (logits - y).square().mean(1)
    return (per_row * w).sum() / w.sum().clamp_min(1e-12)


def accuracy(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Weighted accuracy (scikit-learn's ``ClassifierMixin.score``)."""
    return float(((logits.argmax(1) == y).float() * w).sum() / w.sum())


def r2(pred: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> float:
    """Weighted R^2, averaged uniformly over outputs (``RegressorMixin.score``)."""
    w = w[:, None]
    mean = (y * w).sum(0) / w.sum()
    residual = ((y - pred).square() * w).sum(0)
    spread = ((y - mean).square() * w).sum(0)
    per_output = torch.where(spread > 0, 1 - residual / spread.clamp_min(1e-30), 0.0)
    return float(per_output.mean())
