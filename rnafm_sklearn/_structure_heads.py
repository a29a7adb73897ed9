"""The estimator's view of pair heads: build, run, find in a checkpoint, save.

One place that knows ``_pair_head`` and the registry's structure functions, so that the
``_structure*`` estimator modules read as estimator logic only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ._checkpoint_native import save_model
from ._encoder import RnaFmEncoder
from ._models import get_pair_head
from ._pair_head import PairHead

__all__ = [
    "UNKNOWN_ORIGIN_THRESHOLD",
    "build_head",
    "head_forward",
    "head_spec",
    "pretrained_head",
    "save_structure",
]

# The decision threshold of a head that stores none (an official file of unknown origin, a
# fit without validation rows): the official Python functions' default.
UNKNOWN_ORIGIN_THRESHOLD = 0.5


def build_head(spec: Mapping[str, object], generator: torch.Generator | None) -> PairHead:
    """A new :class:`PairHead` of ``spec`` (its ``config``); initial weights drawn from
    ``generator``'s seed (reproducible, the global RNG untouched)."""
    if generator is None:
        return PairHead(**spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return PairHead(**spec)


def head_spec(head: nn.Module) -> dict[str, object]:
    """The constructor arguments that rebuild ``head``."""
    return dict(head.config)


def head_forward(head: nn.Module, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Logits ``(B, Lmax, Lmax)``; in training the residual blocks are recomputed in the
    backward pass when the batch's maps are large (memory of one block instead of all)."""
    big = states.shape[0] * states.shape[1] ** 2 > 128 * 128
    return head(states, lengths, checkpoint=bool(head.training and big))


def pretrained_head(
    model: str | os.PathLike, device: torch.device, dtype: torch.dtype
) -> tuple[nn.Module, float | None] | None:
    """The structure head stored with ``model`` (eval mode, shared: never train it in place)
    and its calibrated threshold (None when unknown); None for a backbone-only model."""
    found = get_pair_head(model, device, dtype)
    if found is None:
        return None
    head, info = found
    threshold = info.get("threshold")
    return head, None if threshold is None else float(threshold)


def save_structure(
    encoder: RnaFmEncoder, head: nn.Module, folder: str | os.PathLike, *, threshold: float
) -> Path:
    """Write ``encoder`` and ``head`` (with ``threshold``) as a native folder."""
    return save_model(encoder, folder, head=head, threshold=threshold)
