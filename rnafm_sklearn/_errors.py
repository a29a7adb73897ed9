"""Exceptions raised by rnafm_sklearn (kept apart so that every module can raise them)."""

from __future__ import annotations

__all__ = ["CheckpointError", "InvalidParameterError", "WeightsUnavailableError"]


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, truncated, foreign or mismatched)."""


class WeightsUnavailableError(RuntimeError):
    """Named pretrained weights are neither cached nor downloadable right now."""


class InvalidParameterError(ValueError, TypeError):
    """An estimator parameter has an invalid value (same bases as scikit-learn's)."""
