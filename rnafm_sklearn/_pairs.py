"""Base pairs as arrays: dot-bracket conversion (pseudoknots included) and the base-pair F1.

A structure is an ``(n, 2)`` int64 array of 0-based pairs ``(i, j)`` with ``i < j``, sorted by
``i``, each base in at most one pair. No torch here (and no file I/O: see ``_structure_files``).
"""

from __future__ import annotations

import string

import numpy as np

__all__ = ["base_pair_f1", "check_pairs", "dot_bracket_to_pairs", "pairs_to_dot_bracket"]

#: Bracket tiers in order: tier 0 is ``()``, then ``[]``, ``{}``, ``<>``, then ``Aa`` ... ``Zz``.
OPENERS = "([{<" + string.ascii_uppercase
CLOSERS = ")]}>" + string.ascii_lowercase
UNPAIRED = ".-,_:~"
_OPEN = {c: t for t, c in enumerate(OPENERS)}
_CLOSE = {c: t for t, c in enumerate(CLOSERS)}


def _empty() -> np.ndarray:
    return np.empty((0, 2), dtype=np.int64)


def dot_bracket_to_pairs(structure: str) -> np.ndarray:
    """Parse a dot-bracket string into 0-based base pairs.

    Brackets ``()``, ``[]``, ``{}``, ``<>`` and then the letter pairs ``Aa``, ``Bb``, ...
    (upper case opens, lower case closes) mark the pairs, one tier each, so pseudoknots can be
    written; ``.``, ``-``, ``,``, ``_``, ``:`` and ``~`` are unpaired bases.

    Parameters
    ----------
    structure : str
        The dot-bracket string, one character per base.

    Returns
    -------
    numpy.ndarray of int64, shape (n_pairs, 2)
        Pairs ``(i, j)``, ``i < j``, sorted by ``i``.

    Raises
    ------
    ValueError
        An unknown character or an unbalanced bracket, naming its 1-based position.

    Examples
    --------
    >>> dot_bracket_to_pairs("((.[.))]").tolist()
    [[0, 6], [1, 5], [3, 7]]
    """
    if not isinstance(structure, str):
        raise TypeError(f"a dot-bracket structure must be a str, got {type(structure).__name__}.")
    stacks: list[list[int]] = [[] for _ in OPENERS]
    pairs: list[tuple[int, int]] = []
    for pos, char in enumerate(structure):
        if char in _OPEN:
            stacks[_OPEN[char]].append(pos)
        elif char in _CLOSE:
            stack = stacks[_CLOSE[char]]
            if not stack:
                raise ValueError(
                    f"unbalanced dot-bracket: {char!r} at position {pos + 1} closes no "
                    f"{OPENERS[_CLOSE[char]]!r}."
                )
            pairs.append((stack.pop(), pos))
        elif char not in UNPAIRED:
            raise ValueError(
                f"unknown dot-bracket character {char!r} at position {pos + 1}; use "
                f"{UNPAIRED!r} for unpaired bases and ()[]{{}}<>, Aa, Bb, ... for pairs."
            )
    for tier, stack in enumerate(stacks):
        if stack:
            raise ValueError(
                f"unbalanced dot-bracket: {OPENERS[tier]!r} at position {stack[-1] + 1} is "
                f"never closed by {CLOSERS[tier]!r}."
            )
    if not pairs:
        return _empty()
    out = np.array(sorted(pairs), dtype=np.int64)
    return out


def check_pairs(pairs: object, length: int | None = None) -> np.ndarray:
    """Validate pairs and return them as sorted ``(n, 2)`` int64 with ``i < j``.

    A pair given as ``(j, i)`` is turned round; a base in two pairs, ``i == j``, an index out of
    ``[0, length)`` or a non-integer value raise ``ValueError``.
    """
    try:
        arr = np.asarray(pairs)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"pairs must be an (n, 2) array of base indices: {exc}") from exc
    if arr.size == 0 and arr.ndim <= 2:
        return _empty()
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must be an (n, 2) array of base indices, got shape {arr.shape}.")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f" or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("pairs must hold integer base indices.")
    arr = np.sort(arr.astype(np.int64), axis=1)
    same = np.flatnonzero(arr[:, 0] == arr[:, 1])
    if same.size:
        raise ValueError(f"base {arr[same[0], 0]} is paired with itself.")
    low, high = int(arr.min()), int(arr.max())
    if low < 0 or (length is not None and high >= length):
        bad = low if low < 0 else high
        raise ValueError(f"base index {bad} is out of range for a sequence of length {length}.")
    bases, counts = np.unique(arr.ravel(), return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"base {bases[counts > 1][0]} is in more than one pair.")
    return arr[np.argsort(arr[:, 0], kind="stable")]


