"""``RnaFmVariantScorer`` and :func:`score_variants`: zero-shot variant effects.

The estimator reads a DataFrame of wild types and mutations (or mutant sequences), the
function plain lists or Series; both score substitutions under the four conventions of
:class:`RnaFmVariantScorer` with the masked-LM head. Turning rows into checked variants and
the passes they need into scores is ``_variant_plan``'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import TransformerMixin

from ._alphabet import get_alphabet, normalize_sequences
from ._base import _among
from ._choices import METHODS
from ._encoder_config import RnaFmConfig
from ._input import _as_sequences, _cut, select_column
from ._mutations import Variant, apply
from ._scoring import _Scoring
from ._variant_plan import (
    VariantPlan,
    check_scored_positions,
    encode_shared,
    parse_variants,
    warn_many_substitutions,
)

__all__ = ["RnaFmVariantScorer", "score_variants"]


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
        wt_tokens = self._apply_length_policy(encode_shared(wts, alphabet), index, config)
        variants: list[Variant] | None = None
        marginal = [m for m in methods if m != "pseudo-likelihood"]
        if mutations is not None or marginal:
            variants = parse_variants(wts, other, alphabet, mutations is not None, index)
        if mutants is not None:
            mt_seqs = normalize_sequences(mutants, alphabet, index=index)
            if variants is not None:
                warn_many_substitutions(variants, wt_tokens, index)
        elif {"mutant-marginal", "pseudo-likelihood"} & set(methods):
            assert variants is not None
            mt_seqs = [apply(wt, v, alphabet) for wt, v in zip(wts, variants, strict=True)]
        else:  # the wild-type passes are all it takes: no mutant is built
            mt_seqs = []
        mt_tokens = self._apply_length_policy(encode_shared(mt_seqs, alphabet), index, config)
        if "pseudo-likelihood" in methods:
            check_scored_positions(lp, alphabet, wt_tokens, mt_tokens, index)
        plan = VariantPlan(lp, methods, wt_tokens, mt_tokens, variants, alphabet)
        with self._progress(lp.runner, plan.n_passes(), "pass"):
            return plan.run()


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
