"""The official RNA-FM secondary-structure head as a plain PyTorch module.

:class:`PairHead` computes the same numbers as ``fm.downstream``'s ``PairwiseConcatWithResNet``
(``"pc-resnet_1_sym_first:r-ss"``, the head of ``RNA-FM-ResNet_PDB-All.pth``) for one sequence:

1. the layer-12 states of the nucleotides (after the final LayerNorm; no ``<cls>``/``<eos>``)
   are projected 640 -> 128 (``proj``);
2. the pair map is the concatenation ``[e_i, e_j]`` (256 channels) through a 1x1 convolution to
   64 channels (``pair``). That convolution is a sum of two per-nucleotide terms,
   ``W[:, :128] e_i + W[:, 128:] e_j + b``: the (B, 256, L, L) concatenation is never built;
3. 32 residual blocks ``x + conv2(relu(dropout(conv1(relu(bn(x))))))``: 3x3 convolutions
   without bias, ``conv2`` dilated 1, 2, 4 in turn, dropout 0.3 (``blocks``);
4. a 3x3 convolution to one channel (``final``), and the upper triangle (diagonal included)
   mirrored onto the lower one ("sym"). The output is logits (the official predictor applies a
   sigmoid).

Sequences of different lengths can share a batch: every convolution sees zeros outside a
sequence's ``L x L`` block, as it sees zero padding at the border of a map run alone, so each
block equals the sequence run alone. Inference runs in place in the channels-last layout that
oneDNN convolves fastest, with each BatchNorm applied as one per-channel affine; training uses
BatchNorm statistics of the valid pixels only, and can recompute blocks in the backward pass
(``checkpoint=True``) to bound memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint as _checkpoint

__all__ = ["HEAD_KEY", "PairHead", "head_key_map", "head_state_from_official"]

# Module name of the structure head inside the official ``Baseline``'s ``downstream_modules``.
HEAD_KEY = "pc-resnet_1_sym_first:r-ss"
_PIXEL_BUDGET = 1 << 21  # pixels (B * L * L) convolved at once at inference: ~0.5 GB per map


class _ResBlock(nn.Module):
    """``x + conv2(relu(dropout(conv1(relu(bn(x))))))`` (the official ``MyBasicResBlock``)."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        self.norm = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=dilation, dilation=dilation, bias=False
        )