def _max_nested(pairs: np.ndarray) -> np.ndarray:
    """Boolean mask of a largest crossing-free subset of ``pairs`` (each base used once).

    Dynamic programming over the pairs' endpoints: ``inside[k]`` is the best count strictly
    inside pair ``k`` (plus one for ``k``), filled from the shortest pair to the longest with a
    left-to-right scan. Ties are broken towards leaving a pair out, so the result is
    deterministic.
    """
    n = len(pairs)
    if n == 0:
        return np.zeros(0, dtype=bool)
    points = np.unique(pairs.ravel())  # compressed coordinates: 2n distinct endpoints
    left = np.searchsorted(points, pairs[:, 0])
    right = np.searchsorted(points, pairs[:, 1])
    opener_at = np.full(len(points), -1)  # pair index closing at each point
    opener_at[right] = np.arange(n)
    inside = np.zeros(n)
    choice: dict[int, list[int]] = {}

    def scan(lo: int, hi: int) -> tuple[float, list[int]]:
        """Best set of outermost pairs within points lo..hi (inclusive)."""
        best = [0.0] * (hi - lo + 2)
        took: list[int] = [-1] * (hi - lo + 2)
        for x in range(lo, hi + 1):
            b = best[x - lo]
            k = opener_at[x]
            if k >= 0 and left[k] >= lo:
                cand = best[left[k] - lo] + inside[k]
                if cand > b:
                    b, took[x - lo + 1] = cand, k
            best[x - lo + 1] = b
        chosen, x = [], hi
        while x >= lo:
            k = took[x - lo + 1]
            if k >= 0:
                chosen.append(k)
                x = left[k] - 1
            else:
                x -= 1
        return best[-1], chosen

    for k in np.argsort(right - left, kind="stable"):
        score, chosen = scan(left[k] + 1, right[k] - 1)
        inside[k] = 1.0 + score
        choice[k] = chosen
    _, stack = scan(0, len(points) - 1)
    keep = np.zeros(n, dtype=bool)
    while stack:
        k = stack.pop()
        keep[k] = True
        stack.extend(choice[k])
    return keep


def pairs_to_dot_bracket(pairs: object, length: int) -> str:
    """Write base pairs as a dot-bracket string, pseudoknots in further bracket tiers.

    Tiers are filled greedily: tier 0 ``()`` gets a largest crossing-free subset of the pairs
    (interval dynamic programming, ties broken towards leaving a pair for a later tier), tier 1
    ``[]`` a largest crossing-free subset of the rest, then ``{}``, ``<>``, ``Aa``, ``Bb``, ...
    Within a tier no pairs cross, so :func:`dot_bracket_to_pairs` gives the pairs back.

    Parameters
    ----------
    pairs : array-like of int, shape (n_pairs, 2)
        0-based pairs, in any order; ``(j, i)`` is read as ``(i, j)``.
    length : int
        The sequence length.

    Returns
    -------
    str
        ``length`` characters; unpaired bases are ``.``.

    Raises
    ------
    ValueError
        A base in two pairs, a base paired with itself, an index out of range, or more
        crossing tiers than the 30 bracket kinds.

    Examples
    --------
    >>> pairs_to_dot_bracket([[0, 6], [1, 5], [3, 7]], 8)
    '((.[.))]'
    """
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}.")
    rest = check_pairs(pairs, int(length))
    chars = ["."] * int(length)
    tier = 0
    while len(rest):
        if tier == len(OPENERS):
            raise ValueError(
                f"the pairs need more than {len(OPENERS)} crossing tiers; dot-bracket cannot "
                "write them (use CT or BPSEQ)."
            )
        keep = _max_nested(rest)
        for i, j in rest[keep]:
            chars[i], chars[j] = OPENERS[tier], CLOSERS[tier]
        rest = rest[~keep]
        tier += 1
    return "".join(chars)


