"""``RnaFmEmbedder``: RNA-FM embeddings as a scikit-learn transformer."""

from __future__ import annotations

import os
from collections.abc import Sequence
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.base import TransformerMixin

from ._alphabet import row_name
from ._base import RnaFmEstimator
from ._choices import AGGREGATIONS
from ._contacts import attention_maps, contact_maps
from ._encoder import RnaFmConfig
from ._errors import InvalidParameterError
from ._family import family
from ._inference import Plan, Runner
from ._input import _deduplicate, _expand
from ._lm import masked_lm

__all__ = ["RnaFmEmbedder"]


class RnaFmEmbedder(TransformerMixin, RnaFmEstimator):
    """Embed RNA sequences with the pretrained RNA-FM language model.

    A stateless transformer (like ``HashingVectorizer``): ``fit`` only validates, and
    ``transform`` maps a 1-D collection of sequences to a float32 matrix
    ``(n_samples, n_features)`` in input order. The model is loaded lazily, once per process,
    and shared by all clones (grid search, cross-validation folds); pickling never ships the
    weights.

    Parameters
    ----------
    model : str or path, default="rna-fm"
        ``"rna-fm"`` for the released weights (downloaded once, see README "Weights"), or the
        path of an official ``.pth`` file, a multimolecule folder or a folder written by
        :func:`rnafm_sklearn.save_model`.
    pooling : str or list of str, default="mean"
        How per-nucleotide states become one vector: ``"mean"`` (over the nucleotides only,
        as the official CLI), ``"max"``, ``"cls"`` (the ``<cls>`` token), ``"eos"``,
        ``"mean+max"``; a list concatenates several in its order.
    layers : int or list of int, default=-1
        Hidden states to use: 0 is the embedding layer, 12 (= -1) the last layer after the
        final LayerNorm. Several layers come from one forward pass.
    layer_aggregation : {"concat", "mean"}, default="concat"
        With several layers: concatenate their pooled features, or average their hidden
        states before pooling.
    column : str, optional
        Name of the sequence column when ``X`` is a DataFrame with several columns.
    long_sequences : {"error", "truncate", "window"}, default="error"
        Sequences longer than the model's 1022 tokens: raise before any compute (listing the
        rows), keep the first 1022 tokens (see ``truncation_side``) with a warning, or embed
        overlapping windows and stitch them (see Notes). Shorter sequences give identical
        results under every policy.
    truncation_side : {"right", "left"}, default="right"
        With ``long_sequences="truncate"``: ``"right"`` drops the 3' end (keeps the first
        1022 nt), ``"left"`` drops the 5' end.
    window_stride : int, optional
        With ``long_sequences="window"``: tokens between window starts (1..1022); default 511
        (windows overlap by half).
    device : str, default="auto"
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        Precision of the forward pass; outputs are always float32. ``"float16"`` needs a GPU.
    batch_tokens : int, optional
        Token budget per forward pass (padding included); default 1024 on CPU, 32768 on CUDA.
        Out-of-memory errors halve the batch and retry.
    progress : bool or "auto", default="auto"
        Show a tqdm progress bar; ``"auto"`` shows it when stderr is a terminal.
    cache : path, optional
        Persistent embedding cache (an SQLite file in this folder, or a ``.sqlite`` path).
        Entries are keyed by a hash of the weights, ``layers``, ``layer_aggregation``,
        ``pooling``, ``dtype``, the tokens actually embedded (after truncation) and, for
        windowed sequences, ``window_stride``; so a different setting never returns a stale
        vector. Safe to share between processes; batches are committed as they finish.

    Attributes
    ----------
    None : the estimator learns nothing; ``fit`` checks parameters and input and loads the
        model so that errors surface early.

    See Also
    --------
    rnafm_sklearn.load_model : the underlying PyTorch encoder.

    Notes
    -----
    Windows (``long_sequences="window"``) start every ``window_stride`` tokens, the last one
    ending exactly at the sequence end. Each nucleotide takes its hidden state from the window
    in which it is farthest from an edge (the overlap is split at its midpoint), then pooling
    runs over the stitched states exactly as for a short sequence. ``cls`` and ``eos`` are the
    averages over the windows.

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmEmbedder
    >>> emb = RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth", pooling=["mean", "cls"])
    >>> X = emb.fit_transform(["ACGUAGCUAGCUAG", "GGGAAACCC", "acgt"])
    >>> X.shape, X.dtype
    ((3, 64), dtype('float32'))
    >>> emb.get_feature_names_out()[[0, 32]].tolist()
    ['rnafm_l2_mean_0', 'rnafm_l2_cls_0']
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm",
        pooling: str | Sequence[str] = "mean",
        layers: int | Sequence[int] = -1,
        layer_aggregation: str = "concat",
        column: str | None = None,
        long_sequences: str = "error",
        truncation_side: str = "right",
        window_stride: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_tokens: int | None = None,
        progress: bool | str = "auto",
        cache: str | os.PathLike | None = None,
    ):
        self.model = model
        self.pooling = pooling
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.column = column
        self.long_sequences = long_sequences
        self.truncation_side = truncation_side
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.cache = cache

    # ---------------------------------------------------------------- scikit-learn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless: nothing is learned

    def fit(self, X: Any, y: Any = None) -> RnaFmEmbedder:
        """Check parameters and input and load the model; nothing is learned.

        Parameters
        ----------
        X : list, ndarray, pandas Series or DataFrame of str
            The sequences (see :meth:`transform`).
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : RnaFmEmbedder
            The estimator (no fitted attributes: the model is shared, not copied).

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row, the characters and
            their 1-based positions), or one longer than the model's window under
            ``long_sequences="error"``.
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
        >>> RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth").fit(["ACGU"])
        RnaFmEmbedder(model='tests/fixtures/RNA-FM_tiny.pth')
        """
        self.__dict__.pop("_resolved_model", None)  # a new fit reads ``model`` as it is now
        self._prepare(X)
        # a local path made absolute: a pipeline fitted on these features and unpickled in
        # another working directory still embeds with the checkpoint of the fit
        self.__dict__.update(self._resolved_model_attribute())
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``, validating and tokenising ``X`` once instead of twice.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            As for :meth:`transform`.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
            As :meth:`transform` returns.

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row, the characters and
            their 1-based positions), or one longer than the model's window under
            ``long_sequences="error"``.
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
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> RnaFmEmbedder(model=tiny).fit_transform(["ACGU", "GGCC"]).shape
        (2, 32)
        """
        self.__dict__.pop("_resolved_model", None)
        out = self.transform(X)
        self.__dict__.update(self._resolved_model_attribute())
        return out

    def transform(self, X: Any) -> np.ndarray:
        """Embed sequences.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            1-D input, a one-column DataFrame, or a DataFrame with ``column`` set. Strings are
            stripped, upper-cased, T is read as U and '.'/'~' as '-'; anything else raises an
            error naming the row. A bare ``str`` is rejected: wrap it in a list.

        Returns
        -------
        ndarray of shape (n_samples, n_features), float32
            Rows in input order. With ``set_output(transform="pandas")`` a DataFrame that keeps
            the input's index, with columns ``get_feature_names_out()``.

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row, the characters and
            their 1-based positions), or one longer than the model's window under
            ``long_sequences="error"``.
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
        >>> import pandas as pd
        >>> from rnafm_sklearn import RnaFmEmbedder
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> emb = RnaFmEmbedder(model=tiny).set_output(transform="pandas")
        >>> X = emb.fit_transform(pd.Series(["ACGU", "ggcc"], index=["a", "b"]))
        >>> X.shape, list(X.index), X.columns[0]
        ((2, 32), ['a', 'b'], 'rnafm_l2_mean_0')
        """
        runner, plan, tokens = self._prepare(X)
        return self._features(runner, plan, tokens)

    def transform_tokens(self, X: Any) -> list[np.ndarray]:
        """Per-nucleotide hidden states (the official CLI's ``raw`` output).

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            As for :meth:`transform`.

        Returns
        -------
        list of ndarray, one per sequence, of shape (n_tokens, n_layer_groups * hidden)
            Rows are the sequence's nucleotides (codons for mRNA-FM), without ``<cls>``/``<eos>``;
            columns are the selected layers (concatenated or averaged). ``pooling`` is not used.
            Under ``long_sequences="window"`` every sequence gets all its rows; under
            ``"truncate"`` only the kept ones.

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row, the characters and
            their 1-based positions), or one longer than the model's window under
            ``long_sequences="error"``.
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
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> states = RnaFmEmbedder(model=tiny).transform_tokens(["ACGUA", "GG"])
        >>> [s.shape for s in states]
        [(5, 32), (2, 32)]
        """
        runner, plan, tokens = self._prepare(X)
        unique, inverse = _deduplicate(tokens)
        states = self._passes(runner, unique, plan, lambda: runner.per_token(unique, plan))
        return _expand(states, inverse)

    def transform_logits(self, X: Any, masked: bool = False) -> list[np.ndarray]:
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
        self,
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
        chosen = self._attention_layers(layers, config.num_layers)
        picked = self._attention_heads(heads, config.num_heads)
        runner = self._runner(self._encoder(device))
        tokens = self._pair_tokens(X, config, "transform_attention")
        unique, inverse = _deduplicate(tokens)

        def compute(ids):
            return attention_maps(runner.encoder, ids, chosen, picked)

        maps = self._run(runner, len(unique), "seq", lambda: runner.per_sequence(unique, compute))
        return _expand(maps, inverse)

    def transform_contacts(self, X: Any) -> list[np.ndarray]:
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
        tokens = self._pair_tokens(X, config, "transform_contacts")
        unique, inverse = _deduplicate(tokens)

        def compute(ids):
            return contact_maps(runner.encoder, ids)

        maps = self._run(runner, len(unique), "seq", lambda: runner.per_sequence(unique, compute))
        return _expand(maps, inverse)

    def _pair_tokens(self, X: Any, config: RnaFmConfig, method: str) -> list[bytes]:
        """Token lists for pair outputs, which exist only within one forward pass."""
        tokens, index = self._tokens(X, config)
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

    def _attention_layers(self, layers: object, n: int) -> list[int]:
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

    def _attention_heads(self, heads: object, n: int) -> list[int] | None:
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

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, e.g. ``rnafm_l12_mean_0``.

        The name is ``{model}_{layers}_{pooling}_{i}``: ``model`` is ``rnafm`` or ``mrnafm``,
        ``layers`` is ``l12`` (or ``l6+12avg`` when layers are averaged).

        Parameters
        ----------
        input_features : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of str objects
            One name per output column, in column order.

        Raises
        ------
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range for the checkpoint (only its config is read).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmEmbedder
        >>> names = RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth",
        ...                       pooling="mean+max").get_feature_names_out()
        >>> len(names), names[0], names[-1]
        (64, 'rnafm_l2_mean_0', 'rnafm_l2_max_31')
        """
        plan, config, _ = self._settings()
        prefix = family(config.alphabet).feature_prefix
        if plan.aggregate == "concat":
            groups = [f"l{layer}" for layer in plan.layers]
        else:
            groups = ["l" + "+".join(map(str, plan.layers)) + "avg"]
        hidden = config.hidden_size
        names = [
            f"{prefix}_{g}_{p}_{i}" for g in groups for p in plan.poolings for i in range(hidden)
        ]
        return np.asarray(names, dtype=object)

    # ----------------------------------------------------------------------------- helpers
    def _settings(self) -> tuple[Plan, RnaFmConfig, torch.device]:
        """Validate every parameter against the checkpoint's config; load no weights.

        Feature names and parameter errors need only the architecture (read from the
        checkpoint's metadata, or known for the named models), so ``get_feature_names_out``
        and ``rnafm_sklearn.dask.embed`` never load weights on the client.
        """
        # pooling errors first: they need no checkpoint
        self._check_pooling(self.pooling)
        self._check_choice("layer_aggregation", self.layer_aggregation, AGGREGATIONS)
        config, device, stride = self._check_common()
        return self._plan(stride, config.num_layers), config, device

    def _prepare(self, X: Any) -> tuple[Runner, Plan, list[bytes]]:
        plan, config, device = self._settings()
        runner = self._runner(self._encoder(device))
        tokens, _ = self._tokens(X, config)
        return runner, plan, tokens
