"""``RnaFmEmbedder``: RNA-FM embeddings as a scikit-learn transformer.

The hidden states: pooled features (``transform``, their names; pooling and the embedding
cache are ``_base``'s) and per-nucleotide states (``transform_tokens``). The other outputs
(masked-LM log-probabilities, attention and contact maps) are written in ``_embedder_outputs``
and bound in the class body.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import TransformerMixin

from . import _embedder_outputs as _outputs
from ._base import RnaFmEstimator
from ._choices import AGGREGATIONS
from ._encoder_config import RnaFmConfig
from ._family import family
from ._inference import Plan, Runner
from ._input import _deduplicate, _expand

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

    # written in _embedder_outputs, bound here: this class's own methods
    transform_logits = _outputs.transform_logits
    transform_attention = _outputs.transform_attention
    transform_contacts = _outputs.transform_contacts

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