class PairHead(nn.Module):
    """Base-pair logits from per-nucleotide states (the official RNA-FM ResNet head).

    Parameters
    ----------
    embed_dim : int, default=640
        Width of the encoder states.
    channels : int, default=64
        Channels of the pair map in the residual blocks.
    blocks : int, default=32
        Number of residual blocks; block ``i`` dilates its second convolution by ``2 ** (i % 3)``.
    proj_dim : int, default=128
        Width of the per-nucleotide projection (the pair map starts with ``2 * proj_dim``).
    dropout : float, default=0.3
        Dropout between the two convolutions of a block (training only).

    Examples
    --------
    >>> import torch
    >>> from rnafm_sklearn._pair_head import PairHead
    >>> head = PairHead(embed_dim=16, channels=8, blocks=2, proj_dim=4).eval()
    >>> states = torch.randn(2, 5, 16)
    >>> logits = head(states, torch.tensor([5, 3]))
    >>> logits.shape, bool((logits[0] == logits[0].T).all())
    (torch.Size([2, 5, 5]), True)
    """

    def __init__(
        self,
        embed_dim: int = 640,
        channels: int = 64,
        blocks: int = 32,
        proj_dim: int = 128,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.embed_dim, self.channels, self.num_blocks = embed_dim, channels, blocks
        self.proj_dim, self.dropout = proj_dim, dropout
        self.proj = nn.Linear(embed_dim, proj_dim)
        self.pair = nn.Conv2d(2 * proj_dim, channels, 1)
        self.blocks = nn.ModuleList(_ResBlock(channels, 2 ** (i % 3)) for i in range(blocks))
        self.final = nn.Conv2d(channels, 1, 3, padding=1)

    @property
    def config(self) -> dict[str, int | float]:
        """The constructor arguments (JSON-ready): ``PairHead(**head.config)`` rebuilds it."""
        return dict(
            embed_dim=self.embed_dim,
            channels=self.channels,
            blocks=self.num_blocks,
            proj_dim=self.proj_dim,
            dropout=self.dropout,
        )

    # ------------------------------------------------------------------------------ forward

    def forward(
        self,
        states: torch.Tensor,
        lengths: torch.Tensor | None = None,
        *,
        checkpoint: bool = False,
    ) -> torch.Tensor:
        """Logits ``(B, Lmax, Lmax)`` (float32) of right-padded states ``(B, Lmax, E)``.

        Entry ``[b, i, j]`` for ``i, j < lengths[b]`` is the logit that nucleotides ``i`` and
        ``j`` pair; entries outside a sequence's block are 0 and mean nothing. ``checkpoint``
        recomputes each residual block in the backward pass (training memory ~ one block).
        """
        B, L, _ = states.shape  # (B, L, E)
        if lengths is None:
            lengths = torch.full((B,), L, dtype=torch.long)
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if B == 0 or L == 0:
            return states.new_zeros((B, L, L), dtype=torch.float32)
        if self.training or torch.is_grad_enabled():
            return self._forward(states, lengths, inplace=False, checkpoint=checkpoint)
        out = states.new_zeros((B, L, L), dtype=torch.float32)
        for rows in self._chunks(lengths):
            n = int(lengths[rows].max())
            out[rows, :n, :n] = self._forward(states[rows, :n], lengths[rows], inplace=True)
        return out

    @staticmethod
    def _chunks(lengths: torch.Tensor) -> list[torch.Tensor]:
        """Groups of rows (longest first) whose padded maps fit the pixel budget together."""
        order = torch.argsort(lengths, descending=True, stable=True)
        groups, current, top = [], [], 0
        for i in order.tolist():
            n = int(lengths[i])
            top = top or n
            if current and (len(current) + 1) * top * top > _PIXEL_BUDGET:
                groups.append(torch.tensor(current))
                current, top = [], n
            current.append(i)
        groups.append(torch.tensor(current))
        return groups

    def _forward(
        self,
        states: torch.Tensor,
        lengths: torch.Tensor,
        *,
        inplace: bool,
        checkpoint: bool = False,
    ) -> torch.Tensor:
        B, L, _ = states.shape
        dtype = self.proj.weight.dtype
        states = states.to(dtype)
        mask = None
        if bool((lengths < L).any()):
            valid = torch.arange(L) < lengths[:, None]  # (B, L)
            mask = (valid[:, :, None] & valid[:, None, :]).to(states.device, dtype)  # (B, L, L)
            mask = mask[:, None]  # (B, 1, L, L), broadcasts over the channels
        counts = (lengths * lengths).sum().item()

        # Pairwise concatenation + 1x1 conv = row term + column term (never (B, 2P, L, L)).
        e = self.proj(states)  # (B, L, P)
        w = self.pair.weight[:, :, 0, 0]  # (C, 2P)
        row = e @ w[:, : self.proj_dim].T  # (B, L, C): e_i's share, pixel (i, .)
        col = torch.addmm(self.pair.bias, e.reshape(B * L, -1), w[:, self.proj_dim :].T)
        col = col.view(B, L, -1)  # (B, L, C): e_j's share, pixel (., j)
        x = row[:, :, None, :] + col[:, None, :, :]  # (B, L, L, C) contiguous = channels-last
        x = x.permute(0, 3, 1, 2)  # (B, C, L, L) logical view, channels-last strides

        for block in self.blocks:
            if checkpoint and torch.is_grad_enabled():
                x, stats = _checkpoint(
                    self._block, block, x, mask, counts, False, use_reentrant=False
                )
            else:
                x, stats = self._block(block, x, mask, counts, inplace)
            if stats is not None:
                _update_running_stats(block.norm, *stats, counts)

        if mask is not None:
            x = x.mul_(mask) if inplace else x * mask
        logits = self.final(x)[:, 0]  # (B, L, L)
        # "sym": upper triangle (diagonal included) mirrored onto the lower one.
        upper = torch.triu(logits)
        logits = upper + torch.triu(logits, diagonal=1).transpose(1, 2)
        if mask is not None:
            logits = logits * mask[:, 0]
        return logits.float()

    def _block(
        self,
        block: _ResBlock,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        counts: int,
        inplace: bool,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """One residual block; also the batch statistics of its BatchNorm in training."""
        norm, stats = block.norm, None
        if norm.training:
            h, stats = _batch_norm_train(x, norm, mask, counts)
        else:
            # Eval BatchNorm is one per-channel affine (computed in >= float32, then cast).
            wide = torch.promote_types(x.dtype, torch.float32)
            scale = norm.weight.to(wide) * torch.rsqrt(norm.running_var.to(wide) + norm.eps)
            shift = norm.bias.to(wide) - norm.running_mean.to(wide) * scale
            h = torch.addcmul(
                shift.to(x.dtype)[:, None, None], x, scale.to(x.dtype)[:, None, None]
            )
        h = h.relu_() if inplace else F.relu(h)
        if mask is not None:
            h = h.mul_(mask) if inplace else h * mask
        h = block.conv1(h)
        if self.training and self.dropout > 0:
            h = F.dropout(h, self.dropout, training=True)
        h = h.relu_() if inplace else F.relu(h)
        if mask is not None:
            h = h.mul_(mask) if inplace else h * mask
        h = block.conv2(h)
        x = x.add_(h) if inplace else x + h
        return x, stats


def _batch_norm_train(
    x: torch.Tensor, norm: nn.BatchNorm2d, mask: torch.Tensor | None, counts: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Training BatchNorm over the valid pixels only; returns the output and (mean, var)."""
    if mask is None:
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
    else:
        mean = (x * mask).sum(dim=(0, 2, 3)) / counts
        var = ((x - mean[:, None, None]).square() * mask).sum(dim=(0, 2, 3)) / counts
    inv = torch.rsqrt(var + norm.eps) * norm.weight
    h = (x - mean[:, None, None]) * inv[:, None, None] + norm.bias[:, None, None]
    return h, (mean.detach(), var.detach())


@torch.no_grad()
def _update_running_stats(
    norm: nn.BatchNorm2d, mean: torch.Tensor, var: torch.Tensor, counts: int
) -> None:
    """``nn.BatchNorm2d``'s running-statistics update (unbiased variance, momentum)."""
    if norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
    m = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    unbiased = var * (counts / max(counts - 1, 1))
    norm.running_mean.mul_(1 - m).add_(mean.to(norm.running_mean.dtype), alpha=m)
    norm.running_var.mul_(1 - m).add_(unbiased.to(norm.running_var.dtype), alpha=m)


# ------------------------------------------------------------------- official state dicts


def head_key_map(num_blocks: int) -> dict[str, str]:
    """Official key (inside ``downstream_modules.<HEAD_KEY>.``) -> :class:`PairHead` key."""
    keys = {
        "pre_reduction.weight": "proj.weight",
        "pre_reduction.bias": "proj.bias",
        "proj.first.0.weight": "pair.weight",
        "proj.first.0.bias": "pair.bias",
        "proj.final.weight": "final.weight",
        "proj.final.bias": "final.bias",
    }
    for i in range(num_blocks):
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            keys[f"proj.resnet.{i}.bn1.{name}"] = f"blocks.{i}.norm.{name}"
        keys[f"proj.resnet.{i}.conv1.weight"] = f"blocks.{i}.conv1.weight"
        keys[f"proj.resnet.{i}.conv2.weight"] = f"blocks.{i}.conv2.weight"
    return keys


def head_state_from_official(state: dict[str, torch.Tensor], num_blocks: int) -> dict:
    """Rename an official head state dict (prefix already removed); every key must map."""
    from ._errors import CheckpointError

    table = head_key_map(num_blocks)
    missing = sorted(set(table) - set(state))
    unexpected = sorted(set(state) - set(table))
    if missing or unexpected:
        raise CheckpointError(
            f"The structure head does not match {num_blocks} residual blocks: missing key(s) "
            f"{missing[:10]}, unexpected key(s) {unexpected[:10]}."
        )
    return {table[k]: v for k, v in state.items()}
