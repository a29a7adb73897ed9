"""A process-wide registry of loaded encoders, so that estimator clones share weights.

``clone()`` in a grid search or a cross-validation fold creates new estimators with the same
``model`` parameter; they all get the same encoder object from here instead of reading the
checkpoint again. Pickled estimators carry no weights: a new process loads them once here.

A checkpoint is identified by its path and by the size, mtime, ctime and inode of every file
that affects the numbers (for a folder: ``config.json``, ``vocab.txt``, ``*.safetensors``, the
shard index, ``pytorch_model.bin``), so a checkpoint rewritten in place (``cp`` over it) is read
again. :func:`get_config` gives a checkpoint's architecture without loading its weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

import torch

from ._checkpoint import load_model, load_pair_head, read_config
from ._choices import DTYPE_NAMES
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError
from ._hub import PRETRAINED
from ._pair_head import PairHead

__all__ = [
    "absolute_source",
    "clear_model_cache",
    "get_config",
    "get_encoder",
    "get_pair_head",
    "inference_copy",
    "prepare_for_inference",
    "resolve_device",
]

_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple, RnaFmEncoder] = OrderedDict()
_MAX_ENTRIES = 4  # encoders kept alive (each device/dtype copy counts once)
_CONFIGS: OrderedDict[tuple, RnaFmConfig] = OrderedDict()
# structure heads: (source, device, dtype) -> (head, info), or source -> None (no head)
_HEADS: OrderedDict[tuple, tuple[PairHead, dict] | None] = OrderedDict()
_MAX_CONFIGS = 64
LOAD_COUNT = 0  # number of checkpoint reads in this process (tests count them)

BOTH = (False, True)  # fingerprints without and with the masked-LM head
DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16), strict=True))


_DEVICES = "use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"


class _UnknownDeviceError(InvalidParameterError, RuntimeError):
    """Not a device string; also a RuntimeError, as ``torch.device`` raises for one."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device for ``device``; ``"auto"`` picks CUDA, then Apple MPS, then the CPU.

    Raises
    ------
    InvalidParameterError
        ``device`` is not a device string, or names a device this machine does not have
        (e.g. ``"cuda"`` where PyTorch has no CUDA support or no GPU is visible).

    Examples
    --------
    >>> from rnafm_sklearn._models import resolve_device
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise _UnknownDeviceError(
            f"The 'device' parameter is {device!r}, which is not a device: {_DEVICES}."
        ) from exc
    if resolved.type == "cpu":
        return resolved
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = (
                "this PyTorch build has no CUDA support"
                if torch.version.cuda is None
                else "no CUDA GPU is visible"
            )
            raise InvalidParameterError(
                f"The 'device' parameter is {device!r}, but CUDA is not available here ({why}); "
                "use device='cpu' or device='auto'."
            )
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            names = ", ".join(f"cuda:{i}" for i in range(count))
            raise InvalidParameterError(
                f"The 'device' parameter is {device!r}, but this machine has only {count} CUDA "
                f"device{'s' if count != 1 else ''} ({names}); use one of them or device='auto'."
            )
        return resolved
    if resolved.type == "mps":
        if not _mps_available():
            raise InvalidParameterError(
                f"The 'device' parameter is {device!r}, but Apple MPS is not available here; "
                "use device='cpu' or device='auto'."
            )
        return resolved
    raise _UnknownDeviceError(
        f"The 'device' parameter is {device!r}: rnafm_sklearn runs on the CPU, CUDA GPUs or "
        f"Apple MPS; {_DEVICES}."
    )


# Files of a checkpoint folder whose content changes the numbers.
_NUMERIC_FILES = ("config.json", "vocab.txt", "pytorch_model.bin")


def _affects_numbers(name: str) -> bool:
    return (
        name in _NUMERIC_FILES
        or name.endswith(".safetensors")
        or name.endswith(".safetensors.index.json")
    )


def _signature(path: Path) -> tuple[int, ...]:
    st = path.stat()
    # ctime changes on every write and cannot be set back (unlike mtime, e.g. by ``cp -p``)
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _source_key(model: str | os.PathLike) -> tuple:
    """What identifies a checkpoint's content: its path and the state of its files."""
    if isinstance(model, str) and model in PRETRAINED:
        return ("pretrained", model)
    path = Path(model).expanduser().resolve()
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if _affects_numbers(p.name) and p.is_file())
            return ("path", str(path), tuple((p.name, _signature(p)) for p in files))
        return ("path", str(path), _signature(path))
    except OSError:  # missing or unreadable: loading it gives the error
        return ("path", str(path), None)


def absolute_source(model: str | os.PathLike) -> str | os.PathLike:
    """``model`` with a local path made absolute (``~`` expanded); a named model as given.

    Examples
    --------
    >>> import os
    >>> from rnafm_sklearn._models import absolute_source
    >>> absolute_source("rna-fm"), os.path.isabs(absolute_source("tests/fixtures/x.pth"))
    ('rna-fm', True)
    """
    if isinstance(model, str) and model in PRETRAINED:
        return model
    return str(Path(model).expanduser().resolve())


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
            _remember_config(source, base.config)
        if key == base_key:
            encoder = base
        else:
            # The float32 CPU original is kept only if it was itself requested before: a
            # bfloat16 or GPU user does not pay for a second copy of the weights.
            encoder = _copy_to(base, device, dtype)
            # copies in other dtypes fingerprint as their float32 original (no copy kept)
            encoder._rnafm_fingerprints = {h: weights_fingerprint(base, head=h) for h in BOTH}
        # Registry encoders only run inference. (state_dict() still gives dense weights for
        # copies to other devices/dtypes, and for training copies.)
        prepare_for_inference(encoder, device)
        _remember(key, encoder)
        return encoder


