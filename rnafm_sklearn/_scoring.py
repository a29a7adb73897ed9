"""Masked-LM scoring as scikit-learn estimators: sequence likelihoods and variant effects.

``RnaFmLikelihood`` turns sequences into likelihood features; ``RnaFmVariantScorer`` and
:func:`score_variants` score substitutions zero-shot under the four conventions below. The
log-probabilities come from :class:`rnafm_sklearn._lm.LogProbs` (renormalised over the
nucleotides, or the 64 codons for mRNA-FM).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import TransformerMixin

from ._alphabet import Alphabet, get_alphabet, normalize_sequences, row_name
from ._base import RnaFmEstimator, _among
from ._cache import EmbeddingCache
from ._choices import KINDS, METHODS
from ._encoder import RnaFmConfig
from ._errors import warn
from ._family import family
from ._input import _as_sequences, _cut, select_column
from ._lm import LogProbs, masked_lm
from ._models import weights_fingerprint
from ._mutations import Variant, apply, mutations_from_mutant, parse_mutations

__all__ = ["METHODS", "RnaFmLikelihood", "RnaFmVariantScorer", "score_variants"]

_CHUNK = 64  # sequences per chunk of pseudo-likelihoods (and per cache commit)
_MAX_LISTED = 20  # rows listed in one error or warning
# A mutant sequence with more substitutions than this, or that differs in more than this
# fraction of its positions, is likely an insertion or deletion written as a sequence.
_MANY_SUBSTITUTIONS = 10
_MANY_FRACTION = 0.2


class _Scoring(RnaFmEstimator):
    """Shared set-up of the scoring estimators: the encoder with its head, and ``LogProbs``."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless: nothing is learned

    def _log_probs(self, device: torch.device, stride: int) -> LogProbs:
        return masked_lm(self._runner(self._encoder(device)), self.model, self.batch_tokens, stride)


