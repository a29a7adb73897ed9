"""``RnaFmLikelihood``: sequence likelihood features from the masked-LM head, as a transformer.

The pseudo-log-likelihood (one masked pass per position, in chunks of sequences) and/or the
unmasked log-likelihood of each sequence, with their means per scored position; through the
embedding cache if given.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from sklearn.base import TransformerMixin

from ._alphabet import row_name
from ._cache import EmbeddingCache
from ._choices import KINDS
from ._encoder_config import RnaFmConfig
from ._family import family
from ._lm import LogProbs
from ._models import weights_fingerprint
from ._scoring import _Scoring

__all__ = ["RnaFmLikelihood"]

_CHUNK = 64  # sequences per chunk of pseudo-likelihoods (and per cache commit)


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