def _as_rows(y: object, what: str) -> list[tuple[np.ndarray, int | None]]:
    if isinstance(y, (str, bytes)):
        raise TypeError(
            f"{what} must be a sequence of structures, not a single {type(y).__name__}."
        )
    rows = list(y.tolist() if hasattr(y, "tolist") and getattr(y, "ndim", 1) == 1 else y)
    out = []
    for k, row in enumerate(rows):
        try:
            if isinstance(row, str):
                out.append((dot_bracket_to_pairs(row), len(row)))
            else:
                out.append((check_pairs(row), None))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{what}, row {k}: {exc}") from exc
    return out


def _hits(a: np.ndarray, b: np.ndarray, shift: int) -> int:
    """How many pairs of ``a`` have a pair of ``b`` at (i, j), (i +- d, j) or (i, j +- d)."""
    if len(a) == 0 or len(b) == 0:
        return 0
    targets = {(int(i), int(j)) for i, j in b}
    count = 0
    for i, j in a.tolist():
        near = (
            [(i, j)]
            + [(i + d, j) for d in range(-shift, shift + 1) if d]
            + [(i, j + d) for d in range(-shift, shift + 1) if d]
        )
        count += any(p in targets for p in near)
    return count


def base_pair_f1(
    y_true: object, y_pred: object, *, shift: int = 0, average: bool = True
) -> float | np.ndarray:
    """F1 score of predicted base pairs, per sequence, then averaged.

    Rules:

    - ``shift=0``: a predicted pair is correct when it is a true pair.
    - ``shift=d > 0``: a predicted pair ``(i, j)`` is correct when a true pair lies at
      ``(i, j)``, ``(i +- e, j)`` or ``(i, j +- e)`` for some ``1 <= e <= d``; a true pair is
      recovered when a predicted pair lies within the same neighbourhood of it. Precision is
      correct predicted pairs / predicted pairs, recall is recovered true pairs / true pairs.
      The matching is not one-to-one (one predicted pair may account for two shifted true
      pairs), so the shifted F1 is an upper bound of a one-to-one matching's.
    - F1 = 2PR / (P + R). When neither structure has a pair, F1 = 1; when exactly one has
      none, F1 = 0 (the same when no prediction is correct).

    Parameters
    ----------
    y_true, y_pred : sequence of (str or array-like of shape (n_pairs, 2))
        One structure per sequence: a dot-bracket string or 0-based pairs.
    shift : int, default=0
        Tolerance in positions (1 is the tolerance some papers report).
    average : bool, default=True
        Return the mean over sequences; ``False`` returns the per-sequence array.

    Returns
    -------
    float or numpy.ndarray of float64
        The mean F1 (NaN for no sequences), or one F1 per sequence.

    Raises
    ------
    ValueError
        Different numbers of rows, a row whose two dot-bracket strings differ in length, or an
        invalid structure (each naming its 0-based row).

    Examples
    --------
    >>> base_pair_f1(["((..))", "(....)"], ["((..))", ".(..)."])
    0.5
    >>> base_pair_f1(["(....)"], [".(...)"], shift=1)
    1.0

    It is a scikit-learn metric:

    >>> from sklearn.metrics import make_scorer
    >>> scorer = make_scorer(base_pair_f1)
    """
    if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
        raise ValueError(f"shift must be a non-negative integer, got {shift!r}.")
    true_rows, pred_rows = _as_rows(y_true, "y_true"), _as_rows(y_pred, "y_pred")
    if len(true_rows) != len(pred_rows):
        raise ValueError(f"y_true has {len(true_rows)} structures but y_pred has {len(pred_rows)}.")
    scores = np.empty(len(true_rows))
    for k, ((t, lt), (p, lp)) in enumerate(zip(true_rows, pred_rows, strict=True)):
        if lt is not None and lp is not None and lt != lp:
            raise ValueError(
                f"row {k}: the true structure has {lt} bases but the predicted one {lp}."
            )
        if len(t) == 0 and len(p) == 0:
            scores[k] = 1.0
            continue
        correct, recovered = _hits(p, t, shift), _hits(t, p, shift)
        if correct == 0 or recovered == 0:
            scores[k] = 0.0
            continue
        precision, recall = correct / len(p), recovered / len(t)
        scores[k] = 2 * precision * recall / (precision + recall)
    if not average:
        return scores
    return float(scores.mean()) if len(scores) else float("nan")
