"""What fine-tuning trains inside the encoder: low-rank adapters and unfrozen top layers.

Knows the encoder's module names and nothing of scikit-learn. A *training spec* (``"head"``,
``"lora"``, ``"top:K"``, ``"all"``) selects the encoder tensors that receive gradients;
:func:`trainable_encoder` builds a differentiable copy of a (possibly shared, packed) encoder
in which only those tensors are new and trainable, and :func:`merged_state` folds what was
trained back into ordinary dense weights for the fast inference path.

LoRA (Hu et al., 2021): a frozen ``W`` gets ``W + (alpha / r) B A`` with ``A`` (r x in) drawn
like a default linear layer's weight and ``B`` (out x r) zero, so training starts from the
pretrained function exactly. The q/k/v projections of RNA-FM are one fused ``3E x E``
layer: one adapter covers all three (its ``A`` is shared by q, k and v).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._encoder import RnaFmEncoder
from ._encoder_layers import _Linear

__all__ = ["LORA_TARGETS", "LoRA", "TrainSpec", "merged_state", "parse_train", "trainable_encoder"]

# Which linear layers of each transformer block get an adapter.
LORA_TARGETS = {
    "attention": ("self_attn.qkv_proj", "self_attn.out_proj"),
    "ffn": ("fc1", "fc2"),
    "all": ("self_attn.qkv_proj", "self_attn.out_proj", "fc1", "fc2"),
}
_TOP = re.compile(r"top:([0-9]+)\Z")


@dataclass(frozen=True)
class TrainSpec:
    """What a fit trains: ``mode`` in {"head", "lora", "top", "all"}; ``top`` layers for "top"."""

    mode: str
    top: int = 0

    def __str__(self) -> str:
        return f"top:{self.top}" if self.mode == "top" else self.mode


def parse_train(value: object, num_layers: int) -> TrainSpec:
    """The :class:`TrainSpec` of a ``train=`` value; ``ValueError`` naming the choices."""
    if isinstance(value, str):
        if value in ("head", "lora", "all"):
            return TrainSpec(value)
        match = _TOP.match(value)
        if match and 1 <= int(match.group(1)) <= num_layers:
            return TrainSpec("top", int(match.group(1)))
    raise ValueError(
        f"train={value!r} does not exist: use 'head' (frozen encoder), 'lora' (low-rank "
        f"adapters), 'top:K' with K in 1..{num_layers} (the last K layers) or 'all'."
    )


class LoRA(nn.Module):
    """A low-rank update ``x -> (alpha / rank) * x A^T B^T`` of a linear layer.

    Parameters
    ----------
    in_features, out_features : int
        The adapted layer's shape.
    rank : int
        Rank ``r`` of the update.
    alpha : float
        Scale numerator: the update is multiplied by ``alpha / rank``.
    generator : torch.Generator, optional
        Source of ``A``'s initial values (``B`` starts at zero).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        alpha: float,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | None = None,
    ):
        super().__init__()
        self.scale = alpha / rank
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default weight range (kaiming a=sqrt 5)
        A = torch.rand(rank, in_features, generator=generator) * (2 * bound) - bound
        self.A = nn.Parameter(A.to(device))
        self.B = nn.Parameter(torch.zeros(out_features, rank, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x, self.A), self.B) * self.scale

    def delta(self) -> torch.Tensor:
        """The dense update ``(alpha / rank) B A``, shaped like the adapted weight."""
        return (self.B @ self.A) * self.scale


def _base_state(encoder: RnaFmEncoder) -> dict[str, torch.Tensor]:
    """The encoder's dense weights without the masked-LM and contact heads (fine-tuning never
    uses them)."""
    return {
        k: v
        for k, v in encoder.state_dict().items()
        if not k.startswith(("lm_head.", "contact_head."))
    }


