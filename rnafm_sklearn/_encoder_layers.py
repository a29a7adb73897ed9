"""The building blocks of the encoder: linear layers, attention block, transformer layer, LM head.

:class:`_Linear` is ``nn.Linear`` that can run on a pre-packed oneDNN weight (and carry a LoRA
adapter); :class:`_SelfAttention` and :class:`_Layer` make one pre-LayerNorm transformer block
over the real-token layout (:mod:`._encoder_attention`); :class:`_LmHead` is the masked-LM head;
:func:`_last_layer_at` runs a layer for the read-out rows only. Their parameter names are the
checkpoint's (``state_dict()`` keys); :class:`~rnafm_sklearn.RnaFmEncoder` stacks them.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from . import _kernels_cpu as cpu_kernels
from ._encoder_attention import _attention_at, _Layout, _Probe, attention, is_out_of_memory
from ._encoder_config import RnaFmConfig

logger = logging.getLogger("rnafm_sklearn")

# Set once the first packed oneDNN product has failed at run time (warn once per process).
_FALLBACK_WARNED = False


class _Linear(nn.Linear):
    """``nn.Linear`` that can run its CPU matrix products with a pre-packed oneDNN weight.

    :meth:`pack` swaps ``weight`` for the packed copy (no second copy is kept; see
    :func:`~rnafm_sklearn._kernels_cpu.pack_linear_weight`); ``state_dict()`` still returns
    the ordinary dense weight, bit for bit. Should a packed product fail at run time, the
    layer goes back to its dense weight and ``F.linear`` for good (one warning is logged).
    """

    _packed: torch.Tensor | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A low-rank adapter (``_adapters.LoRA``) added to the product, for fine-tuning only.
        self.lora: nn.Module | None = None

    def pack(self) -> bool:
        """Use a packed oneDNN weight from now on; ``False`` (and no change) if unsupported."""
        if self._packed is not None:
            return True
        packed = cpu_kernels.pack_linear_weight(self.weight, self.bias)
        if packed is None:
            return False
        self._packed = packed
        del self.weight  # the Parameter; the packed copy replaces it
        self.register_parameter("weight", None)
        return True

    def forward(
        self, x: torch.Tensor, *, gelu: bool = False, add: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x @ W.T + b``, then the exact (erf) GELU if ``gelu``, then ``+ add`` if given.

        With an adapter (``lora``), ``x @ W.T + b + lora(x)`` goes through the GELU.
        """
        packed = self._packed
        if self.lora is not None:
            if packed is not None:
                raise RuntimeError("a packed (inference-only) layer cannot carry an adapter")
            y = F.linear(x, self.weight, self.bias) + self.lora(x)
            y = F.gelu(y) if gelu else y
            return y if add is None else y + add
        if packed is not None:
            try:
                y = cpu_kernels.packed_linear(x, packed, self.bias, gelu=gelu)
                return y if add is None else y.add_(add)
            except RuntimeError as exc:
                if is_out_of_memory(exc):
                    raise  # not the kernel's fault: the caller's out-of-memory handling decides
                self._unpack(exc)
        y = F.linear(x, self.weight, self.bias)
        y = F.gelu(y) if gelu else y
        return y if add is None else y.add_(add)

    def _unpack(self, exc: RuntimeError) -> None:
        """Go back to the dense weight after the packed product failed with ``exc``."""
        global _FALLBACK_WARNED
        packed = self._packed
        if packed is None:  # another thread got here first
            return
        with torch.inference_mode(False):  # an ordinary tensor, usable outside inference mode
            weight = cpu_kernels.dense_linear_weight(packed)
        requires_grad = self.bias.requires_grad if self.bias is not None else False
        self.weight = nn.Parameter(weight, requires_grad=requires_grad)
        self._packed = None
        if not _FALLBACK_WARNED:
            _FALLBACK_WARNED = True
            first_line = str(exc).partition("\n")[0]
            logger.warning(
                "The oneDNN linear kernel failed (%s: %s); the affected layers use F.linear "
                "from now on (same results, slower).",
                type(exc).__name__,
                first_line,
            )

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: ANN001
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._packed is not None:
            destination[prefix + "weight"] = cpu_kernels.dense_linear_weight(self._packed)

    def extra_repr(self) -> str:
        return super().extra_repr() + (", onednn_packed=True" if self._packed is not None else "")


