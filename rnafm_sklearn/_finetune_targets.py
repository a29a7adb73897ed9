"""Targets and sample weights of a fine-tuning fit: checked, then encoded as tensors.

One home for what ``y`` and ``sample_weight`` may hold: class labels (one type, no missing
value; class indices and optional class weights), regression targets (real numbers, one or
several columns; standardised on the training rows) and per-row weights (finite, >= 0, a
positive sum; only their ratios count). A bad value is a ``ValueError`` (or ``TypeError``)
naming the row.
"""

from __future__ import annotations

from numbers import Number
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.exceptions import DataConversionWarning
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

from ._alphabet import row_name
from ._errors import warn

__all__ = [
    "class_targets",
    "regression_targets",
    "sample_weights",
    "standardized_targets",
]


def sample_weights(sample_weight: Any, n: int) -> torch.Tensor:
    """Per-row weights as float32, relative to the largest (``None``: all 1)."""
    if sample_weight is None:
        return torch.ones(n, dtype=torch.float32)
    try:
        raw = np.asarray(sample_weight)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight must be numeric ({exc}).") from None
    if np.iscomplexobj(raw) or (
        raw.dtype == object
        and any(isinstance(v, complex | np.complexfloating) for v in raw.ravel().tolist())
    ):
        raise ValueError(
            "sample_weight must be real: complex values are not supported (the imaginary part "
            "would be dropped). Pass sample_weight.real or abs(sample_weight) explicitly."
        )
    try:
        w = raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight must be numeric ({exc}).") from None
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight has shape {w.shape}, but X has {n} sequences: give one weight per row."
        )
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(
            f"sample_weight must be finite and >= 0; row {int(bad[0])} (0-based) is {w[bad[0]]}."
        )
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row must have weight > 0.")
    # Only ratios count (the loss and the scores are weighted means): relative to the largest,
    # weights beyond float32's range (1e39, 1e-46) neither overflow nor vanish.
    return torch.from_numpy((w / w.max()).astype(np.float32))


