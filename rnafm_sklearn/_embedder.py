"""``RnaFmEmbedder``: RNA-FM embeddings as a scikit-learn transformer."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping, Sequence, Set
from numbers import Integral
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, TransformerMixin

from ._alphabet import Alphabet, get_alphabet, normalize_sequences, row_name
from ._cache import EmbeddingCache
from ._encoder import RnaFmConfig
from ._errors import InvalidParameterError, warn
from ._family import family
from ._inference import POOLINGS, Plan, Runner, feature_width, n_windows
from ._kernels_cpu import NUMERICS_VERSION
from ._models import DTYPES, get_config, get_encoder, resolve_device, weights_fingerprint

__all__ = ["RnaFmEmbedder"]

POLICIES = ("error", "truncate", "window")
AGGREGATIONS = ("concat", "mean")
TRUNCATION_SIDES = ("right", "left")
# Token budget per forward pass. CPU: the README's batch-budget sweep (benchmarks/throughput.py)
# is flat within a few per cent from 512 to 2048 tokens and 1024 fits one sequence of the
# maximal length. CUDA and MPS: sized for the memory of common cards, halved on out-of-memory.
DEFAULT_BATCH_TOKENS = {"cpu": 1024, "cuda": 32768, "mps": 8192}


def _fail(name: str, requirement: str, value: object) -> InvalidParameterError:
    return InvalidParameterError(
        f"The {name!r} parameter of RnaFmEmbedder must be {requirement}. Got {value!r} instead."
    )


class RnaFmEmbedder(TransformerMixin, BaseEstimator):
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
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
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
        """
        self._prepare(X)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``, validating and tokenising ``X`` once instead of twice."""
        return self.transform(X)

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
        """
        runner, plan, tokens = self._prepare(X)
        unique, inverse = _deduplicate(tokens)
        if self.cache is None:
            features = self._run(runner, unique, lambda r, t: r.pooled(t, plan), plan)
        else:
            features = self._cached(runner, plan, unique)
        return features[inverse]

    def _cached(self, runner: Runner, plan: Plan, unique: list[bytes]) -> np.ndarray:
        """Look up every sequence in the cache; compute and commit the misses batch by batch."""
        cache = EmbeddingCache(self.cache)
        keys = self._cache_keys(runner, plan, unique)
        found = cache.get(keys)
        width = feature_width(plan, runner.encoder.config.hidden_size)
        out = np.empty((len(unique), width), np.float32)
        missing = []
        for i, key in enumerate(keys):
            vec = found.get(key)
            if vec is None or vec.shape[0] != width:
                missing.append(i)
            else:
                out[i] = vec
        if missing:

            def commit(idx: list[int], rows: np.ndarray) -> None:
                cache.put([keys[missing[j]] for j in idx], rows)

            todo = [unique[i] for i in missing]
            out[missing] = self._run(
                runner, todo, lambda r, t: r.pooled(t, plan, sink=commit), plan
            )
        cache.close()
        return out

    def _cache_keys(self, runner: Runner, plan: Plan, tokens: list[bytes]) -> list[bytes]:
        """One key per token list: a hash of everything that changes the numbers.

        The weights (by value), the settings, the library's numerics version (bumped whenever a
        kernel change alters results) and, below float32, the device class and the torch
        version (reduced-precision kernels differ between CPUs and GPUs and across releases).
        """
        settings: dict[str, object] = {
            "weights": weights_fingerprint(runner.encoder),
            "alphabet": runner.encoder.config.alphabet,
            "layers": plan.layers,
            "aggregate": plan.aggregate,
            "poolings": plan.poolings,
            "dtype": self.dtype,
            "numerics": NUMERICS_VERSION,
        }
        if self.dtype != "float32":
            settings["device"] = runner.device.type
            settings["torch"] = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        settings_bytes = json.dumps(settings, sort_keys=True).encode()
        window = json.dumps({"window_stride": plan.window_stride}).encode()
        keys = []
        for t in tokens:
            h = hashlib.sha256(settings_bytes)
            if len(t) > runner.window:  # only windowed sequences depend on the stride
                h.update(window)
            h.update(b"\0")
            h.update(t)
            keys.append(h.digest())
        return keys

    def transform_tokens(self, X: Any) -> list[np.ndarray]:
        """Per-nucleotide hidden states (the official CLI's ``raw`` output).

        Returns
        -------
        list of ndarray, one per sequence, of shape (n_tokens, n_layer_groups * hidden)
            Rows are the sequence's nucleotides (codons for mRNA-FM), without ``<cls>``/``<eos>``;
            columns are the selected layers (concatenated or averaged). ``pooling`` is not used.
            Under ``long_sequences="window"`` every sequence gets all its rows; under
            ``"truncate"`` only the kept ones.
        """
        runner, plan, tokens = self._prepare(X)
        unique, inverse = _deduplicate(tokens)
        states = self._run(runner, unique, lambda r, t: r.per_token(t, plan), plan)
        # Duplicate rows are computed once but returned as independent arrays: editing one
        # row's array must not change another's.
        seen: set[int] = set()
        out = []
        for j in inverse.tolist():
            out.append(states[j].copy() if j in seen else states[j])
            seen.add(j)
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the output columns, e.g. ``rnafm_l12_mean_0``.

        The name is ``{model}_{layers}_{pooling}_{i}``: ``model`` is ``rnafm`` or ``mrnafm``,
        ``layers`` is ``l12`` (or ``l6+12avg`` when layers are averaged).
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
        if not isinstance(self.model, str | os.PathLike):
            raise _fail("model", "a str ('rna-fm') or a path to a checkpoint", self.model)
        poolings = _check_pooling(self.pooling)
        _check_choice("layer_aggregation", self.layer_aggregation, AGGREGATIONS)
        _check_choice("long_sequences", self.long_sequences, POLICIES)
        _check_choice("truncation_side", self.truncation_side, TRUNCATION_SIDES)
        if self.column is not None and not isinstance(self.column, str | Integral):
            raise _fail("column", "a str (a DataFrame column name) or None", self.column)
        if self.dtype not in DTYPES:
            raise _fail("dtype", _among(DTYPES), self.dtype)
        if not isinstance(self.device, str):
            raise _fail("device", "a str such as 'auto', 'cpu' or 'cuda'", self.device)
        if self.cache is not None and not isinstance(self.cache, str | os.PathLike):
            raise _fail("cache", "a path (str or os.PathLike) or None", self.cache)
        if self.progress not in (True, False, "auto"):
            raise _fail("progress", "a bool or 'auto'", self.progress)
        if self.batch_tokens is not None and not (
            isinstance(self.batch_tokens, Integral) and self.batch_tokens > 0
        ):
            raise _fail("batch_tokens", "a positive int or None", self.batch_tokens)
        try:
            device = resolve_device(self.device)
        except RuntimeError as exc:
            raise _fail(
                "device", "a torch device string ('auto', 'cpu', 'cuda')", self.device
            ) from exc
        if self.dtype == "float16" and device.type == "cpu":
            raise InvalidParameterError(
                "The 'dtype' parameter of RnaFmEmbedder is 'float16', which needs a GPU; on the "
                "CPU use 'bfloat16' (fast on CPUs with AVX-512 BF16) or 'float32'."
            )
        config = get_config(self.model)
        layers = _check_layers(self.layers, config.num_layers)
        window = config.max_sequence_tokens
        if self.window_stride is not None and not (
            isinstance(self.window_stride, Integral)
            and not isinstance(self.window_stride, bool)
            and 1 <= self.window_stride <= window
        ):
            raise _fail("window_stride", f"an int in 1..{window} or None", self.window_stride)
        plan = Plan(
            layers=tuple(layers),
            aggregate=self.layer_aggregation,
            poolings=poolings,
            window_stride=self.window_stride or window // 2,
        )
        return plan, config, device

    def _prepare(self, X: Any) -> tuple[Runner, Plan, list[bytes]]:
        plan, _, device = self._settings()
        encoder = get_encoder(self.model, device, DTYPES[self.dtype])
        raw, index = _as_sequences(X, self.column)
        alphabet = get_alphabet(encoder.config.alphabet)
        sequences = normalize_sequences(raw, alphabet, index=index)
        tokens = [alphabet.encode_body(s) for s in sequences]
        del sequences
        tokens = self._apply_length_policy(
            tokens, index, alphabet, encoder.config.max_sequence_tokens
        )
        budget = self.batch_tokens or DEFAULT_BATCH_TOKENS.get(
            next(encoder.parameters()).device.type, 4096
        )
        return Runner(encoder, batch_tokens=budget), plan, tokens

    def _apply_length_policy(
        self,
        tokens: list[bytes],
        index: Sequence[object] | None,
        alphabet: Alphabet,
        limit: int,
    ) -> list[bytes]:
        long_rows = [i for i, t in enumerate(tokens) if len(t) > limit]
        if not long_rows or self.long_sequences == "window":
            return tokens
        fam = family(alphabet.name)
        if self.long_sequences == "error":
            shown = ", ".join(
                f"{row_name(i, None if index is None else index[i])} "
                f"({fam.count(len(tokens[i]))})"
                for i in long_rows[:10]
            )
            more = f" and {len(long_rows) - 10} more" if len(long_rows) > 10 else ""
            raise ValueError(
                f"{len(long_rows)} sequence(s) exceed {fam.display_name}'s limit of "
                f"{fam.count(limit)}: "
                f"{shown}{more}. "
                "Choose a policy: long_sequences='window' embeds overlapping windows and "
                "stitches them (every nucleotide kept), long_sequences='truncate' keeps the "
                f"first {limit} (truncation_side='left' keeps the last)."
            )
        keep = slice(None, limit) if self.truncation_side == "right" else slice(-limit, None)
        warn(
            f"Truncated {len(long_rows)} of {len(tokens)} sequence(s) longer than "
            f"{fam.count(limit)} to their {'first' if self.truncation_side == 'right' else 'last'}"
            f" {fam.count(limit)} (longest: {fam.count(max(len(tokens[i]) for i in long_rows))})."
            " Use long_sequences='window' to keep every nucleotide."
        )
        return [t[keep] if len(t) > limit else t for t in tokens]

    def _run(self, runner: Runner, tokens: list[bytes], work, plan: Plan):
        show = self.progress is True or (self.progress == "auto" and sys.stderr.isatty())
        if not show or not tokens:
            return work(runner, tokens)
        from tqdm.auto import tqdm

        # One tick per forward-pass piece: a sequence, or a window of a long one.
        pieces = sum(n_windows(len(t), runner.window, plan.window_stride) for t in tokens)
        unit = "seq" if pieces == len(tokens) else "window"
        with tqdm(total=pieces, desc="RNA-FM", unit=unit, file=sys.stderr) as bar:
            runner.progress = bar.update
            try:
                return work(runner, tokens)
            finally:
                runner.progress = None