class RnaFmLikelihood(TransformerMixin, _Scoring):
    """Sequence likelihood features from RNA-FM's masked-LM head.

    Per sequence, over the positions holding A, C, G or U (a codon of them for mRNA-FM;
    IUPAC codes and gaps are skipped and do not count):

    * ``pll``: the pseudo-log-likelihood, sum over positions ``i`` of
      ``log p(x_i | x with position i masked)``: one masked pass per position, batched;
    * ``pll_per_nt``: ``pll`` divided by the number of positions scored;
    * ``ll_unmasked`` and ``ll_unmasked_per_nt``: the same from one *unmasked* pass
      (``log p(x_i | x)``): cheap, but every position sees itself.

    Probabilities are renormalised over the four nucleotides (64 codons for mRNA-FM):
    ``log p_i = logit_i - logsumexp`` of the candidates' logits. Columns are named
    ``pll_per_codon`` etc. for mRNA-FM.

    Parameters
    ----------
    model : str or path, default="rna-fm"
        As for :class:`RnaFmEmbedder`; the checkpoint must carry the masked-LM head.
    kind : {"pseudo", "unmasked", "both"}, default="pseudo"
        Which features: the pseudo-log-likelihood pair, the unmasked pair, or all four.
    column, long_sequences, truncation_side, window_stride, device, dtype, batch_tokens, \
progress, cache
        As for :class:`RnaFmEmbedder`. With ``long_sequences="window"`` each position is
        scored (and masked) in the window where it is farthest from an edge. With
        ``batch_tokens=None``, the masked passes in bfloat16 on the CPU are batched by 2048
        tokens (faster there; the other passes by the library's default).

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmLikelihood
    >>> lik = RnaFmLikelihood(model="tests/fixtures/RNA-FM_tiny.pth", kind="both")
    >>> X = lik.fit_transform(["ACGUAGCUAG", "GGGAAACCCN"])
    >>> X.shape, list(lik.get_feature_names_out()[:2])
    ((2, 4), ['pll', 'pll_per_nt'])
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm",
        kind: str = "pseudo",
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
        self.kind = kind
        self.column = column
        self.long_sequences = long_sequences
        self.truncation_side = truncation_side
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.cache = cache

    def _settings(self) -> tuple[RnaFmConfig, torch.device, int]:
        self._check_choice("kind", self.kind, KINDS)
        return self._check_common()

    def fit(self, X: Any, y: Any = None) -> RnaFmLikelihood:
        """Check parameters and input and load the model; nothing is learned.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : RnaFmLikelihood

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            or one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.
        rnafm_sklearn.WeightsUnavailableError
            ``model="rna-fm"`` offline and not downloaded yet.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmLikelihood
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> RnaFmLikelihood(model=tiny, kind="unmasked").fit(["ACGU"]).kind
        'unmasked'
        """
        config, device, stride = self._settings()
        self._log_probs(device, stride)
        self._tokens(X, config)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``, validating ``X`` once.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of shape (n_samples, 2) or (n_samples, 4), float64
            As :meth:`transform` returns.

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            or one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.
        rnafm_sklearn.WeightsUnavailableError
            ``model="rna-fm"`` offline and not downloaded yet.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmLikelihood
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> RnaFmLikelihood(model=tiny, kind="unmasked").fit_transform(["ACGUAG", "GGGCCC"]).shape
        (2, 2)
        """
        return self.transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``["pll", "pll_per_nt"]`` and/or ``["ll_unmasked", "ll_unmasked_per_nt"]``.

        For mRNA-FM the per-position names end in ``_per_codon``.

        Parameters
        ----------
        input_features : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of str objects
            The column names, in column order.

        Raises
        ------
        rnafm_sklearn.InvalidParameterError
            An unknown ``kind`` or another parameter out of its range.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmLikelihood
        >>> list(RnaFmLikelihood(model="tests/fixtures/RNA-FM_tiny.pth").get_feature_names_out())
        ['pll', 'pll_per_nt']
        """
        config, _, _ = self._settings()
        unit = family(config.alphabet).unit
        names = []
        if self.kind in ("pseudo", "both"):
            names += ["pll", f"pll_per_{unit}"]
        if self.kind in ("unmasked", "both"):
            names += ["ll_unmasked", f"ll_unmasked_per_{unit}"]
        return np.asarray(names, dtype=object)

    def transform(self, X: Any) -> np.ndarray:
        """Likelihood features, ``(n_samples, 2)`` (``kind="both"``: 4), float64.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples, 2) or (n_samples, 4), float64
            Per sequence the sum of the log-probabilities and their mean per scored
            position (see :meth:`get_feature_names_out`), rows in input order; a DataFrame
            with ``set_output(transform="pandas")``.

        Raises
        ------
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            or one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.
        rnafm_sklearn.WeightsUnavailableError
            ``model="rna-fm"`` offline and not downloaded yet.
            A sequence without any A/C/G/U position (nothing to score) is a ``ValueError``
            naming it.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmLikelihood
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> X = RnaFmLikelihood(model=tiny, kind="unmasked").fit_transform(["ACGUAG"])
        >>> bool(X[0, 0] < 0 and abs(X[0, 1] - X[0, 0] / 6) < 1e-9)
        True
        """
        config, device, stride = self._settings()
        lp = self._log_probs(device, stride)
        tokens, index = self._tokens(X, config)
        what = "A, C, G or U" if config.alphabet == "rna" else "a codon of A, C, G and U"
        for i, t in enumerate(tokens):
            if len(lp.scorable(t)) == 0:
                raise ValueError(
                    f"Sequence at {row_name(i, None if index is None else index[i])} has no "
                    f"position holding {what}: nothing to score."
                )
        if not tokens:
            return np.empty((0, 4 if self.kind == "both" else 2), np.float64)
        unique = list(dict.fromkeys(tokens))
        raw = self._raw(lp, unique) if self.cache is None else self._cached(lp, unique)
        by_tokens = dict(zip(unique, raw, strict=True))
        sums = np.array([by_tokens[t] for t in tokens], np.float64).reshape(len(tokens), -1)
        cols = []
        for j in range(0, sums.shape[1], 2):
            cols += [sums[:, j], sums[:, j] / sums[:, j + 1]]
        return np.stack(cols, axis=1) if cols else np.empty((0, 0))

    def _raw(self, lp: LogProbs, tokens: list[bytes]) -> np.ndarray:
        """``(n, 2)`` or ``(n, 4)``: (sum, count) per requested kind."""
        parts = []
        total = 0
        if self.kind in ("pseudo", "both"):
            total += sum(len(lp.scorable(t)) for t in tokens)
        if self.kind in ("unmasked", "both"):
            total += lp.n_unmasked_passes(tokens)
        with self._progress(lp.runner, total, "pass"):
            if self.kind in ("pseudo", "both"):
                # in chunks: the masked sites of all sequences at once would grow with their
                # number (~500 bytes per position); a chunk's sites are bounded
                parts.append(
                    np.concatenate(
                        [
                            lp.pseudo_log_likelihood(tokens[i : i + _CHUNK])
                            for i in range(0, len(tokens), _CHUNK)
                        ]
                        or [np.empty((0, 2))]
                    )
                )
            if self.kind in ("unmasked", "both"):
                parts.append(lp.unmasked_log_likelihood(tokens))
        return np.concatenate(parts, axis=1)

    def _cached(self, lp: LogProbs, unique: list[bytes]) -> np.ndarray:
        """Look every sequence up in the cache; compute and commit misses in chunks."""
        cache = EmbeddingCache(self.cache)
        settings = {
            "what": "likelihood",
            "weights": weights_fingerprint(lp.runner.encoder, head=True),
            "kind": self.kind,
        }
        keys = self._cache_keys(settings, lp.runner, lp.stride, unique)
        width = 4 if self.kind == "both" else 2
        out, missing = self._cache_lookup(cache, keys, width, np.float64)
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            values = self._raw(lp, [unique[i] for i in chunk])
            cache.put([keys[i] for i in chunk], values.astype(np.float32))
            # what the cache returns is what a later call gets: keep the runs identical
            out[chunk] = values.astype(np.float32)
        cache.close()
        return out


class RnaFmVariantScorer(TransformerMixin, _Scoring):
    """Zero-shot variant effects from RNA-FM's masked-LM head, as features.

    ``X`` is a DataFrame with the wild type in ``sequence_column`` and either the mutations
    (``"A12G"``, several as ``"A12G:C30U"``, 1-based, the reference letter checked, T read as
    U, ``"WT"`` for the wild type itself) in ``mutation_column`` or the mutant sequences in
    ``mutant_column``. For a variant with substitutions at positions ``P``, where
    ``lp(s, i, a)`` is the log-probability of token ``a`` at position ``i`` given sequence
    ``s`` (renormalised over the nucleotides, or the 64 codons for mRNA-FM):

    * ``"wt-marginal"``: one unmasked pass over the wild type;
      ``sum_{i in P} lp(wt, i, mt_i) - lp(wt, i, wt_i)``.
    * ``"masked-marginal"``: position ``i`` masked in the wild type, one pass per *distinct*
      position, shared by every variant of that wild type; the same sum with
      ``lp(wt with i masked, i, .)``.
    * ``"mutant-marginal"``: one unmasked pass over each mutant; the same sum with
      ``lp(mt, i, .)``.
    * ``"pseudo-likelihood"``: ``PLL(mutant) - PLL(wild type)``, each PLL the sum over the
      sequence's A/C/G/U positions of ``log p(x_i | x with i masked)`` (one pass per
      position); the only convention that compares sequences of different lengths. Scored
      positions must correspond: a mutant may hold an IUPAC code or a gap only where its wild
      type holds the same (at the same position when the lengths are equal, in the same
      order otherwise), else an ``N`` would drop a term and raise the score; such a mutant
      is an error naming the row. Write a deletion by leaving its letters out, not as ``-``.

    A mutant sequence that differs from its wild type in more than 10 positions, or in over
    20 % of them (at least 2), is most likely an insertion or deletion written at the wild
    type's length: the marginal conventions score it as that many substitutions, with one
    warning naming the rows. Every bad row (a mutation that does not match, a position out
    of range, a malformed string) is reported in one error: the first 20 and a count.

    For mRNA-FM the positions are nucleotides mapped to codons: the changes in one codon are
    scored as one codon change (a synonymous change included); an out-of-frame or ambiguous
    codon is an error.

    Parameters
    ----------
    model : str or path, default="rna-fm"
        As for :class:`RnaFmEmbedder`; the checkpoint must carry the masked-LM head.
    method : str or list of str, default="masked-marginal"
        One of the conventions above, or a list (one output column each).
    sequence_column, mutation_column, mutant_column : str
        Columns of ``X``. Give ``mutant_column`` to score mutant sequences instead of
        mutation strings.
    long_sequences : {"error", "window"}, default="error"
        ``"truncate"`` is not offered: it could cut off the mutated positions.
    window_stride, device, dtype, batch_tokens, progress
        As for :class:`RnaFmEmbedder`. With ``batch_tokens=None``, the masked passes in
        bfloat16 on the CPU are batched by 2048 tokens (faster there).

    Examples
    --------
    >>> import pandas as pd
    >>> from rnafm_sklearn import RnaFmVariantScorer
    >>> X = pd.DataFrame({"sequence": ["ACGUAGCUAG"] * 2, "mutations": ["A1G", "C2U:G3A"]})
    >>> scorer = RnaFmVariantScorer(model="tests/fixtures/RNA-FM_tiny.pth")
    >>> scorer.fit_transform(X).shape, list(scorer.get_feature_names_out())
    ((2, 1), ['score_masked_marginal'])
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm",
        method: str | Sequence[str] = "masked-marginal",
        sequence_column: str = "sequence",
        mutation_column: str = "mutations",
        mutant_column: str | None = None,
        long_sequences: str = "error",
        window_stride: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_tokens: int | None = None,
        progress: bool | str = "auto",
    ):
        self.model = model
        self.method = method
        self.sequence_column = sequence_column
        self.mutation_column = mutation_column
        self.mutant_column = mutant_column
        self.long_sequences = long_sequences
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.progress = progress

    # truncation could cut off the mutated positions: only error or window
    _length_policies = ("error", "window")
    # parameters of the shared checks that this estimator does not offer
    column = None
    truncation_side = "right"
    cache = None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # a DataFrame of wild types and mutations
        return tags

    def _methods(self) -> tuple[str, ...]:
        items = [self.method] if isinstance(self.method, str) else self.method
        requirement = _among(METHODS) + " or a non-empty list of them"
        if not isinstance(items, list | tuple) or not items:
            raise self._fail("method", requirement, self.method)
        for m in items:
            if not isinstance(m, str) or m not in METHODS:
                raise self._fail("method", requirement, self.method)
        if len(set(items)) != len(items):
            raise self._fail("method", requirement + " without repeats", self.method)
        return tuple(items)

    def _settings(self) -> tuple[tuple[str, ...], RnaFmConfig, torch.device, int]:
        methods = self._methods()
        config, device, stride = self._check_common()
        return methods, config, device, stride

    def fit(self, X: Any, y: Any = None) -> RnaFmVariantScorer:
        """Check parameters and load the model; nothing is learned.

        Parameters
        ----------
        X : pandas.DataFrame
            Not read here (see :meth:`transform`).
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        self : RnaFmVariantScorer

        Raises
        ------
        rnafm_sklearn.InvalidParameterError
            An unknown ``method`` or another parameter out of its range.
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.

        Examples
        --------
        >>> import pandas as pd
        >>> from rnafm_sklearn import RnaFmVariantScorer
        >>> table = pd.DataFrame({"sequence": ["ACGUAG", "ACGUAG"], "mutations": ["A1G", "WT"]})
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> RnaFmVariantScorer(model=tiny, progress=False).fit(table).method
        'masked-marginal'
        """
        _, _, device, stride = self._settings()
        self._log_probs(device, stride)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``.

        Parameters
        ----------
        X : pandas.DataFrame
            As for :meth:`transform`.
        y : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of shape (n_samples, n_methods), float64
            As :meth:`transform` returns.

        Raises
        ------
        TypeError
            ``X`` is not a DataFrame (:func:`score_variants` takes plain lists).
        ValueError
            A missing column, a malformed mutation, a reference letter that does not match,
            a position out of range or an invalid sequence: the message names the row.
        rnafm_sklearn.InvalidParameterError
            An unknown ``method`` or another parameter out of its range.
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.

        Examples
        --------
        >>> import pandas as pd
        >>> from rnafm_sklearn import RnaFmVariantScorer
        >>> table = pd.DataFrame({"sequence": ["ACGUAG", "ACGUAG"], "mutations": ["A1G", "WT"]})
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> RnaFmVariantScorer(model=tiny, progress=False).fit_transform(table).shape
        (2, 1)
        """
        return self.transform(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``score_<method>``, e.g. ``score_masked_marginal``.

        Parameters
        ----------
        input_features : Ignored
            Not used, present for API consistency by convention.

        Returns
        -------
        ndarray of str objects
            One name per method, in the order of ``method``.

        Raises
        ------
        rnafm_sklearn.InvalidParameterError
            An unknown ``method``.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmVariantScorer
        >>> scorer = RnaFmVariantScorer(method=["wt-marginal", "masked-marginal"])
        >>> list(scorer.get_feature_names_out())
        ['score_wt_marginal', 'score_masked_marginal']
        """
        return np.asarray(["score_" + m.replace("-", "_") for m in self._methods()], object)

    def transform(self, X: Any) -> np.ndarray:
        """Scores, ``(n_samples, n_methods)``, float64, rows in input order.

        Parameters
        ----------
        X : pandas.DataFrame
            One variant per row: the wild type in ``sequence_column`` and either its
            mutations in ``mutation_column`` or the mutant sequence in ``mutant_column``.

        Returns
        -------
        ndarray of shape (n_samples, n_methods), float64
            ``log p(mutant) - log p(wild type)`` per method (above 0: the model prefers the
            mutant); a DataFrame keeping ``X``'s index with ``set_output(transform="pandas")``.

        Raises
        ------
        TypeError
            ``X`` is not a DataFrame (:func:`score_variants` takes plain lists).
        ValueError
            A missing column, a malformed mutation, a reference letter that does not match,
            a position out of range or an invalid sequence: the message names the row.
        rnafm_sklearn.InvalidParameterError
            An unknown ``method`` or another parameter out of its range.
        rnafm_sklearn.CheckpointError
            A damaged checkpoint, or one without the masked-LM head.

        Examples
        --------
        >>> import pandas as pd
        >>> from rnafm_sklearn import RnaFmVariantScorer
        >>> table = pd.DataFrame({"sequence": ["ACGUAG", "ACGUAG"], "mutations": ["A1G", "WT"]})
        >>> tiny = "tests/fixtures/RNA-FM_tiny.pth"
        >>> scores = RnaFmVariantScorer(model=tiny, progress=False).fit_transform(table)
        >>> float(scores[1, 0])
        0.0
        """
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                f"RnaFmVariantScorer expects a DataFrame with the columns "
                f"{self.sequence_column!r} and {self.mutant_column or self.mutation_column!r}; "
                f"got {type(X).__name__}. score_variants() takes plain lists."
            )
        wild = X[select_column(X.columns, self.sequence_column, "X", "sequence_column")]
        if self.mutant_column is not None:
            other = X[select_column(X.columns, self.mutant_column, "X", "mutant_column")]
            return self._score(wild.tolist(), None, other.tolist(), wild.index.tolist())
        other = X[select_column(X.columns, self.mutation_column, "X", "mutation_column")]
        return self._score(wild.tolist(), other.tolist(), None, wild.index.tolist())

    # ------------------------------------------------------------------------- scoring
    def _score(
        self,
        wild_types: list[object],
        mutations: list[object] | None,
        mutants: list[object] | None,
        index: list[object] | None,
    ) -> np.ndarray:
        methods, config, device, stride = self._settings()
        alphabet = get_alphabet(config.alphabet)
        other = mutations if mutations is not None else mutants
        assert other is not None
        if len(other) != len(wild_types):
            raise ValueError(
                f"{len(wild_types)} wild-type sequences but {len(other)} "
                f"{'mutation strings' if mutations is not None else 'mutant sequences'}: one "
                "per row is needed."
            )
        lp = self._log_probs(device, stride)
        wts = normalize_sequences(wild_types, alphabet, index=index)
        wt_tokens = self._apply_length_policy(_encode_shared(wts, alphabet), index, config)
        variants: list[Variant] | None = None
        marginal = [m for m in methods if m != "pseudo-likelihood"]
        if mutations is not None or marginal:
            variants = self._variants(wts, other, alphabet, mutations is not None, index)
        if mutants is not None:
            mt_seqs = normalize_sequences(mutants, alphabet, index=index)
            if variants is not None:
                _warn_many_substitutions(variants, wt_tokens, index)
        elif {"mutant-marginal", "pseudo-likelihood"} & set(methods):
            assert variants is not None
            mt_seqs = [apply(wt, v, alphabet) for wt, v in zip(wts, variants, strict=True)]
        else:  # the wild-type passes are all it takes: no mutant is built
            mt_seqs = []
        mt_tokens = self._apply_length_policy(_encode_shared(mt_seqs, alphabet), index, config)
        if "pseudo-likelihood" in methods:
            _check_scored_positions(lp, alphabet, wt_tokens, mt_tokens, index)
        plan = _Plan(lp, methods, wt_tokens, mt_tokens, variants, alphabet)
        with self._progress(lp.runner, plan.n_passes(), "pass"):
            return plan.run()

    def _variants(
        self,
        wts: list[str],
        values: list[object],
        alphabet: Alphabet,
        is_mutation: bool,
        index: list[object] | None,
    ) -> list[Variant]:
        """Every row's substitutions; every bad row reported in one error."""
        variants: list[Variant] = []
        problems: list[Exception] = []
        for i, wt in enumerate(wts):
            try:
                variants.append(self._variant(wt, values[i], alphabet, is_mutation, index, i))
            except (ValueError, TypeError) as exc:
                problems.append(exc)
        _raise_all(problems, len(wts), "mutations" if is_mutation else "mutants")
        return variants

    def _variant(
        self,
        wt: str,
        value: object,
        alphabet: Alphabet,
        is_mutation: bool,
        index: list[object] | None,
        i: int,
    ) -> Variant:
        label = None if index is None else index[i]
        if is_mutation:
            return parse_mutations(value, wt, alphabet, f"Mutation at {row_name(i, label)}")
        return mutations_from_mutant(wt, value, alphabet, f"Mutant at {row_name(i, label)}")


