"""The RNA-FM encoder in plain PyTorch (an ESM-1b-style pre-LayerNorm BERT).

This module knows nothing of scikit-learn, file formats or sequences as strings: it maps a
``(B, T)`` tensor of token ids to hidden states. The forward pass reproduces the official
``fm.BioBertModel`` (ESM-1b branch) exactly; see ``RNA-FM-FACTS.md``.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from . import _kernels_cpu as cpu_kernels
from . import _kernels_cuda as cuda_kernels
from ._alphabet import get_alphabet
from ._contacts import ContactHead

__all__ = ["RnaFmConfig", "RnaFmEncoder"]

logger = logging.getLogger("rnafm_sklearn")

# The official forward rescales token embeddings by this when ``token_dropout`` is set:
# 15 % of tokens were masked in training and 80 % of those replaced by <mask>.
_MASK_RATIO_TRAIN = 0.15 * 0.8
# Set once the first packed oneDNN product has failed at run time (warn once per process).
_FALLBACK_WARNED = False
# Set once the unpadded CUDA attention has failed at run time (padded attention from then on).
_VARLEN_FAILED = False


@dataclass(frozen=True)
class RnaFmConfig:
    """Architecture of an RNA-FM encoder.

    The defaults are the released RNA-FM (``rna_fm_t12``); :meth:`mrna_fm` gives mRNA-FM.

    Parameters
    ----------
    num_layers : int, default=12
        Transformer layers.
    hidden_size : int, default=640
        Width of the residual stream.
    num_heads : int, default=20
        Attention heads; ``hidden_size`` must be divisible by it.
    ffn_size : int, default=5120
        Width of the feed-forward layer.
    max_positions : int, default=1024
        Most tokens per forward pass, ``<cls>`` and ``<eos>`` included.
    alphabet : {"rna", "codon"}, default="rna"
        Token vocabulary (see :func:`rnafm_sklearn.get_alphabet`).
    emb_layer_norm_before : bool, default=True
        Whether a LayerNorm follows the embeddings (RNA-FM: yes, mRNA-FM: no).
    token_dropout : bool, default=False
        The ESM ``token_dropout`` flag of the checkpoint: zero ``<mask>`` embeddings and
        rescale the others by ``0.88 / (1 - observed mask ratio)``.
    layer_norm_eps : float, default=1e-5
        Epsilon of every LayerNorm (the official value; not 1e-12).

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmConfig
    >>> RnaFmConfig().head_dim
    32
    """

    num_layers: int = 12
    hidden_size: int = 640
    num_heads: int = 20
    ffn_size: int = 5120
    max_positions: int = 1024
    alphabet: str = "rna"
    emb_layer_norm_before: bool = True
    token_dropout: bool = False
    layer_norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        get_alphabet(self.alphabet)  # raises on an unknown name
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}."
            )

    @classmethod
    def mrna_fm(cls) -> RnaFmConfig:
        """The architecture of the released mRNA-FM (codon tokens, hidden size 1280).

        Returns
        -------
        RnaFmConfig
            12 layers of width 1280, 20 heads, codon alphabet, no embedding LayerNorm.

        Raises
        ------
        None

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmConfig
        >>> config = RnaFmConfig.mrna_fm()
        >>> config.hidden_size, config.alphabet
        (1280, 'codon')
        """
        return cls(hidden_size=1280, alphabet="codon", emb_layer_norm_before=False)

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_size // num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def vocab_size(self) -> int:
        """Number of tokens of the alphabet (rows of the embedding matrix)."""
        return len(get_alphabet(self.alphabet))

    @property
    def padding_idx(self) -> int:
        """Id of ``<pad>`` in the alphabet."""
        return get_alphabet(self.alphabet).padding_idx

    @property
    def max_sequence_tokens(self) -> int:
        """Most sequence tokens (nucleotides or codons) per forward pass."""
        return self.max_positions - 2

    def to_dict(self) -> dict[str, object]:
        """The fields as a plain dict (JSON-serialisable; ``RnaFmConfig(**d)`` rebuilds it).

        Returns
        -------
        dict of str to object
            One entry per field.

        Raises
        ------
        None

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmConfig
        >>> RnaFmConfig(**RnaFmConfig().to_dict()) == RnaFmConfig()
        True
        """
        return asdict(self)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure, on any device.

    CUDA raises ``torch.OutOfMemoryError``; the CPU allocator raises a plain ``RuntimeError``
    whose message says "not enough memory" (and some backends "out of memory").
    """
    message = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or any(
        m in message for m in ("out of memory", "not enough memory")
    )


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


