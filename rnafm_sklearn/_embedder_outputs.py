"""``RnaFmEmbedder``'s outputs besides hidden states: masked-LM log-probabilities and maps.

:func:`transform_logits` (the masked-LM head, ``_lm``), :func:`transform_attention` and
:func:`transform_contacts` (the contact head; both ``_contacts``) are methods of
``RnaFmEmbedder``, written here and bound in its class body (so they are its own methods, as
the API reference lists them). The maps exist only within one forward pass: a sequence longer
than the model's window is an error for them even under ``long_sequences="window"``. Nothing
here is pooled or cached.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral
from typing import TYPE_CHECKING, Any

import numpy as np

from ._alphabet import row_name
from ._contacts import attention_maps, contact_maps
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError
from ._family import family
from ._input import _deduplicate, _expand
from ._lm import masked_lm

if TYPE_CHECKING:
    from ._embedder import RnaFmEmbedder

__all__ = ["transform_attention", "transform_contacts", "transform_logits"]


def transform_logits(self: RnaFmEmbedder, X: Any, masked: bool = False) -> list[np.ndarray]:
    """Per-position log-probabilities from the masked-LM head.

    Parameters
    ----------
    X : list, ndarray, pandas Series of str, or DataFrame
        As for :meth:`transform`.
    masked : bool, default=False
        ``False``: one unmasked pass per sequence, ``log p(a | x)``. ``True``: each
        position masked in turn, ``log p(a | x with position i masked)`` (one pass per
        position, batched).

    Returns
    -------
    list of ndarray, one per sequence, of shape (n_tokens, 4), float32
        Columns A, C, G, U (for mRNA-FM the 64 codons, in the order of
        ``rnafm_sklearn.get_alphabet("codon").standard_tokens``): log-probabilities
        renormalised over these tokens, ``logit_a - logsumexp(logits of A, C, G, U)``.
        ``pooling`` and ``layers`` are not used.

    Raises
    ------
    ValueError
        A checkpoint without the masked-LM head, a sequence the model cannot read (the
        message names the row, the characters and their 1-based positions), or one
        longer than the model's window under ``long_sequences="error"``.
    TypeError
        ``X`` of an unsupported type (a bare string, a dict, a set).
    rnafm_sklearn.InvalidParameterError
        A parameter out of its range (checked before any compute).
    rnafm_sklearn.WeightsUnavailableError
        ``model="rna-fm"`` offline and not downloaded yet.
    rnafm_sklearn.CheckpointError
        A damaged, edited or crafted checkpoint.

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmEmbedder
    >>> emb = RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth")
    >>> lp = emb.transform_logits(["ACGUAG"])[0]
    >>> lp.shape, bool(abs(np.exp(lp).sum(1) - 1).max() < 1e-5)
    ((6, 4), True)
    """
    if not isinstance(masked, bool | np.bool_):
        raise TypeError(
            f"transform_logits: masked must be True or False; got "
            f"{type(masked).__name__} {repr(masked)[:40]}."
        )
    plan, config, device = self._settings()
    runner = self._runner(self._encoder(device))
    lp = masked_lm(runner, self.model, self.batch_tokens, plan.window_stride)
    tokens, _ = self._tokens(X, config)
    unique, inverse = _deduplicate(tokens)
    if not masked:
        passes = lp.n_unmasked_passes(unique)
        out = self._run(runner, passes, "pass", lambda: lp.unmasked(unique))
    else:
        sites = [(t, p) for t in unique for p in range(len(t))]
        values = self._run(runner, len(sites), "pass", lambda: lp.masked(sites))
        out, start = [], 0
        for t in unique:
            out.append(values[start : start + len(t)])
            start += len(t)
    return _expand(out, inverse)


def transform_attention(
    self: RnaFmEmbedder,
    X: Any,
    layers: int | Sequence[int] | None = None,
    heads: int | Sequence[int] | None = None,
) -> list[np.ndarray]:
    """Attention weights between the nucleotides of each sequence (pair features).

    Parameters
    ----------
    X : list, ndarray, pandas Series of str, or DataFrame
        As for :meth:`transform`.
    layers : int or list of int, optional
        Transformer layers whose attention to return, in this order: ``k`` is the
        attention inside transformer layer ``k`` (1..12 for RNA-FM; -1 the last, -12 the
        first). Layer 0 (the embeddings) has none. Default: every layer. The estimator's
        ``layers`` parameter is not used.
    heads : int or list of int, optional
        Attention heads (0-based, 0..19 for RNA-FM), in this order. Default: every head.

    Returns
    -------
    list of ndarray, one per sequence, of shape (n_layers, n_heads, L, L), float32
        ``[g, h, i, j]``: the weight with which nucleotide ``i`` (0-based; codon for
        mRNA-FM) attends to nucleotide ``j`` in head ``heads[h]`` of layer
        ``layers[g]``, as in the official model's ``need_head_weights=True`` output. The
        rows and columns of ``<cls>`` and ``<eos>`` are dropped, so a row sums to 1 minus
        the weight that went to those two tokens, not to 1. Not symmetric.

    Raises
    ------
    InvalidParameterError
        ``layers`` or ``heads`` out of range, repeated or of the wrong type.
    ValueError
        A sequence is longer than the model's limit: under ``long_sequences="error"`` as
        in :meth:`transform`; under ``"window"`` too, since attention exists only within
        one forward pass (use ``"truncate"`` for the attention among the kept tokens).

    Notes
    -----
    One array holds ``n_layers * n_heads * L * L`` floats: 960 MB for all 12 x 20 maps of
    a 1022-nt sequence. Select layers and heads where you can: the others are not
    computed. The weights are computed only here, one sequence and one layer at a time
    (the embedding path never forms them), and never cached (``cache`` is not used). See
    the user guide "Attention maps and contacts".

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmEmbedder
    >>> emb = RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth")
    >>> maps = emb.transform_attention(["ACGUAGC", "GGAAACC"], layers=[-1], heads=[0, 2])
    >>> maps[0].shape, maps[0].dtype
    ((1, 2, 7, 7), dtype('float32'))
    >>> bool((maps[0].sum(-1) < 1).all())  # <cls> and <eos> take the rest
    True
    """
    _, config, device = self._settings()
    chosen = _attention_layers(layers, config.num_layers)
    picked = _attention_heads(heads, config.num_heads)
    runner = self._runner(self._encoder(device))
    tokens = _pair_tokens(self, X, config, "transform_attention")
    unique, inverse = _deduplicate(tokens)

    def compute(ids):
        return attention_maps(runner.encoder, ids, chosen, picked)

    maps = self._run(runner, len(unique), "seq", lambda: runner.per_sequence(unique, compute))
    return _expand(maps, inverse)


def transform_contacts(self: RnaFmEmbedder, X: Any) -> list[np.ndarray]:
    """The official contact head's output: one ``(L, L)`` map per sequence.

    This is RNA-FM's ``return_contacts=True`` (an ESM-style head): the attention maps of
    every layer and head, special tokens removed, symmetrised and APC-corrected, combined
    by the checkpoint's logistic regression (``contact_head.regression``) and passed
    through a sigmoid. The released regression weights were probably never trained
    (official tracker #19): this is not a secondary-structure predictor.

    Parameters
    ----------
    X : list, ndarray, pandas Series of str, or DataFrame
        As for :meth:`transform`.

    Returns
    -------
    list of ndarray, one per sequence, of shape (L, L), float32
        Symmetric, values in (0, 1); ``L`` nucleotides (codons for mRNA-FM). ``pooling``
        and ``layers`` are not used; nothing is cached.

    Raises
    ------
    ValueError
        The checkpoint holds no contact head (the message names it), or a sequence is too
        long (as for :meth:`transform_attention`).

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmEmbedder
    >>> emb = RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth")
    >>> c = emb.transform_contacts(["ACGUAGCUAG"])[0]
    >>> c.shape, bool(np.allclose(c, c.T))
    ((10, 10), True)
    """
    _, config, device = self._settings()
    runner = self._runner(self._encoder(device))
    if runner.encoder.contact_head is None:
        raise ValueError(
            f"The checkpoint {self.model} has no contact head (contact_head.regression "
            "tensors), so it gives no contact maps. Use a checkpoint that holds one (the "
            "official RNA-FM_pretrained.pth does), or transform_attention for the raw "
            "attention maps."
        )
    tokens = _pair_tokens(self, X, config, "transform_contacts")
    unique, inverse = _deduplicate(tokens)

    def compute(ids):
        return contact_maps(runner.encoder, ids)

    maps = self._run(runner, len(unique), "seq", lambda: runner.per_sequence(unique, compute))
    return _expand(maps, inverse)


def _pair_tokens(est: RnaFmEmbedder, X: Any, config: RnaFmConfig, method: str) -> list[bytes]:
    """Token lists for pair outputs, which exist only within one forward pass."""
    tokens, index = est._tokens(X, config)
    limit = config.max_sequence_tokens
    long_rows = [i for i, t in enumerate(tokens) if len(t) > limit]
    if long_rows:  # only under long_sequences="window": the other policies acted already
        fam = family(config.alphabet)
        i = long_rows[0]
        more = f" (and {len(long_rows) - 1} more)" if len(long_rows) > 1 else ""
        raise ValueError(
            f"{method} cannot use long_sequences='window': attention exists only within one "
            f"forward pass of at most {fam.count(limit)}, and "
            f"{row_name(i, None if index is None else index[i])} has "
            f"{fam.count(len(tokens[i]))}{more}. Use long_sequences='truncate' for the "
            "attention among the kept tokens, or cut the sequences yourself."
        )
    return tokens


def _attention_layers(layers: object, n: int) -> list[int]:
    """Transformer layers 1..n (negative from the end), distinct; all for ``None``."""
    if layers is None:
        return list(range(1, n + 1))
    items = [layers] if isinstance(layers, Integral) else layers
    if (
        not isinstance(items, list | tuple | np.ndarray)
        or len(items) == 0
        or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items)
        or not all(1 <= abs(i) <= n for i in items)
        or len({int(i) % (n + 1) for i in items}) != len(items)
    ):
        raise InvalidParameterError(
            "The 'layers' argument of RnaFmEmbedder.transform_attention must be None, an "
            f"int or a non-empty list of distinct ints in 1..{n} (or -{n}..-1 counted from "
            "the end) for this model; layer 0, the embeddings, has no attention. "
            f"Got {layers!r} instead."
        )
    return [int(i) % (n + 1) for i in items]


def _attention_heads(heads: object, n: int) -> list[int] | None:
    """Head indices 0..n-1, distinct; ``None`` (all) for ``None``."""
    if heads is None:
        return None
    items = [heads] if isinstance(heads, Integral) else heads
    if (
        not isinstance(items, list | tuple | np.ndarray)
        or len(items) == 0
        or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items)
        or not all(0 <= i < n for i in items)
        or len(set(map(int, items))) != len(items)
    ):
        raise InvalidParameterError(
            "The 'heads' argument of RnaFmEmbedder.transform_attention must be None, an "
            f"int or a non-empty list of distinct ints in 0..{n - 1} for this model. "
            f"Got {heads!r} instead."
        )
    return [int(i) for i in items]
