"""Attention maps and the official contact head, computed only when asked (torch only).

The encoder's attention kernels never materialise the attention weights. Here they are
computed explicitly, ``softmax(q k^T / sqrt(head_dim))`` in float32 for one sequence at a time
on its real tokens, from the q/k projections that the encoder hands to a probe
(``RnaFmEncoder.forward(ids, attention={k: probe})``). Each layer's weights are reduced as
soon as they exist, so a batch never holds more than what leaves it:

* :func:`attention_maps`: the selected layers and heads, nucleotide rows and columns only;
* :func:`contact_maps`: the official ``return_contacts=True`` output (``fm`` ESM-1b contact
  head): per layer, the nucleotide block of each head's map, symmetrised and APC-corrected,
  weighted by the checkpoint's ``contact_head.regression`` and summed into one ``(L, L)``
  map; a sigmoid at the end. Summing layer by layer is the official logistic regression over
  all ``num_layers * num_heads`` maps, in another order of additions.

Nothing here knows about scikit-learn or sequences as strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ._encoder import RnaFmEncoder

__all__ = ["ContactHead", "attention_maps", "contact_maps"]


class ContactHead(nn.Module):
    """The official contact regression: one weight per (layer, head) map, and a bias.

    Only its tensors live here (``contact_head.regression.{weight,bias}``, as in the official
    checkpoint); :func:`contact_maps` applies it.
    """

    def __init__(self, in_features: int):
        super().__init__()
        self.regression = nn.Linear(in_features, 1)


def _weights(
    qkv: torch.Tensor, start: int, n: int, num_heads: int, heads: torch.Tensor | None
) -> torch.Tensor:
    """Attention weights of one sequence's ``n`` tokens, ``(n_heads, n, n)`` float32.

    ``qkv`` holds the fused q/k/v projections ``(rows, 3E)``; the sequence's tokens are rows
    ``start .. start + n`` (``<cls>`` and ``<eos>`` included). Rows sum to 1 over all ``n``.
    """
    E = qkv.shape[1] // 3
    D = E // num_heads
    # (n, 3E) => (n, 3, H, D) => q, k: (H, n, D)
    x = qkv[start : start + n].view(n, 3, num_heads, D)
    q, k = x[:, 0].transpose(0, 1), x[:, 1].transpose(0, 1)
    if heads is not None:
        q, k = q.index_select(0, heads), k.index_select(0, heads)
    scores = torch.matmul(q.float() * D**-0.5, k.float().transpose(1, 2))  # (H, n, n)
    return torch.softmax(scores, dim=-1)


def _nucleotides(weights: torch.Tensor) -> torch.Tensor:
    """``(H, n, n)`` => ``(H, n - 2, n - 2)``: ``<cls>`` (first) and ``<eos>`` (last) dropped."""
    n = weights.shape[-1]
    return weights[:, 1 : n - 1, 1 : n - 1]


def _weighted_apc(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``sum_h w[h] * APC(a[h] + a[h]^T)``, ``(L, L)``, from maps ``a`` ``(H, L, L)``.

    APC (average product correction) of a map ``s``: ``s - rows * cols / total``. Here ``s =
    a + a^T`` is symmetric, so its row and column sums are both ``r = a.sum(-1) + a.sum(-2)``,
    and the weighted sum splits into ``m + m^T - sum_h (w[h] / t[h]) r[h] r[h]^T`` with ``m =
    sum_h w[h] a[h]``: three reads of ``a`` and no ``(H, L, L)`` temporary.
    """
    m = torch.einsum("h,hij->ij", w, a)
    r = a.sum(-1) + a.sum(-2)  # (H, L)
    t = r.sum(-1, keepdim=True)  # (H, 1)
    return m + m.T - (r * (w[:, None] / t)).T @ r


def _segments(ids: torch.Tensor, padding_idx: int) -> list[int]:
    """Number of real tokens of each row of ``ids``."""
    return ids.ne(padding_idx).sum(1).tolist()


def attention_maps(
    encoder: RnaFmEncoder,
    ids: torch.Tensor,
    layers: Sequence[int],
    heads: Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Attention weights between the nucleotides of each row of ``ids``.

    Parameters
    ----------
    encoder : RnaFmEncoder
    ids : torch.Tensor of shape (B, T)
        Token ids, ``<cls>`` first and ``<eos>`` last, right-padded.
    layers : sequence of int
        Transformer layers, 1..num_layers, in output order.
    heads : sequence of int, optional
        Heads, 0..num_heads - 1, in output order; all by default.

    Returns
    -------
    list of ndarray, one per row, of shape (len(layers), n_heads, L, L), float32
        ``L`` = real tokens minus 2. Entry ``[g, h, i, j]``: how much nucleotide ``i`` attends
        to nucleotide ``j`` in head ``h`` of layer ``layers[g]``; the sub-matrix of the full
        weights, so a row sums to 1 minus what went to ``<cls>`` and ``<eos>``.
    """
    num_heads = encoder.config.num_heads
    n_heads = num_heads if heads is None else len(heads)
    index = None if heads is None else torch.tensor(list(heads), device=ids.device)
    out = [
        np.empty((len(layers), n_heads, n - 2, n - 2), np.float32)
        for n in _segments(ids, encoder.padding_idx)
    ]

    def probe_for(g: int):
        def probe(qkv: torch.Tensor, layout) -> None:
            for row, (start, n) in enumerate(layout.segments):
                w = _nucleotides(_weights(qkv, start, n, num_heads, index))
                out[row][g] = w.detach().cpu().numpy()

        return probe

    encoder(ids, layers=0, attention={k: probe_for(g) for g, k in enumerate(layers)})
    return out


def contact_maps(encoder: RnaFmEncoder, ids: torch.Tensor) -> list[np.ndarray]:
    """The official contact head's output for each row of ``ids``, ``(L, L)`` float32.

    ``sigmoid(b + sum over layers l and heads h of w[l, h] * APC(A + A^T))``, where ``A`` is
    the ``(L, L)`` nucleotide block of head ``h``'s weights in layer ``l`` and ``w``, ``b``
    the checkpoint's ``contact_head.regression``. Raises ``ValueError`` if the encoder has no
    contact head.
    """
    head = encoder.contact_head
    if head is None:
        raise ValueError("This encoder has no contact head (no contact_head.* tensors).")
    cfg = encoder.config
    weight = head.regression.weight.detach().float().view(cfg.num_layers, cfg.num_heads)
    bias = head.regression.bias.detach().float()
    sums: list[torch.Tensor | None] = [None] * ids.shape[0]

    def probe_for(k: int):
        w = weight[k - 1]  # (H,)

        def probe(qkv: torch.Tensor, layout) -> None:
            for row, (start, n) in enumerate(layout.segments):
                a = _nucleotides(_weights(qkv, start, n, cfg.num_heads, None))
                term = _weighted_apc(a, w)  # (L, L)
                prev = sums[row]
                sums[row] = term if prev is None else prev.add_(term)

        return probe

    probes = {k: probe_for(k) for k in range(1, cfg.num_layers + 1)}
    encoder(ids, layers=0, attention=probes)
    return [torch.sigmoid(s + bias).detach().cpu().numpy() for s in sums]  # type: ignore[operator]