class _Plan:
    """The passes a set of variants needs, deduplicated, and the sums that make the scores."""

    def __init__(self, lp, methods, wt_tokens, mt_tokens, variants, alphabet):
        self.lp, self.methods = lp, methods
        self.wt, self.mt, self.variants = wt_tokens, mt_tokens, variants
        self.col = {tok: j for j, tok in enumerate(lp.tokens)}
        self.sites = [
            (t, s.position) for t, v in zip(self.wt, variants or [], strict=False) for s in v
        ]

    def n_passes(self) -> int:
        lp, n = self.lp, 0
        if "wt-marginal" in self.methods:
            n += lp.n_unmasked_passes(self.wt)
        if "mutant-marginal" in self.methods:
            n += lp.n_unmasked_passes(self.mt)
        if "masked-marginal" in self.methods:
            n += len(set(self.sites))
        if "pseudo-likelihood" in self.methods:
            n += sum(len(lp.scorable(t)) for t in set(self.wt) | set(self.mt))
        return n

    def _marginal(self, log_probs: list[np.ndarray]) -> np.ndarray:
        """Sum over each variant's substitutions of lp[i, alt] - lp[i, ref]."""
        out = np.zeros(len(log_probs), np.float64)
        for k, (lp, variant) in enumerate(zip(log_probs, self.variants, strict=True)):
            for s in variant:
                out[k] += float(lp[s.position, self.col[s.alt]]) - float(
                    lp[s.position, self.col[s.ref]]
                )
        return out

    def _masked_marginal(self) -> np.ndarray:
        """The masked-marginal sums from one ``(C,)`` row per distinct (wild type, position).

        Only the rows that are read are kept: memory grows with the distinct mutated
        positions, not with the number of variants times the wild type's length.
        """
        sites = list(dict.fromkeys(self.sites))
        values = self.lp.masked(sites)
        row = {site: k for k, site in enumerate(sites)}
        out = np.zeros(len(self.wt), np.float64)
        for k, (t, variant) in enumerate(zip(self.wt, self.variants, strict=True)):
            for s in variant:
                lp = values[row[(t, s.position)]]
                out[k] += float(lp[self.col[s.alt]]) - float(lp[self.col[s.ref]])
        return out

    def run(self) -> np.ndarray:
        columns = []
        if not self.wt:
            return np.empty((0, len(self.methods)), np.float64)
        for method in self.methods:
            if method == "wt-marginal":
                columns.append(self._marginal(self.lp.unmasked(self.wt)))
            elif method == "mutant-marginal":
                columns.append(self._marginal(self.lp.unmasked(self.mt)))
            elif method == "masked-marginal":
                columns.append(self._masked_marginal())
            else:
                pll = self.lp.pseudo_log_likelihood(self.mt + self.wt)[:, 0]
                n = len(self.mt)
                columns.append(pll[:n] - pll[n:])
        return np.stack(columns, axis=1)


