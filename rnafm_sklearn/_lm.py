"""Masked-LM log-probabilities over many sequences: deduplicated, batched, device-agnostic.

Knows nothing of scikit-learn. Sequences are token lists (``bytes``, one byte per token, as in
``_inference``). Every log-probability here is renormalised over the *candidate* tokens: the
four nucleotides A, C, G, U for RNA-FM, the 64 codons for mRNA-FM::

    log p(a | context) = logit_a - logsumexp(logit_c for c in candidates)

Differences of two candidates' log-probabilities (variant scores) do not depend on this, a
pseudo-log-likelihood does; the renormalised one is used everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ._alphabet import Alphabet, get_alphabet
from ._encoder import RnaFmEncoder
from ._inference import Runner
from ._windows import n_windows

__all__ = [
    "MASKED_BATCH_TOKENS_BF16_CPU",
    "LogProbs",
    "candidate_tokens",
    "masked_batch_tokens",
    "masked_lm",
    "missing_head_message",
]

# Token budget of the masked passes in bfloat16 on the CPU when ``batch_tokens`` is left at
# None (other passes keep the library's default). Masked passes of one wild type are copies of
# the same length; bfloat16 matrix products gain from more rows per product: per masked
# 118-token copy, 2048 tokens took 0.76x the time of 1024 (4096: 0.74x; float32: no gain),
# minimum of 12 paired runs on 2 cores. Memory: ~21 MB per layer activation at 2048 rows.
MASKED_BATCH_TOKENS_BF16_CPU = 2048


def masked_batch_tokens(batch_tokens: int | None, encoder: RnaFmEncoder) -> int | None:
    """The token budget of masked passes: ``None`` keeps the runner's (see above)."""
    weight = encoder.embed_tokens.weight
    if batch_tokens is None and weight.device.type == "cpu" and weight.dtype == torch.bfloat16:
        return MASKED_BATCH_TOKENS_BF16_CPU
    return None


def missing_head_message(model: object) -> str:
    """The error for a checkpoint without the masked-LM head: what is missing, where it is."""
    return (
        f"The checkpoint {model} has no masked-LM head (lm_head.* tensors), so it gives "
        "embeddings but no log-probabilities, likelihoods or variant scores. The head is in the "
        "official RNA-FM_pretrained.pth / mRNA-FM_pretrained.pth, in multimolecule "
        "RnaFmForMaskedLM / RnaFmForPreTraining folders, and in folders written by "
        "rnafm_sklearn.save_model or convert_checkpoint from one of those."
    )


def masked_lm(runner: Runner, model: object, batch_tokens: int | None, stride: int) -> LogProbs:
    """The estimators' masked-LM set-up: ``LogProbs`` over the runner's encoder.

    Raises the missing-head error (naming ``model``) for an encoder without the masked-LM
    head; masked passes get the budget of :func:`masked_batch_tokens`.
    """
    encoder = runner.encoder
    if encoder.lm_head is None:
        raise ValueError(missing_head_message(model))
    alphabet = get_alphabet(encoder.config.alphabet)
    return LogProbs(runner, alphabet, stride, masked_batch_tokens(batch_tokens, encoder))


def candidate_tokens(alphabet: Alphabet) -> tuple[str, ...]:
    """Tokens the log-probabilities are renormalised over, in column order.

    ``("A", "C", "G", "U")`` for RNA-FM; the 64 codons in the official vocabulary order for
    mRNA-FM (stop codons included: they are ordinary tokens of the model).
    """
    if alphabet.k == 1:
        return tuple("ACGU")
    return tuple(t for t in alphabet.standard_tokens if set(t) <= set("ACGU"))


