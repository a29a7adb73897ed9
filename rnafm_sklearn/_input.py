"""What the estimators read as ``X``, and rows computed once.

``_as_sequences`` turns every accepted input (list, ndarray, pandas Series, a DataFrame column
chosen by :func:`select_column`) into a list of values and their row labels, rejecting a bare
string, a dict or a set with a message that says what to pass. ``_deduplicate`` and ``_expand``
let an estimator compute each distinct token list once and hand every input row its own array.
No torch, no model: the estimators (``_base`` and the modules of each estimator) and
``dask`` import from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["_as_sequences", "_cut", "_deduplicate", "_expand", "select_column"]


def select_column(
    columns: Sequence[object], column: object, what: str = "X", parameter: str = "column"
) -> object:
    """Label of the sequence column among a DataFrame's ``columns``.

    ``column=None`` takes the only column. A label that is absent, or present more than once
    (pandas would return a DataFrame and its column names would be read as sequences), is a
    ``ValueError`` naming the columns and ``parameter``, the option that chooses the column.
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
        raise ValueError(
            f"Column {column!r} not found in {what}; available columns: {labels}. Set "
            f"{parameter}= to one of them."
        )
    if hits > 1:
        raise ValueError(
            f"Column {column!r} appears {hits} times in {what} (columns: {labels}); the "
            "sequence column must be unique. Rename or drop the duplicates."
        )
    return column


def _cut(value: object, limit: int = 80) -> str:
    """``repr`` of user input, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _as_sequences(
    X: Any, column: Any, estimator: str = "RnaFmEmbedder"
) -> tuple[list[object], list[object] | None]:
    """Turn the accepted input types into a list of values plus row labels."""
    if isinstance(X, str | bytes):
        raise TypeError(
            f"{estimator} expects a collection of sequences (list, array, pandas Series or "
            "DataFrame), got a single string. Wrap it in a list: transform([sequence])."
        )
    if isinstance(X, Mapping | Set):
        raise TypeError(
            f"{estimator} expects an ordered collection of sequences (list, array, pandas "
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


def _expand(arrays: list[np.ndarray], inverse: np.ndarray) -> list[np.ndarray]:
    """One array per input row from the arrays of the unique rows.

    Duplicate rows are computed once but returned as independent arrays: editing one row's
    array must not change another's.
    """
    seen: set[int] = set()
    out = []
    for j in inverse.tolist():
        out.append(arrays[j].copy() if j in seen else arrays[j])
        seen.add(j)
    return out
