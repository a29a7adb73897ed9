"""The RNA-FM encoder in plain PyTorch (an ESM-1b-style pre-LayerNorm BERT): the model.

This module knows nothing of scikit-learn, file formats or sequences as strings: it maps a
``(B, T)`` tensor of token ids to hidden states. The forward pass reproduces the official
``fm.BioBertModel`` (ESM-1b branch) exactly; see ``RNA-FM-FACTS.md``.

:class:`RnaFmEncoder` is here: the embeddings, the stack of layers, the hidden states of the
requested layers and the masked-LM logits. Its architecture is :mod:`._encoder_config`, its
building blocks :mod:`._encoder_layers`, the real-token layout and the attention kernels
:mod:`._encoder_attention`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
import torch.utils.checkpoint
from torch import nn

from ._alphabet import get_alphabet
from ._contacts import ContactHead
from ._encoder_attention import _Layout, _Probe
from ._encoder_config import RnaFmConfig
from ._encoder_layers import _last_layer_at, _Layer, _Linear, _LmHead

__all__ = ["RnaFmEncoder"]

# The official forward rescales token embeddings by this when ``token_dropout`` is set:
# 15 % of tokens were masked in training and 80 % of those replaced by <mask>.
_MASK_RATIO_TRAIN = 0.15 * 0.8


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