def trained_names(
    spec: TrainSpec, encoder_names: Iterable[str], num_layers: int, up_to_layer: int | None = None
) -> list[str]:
    """Names of the encoder's own tensors that ``spec`` trains (adapters not included).

    ``top:K`` trains layers ``num_layers - K + 1 .. num_layers`` and the final LayerNorm that
    follows the last one; ``all`` every encoder tensor (embeddings included). Only tensors
    that hidden state ``up_to_layer`` (default: the last) depends on are trained: the layers
    above it, and the final LayerNorm unless it is the last, would get no gradient.
    """
    if spec.mode not in ("top", "all"):
        return []
    up_to = num_layers if up_to_layer is None else up_to_layer
    first = 0 if spec.mode == "all" else num_layers - spec.top  # 0-based first trained layer
    out = []
    for name in encoder_names:
        match = re.match(r"layers\.([0-9]+)\.", name)
        if match:
            keep = first <= int(match.group(1)) < up_to
        elif name.startswith("emb_layer_norm_after."):
            keep = up_to == num_layers
        else:  # embeddings and the LayerNorm after them
            keep = spec.mode == "all"
        if keep:
            out.append(name)
    return sorted(out)


def trainable_encoder(
    base: RnaFmEncoder,
    spec: TrainSpec,
    *,
    up_to_layer: int,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_targets: str = "attention",
    generator: torch.Generator | None = None,
    trained: dict[str, torch.Tensor] | None = None,
) -> tuple[RnaFmEncoder, dict[str, nn.Parameter]]:
    """A differentiable encoder that shares ``base``'s frozen tensors, and its trainable ones.

    ``base`` is never modified: tensors that ``spec`` trains are copies, adapters are new
    modules on the copy, and everything else is frozen (``requires_grad=False``). Adapters go
    into layers ``1..up_to_layer`` only, and only tensors of those layers are trained (the
    pooled output does not depend on the others).
    ``trained`` (from an earlier fit) replaces the initial values of the trainable tensors.

    Returns the encoder (in training mode, float32 on ``base``'s device) and its trainable
    tensors by name (encoder names; adapters as ``layers.{i}.{target}.lora.{A,B}``).
    """
    state = _base_state(base)
    device = next(iter(state.values())).device
    names = trained_names(spec, state, base.config.num_layers, up_to_layer)
    for name in names:
        state[name] = state[name].detach().clone()
    state = {k: v.float() for k, v in state.items()}
    encoder = RnaFmEncoder.from_state_dict(base.config, state)
    for p in encoder.parameters():
        p.requires_grad_(False)
    params: dict[str, nn.Parameter] = {}
    module_params = dict(encoder.named_parameters())
    for name in names:
        module_params[name].requires_grad_(True)
        params[name] = module_params[name]
    if spec.mode == "lora":
        for i, layer in enumerate(encoder.layers[:up_to_layer]):
            for target in LORA_TARGETS[lora_targets]:
                linear = layer.get_submodule(target)
                assert isinstance(linear, _Linear)
                linear.lora = LoRA(
                    linear.in_features,
                    linear.out_features,
                    lora_rank,
                    lora_alpha,
                    generator=generator,
                    device=device,
                )
                for suffix, p in linear.lora.named_parameters():
                    params[f"layers.{i}.{target}.lora.{suffix}"] = p
    if trained is not None:
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(trained[name])
    encoder.train()  # no dropout in RNA-FM: train() changes nothing numerically
    return encoder, params


def merged_state(
    base: RnaFmEncoder, trained: dict[str, torch.Tensor], *, lora_alpha: float, lora_rank: int
) -> dict[str, torch.Tensor]:
    """``base``'s dense float32 weights with what was trained folded in.

    Trained encoder tensors replace the base ones; each adapter pair ``(A, B)`` adds
    ``(alpha / rank) B A`` to its layer's weight, so inference runs the ordinary (packed,
    bfloat16...) kernels at the ordinary speed.
    """
    state = {k: v.float() for k, v in _base_state(base).items()}
    scale = lora_alpha / lora_rank
    for name, value in trained.items():
        if name.endswith(".lora.A"):
            prefix = name[: -len(".lora.A")]
            B = trained[prefix + ".lora.B"].float()
            weight = state[prefix + ".weight"].to(B.device)
            state[prefix + ".weight"] = weight + (B @ value.float()) * scale
        elif not name.endswith(".lora.B"):
            state[name] = value.float()
    return state
