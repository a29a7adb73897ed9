"""CPU kernels of the encoder: oneDNN pre-packed linear layers, bfloat16 attention, row buckets.

This module imports torch only and knows nothing of the encoder: its functions take tensors,
shapes and ``(first row, length)`` segments. The encoder decides when to call them
(``_encoder_layers.py`` for the linear layers, ``_encoder_attention.py`` for attention).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

__all__ = [
    "NUMERICS_VERSION",
    "attention_bf16_cpu",
    "attention_sdpa_cpu",
    "bucketed",
    "dense_linear_weight",
    "pack_linear_weight",
    "packed_linear",
]

# Bump when a kernel change alters the numbers (cache keys include it).
NUMERICS_VERSION = 1

_PACKABLE = (torch.float32, torch.bfloat16)
# post-op arguments of mkldnn::_linear_pointwise; GELU algorithm "none" is the exact erf GELU
_GELU, _NO_ACTIVATION = ("gelu", [], "none"), ("none", [], "")
# How far a packed product may be from the dense one at packing time, relative to 1 + |value|.
# The plain product may sum in another order (float32: measured < 1e-4 at 5120 inputs;
# bfloat16: 0). The fused GELU is compared with F.gelu of the operator's own plain product:
# in float32 it is then exact (measured), so a tanh-approximated GELU (4.7e-4 off) is caught;
# in bfloat16 the output is rounded once instead of twice (measured <= 6e-3).
_LINEAR_TOLERANCE = 1e-2
_GELU_TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@functools.cache
def _onednn_linear_ops() -> tuple | None:
    """PyTorch's oneDNN ``(reorder weight, linear)`` operators, if this build has them."""
    try:
        if not torch.backends.mkldnn.is_available():
            return None
        return torch.ops.mkldnn._reorder_linear_weight, torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


def _probe_input(in_features: int, dtype: torch.dtype) -> torch.Tensor:
    """Three rows of a ramp at scales 1, 4 and 16: outputs reach GELU's curved region."""
    ramp = torch.linspace(-1, 1, in_features, dtype=torch.float32)
    return (ramp * torch.tensor([[1.0], [4.0], [16.0]])).to(dtype)


def _agrees(got: torch.Tensor, want: torch.Tensor, tolerance: float) -> bool:
    got, want = got.float(), want.float()
    return bool(((got - want).abs() <= tolerance * (1 + want.abs())).all())