def class_targets(est: Any, y: Any, n: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Class indices into the sorted ``classes_`` of ``y``, and ``est.class_weight`` resolved."""
    y = _labels(y, n)
    try:
        classes, encoded = np.unique(y, return_inverse=True)
    except TypeError as exc:
        raise TypeError(f"y mixes label types that cannot be sorted ({exc}).") from None
    if len(classes) < 2:
        raise ValueError(
            f"y has a single class ({classes.tolist()[0]!r}): a classifier needs at least two."
        )
    class_weight = None
    if est.class_weight is not None:
        if not (isinstance(est.class_weight, dict) or est.class_weight == "balanced"):
            raise est._fail("class_weight", "a dict, 'balanced' or None", est.class_weight)
        weights = compute_class_weight(est.class_weight, classes=classes, y=y)
        class_weight = torch.as_tensor(weights, dtype=torch.float32)
    targets = torch.as_tensor(encoded.reshape(-1), dtype=torch.long)
    return targets, {
        "classes_": classes,
        "n_outputs": len(classes),
        "class_weight": class_weight,
    }


def regression_targets(y: Any, n: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """``y`` as float64 ``(n, n_outputs)`` values (real, finite, one row per sequence)."""
    try:
        raw = np.asarray(y)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"y must be numeric for RnaFmRegressor ({exc}).") from None
    if np.iscomplexobj(raw) or (
        raw.dtype == object and any(isinstance(v, complex) for v in raw.ravel())
    ):
        raise ValueError(
            "y must be real: complex values are not supported (the imaginary part would "
            "be dropped). Pass y.real or abs(y) explicitly."
        )
    # a list mixing numbers and text becomes an all-text array: find the row as given
    mixed = np.asarray(y, dtype=object) if raw.dtype.kind in "USV" else raw
    bad = _first_non_numeric(mixed)
    if bad is not None:
        row = bad // max(1, int(np.prod(mixed.shape[1:])))
        value = mixed.ravel()[bad]
        raise ValueError(
            f"y must be numeric for RnaFmRegressor, but {row_name(row, None)} is "
            f"{str(value)!r} ({type(value).__name__}). Convert numbers stored as text with "
            "y.astype(float); for class labels use RnaFmClassifier."
        )
    try:  # bools, ints, floats; None and pd.NA become NaN (named below)
        values = np.where(pd.isna(raw), np.nan, raw) if raw.dtype == object else raw
        values = values.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"y must be numeric for RnaFmRegressor ({exc}).") from None
    _check_length(values, n)
    if values.ndim > 2:
        raise ValueError(f"y has shape {values.shape}: give (n_samples,) or (n, n_outputs).")
    if values.ndim == 2 and values.shape[1] == 0:
        raise ValueError(f"y has shape {values.shape}: no target to learn; give one column.")
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        row = int(bad[0][0])
        raise ValueError(f"y holds NaN or inf at {row_name(row, None)}; drop or impute those rows.")
    two_d = values.reshape(n, -1)
    return torch.from_numpy(np.ascontiguousarray(two_d)), {
        "n_outputs_": two_d.shape[1],
        "n_outputs": two_d.shape[1],
        "_y_1d_": values.ndim == 1,
    }


def standardized_targets(
    targets: torch.Tensor,
    extra: dict[str, Any],
    train_rows: np.ndarray,
    weights: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Standardised targets: weighted mean and standard deviation of the training rows.

    Weighted by ``sample_weight`` as the loss is (a row of weight 0 changes nothing);
    validation rows do not count. An output that does not vary gets scale 1.
    """
    two_d = targets.numpy()
    y, w = two_d[train_rows], weights.numpy().astype(np.float64)[train_rows]
    # mean and std of y / max|y|, scaled back: no overflow for finite y up to 1.8e308
    peak = np.abs(y).max(0)
    peak[peak == 0] = 1.0
    mean = np.average(y / peak, axis=0, weights=w)
    scale = np.sqrt(np.average((y / peak - mean) ** 2, axis=0, weights=w)) * peak
    mean *= peak
    scale[scale == 0] = 1.0
    standardised = torch.as_tensor((two_d - mean) / scale, dtype=torch.float32)
    return standardised, {**extra, "_y_mean_": mean, "_y_scale_": scale}


def _first_non_numeric(y: np.ndarray) -> int | None:
    """Flat index of the first value of ``y`` that is not a number (nor missing), or None.

    ``astype(float)`` would parse ``"0.5"`` and count datetimes in nanoseconds: neither is a
    regression target a user meant.
    """
    if y.dtype.kind in "biuf":
        return None
    if y.dtype.kind != "O":  # str, bytes, datetime, timedelta, void
        return 0 if y.size else None
    for i, v in enumerate(y.ravel().tolist()):
        if isinstance(v, bool | Number) or v is None or v is pd.NA:
            continue
        return i
    return None


def _check_length(y: np.ndarray, n: int) -> None:
    if y.ndim == 0 or y.shape[0] != n:
        got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows"
        raise ValueError(f"y has {got}, but X has {n} sequences: give one target per sequence.")


def _labels(y: Any, n: int) -> np.ndarray:
    """Class labels as a 1-D array: no missing value, no silent conversion between types."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        values = y
    else:
        # object dtype keeps each label as given (numpy would turn ["a", 1, nan] into strings)
        values = np.asarray(y, dtype=object)
    _check_length(values, n)
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            warn(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning,
            )
            values = values[:, 0]
        else:
            raise ValueError(
                f"y has shape {values.shape}: RnaFmClassifier takes one label per sequence "
                "(multi-output classification is not supported)."
            )
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise ValueError(
            f"y holds a missing label (None or NaN) at {row_name(int(missing[0]), None)}; "
            "drop those rows or give them a label."
        )
    if values.dtype == object:
        text = [isinstance(v, str | bytes) for v in values]
        if any(text) and not all(text):
            a, b = text.index(True), text.index(False)
            raise TypeError(
                f"y mixes label types: {row_name(a, None)} is {values[a]!r} "
                f"({type(values[a]).__name__}), {row_name(b, None)} is {values[b]!r} "
                f"({type(values[b]).__name__}). Use one type for all labels."
            )
        values = np.asarray(values.tolist())  # str, int, float or bool labels
    check_classification_targets(values)
    return values