class RnaFmEncoder(nn.Module):
    """RNA-FM encoder: token ids to hidden states (and, with its head, masked-LM logits).

    Parameters
    ----------
    config : RnaFmConfig
        The architecture. Weights are initialised randomly; load real ones with
        :func:`rnafm_sklearn.load_model`.
    lm_head : bool, default=False
        Whether the encoder carries the masked-LM head (``lm_head``, see :meth:`logits`).
        Checkpoints that hold the head load with it; embeddings never run it.
    contact_head : bool, default=False
        Whether the encoder carries the official contact regression (``contact_head``, see
        :func:`rnafm_sklearn._contacts.contact_maps`); built when a checkpoint holds it.

    Examples
    --------
    >>> import torch
    >>> from rnafm_sklearn import RnaFmConfig, RnaFmEncoder, get_alphabet
    >>> enc = RnaFmEncoder(RnaFmConfig(num_layers=2, hidden_size=32, num_heads=4, ffn_size=64))
    >>> tokens = torch.tensor([get_alphabet("rna").encode("ACGU")])
    >>> out = enc(tokens, layers=[0, -1])
    >>> sorted(out), tuple(out[2].shape)
    ([0, 2], (1, 6, 32))
    """

    def __init__(self, config: RnaFmConfig, *, lm_head: bool = False, contact_head: bool = False):
        super().__init__()
        self.config = config
        E, eps = config.hidden_size, config.layer_norm_eps
        self.padding_idx = config.padding_idx
        self.mask_idx = get_alphabet(config.alphabet).mask_idx
        self.embed_tokens = nn.Embedding(config.vocab_size, E, padding_idx=self.padding_idx)
        # Learned positions: max_positions + padding_idx + 1 rows (1026 for RNA-FM).
        self.embed_positions = nn.Embedding(config.max_positions + self.padding_idx + 1, E)
        self.emb_layer_norm_before = (
            nn.LayerNorm(E, eps=eps) if config.emb_layer_norm_before else None
        )
        self.layers = nn.ModuleList(_Layer(config) for _ in range(config.num_layers))
        self.emb_layer_norm_after = nn.LayerNorm(E, eps=eps)
        self.lm_head = _LmHead(config) if lm_head else None
        self.contact_head = (
            ContactHead(config.num_layers * config.num_heads) if contact_head else None
        )
        # Recompute each layer's activations in the backward pass instead of keeping them
        # (training long sequences in less memory); no effect without autograd.
        self.checkpointing = False
        self.eval()

    @classmethod
    def from_state_dict(cls, config: RnaFmConfig, state: dict[str, torch.Tensor]) -> RnaFmEncoder:
        """Build an encoder that adopts ``state``'s tensors (no random init, no extra copy).

        Keys must match exactly; ``load_state_dict`` raises ``RuntimeError`` otherwise. The
        masked-LM head is built when ``state`` holds ``lm_head.*`` tensors, the contact head
        when it holds ``contact_head.*`` tensors.

        Parameters
        ----------
        config : RnaFmConfig
            The architecture.
        state : dict of str to torch.Tensor
            Tensors under this library's parameter names (see ``state_dict()``).

        Returns
        -------
        RnaFmEncoder
            In evaluation mode, holding ``state``'s tensors themselves.

        Raises
        ------
        RuntimeError
            Missing or unexpected keys, or shapes that do not match ``config``.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmEncoder, load_model
        >>> encoder = load_model("tests/fixtures/RNA-FM_tiny.pth")
        >>> state = {k: v.clone() for k, v in encoder.state_dict().items()}
        >>> RnaFmEncoder.from_state_dict(encoder.config, state).config == encoder.config
        True
        """
        with torch.device("meta"):
            encoder = cls(
                config,
                lm_head=any(k.startswith("lm_head.") for k in state),
                contact_head=any(k.startswith("contact_head.") for k in state),
            )
        encoder.load_state_dict(state, strict=True, assign=True)
        return encoder.eval()

    @property
    def num_layers(self) -> int:
        """Number of transformer layers (hidden states are ``0..num_layers``)."""
        return self.config.num_layers

    def normalize_layers(self, layers: int | Iterable[int]) -> list[int]:
        """Map layer indices (negative allowed) to ``0..num_layers``; error if out of range.

        Parameters
        ----------
        layers : int or iterable of int
            0 is the embedding output, ``num_layers`` (= -1) the last layer.

        Returns
        -------
        list of int
            The indices in ``0..num_layers``, in the given order.

        Raises
        ------
        ValueError
            A layer outside ``-(num_layers + 1)..num_layers``.

        Examples
        --------
        >>> from rnafm_sklearn import load_model
        >>> load_model("tests/fixtures/RNA-FM_tiny.pth").normalize_layers([-1, 0])
        [2, 0]
        """
        n = self.config.num_layers
        wanted = [layers] if isinstance(layers, int) else list(layers)
        out = []
        for layer in wanted:
            if not -(n + 1) <= layer <= n:
                raise ValueError(
                    f"Layer {layer} does not exist: this model has hidden states 0..{n} "
                    f"(or -{n + 1}..-1 counted from the end)."
                )
            out.append(layer % (n + 1))
        return out

    def forward(
        self,
        tokens: torch.Tensor,
        layers: int | Iterable[int] = -1,
        *,
        attention: Mapping[int, _Probe] | None = None,
    ) -> dict[int, torch.Tensor]:
        """Hidden states of the requested layers.

        Parameters
        ----------
        tokens : torch.Tensor of shape (B, T)
            Token ids, ``<cls>`` first and ``<eos>`` last, right-padded with ``<pad>``.
        layers : int or iterable of int, default=-1
            0 is the embedding output, ``num_layers`` (= -1) the last layer *after* the
            final LayerNorm; layers in between are the raw residual stream.
        attention : dict of int to callable, optional
            For attention maps (see :mod:`rnafm_sklearn._contacts`): ``attention[k](qkv,
            layout)`` is called in transformer layer ``k`` (1..num_layers) with its fused q/k/v
            projections, ``(rows, 3 * hidden_size)`` on the real-token layout. The layers run
            up to the highest of ``layers`` and ``attention``'s keys.

        Returns
        -------
        dict of int to torch.Tensor of shape (B, T, hidden_size)
            Rows of ``<pad>`` tokens are zero.

        Raises
        ------
        ValueError
            A layer that does not exist (see :meth:`normalize_layers`).

        Examples
        --------
        >>> import torch
        >>> from rnafm_sklearn import get_alphabet, load_model
        >>> encoder = load_model("tests/fixtures/RNA-FM_tiny.pth")
        >>> tokens = torch.tensor([get_alphabet("rna").encode("ACGUAG")])
        >>> states = encoder(tokens, layers=[0, -1])
        >>> sorted(states), tuple(states[2].shape)
        ([0, 2], (1, 8, 32))
        """
        states, layout = self._hidden(tokens, set(self.normalize_layers(layers)), attention)
        B, T = tokens.shape
        return {i: layout.pad(h).view(B, T, -1) for i, h in states.items()}

    def logits(self, tokens: torch.Tensor, at: torch.Tensor | None = None) -> torch.Tensor:
        """Masked-LM logits, ``(B, T, vocab_size)``, as the official model's ``"logits"``.

        Tokens to predict are given as ``<mask>`` (whose embedding row is zero, and which the
        ``token_dropout`` rescaling counts per sequence). Rows of ``<pad>`` tokens are zero.

        Parameters
        ----------
        tokens : torch.Tensor of shape (B, T)
            Token ids, as for :meth:`forward`.
        at : torch.Tensor of shape (K, 2), optional
            ``(batch row, position)`` pairs of real (non-``<pad>``) tokens: only their logits
            are computed, returned as ``(K, vocab_size)`` in this order. The same numbers as
            the full logits at those rows (to float rounding): the last layer still computes
            keys and values of every token, but its queries, feed-forward block, the final
            LayerNorm and the head run for the ``K`` rows only (for one row per sequence,
            ~7 % of the work of a 12-layer pass saved).

        Returns
        -------
        torch.Tensor
            ``(B, T, vocab_size)``, or ``(K, vocab_size)`` with ``at``.

        Raises
        ------
        ValueError
            The encoder was loaded without the head, or ``at`` is not a ``(K, 2)`` integer
            tensor of real-token positions.

        Examples
        --------
        >>> import torch
        >>> from rnafm_sklearn import get_alphabet, load_model
        >>> encoder = load_model("tests/fixtures/RNA-FM_tiny.pth")
        >>> tokens = torch.tensor([get_alphabet("rna").encode("ACGUAG")])
        >>> tuple(encoder.logits(tokens).shape) == (1, 8, encoder.config.vocab_size)
        True
        """
        if self.lm_head is None:
            raise ValueError(
                "This encoder has no masked-LM head: its checkpoint holds no lm_head.* tensors."
            )
        n = self.config.num_layers
        if at is None:
            states, layout = self._hidden(tokens, {n})
            y = self.lm_head(states[n], self.embed_tokens.weight)  # real tokens only
            return layout.pad(y).view(*tokens.shape, -1)
        rows, seqs = self._read_out_rows(tokens, at)
        if not seqs:
            return self.embed_tokens.weight.new_zeros(0, self.config.vocab_size)
        states, layout = self._hidden(tokens, {n - 1})
        h = _last_layer_at(self.layers[n - 1], states[n - 1], layout, rows, seqs)
        y = self.lm_head(self.emb_layer_norm_after(h), self.embed_tokens.weight)
        return y[: len(seqs)]

    def _read_out_rows(
        self, tokens: torch.Tensor, at: torch.Tensor
    ) -> tuple[torch.Tensor, list[int]]:
        """Rows of ``at``'s ``(batch row, position)`` pairs in the real-token layout of
        ``tokens``, and their batch rows; ``ValueError`` unless each names a real token."""
        if at.dim() != 2 or at.shape[1] != 2 or at.dtype.is_floating_point or at.is_complex():
            raise ValueError(
                f"at must be a (K, 2) integer tensor of (batch row, position) pairs; got "
                f"{at.dtype} of shape {tuple(at.shape)}."
            )
        B, T = tokens.shape
        at = at.to(tokens.device, torch.long)
        b, t = at[:, 0], at[:, 1]
        inside = (b >= 0) & (b < B) & (t >= 0) & (t < T)
        real = tokens.ne(self.padding_idx).reshape(-1)
        flat = (b * T + t).clamp(0, B * T - 1)
        bad = ~(inside & real[flat])
        if bad.any():
            j = int(bad.nonzero()[0])
            raise ValueError(
                f"at[{j}] = {at[j].tolist()} is not a real token of the (B, T) = ({B}, {T}) "
                "batch (out of range or <pad>): logits exist only for real tokens."
            )
        rank = real.cumsum(0) - 1  # row of each real token in the (rows, E) layout
        return rank[flat], b.tolist()

    def _hidden(
        self,
        tokens: torch.Tensor,
        wanted: set[int],
        attention: Mapping[int, _Probe] | None = None,
    ) -> tuple[dict[int, torch.Tensor], _Layout]:
        """Hidden states of the ``wanted`` layers on the real tokens, ``(rows, E)`` each.

        ``attention`` maps transformer layers (1-based) to probes, see :meth:`forward`.
        """
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T); got {tuple(tokens.shape)}.")
        if tokens.shape[1] > self.config.max_positions:
            raise ValueError(
                f"{tokens.shape[1]} tokens exceed the model's {self.config.max_positions} "
                f"positions ({self.config.max_sequence_tokens} plus <cls> and <eos>)."
            )
        pad = tokens.eq(self.padding_idx)  # (B, T)
        B, T = tokens.shape
        x = self.embed_tokens(tokens)
        if self.config.token_dropout:
            is_mask = tokens.eq(self.mask_idx)
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            observed = is_mask.sum(-1).to(x.dtype) / (~pad).sum(-1).to(x.dtype)
            x = x * (1 - _MASK_RATIO_TRAIN) / (1 - observed)[:, None, None]
        # Position = running count of non-pad tokens + padding_idx; pads sit at padding_idx.
        real = (~pad).to(torch.int32)
        positions = (torch.cumsum(real, dim=1) * real).long() + self.padding_idx
        x = x + self.embed_positions(positions)
        if self.emb_layer_norm_before is not None:
            x = self.emb_layer_norm_before(x)
        layout = _Layout(pad)
        x = layout.unpad(x.reshape(B * T, -1))  # (rows, E): real tokens only from here on
        out = {}
        if 0 in wanted:
            out[0] = x
        checkpoint = self.checkpointing and torch.is_grad_enabled()
        probes = attention or {}
        for i, layer in enumerate(self.layers[: max(wanted | set(probes))], start=1):
            if checkpoint:
                x = torch.utils.checkpoint.checkpoint(
                    layer, x, layout, probes.get(i), use_reentrant=False
                )
            else:
                x = layer(x, layout, probes.get(i))
            if i == self.config.num_layers:
                x = self.emb_layer_norm_after(x)
            if i in wanted:
                out[i] = x
        return out, layout

    def pack_for_cpu(self) -> bool:
        """Run the linear layers with pre-packed oneDNN weights (CPU, float32/bfloat16).

        Same results as before to float rounding (the products are summed in another order);
        ``state_dict()`` is unchanged. Irreversible: meant for an encoder that only runs
        inference.

        Returns
        -------
        bool
            ``False`` where oneDNN cannot be used (the encoder is left as it was).

        Raises
        ------
        None
            A failed probe is reported by the return value, not raised.

        Examples
        --------
        >>> from rnafm_sklearn import load_model
        >>> encoder = load_model("tests/fixtures/RNA-FM_tiny.pth")
        >>> isinstance(encoder.pack_for_cpu(), bool)
        True
        """
        linears = [m for m in self.modules() if isinstance(m, _Linear)]
        return all([m.pack() for m in linears])
