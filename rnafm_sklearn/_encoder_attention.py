"""Where a padded batch's real tokens are, and attention over them: the kernel is chosen here.

:class:`_Layout` flattens the real tokens of a ``(B, T)`` batch to ``(rows, E)`` rows (padding
costs no matrix products). :func:`attention` is self-attention on those rows and the one place
that picks the kernel (CPU: :mod:`._kernels_cpu`; CUDA: :mod:`._kernels_cuda`, else the padded
``scaled_dot_product_attention``); :func:`_attention_at` is the same for some query rows only
(the masked-LM read-out). :func:`is_out_of_memory` tells an allocation failure, which every
kernel fallback re-raises, from a kernel that failed. Knows nothing of the layers' weights.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import _kernels_cpu as cpu_kernels
from . import _kernels_cuda as cuda_kernels

logger = logging.getLogger("rnafm_sklearn")

# Set once the unpadded CUDA attention has failed at run time (padded attention from then on).
_VARLEN_FAILED = False


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure, on any device.

    CUDA raises ``torch.OutOfMemoryError``; the CPU allocator raises a plain ``RuntimeError``
    whose message says "not enough memory" (and some backends "out of memory").
    """
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or any(
        m in message for m in ("out of memory", "not enough memory")
    )


class _Layout:
    """Where the real tokens of a padded ``(B, T)`` batch are.

    Everything runs on the real tokens only, flattened to ``(rows, E)``: padding costs no
    matrix products. ``rows`` is the number of real tokens ``n`` rounded up by
    :func:`~rnafm_sklearn._kernels_cpu.bucketed` (fewer distinct shapes for oneDNN to
    compile); the extra rows start as zeros, never enter attention and are dropped. Attention
    takes each sequence's rows (``segments``) on the CPU; elsewhere it scatters the real
    tokens back into ``(B, T)`` rows and masks the padding (``keep``).
    """

    def __init__(self, pad: torch.Tensor):
        B, T = self.shape = tuple(pad.shape)
        real = self._real = ~pad
        self.n = int(real.sum())
        self.rows = cpu_kernels.bucketed(self.n)
        if self.n < B * T:
            self.index: torch.Tensor | None = real.reshape(-1).nonzero().squeeze(1)
            self.keep: torch.Tensor | None = real[:, None, None, :]  # True = attend
        else:
            self.index = self.keep = None

    @functools.cached_property
    def segments(self) -> list[tuple[int, int]]:
        """``(first row, length)`` of each sequence's real tokens in the ``(rows, C)`` layout."""
        lengths = self._real.sum(1).tolist()
        ends = itertools.accumulate(lengths)
        return [(end - n, n) for end, n in zip(ends, lengths, strict=True)]

    def unpad(self, x: torch.Tensor) -> torch.Tensor:
        """``(B * T, C)`` => ``(rows, C)``."""
        if self.rows == self.n and self.index is None:
            return x
        if x.requires_grad:  # autograd records no out= arguments
            real = x if self.index is None else x.index_select(0, self.index)
            return F.pad(real, (0, 0, 0, self.rows - self.n))
        out = x.new_empty(self.rows, x.shape[1])
        out[self.n :] = 0
        if self.index is None:
            out[: self.n] = x
        else:
            torch.index_select(x, 0, self.index, out=out[: self.n])
        return out

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, C)`` => ``(B * T, C)``, zeros at the padding."""
        x = x[: self.n]
        if self.index is None:
            return x
        out = x.new_zeros(self.shape[0] * self.shape[1], x.shape[1])
        return out.index_copy_(0, self.index, x)


def attention(qkv: torch.Tensor, layout: _Layout, num_heads: int) -> torch.Tensor:
    """Multi-head self-attention of each sequence's real tokens: ``(rows, 3E)`` => ``(rows, E)``.

    ``qkv`` holds the fused q/k/v projections of the real tokens in ``layout``; a token
    attends to the real tokens of its own sequence, q scaled by ``head_dim ** -0.5``. Rows
    that hold no real token come back as zeros. This is the one place where the kernel is
    chosen: on the CPU, one sequence at a time (no padding, no mask) with
    :func:`~rnafm_sklearn._kernels_cpu.attention_bf16_cpu` in bfloat16 without autograd, else
    :func:`~rnafm_sklearn._kernels_cpu.attention_sdpa_cpu`; on CUDA, unpadded
    variable-length attention (:func:`~rnafm_sklearn._kernels_cuda.attention_varlen`: SDPA on
    jagged nested tensors, the flash or memory-efficient kernel, autograd included) wherever
    :func:`~rnafm_sklearn._kernels_cuda.supported` says a fused kernel takes it; elsewhere
    (MPS, float64, unusual head sizes, bfloat16 before compute capability 8.0, fused kernels
    switched off, an older torch) ``scaled_dot_product_attention`` on the padded ``(B, T)``
    batch with a key padding mask.
    """
    if qkv.device.type == "cpu":
        if qkv.dtype == torch.bfloat16 and not qkv.requires_grad:
            return cpu_kernels.attention_bf16_cpu(qkv, layout.segments, num_heads)
        return cpu_kernels.attention_sdpa_cpu(qkv, layout.segments, num_heads)
    return _attention_on_device(qkv, layout, num_heads)


def _attention_on_device(qkv: torch.Tensor, layout: _Layout, num_heads: int) -> torch.Tensor:
    """:func:`attention` off the CPU: the varlen kernel where it applies, else the padded call.

    Should the varlen call fail for another reason than memory (e.g. a fused kernel that
    declines inputs :func:`~rnafm_sklearn._kernels_cuda.supported` accepted: "No viable
    backend"), this batch and every later one use the padded call (one warning per process).
    """
    global _VARLEN_FAILED
    if not _VARLEN_FAILED and cuda_kernels.supported(qkv, num_heads):
        try:
            return cuda_kernels.attention_varlen(qkv, layout.segments, layout.n, num_heads)
        except RuntimeError as exc:
            if is_out_of_memory(exc):
                raise  # the caller's out-of-memory handling decides
            _VARLEN_FAILED = True
            logger.warning(
                "The variable-length attention kernel failed (%s: %s); attention uses the "
                "padded batch with a mask from now on (same results, slower).",
                type(exc).__name__,
                str(exc).partition("\n")[0],
            )
    return _attention_padded(qkv, layout, num_heads)


def _attention_padded(qkv: torch.Tensor, layout: _Layout, num_heads: int) -> torch.Tensor:
    """:func:`attention` as one ``scaled_dot_product_attention`` call on the padded batch."""
    B, T = layout.shape
    E = qkv.shape[1] // 3
    # (rows, 3E) => (B * T, 3E) => (B, T, 3, H, D) => (3, B, H, T, D)
    q, k, v = layout.pad(qkv).view(B, T, 3, num_heads, E // num_heads).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=layout.keep)
    # (B, H, T, D) => (B, T, H, D) => (B * T, E) => (rows, E)
    return layout.unpad(y.transpose(1, 2).reshape(B * T, E))


# Sees one layer's fused q/k/v projections ``(rows, 3E)`` on the real-token layout.
_Probe = Callable[[torch.Tensor, _Layout], None]


def _attention_at(
    qkv: torch.Tensor, layout: _Layout, rows: torch.Tensor, seqs: list[int], num_heads: int
) -> torch.Tensor:
    """:func:`attention` for some query rows only: ``(len(rows), E)``.

    ``rows`` are rows of ``qkv`` (real tokens in ``layout``) and ``seqs[j]`` the sequence that
    owns ``rows[j]``; each attends to every real token of its sequence, as in
    :func:`attention`. On the CPU in bfloat16 without autograd the scores are rounded to
    bfloat16 before the softmax, as :func:`~rnafm_sklearn._kernels_cpu.attention_bf16_cpu`
    does; elsewhere ``scaled_dot_product_attention``.
    """
    E = qkv.shape[1] // 3
    D = E // num_heads
    eager = qkv.device.type == "cpu" and qkv.dtype == torch.bfloat16 and not qkv.requires_grad
    out = qkv.new_empty(len(seqs), E)
    owned: dict[int, list[int]] = {}
    for j, b in enumerate(seqs):
        owned.setdefault(b, []).append(j)
    segments = layout.segments
    for b, js in owned.items():
        start, n = segments[b]
        picked = torch.tensor(js, device=qkv.device)
        q = qkv[rows[picked], :E].view(len(js), num_heads, D).transpose(0, 1)  # (H, m, D)
        k, v = qkv[start : start + n, E:].view(n, 2, num_heads, D).permute(1, 2, 0, 3)
        if eager:
            s = q.new_empty(num_heads, len(js), n)
            torch.baddbmm(s, q, k.transpose(1, 2), beta=0.0, alpha=D**-0.5, out=s)
            y = torch.matmul(torch.softmax(s, -1), v)
        else:
            y = F.scaled_dot_product_attention(q[None], k[None], v[None])[0]
        out[picked] = y.transpose(0, 1).reshape(len(js), E)
    return out