# -------------------------------------------------------------------------- validation


def _among(choices: Sequence[str]) -> str:
    return "a str among {" + ", ".join(repr(c) for c in sorted(choices)) + "}"


def _check_choice(name: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise _fail(name, _among(choices), value)


def _check_pooling(pooling: object) -> tuple[str, ...]:
    allowed = (*POOLINGS, "mean+max")
    requirement = _among(allowed) + " or a non-empty list of them"
    items = [pooling] if isinstance(pooling, str) else pooling
    if not isinstance(items, list | tuple) or not items:
        raise _fail("pooling", requirement, pooling)
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or item not in allowed:
            raise _fail("pooling", requirement, pooling)
        out += ["mean", "max"] if item == "mean+max" else [item]
    if len(set(out)) != len(out):
        raise _fail("pooling", requirement + " without repeats", pooling)
    return tuple(out)


def _check_layers(layers: object, n: int) -> list[int]:
    requirement = f"an int or a non-empty list of distinct ints in -{n + 1}..{n} for this model"
    items = [layers] if isinstance(layers, Integral) else layers
    if (
        not isinstance(items, list | tuple | np.ndarray)
        or len(items) == 0
        or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items)
        or not all(-(n + 1) <= i <= n for i in items)
    ):
        raise _fail("layers", requirement, layers)
    out = [int(i) % (n + 1) for i in items]
    if len(set(out)) != len(out):
        raise _fail("layers", requirement, layers)
    return out