def _encode_shared(sequences: list[str], alphabet: Alphabet) -> list[bytes]:
    """Token lists, one object per distinct sequence (a wild type repeated on each of its
    thousands of variants is held once)."""
    seen: dict[str, bytes] = {}
    out = []
    for s in sequences:
        tokens = seen.get(s)
        if tokens is None:
            tokens = seen[s] = alphabet.encode_body(s)
        out.append(tokens)
    return out


def _listed(rows: list[int], index: list[object] | None) -> str:
    """The first rows by name, and how many more."""
    shown = ", ".join(row_name(i, None if index is None else index[i]) for i in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return shown + more


def _raise_all(problems: list[Exception], total: int, what: str) -> None:
    """Raise one error for every bad row (each message names its row): the first 20 and a count.

    A single problem is raised as it is (its type kept).
    """
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    shown = "\n".join(f"  {exc}" for exc in problems[:_MAX_LISTED])
    more = (
        f"\n  ... and {len(problems) - _MAX_LISTED} more"
        if len(problems) > _MAX_LISTED
        else ""
    )
    kind = TypeError if all(isinstance(p, TypeError) for p in problems) else ValueError
    raise kind(f"{len(problems)} of {total} {what} cannot be scored:\n{shown}{more}")


def _warn_many_substitutions(
    variants: list[Variant], wt_tokens: list[bytes], index: list[object] | None
) -> None:
    """Warn once about mutants that look like insertions or deletions written as sequences."""
    rows = [
        i
        for i, (v, t) in enumerate(zip(variants, wt_tokens, strict=True))
        if len(v) > _MANY_SUBSTITUTIONS or (len(v) > 1 and len(v) > _MANY_FRACTION * len(t))
    ]
    if rows:
        warn(
            f"{len(rows)} mutant(s) differ from their wild type in more than "
            f"{_MANY_SUBSTITUTIONS} positions or in over {_MANY_FRACTION:.0%} of them: "
            f"{_listed(rows, index)}. Each is scored as that many substitutions. An insertion "
            "or deletion? use method='pseudo-likelihood', which compares sequences of "
            "different lengths (give the mutant without gaps)."
        )


def _check_scored_positions(
    lp: LogProbs,
    alphabet: Alphabet,
    wt_tokens: list[bytes],
    mt_tokens: list[bytes],
    index: list[object] | None,
) -> None:
    """The pseudo-likelihood difference needs the same kind of positions in both sums.

    A PLL sums over the A/C/G/U positions only (codons of them for mRNA-FM): a mutant holding
    ``N`` where its wild type holds a nucleotide would drop terms and score higher. Of equal
    length, wild type and mutant must have their other tokens (IUPAC codes, gaps) at the same
    positions; of different lengths, the same such tokens in the same order.
    """
    unit = family(alphabet.name).unit
    problems: list[Exception] = []
    for i, (w, m) in enumerate(zip(wt_tokens, mt_tokens, strict=True)):
        if w == m:
            continue
        tw, tm = np.frombuffer(w, np.uint8), np.frombuffer(m, np.uint8)
        sw, sm = lp.column[tw] >= 0, lp.column[tm] >= 0
        if len(w) == len(m):
            differ = np.flatnonzero(sw != sm)
            if len(differ) == 0:
                continue
            p = int(differ[0])
            what = (
                f"{unit} {p + 1} (1-based) holds {alphabet.tokens[m[p]]!r} in the mutant but "
                f"{alphabet.tokens[w[p]]!r} in the wild type"
            )
        else:
            if np.array_equal(tw[~sw], tm[~sm]):
                continue
            what = (
                f"the mutant holds {int((~sm).sum())} ambiguity code(s) or gap(s), the wild "
                f"type {int((~sw).sum())} (they must be the same, in the same order)"
            )
        label = None if index is None else index[i]
        problems.append(
            ValueError(
                f"Mutant at {row_name(i, label)}: {what}. A pseudo-likelihood sums over A/C/G/U "
                "positions only, so the two sums would not cover corresponding positions (an N "
                "would drop a term and raise the score). Scored positions must correspond: "
                "resolve ambiguity codes in both, and write a deletion by leaving its letters "
                "out, not as '-'."
            )
        )
    _raise_all(problems, len(wt_tokens), "mutants")


def _align(
    index: list[object], values: list[object], other_index: list[object], what: str
) -> list[object]:
    """``values`` in the order of ``index``: two pandas inputs are paired by label."""
    mine, theirs = pd.Index(index), pd.Index(other_index)
    if mine.equals(theirs):
        return values
    if mine.is_unique and theirs.is_unique:
        order = theirs.get_indexer(mine)
        if (order >= 0).all():
            return [values[k] for k in order]
    only = [label for label in mine if label not in set(theirs)][:3] or list(mine[:3])
    raise ValueError(
        f"sequences and {what} are both pandas objects, so they are paired by index label, "
        f"but their labels differ (e.g. {_cut(only)} in sequences only, or labels repeated). "
        f"Give both the same labels, or pass {what}.tolist() to pair them by position."
    )


def score_variants(
    sequences: Any,
    mutations: Any = None,
    *,
    mutants: Any = None,
    method: str | Sequence[str] = "masked-marginal",
    model: str | os.PathLike = "rna-fm",
    **options: Any,
) -> pd.DataFrame:
    """Score variants zero-shot with RNA-FM's masked-LM head.

    Parameters
    ----------
    sequences : list or pandas Series of str
        Wild-type sequences, one per variant (repeat a wild type for each of its variants;
        its passes are shared).
    mutations : list or Series of str, optional
        ``"A12G"``, several as ``"A12G:C30U"`` (1-based nucleotide positions; the reference
        letter is checked; T is read as U; ``"WT"`` scores 0).
    mutants : list or Series of str, optional
        Mutant sequences instead of mutation strings (same length as the wild type, except
        for ``method="pseudo-likelihood"``).
    method : str or list of str, default="masked-marginal"
        ``"wt-marginal"``, ``"masked-marginal"``, ``"mutant-marginal"`` or
        ``"pseudo-likelihood"`` (defined in :class:`RnaFmVariantScorer`), or a list.
    model : str or path, default="rna-fm"
        A checkpoint with the masked-LM head.
    **options
        ``device``, ``dtype``, ``batch_tokens``, ``progress``, ``long_sequences``,
        ``window_stride`` (see :class:`RnaFmVariantScorer`).

    Returns
    -------
    pandas.DataFrame
        Aligned with ``sequences`` (its index and index name kept): one column per method,
        named ``score_<method>`` with underscores (``score_masked_marginal``), also for a
        single method.

    Notes
    -----
    When ``sequences`` and ``mutations`` (or ``mutants``) are both pandas objects, they are
    paired by index label (reordered if needed); differing labels are an error. Otherwise
    they are paired by position.

    Raises
    ------
    TypeError
        Neither or both of ``mutations`` and ``mutants`` given.
    ValueError
        A malformed mutation, a reference letter that does not match the wild type, a position
        out of range, a mutant of another length (marginal methods), an invalid sequence or a
        sequence longer than the model's window without ``long_sequences="window"``: the
        message names the row.
    rnafm_sklearn.CheckpointError
        The checkpoint has no masked-LM head.
    rnafm_sklearn.InvalidParameterError
        An unknown ``method`` or option value.

    Examples
    --------
    >>> from rnafm_sklearn import score_variants
    >>> scores = score_variants(["ACGUAGCUAG", "ACGUAGCUAG"], ["A1G", "WT"],
    ...                         model="tests/fixtures/RNA-FM_tiny.pth", progress=False)
    >>> list(scores.columns), float(scores["score_masked_marginal"].iloc[1])
    (['score_masked_marginal'], 0.0)
    """
    if (mutations is None) == (mutants is None):
        raise TypeError("score_variants needs exactly one of mutations= and mutants=.")
    raw, index = _as_sequences(sequences, None, "score_variants")
    given = mutations if mutants is None else mutants
    other, other_index = _as_sequences(given, None, "score_variants")
    if index is not None and other_index is not None and len(other) == len(raw):
        other = _align(index, other, other_index, "mutations" if mutants is None else "mutants")
    scorer = RnaFmVariantScorer(model=model, method=method, **options)
    values = scorer._score(
        raw,
        other if mutants is None else None,
        other if mutants is not None else None,
        index,
    )
    name = getattr(getattr(sequences, "index", None), "name", None)
    frame_index = pd.Index(index, name=name) if index is not None else pd.RangeIndex(len(raw))
    return pd.DataFrame(values, index=frame_index, columns=list(scorer.get_feature_names_out()))
