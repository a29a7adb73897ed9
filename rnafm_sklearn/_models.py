"""A process-wide registry of loaded encoders, so that estimator clones share weights.

``clone()`` in a grid search or a cross-validation fold creates new estimators with the same
``model`` parameter; they all get the same encoder object from here instead of reading the
checkpoint again. Pickled estimators carry no weights: a new process loads them once here.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ._checkpoint import load_model
from ._encoder import RnaFmEncoder
from ._hub import PRETRAINED

__all__ = ["clear_model_cache", "get_encoder", "resolve_device"]

_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, RnaFmEncoder] = OrderedDict()
_MAX_ENTRIES = 4  # encoders kept alive (each device/dtype copy counts once)
LOAD_COUNT = 0  # number of checkpoint reads in this process (tests count them)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def _source_key(model: str | os.PathLike) -> tuple:
    if isinstance(model, str) and model in PRETRAINED:
        return ("pretrained", model)
    path = Path(model).expanduser().resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ("path", str(path), None, None)
    # A checkpoint replaced on disk (new mtime or size) is loaded again.
    return ("path", str(path), stat.st_mtime_ns, stat.st_size)


def get_encoder(model: str | os.PathLike, device: torch.device, dtype: torch.dtype) -> RnaFmEncoder:
    """The encoder for ``model`` on ``device`` in ``dtype``, loaded at most once per process."""
    global LOAD_COUNT
    source = _source_key(model)
    key = (source, str(device), dtype)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        base_key = (source, "cpu", torch.float32)
        base = _CACHE.get(base_key)
        if base is None:
            base = load_model(model)
            LOAD_COUNT += 1
        if key == base_key:
            encoder = base
        else:
            # The float32 CPU original is kept only if it was itself requested before: a
            # bfloat16 or GPU user does not pay for a second copy of the weights.
            encoder = _copy_to(base, device, dtype)
            encoder._rnafm_fingerprint = weights_fingerprint(base)
        if device.type == "cpu":
            # Registry encoders only run inference: let oneDNN own the linear weights.
            # (state_dict() still gives dense weights for copies to other devices/dtypes.)
            encoder.pack_for_cpu()
        _remember(key, encoder)
        return encoder


def weights_fingerprint(encoder: RnaFmEncoder) -> str:
    """SHA-256 of an encoder's config and float32 weights (computed once per encoder).

    Names, shapes and values all count; the file name or format the weights came from does not.
    """
    cached = getattr(encoder, "_rnafm_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    encoder._rnafm_fingerprint = digest.hexdigest()
    return encoder._rnafm_fingerprint


def _copy_to(base: RnaFmEncoder, device: torch.device, dtype: torch.dtype) -> RnaFmEncoder:
    state = {k: v.to(device=device, dtype=dtype) for k, v in base.state_dict().items()}
    return RnaFmEncoder.from_state_dict(base.config, state)


def _remember(key: tuple, encoder: RnaFmEncoder) -> None:
    _CACHE[key] = encoder
    _CACHE.move_to_end(key)
    while len(_CACHE) > _MAX_ENTRIES:
        _CACHE.popitem(last=False)


def clear_model_cache() -> None:
    """Forget every loaded encoder (frees memory; the next use reads the checkpoint again).

    Examples
    --------
    >>> from rnafm_sklearn import clear_model_cache
    >>> clear_model_cache()
    """
    with _LOCK:
        _CACHE.clear()
