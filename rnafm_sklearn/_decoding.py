"""From a base-pair probability map to a structure: greedy (official RNA-FM) or nested (DP).

Both decoders admit the same candidates: pairs ``(i, j)``, ``i < j``, with ``probs[i, j] >
threshold`` (strict), ``j - i - 1 >= min_loop_length`` and, with ``canonical_only``, a
Watson-Crick or wobble pair (AU, UA, GC, CG, GU, UG; ``T`` counts as ``U``, case ignored).
Only the upper triangle is read: the map must be symmetric (as the official head's, whose
lower triangle mirrors the upper one) or upper-triangular (zeros below the diagonal, as
ViennaRNA's base-pair probabilities); anything else is refused rather than half-ignored.
numpy only.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_greedy", "decode_nested"]

_CODE = np.full(256, 4, dtype=np.int8)
for _k, _c in enumerate("ACGU"):
    _CODE[ord(_c)] = _CODE[ord(_c.lower())] = _k
_CODE[ord("T")] = _CODE[ord("t")] = 3
_CANONICAL = np.zeros((5, 5), dtype=bool)
for _a, _b in ("AU", "UA", "GC", "CG", "GU", "UG"):
    _CANONICAL["ACGU".index(_a), "ACGU".index(_b)] = True


def _check_map(probs: object, sequence: str) -> np.ndarray:
    if not isinstance(sequence, str):
        raise TypeError(f"sequence must be a str, got {type(sequence).__name__}.")
    try:
        p = np.asarray(probs, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"probs must be a square numeric array: {exc}") from exc
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"probs must be a square (L, L) array, got shape {p.shape}.")
    if p.shape[0] != len(sequence):
        raise ValueError(
            f"probs is {p.shape[0]} x {p.shape[1]} but the sequence has {len(sequence)} bases."
        )
    if not np.isfinite(p).all():
        i, j = np.argwhere(~np.isfinite(p))[0]
        raise ValueError(f"probs holds a non-finite value ({p[i, j]}) at row {i}, column {j}.")
    if (
        not np.array_equal(p, p.T)
        and np.tril(p, -1).any()
        and not np.allclose(p, p.T, rtol=1e-5, atol=1e-6)
    ):
        raise ValueError(
            "probs is neither symmetric nor upper-triangular; only the upper triangle (i < j) "
            "is decoded, so symmetrise the map first, e.g. (probs + probs.T) / 2."
        )
    return p


def _candidates(
    p: np.ndarray, sequence: str, threshold: float, min_loop_length: int, canonical_only: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}.")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}.")
    if (
        isinstance(min_loop_length, bool)
        or not isinstance(min_loop_length, (int, np.integer))
        or min_loop_length < 0
    ):
        raise ValueError(
            f"min_loop_length must be a non-negative integer, got {min_loop_length!r}."
        )
    mask = np.triu(p > threshold, k=int(min_loop_length) + 1)  # j - i - 1 >= min_loop_length
    i, j = np.nonzero(mask)
    if canonical_only and len(i):
        codes = _CODE[np.frombuffer(sequence.encode("latin-1", "replace"), dtype=np.uint8)]
        keep = _CANONICAL[codes[i], codes[j]]
        i, j = i[keep], j[keep]
    return i.astype(np.int64), j.astype(np.int64), p[i, j]


def decode_greedy(
    probs: np.ndarray,
    sequence: str,
    *,
    threshold: float,
    min_loop_length: int = 1,
    canonical_only: bool = False,
) -> np.ndarray:
    """Pairs by the official RNA-FM post-processing: most probable first, each base once.

    The candidates (see the module notes) are taken by decreasing probability; a pair whose
    base is already paired is skipped. Crossing pairs (pseudoknots) are kept. Ties in
    probability are taken in order of ``i``, then ``j`` (the official code sorts with numpy's
    unstable ``argsort``, so its order for ties is not defined). With ``min_loop_length=1``
    (the official rule skips ``|i - j| <= 1``) this is the official ``postprocess`` of
    ``redevelop/engine/predictor.py`` on a symmetric map whose candidate probabilities are
    distinct.

    Parameters
    ----------
    probs : array-like of float, shape (L, L)
        Pair probabilities (any finite scores work).
    sequence : str
        The RNA sequence (``L`` letters), used for ``canonical_only``.
    threshold : float
        A pair needs ``probs[i, j] > threshold``; the official value is 0.5.
    min_loop_length : int, default=1
        The fewest unpaired bases a hairpin loop may enclose; 1 is the official choice,
        3 the physical one.
    canonical_only : bool, default=False
        Keep only AU, UA, GC, CG, GU and UG pairs.

    Returns
    -------
    numpy.ndarray of int64, shape (n_pairs, 2)
        0-based pairs ``(i, j)``, ``i < j``, sorted by ``i``.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((6, 6)); p[0, 5] = p[5, 0] = 0.9; p[0, 4] = p[4, 0] = 0.8
    >>> p[1, 4] = p[4, 1] = 0.7
    >>> decode_greedy(p, "GGAACC", threshold=0.5).tolist()
    [[0, 5], [1, 4]]
    """
    p = _check_map(probs, sequence)
    i, j, w = _candidates(p, sequence, threshold, min_loop_length, canonical_only)
    order = np.lexsort((j, i, -w))
    used = [False] * len(sequence)
    kept: list[tuple[int, int]] = []
    free = len(sequence)
    for a, b in zip(i[order].tolist(), j[order].tolist(), strict=True):
        if not (used[a] or used[b]):
            used[a] = used[b] = True
            kept.append((a, b))
            free -= 2
            if free < 2:
                break
    if not kept:
        return np.empty((0, 2), dtype=np.int64)
    return np.array(sorted(kept), dtype=np.int64)


def decode_nested(
    probs: np.ndarray,
    sequence: str,
    *,
    threshold: float,
    min_loop_length: int = 1,
    canonical_only: bool = False,
) -> np.ndarray:
    """The crossing-free set of candidate pairs with the largest summed probability.

    Nussinov-style dynamic programming restricted to the candidates (same admission rule as
    :func:`decode_greedy`): ``F[i, j] = max(F[i+1, j], max_k p[i, k] + F[i+1, k-1] +
    F[k+1, j])`` over candidates ``(i, k)``, ``k <= j``, one numpy operation per row ``i``
    over all its candidates and all ``j``. Worst case O(L^3) arithmetic but only O(L) numpy
    calls. Among optimal structures the traceback, from the 5' end, leaves base ``i``
    unpaired whenever that stays optimal, and otherwise pairs it with its nearest optimal
    partner, so the result is deterministic.

    Parameters
    ----------
    probs, sequence, threshold, min_loop_length, canonical_only
        As for :func:`decode_greedy`.

    Returns
    -------
    numpy.ndarray of int64, shape (n_pairs, 2)
        0-based pairs ``(i, j)``, ``i < j``, sorted by ``i``; no two pairs cross.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.zeros((8, 8)); p[0, 5] = p[5, 0] = 0.9
    >>> p[1, 7] = p[7, 1] = p[2, 6] = p[6, 2] = 0.6
    >>> decode_greedy(p, "GGGAAACC", threshold=0.5).tolist()
    [[0, 5], [1, 7], [2, 6]]
    >>> decode_nested(p, "GGGAAACC", threshold=0.5).tolist()
    [[1, 7], [2, 6]]
    """
    p = _check_map(probs, sequence)
    ci, cj, cw = _candidates(p, sequence, threshold, min_loop_length, canonical_only)
    n = len(sequence)
    if len(ci) == 0:
        return np.empty((0, 2), dtype=np.int64)
    order = np.lexsort((cj, ci))
    ci, cj, cw = ci[order], cj[order], cw[order]
    starts = np.searchsorted(ci, np.arange(n + 1))
    # F[a, b]: best score within bases a..b; 0 for the empty interval b == a - 1, -inf below.
    f = np.full((n + 1, n), -np.inf)
    f[np.arange(1, n + 1), np.arange(n)] = 0.0
    for a in range(n - 1, -1, -1):
        row = f[a + 1, a:].copy()
        ks, ws = cj[starts[a] : starts[a + 1]], cw[starts[a] : starts[a + 1]]
        if len(ks):
            enclosed = ws + f[a + 1, ks - 1]
            if ks[-1] - ks[0] + 1 == len(ks):  # a run of partners: a view, not a gathered copy
                block = f[ks[0] + 1 : ks[-1] + 2, a:]
            else:
                block = f[ks + 1, a:]
            row = np.maximum(row, (enclosed[:, None] + block).max(axis=0))
        f[a, a:] = row
    pairs: list[tuple[int, int]] = []
    stack = [(0, n - 1)]
    while stack:
        a, b = stack.pop()
        while a < b:
            best = f[a, b]
            if f[a + 1, b] == best:
                a += 1
                continue
            ks, ws = cj[starts[a] : starts[a + 1]], cw[starts[a] : starts[a + 1]]
            ok = ks <= b
            ks, ws = ks[ok], ws[ok]
            k = int(ks[np.flatnonzero((ws + f[a + 1, ks - 1]) + f[ks + 1, b] == best)[0]])
            pairs.append((a, k))
            stack.append((a + 1, k - 1))
            a = k + 1
    if not pairs:
        return np.empty((0, 2), dtype=np.int64)
    return np.array(sorted(pairs), dtype=np.int64)
