"""Exceptions and warnings of rnafm_sklearn (kept apart so that every module can raise them)."""

from __future__ import annotations

import os
import sys
import warnings

__all__ = [
    "CheckpointError",
    "InvalidParameterError",
    "WeightsChangedError",
    "WeightsUnavailableError",
    "warn",
]


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be used (corrupt, truncated, foreign or mismatched)."""


class WeightsUnavailableError(RuntimeError):
    """Named pretrained weights are neither cached nor downloadable right now."""


class WeightsChangedError(ValueError):
    """A fitted estimator's ``model`` now holds other weights than the ones it was fitted on."""


class InvalidParameterError(ValueError, TypeError):
    """An estimator parameter has an invalid value (same bases as scikit-learn's)."""


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning attributed to the user's code.

    The first stack frame outside rnafm_sklearn and scikit-learn (whose ``set_output``,
    ``Pipeline`` and ``fit_transform`` wrappers sit between the user and us) is named as the
    source, so the warning points at the line that asked for the work, whatever the depth.
    """
    skip = tuple(
        os.path.dirname(m.__file__) + os.sep
        for m in (sys.modules.get("rnafm_sklearn"), sys.modules.get("sklearn"))
        if m is not None and getattr(m, "__file__", None)
    )
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(skip):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level + 1)