class _SelfAttention(nn.Module):
    """Multi-head self-attention with a fused q/k/v projection."""

    def __init__(self, cfg: RnaFmConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.qkv_proj = _Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out_proj = _Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(
        self, h: torch.Tensor, residual: torch.Tensor, layout: _Layout, probe: _Probe | None = None
    ) -> torch.Tensor:
        """``residual + attention(h)`` for the real tokens ``h``, ``(rows, E)``.

        ``probe(qkv, layout)``, if given, sees the fused q/k/v projections ``(rows, 3E)``.
        """
        qkv = self.qkv_proj(h)
        if probe is not None:
            probe(qkv, layout)
        y = attention(qkv, layout, self.num_heads)  # (rows, 3E) => (rows, E)
        return self.out_proj(y, add=residual)


class _Layer(nn.Module):
    """One pre-LayerNorm transformer block."""

    def __init__(self, cfg: RnaFmConfig):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.self_attn = _SelfAttention(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.fc1 = _Linear(cfg.hidden_size, cfg.ffn_size)
        self.fc2 = _Linear(cfg.ffn_size, cfg.hidden_size)

    def forward(
        self, x: torch.Tensor, layout: _Layout, probe: _Probe | None = None
    ) -> torch.Tensor:
        x = self.self_attn(self.self_attn_layer_norm(x), x, layout, probe)
        return self.fc2(self.fc1(self.final_layer_norm(x), gelu=True), add=x)  # exact erf GELU


class _LmHead(nn.Module):
    """The masked-LM head: dense, exact GELU, LayerNorm, then the (tied) token embedding.

    ``logits = LayerNorm(gelu(dense(x))) @ embed_tokens.weight.T + bias``, as the official
    ``RobertaLMHead``, whose output weight *is* the token embedding.
    """

    def __init__(self, cfg: RnaFmConfig):
        super().__init__()
        E = cfg.hidden_size
        self.dense = nn.Linear(E, E)
        self.layer_norm = nn.LayerNorm(E, eps=cfg.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(self.layer_norm(F.gelu(self.dense(x))), embedding, self.bias)


def _queries_per_sequence(qkv: torch.Tensor) -> bool:
    """Whether :func:`_last_layer_at` computes attention for the read-out rows only.

    On the CPU (cost follows the work); on a GPU a loop over sequences costs a launch and a
    host-to-device index copy per sequence, so attention runs for all rows there.
    """
    return qkv.device.type == "cpu"


def _last_layer_at(
    layer: _Layer, x: torch.Tensor, layout: _Layout, rows: torch.Tensor, seqs: list[int]
) -> torch.Tensor:
    """``layer(x, layout)`` at ``rows`` only, ``(len(rows), E)``, from its input ``x``.

    Keys and values need every real token; the queries, ``out_proj``, the residual and the
    feed-forward block only the rows read out (~85 % of a layer's work saved for one row per
    sequence). The row count is rounded up by
    :func:`~rnafm_sklearn._kernels_cpu.bucketed` like a batch's (few distinct shapes).
    """
    attn = layer.self_attn
    qkv = attn.qkv_proj(layer.self_attn_layer_norm(x))
    if _queries_per_sequence(qkv):
        y = _attention_at(qkv, layout, rows, seqs, attn.num_heads)
    else:  # a GPU: one batched kernel beats a small launch (and index copy) per sequence
        y = attention(qkv, layout, attn.num_heads).index_select(0, rows)
    m = len(seqs)
    extra = cpu_kernels.bucketed(m) - m
    if extra:  # zero rows, dropped below
        y = torch.cat([y, y.new_zeros(extra, y.shape[1])])
        rows = torch.cat([rows, rows.new_zeros(extra)])
    h = attn.out_proj(y, add=x.index_select(0, rows))
    h = layer.fc2(layer.fc1(layer.final_layer_norm(h), gelu=True), add=h)
    return h[:m]