class LogProbs:
    """Per-position log-probabilities of one encoder's masked-LM head.

    Parameters
    ----------
    runner : Runner
        Batching and device; its encoder must carry the masked-LM head.
    alphabet : Alphabet
        The encoder's vocabulary.
    stride : int
        Window stride for sequences longer than the model's window.
    masked_batch_tokens : int, optional
        Token budget of the masked passes (default: the runner's).

    Notes
    -----
    Identical contexts are computed once: unmasked passes are deduplicated by token list,
    masked passes by ``(token list, position)``. Every pass goes through the runner's
    token-budget batches; masked copies exist only inside a batch.
    """

    def __init__(
        self,
        runner: Runner,
        alphabet: Alphabet,
        stride: int,
        masked_batch_tokens: int | None = None,
    ):
        self.runner = runner
        self.stride = stride
        self.masked_batch_tokens = masked_batch_tokens
        self.tokens = candidate_tokens(alphabet)
        self.ids = [alphabet.index(t) for t in self.tokens]
        # token id -> column (or -1 for a token that is not a candidate, e.g. N or a gap)
        self.column = np.full(256, -1, dtype=np.int64)
        self.column[self.ids] = np.arange(len(self.ids))

    # ------------------------------------------------------------------------ counting
    def n_unmasked_passes(self, token_lists: Sequence[bytes]) -> int:
        return sum(n_windows(len(t), self.runner.window, self.stride) for t in set(token_lists))

    # ------------------------------------------------------------------------ computing
    def unmasked(self, token_lists: Sequence[bytes]) -> list[np.ndarray]:
        """``(L, C)`` per token list from one pass over it (per window); duplicates shared."""
        unique = list(dict.fromkeys(token_lists))
        out = self.runner.unmasked_log_probs(unique, self.ids, self.stride)
        by_tokens = dict(zip(unique, out, strict=True))
        return [by_tokens[t] for t in token_lists]

    def masked(self, sites: Sequence[tuple[bytes, int]]) -> np.ndarray:
        """``(n_sites, C)``: at each ``(token list, position)``, that position alone masked.

        Duplicate sites cost one pass; a long sequence's site is masked in the window that
        owns the position (where it is farthest from an edge).
        """
        unique_sites = list(dict.fromkeys(sites))
        unique_tokens = list(dict.fromkeys(t for t, _ in unique_sites))
        index = {t: i for i, t in enumerate(unique_tokens)}
        values = self.runner.masked_log_probs(
            unique_tokens,
            [(index[t], pos) for t, pos in unique_sites],
            self.ids,
            self.stride,
            self.masked_batch_tokens,
        )
        row = {site: i for i, site in enumerate(unique_sites)}
        return values[[row[site] for site in sites]] if sites else values

    def scorable(self, tokens: bytes) -> np.ndarray:
        """Positions holding a candidate token (IUPAC codes and gaps are skipped)."""
        return np.flatnonzero(self.column[np.frombuffer(tokens, dtype=np.uint8)] >= 0)

    def pseudo_log_likelihood(self, token_lists: Sequence[bytes]) -> np.ndarray:
        """``(n, 2)``: sum of log p(x_i | x without i) over scorable positions, and their count.

        Each scorable position is masked once (``L`` passes for ``L`` positions, batched).
        """
        sites = [(t, int(p)) for t in dict.fromkeys(token_lists) for p in self.scorable(t)]
        values = self.masked(sites)
        sums: dict[bytes, float] = {}
        counts: dict[bytes, int] = {}
        for (t, p), row in zip(sites, values, strict=True):
            sums[t] = sums.get(t, 0.0) + float(row[self.column[t[p]]])
            counts[t] = counts.get(t, 0) + 1
        out = [(sums.get(t, 0.0), counts.get(t, 0)) for t in token_lists]
        return np.array(out, np.float64).reshape(len(token_lists), 2)

    def unmasked_log_likelihood(self, token_lists: Sequence[bytes]) -> np.ndarray:
        """``(n, 2)``: sum of log p(x_i | x) over scorable positions (one pass), and the count."""
        out = np.zeros((len(token_lists), 2), np.float64)
        for k, (t, lp) in enumerate(zip(token_lists, self.unmasked(token_lists), strict=True)):
            pos = self.scorable(t)
            cols = self.column[np.frombuffer(t, dtype=np.uint8)[pos]]
            out[k] = (float(lp[pos, cols].astype(np.float64).sum()), len(pos))
        return out
