"""The shared base of the masked-LM scoring estimators (``_likelihood``, ``_variant_scorer``).

Both are stateless (nothing is learned: ``fit`` only checks) and score with the encoder and its
masked-LM head through :class:`rnafm_sklearn._lm.LogProbs` (log-probabilities renormalised
over the nucleotides, or the 64 codons for mRNA-FM).
"""

from __future__ import annotations

import torch

from ._base import RnaFmEstimator
from ._lm import LogProbs, masked_lm

__all__ = ["_Scoring"]


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


def __getattr__(name: str):
    """Estimators pickled by rnafm_sklearn 0.1.0 name this module as their class's home."""
    if name == "RnaFmLikelihood":
        from ._likelihood import RnaFmLikelihood

        return RnaFmLikelihood
    if name == "RnaFmVariantScorer":
        from ._variant_scorer import RnaFmVariantScorer

        return RnaFmVariantScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
