"""Known structures given to ``fit``/``score``: dot-brackets or pair lists, checked per row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._alphabet import row_name
from ._pairs import check_pairs, dot_bracket_to_pairs

__all__ = ["check_structures"]


def check_structures(
    y: Any, tokens: Sequence[bytes], index: Sequence[object] | None = None
) -> list[np.ndarray]:
    """Per row the ``(n_pairs, 2)`` int64 pairs ``i < j`` (sorted) of ``y``.

    ``y`` holds one structure per sequence: a dot-bracket string of the sequence's length, or
    an array-like of 0-based ``(i, j)`` pairs. A wrong count, a length mismatch, an
    unbalanced bracket, a position outside the sequence, a base paired with itself or twice is
    a ``ValueError`` naming the row.
    """
    if y is None:
        raise ValueError("y is None: give one structure (dot-bracket or pair list) per sequence.")
    if isinstance(y, str | bytes):
        raise TypeError("y is a single string; give one structure per sequence, e.g. [structure].")
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise ValueError(
                f"y is a DataFrame with {y.shape[1]} columns; pass the structure column alone."
            )
        y = y.iloc[:, 0]
    values = y.tolist() if isinstance(y, pd.Series | np.ndarray) and np.ndim(y) == 1 else list(y)
    if len(values) != len(tokens):
        raise ValueError(
            f"y has {len(values)} structures, but X has {len(tokens)} sequences: give one "
            "structure per sequence."
        )
    out = []
    for i, (value, t) in enumerate(zip(values, tokens, strict=True)):
        where = row_name(i, None if index is None else index[i])
        out.append(_pairs_of(value, len(t), where))
    return out


def _pairs_of(value: object, n: int, where: str) -> np.ndarray:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str):
        text = value.strip()
        if len(text) != n:
            raise ValueError(
                f"y at {where}: the structure has {len(text)} characters but the sequence has "
                f"{n} nt; a dot-bracket gives one character per nucleotide."
            )
        try:
            return dot_bracket_to_pairs(text)
        except ValueError as exc:
            raise ValueError(f"y at {where}: {exc}") from None
    if value is None or (isinstance(value, float) and np.isnan(value)):
        raise ValueError(f"y at {where} is missing; give a dot-bracket or a pair list.")
    try:
        return check_pairs(value, n)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y at {where}: {exc}") from None