def _native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (else bfloat16 convolutions are slower
    than float32 ones: oneDNN emulates them on CPUs without AVX512-BF16 or AMX)."""
    if device.type != "cpu":
        return True
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def get_pair_head(
    model: str | os.PathLike, device: torch.device, dtype: torch.dtype
) -> tuple[PairHead, dict[str, object]] | None:
    """The structure head of ``model`` on ``device``, loaded at most once per process.

    ``None`` when the checkpoint has no structure head. ``info`` holds the head's architecture,
    ``threshold`` (calibrated for a known official head, else 0.5), ``origin`` and
    ``compute_dtype``: for ``bfloat16`` on a CPU without bfloat16 arithmetic the head is kept in
    float32 (there, bfloat16 convolutions are about 3x slower, and less accurate). The head is
    shared by every caller (and estimator clones) and is in eval mode: copy it
    (``copy.deepcopy``) before training it. Cached under the same key as the encoders, so a
    checkpoint changed on disk is read again.
    """
    source = _source_key(model)
    if dtype == torch.bfloat16 and not _native_bf16(device):
        dtype = torch.float32
    key = (source, str(device), dtype)
    base_key = (source, "cpu", torch.float32)
    with _LOCK:
        if source in _HEADS and _HEADS[source] is None:
            return None
        if key in _HEADS:
            _HEADS.move_to_end(key)
            return _HEADS[key]
        base = _HEADS.get(base_key)
        if base is None:
            base = load_pair_head(model)
            if base is None:
                _remember_head(source, None)
                return None
            base[1]["compute_dtype"] = "float32"
        if key == base_key:
            entry = base
        else:
            head, info = base
            copy = PairHead(**head.config)
            copy.load_state_dict(head.state_dict())
            copy = copy.to(device=device, dtype=dtype).eval()
            entry = (copy, {**info, "compute_dtype": str(dtype).removeprefix("torch.")})
        _remember_head(key, entry)
        return entry


def _remember_head(key: tuple, entry: tuple[PairHead, dict] | None) -> None:
    _HEADS[key] = entry
    _HEADS.move_to_end(key)
    while len(_HEADS) > _MAX_ENTRIES:
        _HEADS.popitem(last=False)


def get_config(model: str | os.PathLike) -> RnaFmConfig:
    """The architecture of ``model``, read from its metadata (no weights), once per process.

    Cached under the same key as the encoders, so a checkpoint changed on disk is read again;
    where the encoder is already loaded, its config is returned. For ``"rna-fm"`` and
    ``"mrna-fm"`` nothing is downloaded (see :func:`rnafm_sklearn._checkpoint.read_config`).

    Examples
    --------
    >>> from rnafm_sklearn._models import get_config
    >>> get_config("tests/fixtures/RNA-FM_tiny.pth").num_layers
    2
    """
    source = _source_key(model)
    with _LOCK:
        config = _CONFIGS.get(source)
        if config is None:
            loaded = next((enc for (src, _, _), enc in _CACHE.items() if src == source), None)
            config = loaded.config if loaded is not None else read_config(model)
        _remember_config(source, config)
        return config


def _remember_config(source: tuple, config: RnaFmConfig) -> None:
    _CONFIGS[source] = config
    _CONFIGS.move_to_end(source)
    while len(_CONFIGS) > _MAX_CONFIGS:
        _CONFIGS.popitem(last=False)


def weights_fingerprint(encoder: RnaFmEncoder, *, head: bool = False) -> str:
    """SHA-256 of an encoder's config and float32 weights (computed once per encoder).

    Names, shapes and values all count; the file name or format the weights came from does not.
    The masked-LM head (``lm_head.*``) counts only with ``head=True``: embeddings do not depend
    on it, so a checkpoint with and one without the head share cached embeddings. The contact
    head (``contact_head.*``) never counts: neither embeddings nor logits depend on it.
    """
    fingerprints = encoder.__dict__.setdefault("_rnafm_fingerprints", {})
    if head in fingerprints:
        return fingerprints[head]
    digest = hashlib.sha256(json.dumps(encoder.config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        if (name.startswith("lm_head.") and not head) or name.startswith("contact_head."):
            continue
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    fingerprints[head] = digest.hexdigest()
    return fingerprints[head]


def prepare_for_inference(encoder: RnaFmEncoder, device: torch.device) -> RnaFmEncoder:
    """Make an encoder that will only run inference on ``device`` fast there (in place).

    The one place that decides it: on the CPU, oneDNN owns the linear weights (pre-packed,
    irreversible; ``state_dict()`` still gives the dense weights); elsewhere nothing changes.
    """
    if device.type == "cpu":
        encoder.pack_for_cpu()
    return encoder


def inference_copy(
    config: RnaFmConfig, state: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> RnaFmEncoder:
    """A new inference-only encoder of ``state`` on ``device`` in ``dtype`` (e.g. weights
    with fine-tuned adapters folded in), prepared as the registry's encoders are."""
    state = {k: v.to(device=device, dtype=dtype) for k, v in state.items()}
    return prepare_for_inference(RnaFmEncoder.from_state_dict(config, state), device)


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

    Estimators share one loaded copy of each checkpoint per process; this drops all of them
    (and the configs read from checkpoints). Encoders still referenced elsewhere stay alive
    until those references go.

    Returns
    -------
    None

    Raises
    ------
    None
        Clearing an empty cache is fine.

    Examples
    --------
    >>> from rnafm_sklearn import clear_model_cache
    >>> clear_model_cache()
    """
    with _LOCK:
        _CACHE.clear()
        _CONFIGS.clear()
        _HEADS.clear()
