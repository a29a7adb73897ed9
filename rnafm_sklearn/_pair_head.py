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
oneDNN convolves fastest, with each BatchNorm applied as one per-channel affine. Past ~200 nt
(official head) inference convolves only the band of the map the mirrored upper triangle
depends on (``_forward_band``: ~60 % of the pixels at 1 022 nt, the same numbers); training uses
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
_BAND_STRIP = 64  # rows per strip of the band computation (inference)
_BAND_GAIN = 0.9  # the band computation runs when it convolves < 90 % of the map's pixels


def _band_pixels(n: int, reach: int) -> int:
    """Pixels of an ``n x n`` map the strips convolve for output needed up to ``reach``."""
    total = 0
    for a in range(0, n, _BAND_STRIP):
        total += (min(a + _BAND_STRIP, n) - a) * (n - max(0, a - reach))
    return total


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
            if self._band_pays(n):
                logits = self._forward_band(states[rows, :n], lengths[rows])
            else:
                logits = self._forward(states[rows, :n], lengths[rows], inplace=True)
            out[rows, :n, :n] = logits
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

        row, col = self._pair_terms(states)
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

    def _pair_terms(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The pairwise concatenation + 1x1 convolution as a row term and a column term.

        Pixel ``(i, j)`` of the first pair map is ``row[:, i] + col[:, j]`` (both
        ``(B, L, C)``): ``W[:, :P] e_i`` and ``W[:, P:] e_j + b``, so the ``(B, 2P, L, L)``
        concatenation is never built.
        """
        B, L, _ = states.shape
        e = self.proj(states)  # (B, L, P)
        w = self.pair.weight[:, :, 0, 0]  # (C, 2P)
        row = e @ w[:, : self.proj_dim].T
        col = torch.addmm(self.pair.bias, e.reshape(B * L, -1), w[:, self.proj_dim :].T)
        return row, col.view(B, L, -1)

    # ------------------------------------------------------- inference on the needed band

    def _reaches(self) -> list[tuple[int, int]]:
        """How far below the diagonal (``i - j``) each block's two convolutions are needed.

        The result is the upper triangle (``j >= i``) of the final convolution. A 3x3
        convolution dilated ``d`` reads up to ``d`` rows and ``d`` columns away, so its input is
        needed ``2 * d`` further below the diagonal than its output. Returns per block, in
        order, the reach of its ``conv1`` output and of its ``conv2`` output (the final
        convolution's output is needed on the upper triangle: reach 0).
        """
        reaches, need = [], 2  # need: reach of the last block's output (the final input)
        for block in reversed(self.blocks):
            reaches.append((need + 2 * block.dilation, need))
            need += 2 * block.dilation + 2
        return reaches[::-1]

    def _band_pays(self, n: int) -> bool:
        """Whether the band computation convolves clearly fewer pixels than the whole map."""
        needed = _band_pixels(n, 0) + sum(
            _band_pixels(n, r) for pair in self._reaches() for r in pair
        )
        return needed < _BAND_GAIN * (2 * len(self.blocks) + 1) * n * n

    def _forward_band(self, states: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Inference logits, each convolution computed only where the result depends on it.

        The output is the mirrored upper triangle, and information moves ``2 * d`` away from
        the diagonal per convolution: far below the diagonal, the pair map never reaches the
        result (at 1 022 nt with the official head, ~40 % of the map's pixels). The map is
        cut into strips of rows; each convolution runs, strip by strip, on the columns its
        output is needed at (the strip's rectangle, a little more than the band). Pixels
        outside the band hold stale values that no needed pixel reads. A zero frame of the
        largest dilation around the map is the convolutions' zero padding: the normalised
        input of a ``conv1`` is re-zeroed there (and, in a batch of mixed lengths, outside each
        sequence's block, by the mask), as the padded convolution sees it.
        """
        B, L, _ = states.shape
        dtype = self.proj.weight.dtype
        states = states.to(dtype)
        P = max([1] + [block.dilation for block in self.blocks])  # frame width
        Lp = L + 2 * P
        inner = slice(P, P + L)
        mask = None
        if bool((lengths < L).any()):
            index = torch.arange(Lp) - P
            valid = (index >= 0) & (index < lengths[:, None])  # (B, Lp)
            mask = (valid[:, :, None] & valid[:, None, :]).to(states.device, dtype)[..., None]

        row, col = self._pair_terms(states)
        x = states.new_zeros((B, Lp, Lp, self.channels))  # channels last, zero frame
        torch.add(row[:, :, None, :], col[:, None, :, :], out=x[:, inner, inner])
        h2 = torch.zeros_like(x)  # relu(conv1(.)) of the current block, zero frame

        strips = [(a, min(a + _BAND_STRIP, L)) for a in range(0, L, _BAND_STRIP)]
        for block, (reach1, reach2) in zip(self.blocks, self._reaches(), strict=True):
            d = block.dilation
            scale, shift = _eval_affine(block.norm, dtype)
            for a, b in strips:  # h2 = relu(conv1(relu(bn(x)))) where i - j <= reach1
                c = max(0, a - reach1)
                rows, cols = slice(a - 1 + P, b + 1 + P), slice(c - 1 + P, L + 1 + P)
                h = torch.addcmul(shift, x[:, rows, cols], scale).relu_()  # (B, h, w, C)
                if mask is not None:
                    h.mul_(mask[:, rows, cols])
                else:  # the frame rows and columns this rectangle reaches
                    h[:, :, -1] = 0
                    if a == 0:
                        h[:, 0] = 0
                    if b == L:
                        h[:, -1] = 0
                    if c == 0:
                        h[:, :, 0] = 0
                y = F.conv2d(h.permute(0, 3, 1, 2), block.conv1.weight).permute(0, 2, 3, 1)
                out = (slice(None), slice(a + P, b + P), slice(c + P, L + P))
                h2[out] = y.relu_() if mask is None else y.relu_().mul_(mask[out])
            for a, b in strips:  # x += conv2(h2) where i - j <= reach2
                c = max(0, a - reach2)
                rows, cols = slice(a - d + P, b + d + P), slice(c - d + P, L + d + P)
                y = F.conv2d(h2[:, rows, cols].permute(0, 3, 1, 2), block.conv2.weight, dilation=d)
                x[:, a + P : b + P, c + P : L + P] += y.permute(0, 2, 3, 1)
        del h2
        logits = states.new_zeros((B, L, L))
        for a, b in strips:  # the final convolution on the upper triangle (j >= a)
            rows, cols = slice(a - 1 + P, b + 1 + P), slice(a - 1 + P, L + 1 + P)
            h = x[:, rows, cols] if mask is None else x[:, rows, cols] * mask[:, rows, cols]
            logits[:, a:b, a:] = F.conv2d(
                h.permute(0, 3, 1, 2), self.final.weight, self.final.bias
            )[:, 0]
        logits = torch.triu(logits) + torch.triu(logits, diagonal=1).transpose(1, 2)
        if mask is not None:
            logits = logits * mask[:, inner, inner, 0]
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
            scale, shift = _eval_affine(norm, x.dtype)
            h = torch.addcmul(shift[:, None, None], x, scale[:, None, None])
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


def _eval_affine(norm: nn.BatchNorm2d, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as one per-channel affine ``(scale, shift)``, computed in >= float32."""
    wide = torch.promote_types(dtype, torch.float32)
    scale = norm.weight.to(wide) * torch.rsqrt(norm.running_var.to(wide) + norm.eps)
    shift = norm.bias.to(wide) - norm.running_mean.to(wide) * scale
    return scale.to(dtype), shift.to(dtype)


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
