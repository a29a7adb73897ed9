"""How close two results computed along different paths must be: a tolerance from the dtype.

Bit for bit only where the computation is the same by construction: the same batch in the same
process, a cache hit that returns the stored bytes, a copy of the same tensor. Anything else --
another batch composition (padding, row buckets and thread splits change the kernels' order of
summation), another process, the CLI against the API, another CPU's kernels (AVX2 against
AVX-512, Intel against AMD) -- agrees only up to the rounding of its dtype, and is compared with
:func:`assert_close`.
"""

from __future__ import annotations

import numpy as np
import torch

# Relative to 1 + |expected|, per element. float32: ~100 units in the last place, what sums
# over thousands of terms in another order reach after a few layers (measured <= 4e-6 between
# CPUs); bfloat16 / float16: 4 units in the last place (2**-5, 2**-8).
RTOL = {"float64": 1e-12, "float32": 1e-5, "bfloat16": 2.0**-5, "float16": 2.0**-8}


def _name(dtype) -> str:
    if isinstance(dtype, torch.dtype):
        return str(dtype).removeprefix("torch.")
    return str(dtype) if isinstance(dtype, str) else np.dtype(dtype).name


def tolerance(dtype="float32") -> float:
    """The relative tolerance of results computed in ``dtype`` along different paths."""
    return RTOL[_name(dtype)]


def assert_close(actual, expected, dtype="float32", err_msg: str = "") -> None:
    """``|actual - expected| <= tolerance(dtype) * (1 + |expected|)`` element by element.

    ``dtype`` is the precision the model computed in (not the dtype of the arrays, which may
    have been widened to float32 or float64 on the way out).
    """
    actual, expected = (
        np.asarray(x.detach().float().cpu() if isinstance(x, torch.Tensor) else x, np.float64)
        for x in (actual, expected)
    )
    tol = tolerance(dtype)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol, err_msg=err_msg)
