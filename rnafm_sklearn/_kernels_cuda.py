"""CUDA kernels of the encoder: variable-length (unpadded) self-attention.

This module imports torch only and knows nothing of the encoder: its functions take tensors,
shapes and ``(first row, length)`` segments. ``_encoder_attention.py`` decides when to call
them.

The kernel is ``scaled_dot_product_attention`` on nested tensors of the jagged layout: q, k
and v are views of the fused projection, one ragged sequence each, with no padding and no
mask. For such inputs PyTorch runs the variable-length forms of its fused CUDA kernels
(``cu_seqlens`` and the longest length instead of a ``(B, T)`` batch): flash attention in
float16/bfloat16, the memory-efficient kernel in float32. Both have backward passes, so
autograd works. ``torch.nn.attention.varlen.varlen_attn`` was not chosen: it appeared in
torch 2.10 as a prototype whose signature changed between releases, it runs flash attention
only (no float32) and has no CPU implementation, so CI could not run it.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

__all__ = ["NUMERICS_VERSION", "attention_varlen", "supported"]

# Bump when a kernel change alters the numbers (cache keys include it, next to the CPU
# kernels' version in ``_kernels_cpu``).
NUMERICS_VERSION = 1


def _jagged_constructor():
    """``torch.nested.nested_tensor_from_jagged`` if it takes the lengths' bounds, else None.

    The bounds (``min_seqlen``/``max_seqlen``; probed, not assumed: without them the
    varlen path is off and ``supported`` is False) spare the kernels a
    device-to-host copy of the longest length in every layer.
    """
    make = getattr(torch.nested, "nested_tensor_from_jagged", None)
    try:
        params = inspect.signature(make).parameters if make is not None else {}
    except (TypeError, ValueError):
        params = {}
    return make if {"min_seqlen", "max_seqlen"} <= set(params) else None


# None makes supported() False (the encoder then takes the padded path).
_JAGGED = _jagged_constructor()
# Head sizes that both fused kernels take: flash attention needs a multiple of 8 up to 256,
# the memory-efficient kernel a multiple of 4 (float32) or 8 (float16/bfloat16).
_MAX_HEAD_DIM = 256
_HALF = (torch.float16, torch.bfloat16)


def supported(qkv: torch.Tensor, num_heads: int) -> bool:
    """Whether :func:`attention_varlen` runs a fused variable-length CUDA kernel for ``qkv``.

    True for a 2-D CUDA tensor in float32, float16 or bfloat16 (bfloat16 from compute
    capability 8.0) whose head size is a multiple of 8 up to 256, when this torch has jagged
    nested tensors and the fused kernel for the dtype is enabled
    (``torch.backends.cuda.flash_sdp_enabled`` / ``mem_efficient_sdp_enabled``).
    ``requires_grad`` does not matter: both kernels have a backward pass.
    """
    if _JAGGED is None or qkv.device.type != "cuda" or qkv.dim() != 2:
        return False
    if qkv.dtype == torch.bfloat16 and torch.cuda.get_device_capability(qkv.device) < (8, 0):
        return False  # neither fused kernel takes bfloat16 before Ampere
    return _fused_kernel_takes(qkv.dtype, qkv.shape[1], num_heads)


def _fused_kernel_takes(dtype: torch.dtype, width: int, num_heads: int) -> bool:
    """The device-independent part of :func:`supported`: dtype, head size, enabled kernels."""
    E, rem = divmod(width, 3)
    if rem or E % num_heads:
        return False
    D = E // num_heads
    if D % 8 or D > _MAX_HEAD_DIM:
        return False
    cuda = torch.backends.cuda
    if dtype in _HALF:
        return cuda.flash_sdp_enabled() or cuda.mem_efficient_sdp_enabled()
    return dtype == torch.float32 and cuda.mem_efficient_sdp_enabled()


def attention_varlen(
    qkv: torch.Tensor, segments: list[tuple[int, int]], n: int, num_heads: int
) -> torch.Tensor:
    """Self-attention of each sequence's real tokens, with no padding and no mask.

    Parameters
    ----------
    qkv : torch.Tensor of shape (rows, 3 * E)
        The fused q/k/v projection of the flattened real tokens; sequence ``b`` owns rows
        ``first:first + length`` of ``segments[b]``, in order and without gaps from row 0.
    segments : list of (int, int)
        ``(first row, length)`` of each sequence.
    n : int
        Real tokens, the sum of the lengths; rows ``n:`` are padding.
    num_heads : int
        Attention heads; q is scaled by ``head_dim ** -0.5``.

    Returns
    -------
    torch.Tensor of shape (rows, E)
        Each token's attention over its own sequence; zeros in rows ``n:``.

    Raises
    ------
    ValueError
        ``segments`` do not tile rows ``0:n`` in order.
    RuntimeError
        This torch has no usable jagged nested tensors (see :func:`supported`).

    Notes
    -----
    Where :func:`supported` says so, q, k and v go to the fused kernel as strided views of
    ``qkv``, without a copy. Elsewhere (the CPU, other dtypes) they are copied to contiguous
    buffers first, which PyTorch's reference (math) implementation for nested tensors needs;
    this is how CI checks the layout on the CPU. It needs a usable
    ``torch.nested.nested_tensor_from_jagged`` (:func:`supported` is False without one, and
    the encoder then takes the padded path). Autograd works in all cases.
    """
    rows, E = qkv.shape[0], qkv.shape[1] // 3
    lengths = _check_segments(segments, n)
    if _JAGGED is None:
        raise RuntimeError(
            "attention_varlen needs torch.nested.nested_tensor_from_jagged with min_seqlen and "
            "max_seqlen (torch >= 2.5); call it only where supported() is True."
        )
    if n == 0:
        return qkv.new_zeros(rows, E)
    D = E // num_heads
    lengths = tuple(length for length in lengths if length)  # an empty sequence owns no rows
    offsets = _offsets(lengths, qkv.device)
    # (n, 3E) => (n, 3, H, D); the jagged tensors are (B, j, H, D) => (B, H, j, D) for SDPA
    x = qkv[:n].view(n, 3, num_heads, D)
    if not supported(qkv, num_heads):  # the reference implementation needs dense q, k, v
        x = x.permute(1, 0, 2, 3).contiguous().permute(1, 0, 2, 3)
    q, k, v = (
        _JAGGED(x[:, i], offsets, min_seqlen=min(lengths), max_seqlen=max(lengths)).transpose(1, 2)
        for i in range(3)
    )
    y = F.scaled_dot_product_attention(q, k, v)  # scale = D ** -0.5, as the official q
    y = y.transpose(1, 2).values().reshape(n, E)  # (B, H, j, D) => (n, H, D) => (n, E)
    return y if rows == n else F.pad(y, (0, 0, 0, rows - n))


def _check_segments(segments: list[tuple[int, int]], n: int) -> list[int]:
    """The lengths of ``segments``; ``ValueError`` unless they tile rows ``0:n`` in order."""
    end = 0
    for first, length in segments:
        if first != end or length < 0:
            raise ValueError(
                f"segments must tile rows 0:{n} in order without gaps; got {segments!r}."
            )
        end += length
    if end != n:
        raise ValueError(f"segments cover {end} rows, but n={n}.")
    return [length for _, length in segments]


@functools.lru_cache(maxsize=8)
def _offsets(lengths: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """``[0, l0, l0 + l1, ...]`` on ``device``, made once per batch (every layer reuses it).

    Copied from pinned memory without blocking on CUDA, so the host does not wait for the
    queued work of the GPU. Reusing one tensor also gives the nested tensors of every layer
    the same ragged size.
    """
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(torch.tensor(lengths, dtype=torch.int64), 0, out=offsets[1:])
    if device.type == "cuda":
        return offsets.pin_memory().to(device, non_blocking=True)
    return offsets.to(device)
