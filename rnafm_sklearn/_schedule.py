"""The optimisation schedule of a fit: which rows make each step, in which passes, at what rate.

The same on every device: an epoch's steps depend on the number of rows, ``batch_size`` and
the seed only (:func:`epoch_batches`, :func:`epoch_rng`); the token budget only splits a step
into passes whose gradients are accumulated (:func:`micro_batches`). The learning rate warms
up and decays linearly over all steps (:func:`warmup_linear_decay`). Shared by the
fine-tuning loop (``_training``) and the structure head's (``_structure_training``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._windows import pack_batches

__all__ = [
    "epoch_batches",
    "epoch_rng",
    "micro_batches",
    "steps_per_epoch",
    "total_steps",
    "warmup_linear_decay",
]


def epoch_batches(n_rows: int, batch_size: int, rng: np.random.Generator) -> list[list[int]]:
    """One epoch's optimisation steps: a random order of the rows cut every ``batch_size``.

    The schedule depends on the number of rows, ``batch_size`` and the generator only (the
    last step may hold fewer rows): not on sequence lengths, the token budget or the device.
    """
    order = rng.permutation(n_rows).tolist()
    return [order[i : i + batch_size] for i in range(0, n_rows, batch_size)]


def micro_batches(costs: Sequence[tuple[int, int]], budget: int) -> list[list[int]]:
    """Positions into ``costs`` grouped so that each group fits the token ``budget``.

    ``costs[i]`` is ``(width, pieces)`` of a row (its longest piece in tokens, its number of
    pieces): a group holds rows while ``max width * total pieces`` stays within ``budget``
    (padding counted, as in inference; rows sorted by width, longest first); a row over the
    budget gets a group of its own. Only memory depends on it: the gradients of a step's
    groups are accumulated into the gradient of the whole step.
    """
    return pack_batches([w for w, _ in costs], budget, [k for _, k in costs])


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """The generator of one epoch's batch order (the same whether or not epochs before ran)."""
    return np.random.default_rng([seed, epoch])


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """The number of optimizer steps of every epoch."""
    return -(-n_rows // batch_size)


def total_steps(n_rows: int, batch_size: int, max_epochs: int) -> int:
    """The optimizer steps of a whole fit (``max_epochs`` epochs, no early stop)."""
    return max_epochs * steps_per_epoch(n_rows, batch_size)


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning-rate schedule of every fit: linear warm-up over ``warmup_fraction`` of the
    ``total`` steps (at least one step when the fraction is positive), then linear decay to
    zero at ``total``."""
    total = max(1, total)
    warmup = max(1, round(warmup_fraction * total)) if warmup_fraction else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