@torch.no_grad()
def pack_linear_weight(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """A oneDNN-packed copy of a linear layer's weight, or ``None`` where it cannot be used.

    On x86 CPUs, oneDNN with the weight laid out once in its blocked format beats the BLAS
    call behind ``F.linear`` by 10-25 % in float32 and ~9 % in bfloat16 at the encoder's batch
    shapes (see ``benchmarks/throughput.py``). The operator is probed here on a small input,
    without and with its fused exact GELU: one that does not reproduce ``F.linear`` and
    ``F.gelu`` is not used.

    Parameters
    ----------
    weight : torch.Tensor of shape (out_features, in_features)
        Dense weight on the CPU, float32 or bfloat16.
    bias : torch.Tensor of shape (out_features,) or None

    Returns
    -------
    torch.Tensor or None
        The packed weight for :func:`packed_linear`; ``None`` without oneDNN, for another
        device or dtype, or when the probe fails.
    """
    ops = _onednn_linear_ops()
    if ops is None or weight.device.type != "cpu" or weight.dtype not in _PACKABLE:
        return None
    reorder, linear = ops
    weight = weight.detach()
    try:
        packed = reorder(weight, None)
        probe = _probe_input(weight.shape[1], weight.dtype)
        plain = linear(probe, packed, bias, *_NO_ACTIVATION)
        if not _agrees(plain, F.linear(probe, weight, bias), _LINEAR_TOLERANCE):
            return None
        fused = linear(probe, packed, bias, *_GELU)
        if not _agrees(fused, F.gelu(plain), _GELU_TOLERANCE[weight.dtype]):
            return None
    except RuntimeError:
        return None
    return packed


def packed_linear(
    x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, *, gelu: bool = False
) -> torch.Tensor:
    """``x @ W.T + b`` with a weight from :func:`pack_linear_weight`.

    With ``gelu``, oneDNN applies the exact GELU while the output is in cache. Raises
    ``RuntimeError`` where oneDNN fails; the caller can fall back to ``F.linear`` with
    :func:`dense_linear_weight`.
    """
    linear = _onednn_linear_ops()[1]  # type: ignore[index]
    return linear(x, packed, bias, *(_GELU if gelu else _NO_ACTIVATION))


def dense_linear_weight(packed: torch.Tensor) -> torch.Tensor:
    """The ordinary dense weight of a packed one, bit for bit."""
    return packed.to_dense()


def attention_sdpa_cpu(
    qkv: torch.Tensor, segments: list[tuple[int, int]], num_heads: int
) -> torch.Tensor:
    """Self-attention of each sequence's real tokens, one SDPA call per sequence.

    Any dtype; autograd works. Takes and returns what :func:`attention_bf16_cpu` does.
    Compared with one ``scaled_dot_product_attention`` call on the padded ``(B, T)`` batch
    with a key padding mask, this skips the pad/unpad copies of every layer and the products
    of padded queries and keys: in float32 on a 12 x 640 model (2 cores), +1-2 % tokens/s on
    length-sorted batches and +17 % on batches that are half padding.
    """
    rows, E = qkv.shape[0], qkv.shape[1] // 3
    D = E // num_heads
    out = qkv.new_empty(rows, E)
    for start, n in segments:
        if n == 0:
            continue
        # (n, 3E) => (n, 3, H, D) => (3, 1, H, n, D); the kernel reads the strided views
        q, k, v = qkv[start : start + n].view(n, 3, num_heads, D).permute(1, 2, 0, 3)[:, None]
        y = F.scaled_dot_product_attention(q, k, v)  # scale = D ** -0.5, as the official q
        out[start : start + n] = y[0].transpose(0, 1).reshape(n, E)  # (H, n, D) => (n, E)
    out[max((start + n for start, n in segments), default=0) :] = 0
    return out


# Most attention scores held at once by attention_bf16_cpu: 4 Mi elements (8 MB in bfloat16),
# which stay in the caches and are reused by every chunk of a layer.
_SCORE_CHUNK = 1 << 22


def attention_bf16_cpu(
    qkv: torch.Tensor, segments: list[tuple[int, int]], num_heads: int
) -> torch.Tensor:
    """Self-attention of each sequence's real tokens, bfloat16 on the CPU.

    ``qkv`` is the fused projection of the flattened real tokens, ``(rows, 3E)``; sequence
    ``b`` owns rows ``start:start + length`` (``segments``, in order and without gaps).
    Returns ``(rows, E)``, zeros in the rows after the last segment. Each sequence attends
    over its own tokens only, so no mask and no padded rows are needed.

    PyTorch's flash-attention CPU kernel is no faster in bfloat16 than in float32 at 32-dim
    heads (~150 GFLOP/s on a 1000-token row). Here the two products run as batched bfloat16
    matrix products (~600-900 GFLOP/s) on chunks of heads whose scores fit one reused buffer,
    and the softmax (float32 inside) runs in place. Scores are rounded to bfloat16 before the
    softmax, as in eager bfloat16 attention; ``benchmarks/precision.py`` measures the effect,
    also with sharpened attention. Inference only: the in-place softmax keeps nothing for
    autograd.
    """
    rows, E = qkv.shape[0], qkv.shape[1] // 3
    D = E // num_heads
    # heads per chunk for each sequence, so that a chunk's scores fit _SCORE_CHUNK
    plan = [
        (start, n, max(1, min(num_heads, _SCORE_CHUNK // max(1, n * n)))) for start, n in segments
    ]
    scores = qkv.new_empty(max((g * n * n for _, n, g in plan), default=0))
    values = qkv.new_empty(max((g * n * D for _, n, g in plan), default=0))
    out = qkv.new_empty(rows, E)
    for start, n, g in plan:
        q, k, v = qkv[start : start + n].view(n, 3, num_heads, D).permute(1, 2, 0, 3)  # (H, n, D)
        o = out[start : start + n].view(n, num_heads, D)
        for i in range(0, num_heads, g):
            j = min(num_heads, i + g)
            s = scores[: (j - i) * n * n].view(j - i, n, n)
            y = values[: (j - i) * n * D].view(j - i, n, D)
            torch.baddbmm(s, q[i:j], k[i:j].transpose(1, 2), beta=0.0, alpha=D**-0.5, out=s)
            # in place; bitwise equal to, and as fast as, aten._softmax.out (measured)
            torch.softmax(s, -1, out=s)
            torch.matmul(s, v[i:j], out=y)
            o[:, i:j] = y.transpose(0, 1)
    out[max((start + n for start, n, _ in plan), default=0) :] = 0
    return out


def bucketed(n: int) -> int:
    """``n`` rounded up to one of at most 32 sizes per doubling (a multiple of 32 below 1024).

    oneDNN caches a compiled primitive, ~0.7 MB each, for every distinct matrix shape it sees;
    real-token counts differ in nearly every batch, and without buckets that cache grew by
    ~400 MB over 10 000 sequences. The extra rows cost at most 32 rows or 1/32 of the work.
    """
    step = max(32, 1 << max(0, n.bit_length() - 6))
    return -(-n // step) * step