# ------------------------------------------------------------------------------- input


def select_column(columns: Sequence[object], column: object, what: str = "X") -> object:
    """Label of the sequence column among a DataFrame's ``columns``.

    ``column=None`` takes the only column. A label that is absent, or present more than once
    (pandas would return a DataFrame and its column names would be read as sequences), is an
    error naming the columns.
    """
    labels = list(columns)
    if column is None:
        if len(labels) == 1:
            return labels[0]
        raise ValueError(
            f"{what} is a DataFrame with {len(labels)} columns {labels}; set "
            "column='<name of the sequence column>' or pass that column alone."
        )
    hits = sum(1 for c in labels if c == column)
    if hits == 0:
        raise KeyError(f"Column {column!r} not found in {what}; available columns: {labels}.")
    if hits > 1:
        raise ValueError(
            f"Column {column!r} appears {hits} times in {what} (columns: {labels}); the "
            "sequence column must be unique. Rename or drop the duplicates."
        )
    return column


def _as_sequences(X: Any, column: Any) -> tuple[list[object], list[object] | None]:
    """Turn the accepted input types into a list of values plus row labels."""
    if isinstance(X, str | bytes):
        raise TypeError(
            "RnaFmEmbedder expects a collection of sequences (list, array, pandas Series or "
            "DataFrame), got a single string. Wrap it in a list: transform([sequence])."
        )
    if isinstance(X, Mapping | Set):
        raise TypeError(
            f"RnaFmEmbedder expects an ordered collection of sequences (list, array, pandas "
            f"Series or DataFrame), got a {type(X).__name__}. For a dict of id -> sequence, "
            "pass pd.Series(d) (ids become the index); a set has no order, use sorted(s)."
        )
    if isinstance(X, pd.DataFrame):
        label = select_column(X.columns, column)
        X = X.iloc[:, 0] if column is None else X[label]
    if isinstance(X, pd.Series):
        return X.tolist(), X.index.tolist()
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        if X.ndim != 1:
            raise ValueError(
                f"X must be 1-D (one sequence per row); got an array of shape {X.shape}."
            )
        return X.tolist(), None
    if hasattr(X, "__iter__"):
        return list(X), None
    raise TypeError(f"X must be a list, array, Series or DataFrame of str; got {type(X).__name__}.")


def _deduplicate(tokens: list[bytes]) -> tuple[list[bytes], np.ndarray]:
    """Unique token lists (first-seen order) and the row -> unique index map."""
    position: dict[bytes, int] = {}
    inverse = np.empty(len(tokens), dtype=np.int64)
    unique: list[bytes] = []
    for row, t in enumerate(tokens):
        j = position.get(t)
        if j is None:
            j = position[t] = len(unique)
            unique.append(t)
        inverse[row] = j
    return unique, inverse
