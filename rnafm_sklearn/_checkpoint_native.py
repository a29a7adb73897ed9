"""The native checkpoint layout: a folder written by :func:`save_model`, and its reader.

The folder holds ``config.json`` (``"format": "rnafm_sklearn"``, ``format_version``, the
config, the SHA-256 of the weights file and, from version 2, an optional structure head) and
``model.safetensors``, whose metadata records the config (and the head's entry) as canonical
JSON: the checksum covers the weights file, the weights file covers ``config.json``, so an edit
to either is detected. :func:`save_model` writes to temporary names and moves them into place;
:func:`_parse_native` checks the metadata (every field typed, the recorded config, tensor names
and shapes) before any weights are read, and verifies the SHA-256 when they are. The dispatch
on what is on disk and the other entry points are in :mod:`._checkpoint`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import torch

from ._checkpoint_check import (
    _INT_FIELDS,
    _WEIGHTS,
    _architecture,
    _bool,
    _check_tensors,
    _header_shapes,
    _load_safetensors,
    _native_shapes,
    _one_line,
    _Parsed,
    _positive_int,
    _short,
    _show,
    _with_head,
)
from ._checkpoint_structure import NATIVE_HEAD_PREFIX, _head_entry, build_head, head_config
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import CheckpointError
from ._hub import DEFAULT_STRUCTURE_THRESHOLD, sha256_file
from ._pair_head import PairHead

__all__ = ["save_model"]

logger = logging.getLogger("rnafm_sklearn")

NATIVE_FORMAT = "rnafm_sklearn"
# Version 2 adds an optional structure head ("pair_head"); a folder without one is written as
# version 1, which older readers still load.
NATIVE_FORMAT_VERSION = 2
# safetensors metadata entry of a native folder: the config, as canonical JSON. The weights
# file is covered by the SHA-256 in config.json, so config.json cannot change unnoticed.
_CONFIG_META = "rnafm_sklearn_config"
_HEAD_META = "rnafm_sklearn_pair_head"  # the "pair_head" entry, likewise
_NATIVE_KEYS = ("format", "format_version", "config", "sha256", "pair_head")


def _native_config(value: object, where: str) -> dict[str, object]:
    """The ``"config"`` entry of a native ``config.json``, every field present and typed."""
    names = [f.name for f in fields(RnaFmConfig)]
    if not isinstance(value, dict):
        raise CheckpointError(
            f"{where}: 'config' must be a JSON object with the fields {', '.join(names)}, "
            f"found {_show(value)}."
        )
    if unknown := sorted(set(map(str, value)) - set(names)):
        raise CheckpointError(
            f"{where}: 'config' has unknown field(s) {', '.join(map(repr, unknown))}; expected "
            f"{', '.join(names)}."
        )
    if missing := [n for n in names if n not in value]:
        raise CheckpointError(f"{where}: 'config' lacks {', '.join(map(repr, missing))}.")
    for name in _INT_FIELDS:
        _positive_int(value[name], where, f"'config.{name}'")
    for name in ("emb_layer_norm_before", "token_dropout"):
        _bool(value[name], where, f"'config.{name}'")
    alphabet = value["alphabet"]
    if alphabet not in ("rna", "codon"):
        raise CheckpointError(
            f"{where}: 'config.alphabet' must be 'rna' or 'codon', found {_show(alphabet)}."
        )
    eps = value["layer_norm_eps"]
    if (
        isinstance(eps, bool)
        or not isinstance(eps, int | float)
        or not (math.isfinite(eps) and eps > 0)
    ):
        raise CheckpointError(
            f"{where}: 'config.layer_norm_eps' must be a positive number, found {_show(eps)}."
        )
    return value


def _check_recorded_config(
    config: dict[str, object], metadata: Mapping[str, str], config_file: Path, weights: Path
) -> None:
    """``config`` is the one recorded in the weights file when it was written."""
    text = metadata.get(_CONFIG_META)
    if text is None:
        logger.warning(
            "%s was written by an older rnafm_sklearn: its config.json is not covered by its "
            "checksum, so an edit to it would go unnoticed. Convert it again "
            "(rnafm_sklearn.convert_checkpoint) to protect it.",
            config_file.parent,
        )
        return
    try:
        recorded = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"{weights}: the recorded config is not valid JSON.") from exc
    if not isinstance(recorded, dict):
        raise CheckpointError(f"{weights}: the recorded config is not a JSON object.")
    absent = object()
    differ = [
        f"{k} is {_short(config.get(k, absent))} in config.json but "
        f"{_short(recorded.get(k, absent))} in {weights.name}"
        for k in sorted(set(config) | set(recorded), key=str)
        if (type(config.get(k, absent)), config.get(k, absent))
        != (type(recorded.get(k, absent)), recorded.get(k, absent))
    ]
    if differ:
        raise CheckpointError(
            f"{config_file} does not match the config recorded in {weights} (which its SHA-256 "
            f"covers): {'; '.join(differ)}. config.json was edited after the folder was "
            "written; restore it, or convert the original checkpoint again."
        )


def _parse_native(folder: Path, config: dict, config_file: Path) -> _Parsed:
    where = str(config_file)
    version = config.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{where}: 'format_version' must be a positive int, found {_show(version)}."
        )
    if version > NATIVE_FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} was written by a newer rnafm_sklearn (format_version={version}); "
            "upgrade rnafm_sklearn."
        )
    allowed = _NATIVE_KEYS if version >= 2 else _NATIVE_KEYS[:4]
    if unknown := sorted(set(map(str, config)) - set(allowed)):
        raise CheckpointError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for format_version "
            f"{version}; expected {', '.join(allowed)}."
        )
    digest = config.get("sha256")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise CheckpointError(
            f"{where}: 'sha256' must be the SHA-256 of {_WEIGHTS} (64 hex digits), "
            f"found {_show(digest)}."
        )
    stated = _native_config(config.get("config"), where)
    weights = folder / _WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing (referenced by {config_file}).")
    all_shapes, metadata = _header_shapes(weights, lambda k: k)
    _check_recorded_config(stated, metadata, config_file, weights)
    shapes = {k: v for k, v in all_shapes.items() if not k.startswith(NATIVE_HEAD_PREFIX)}
    head_shapes = {
        k[len(NATIVE_HEAD_PREFIX) :]: v
        for k, v in all_shapes.items()
        if k.startswith(NATIVE_HEAD_PREFIX)
    }
    entry = config.get("pair_head")
    if entry is None and head_shapes:
        raise CheckpointError(
            f"{weights} holds structure-head tensors (pair_head.*) but {config_file} has no "
            "'pair_head' entry."
        )
    if entry is not None:
        entry = _head_entry(entry, where)
        if json.dumps(entry, sort_keys=True) != metadata.get(_HEAD_META):
            raise CheckpointError(
                f"{config_file}: 'pair_head' does not match the one recorded in {weights} "
                "(which its SHA-256 covers); restore config.json or save the model again."
            )
    cfg = _architecture(
        shapes,
        where,
        {f: (f"'config.{f}'", stated[f]) for f in _INT_FIELDS},
        alphabet=stated["alphabet"],
        emb_layer_norm_before=stated["emb_layer_norm_before"],
        token_dropout=stated["token_dropout"],
        layer_norm_eps=float(stated["layer_norm_eps"]),
    )
    expected = _with_head(_native_shapes(cfg), shapes, cfg)
    _check_tensors(shapes, expected, f"Checkpoint {weights}", cfg)
    head = None
    if entry is not None:
        found = head_config(head_shapes, f"Checkpoint {weights} (pair_head.*)", cfg.hidden_size)
        stated_head = {k: v for k, v in entry["config"].items() if k != "dropout"}
        if {k: v for k, v in found.items() if k != "dropout"} != stated_head:
            raise CheckpointError(
                f"{config_file}: 'pair_head.config' is {stated_head}, but the pair_head.* "
                f"tensors in {weights} are those of {found}."
            )
        config_head = {**found, "dropout": entry["config"]["dropout"]}

    def verified_state() -> dict[str, torch.Tensor]:
        actual = sha256_file(weights)
        if actual != digest:
            raise CheckpointError(
                f"{weights} is corrupt: its SHA-256 is {actual}, but {config_file} "
                f"records {digest}. Convert or download the checkpoint again."
            )
        return _load_safetensors([weights], lambda k: k)

    def build() -> RnaFmEncoder:
        state = verified_state()
        state = {k: v for k, v in state.items() if not k.startswith(NATIVE_HEAD_PREFIX)}
        try:
            return RnaFmEncoder.from_state_dict(cfg, state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{weights} does not match its config: {_one_line(exc)}"
            ) from exc

    def build_pair_head() -> PairHead:
        state = verified_state()
        n = len(NATIVE_HEAD_PREFIX)
        return build_head(
            {k[n:]: v for k, v in state.items() if k.startswith(NATIVE_HEAD_PREFIX)},
            config_head,
        )

    if entry is not None:
        head = ({**config_head, "threshold": entry["threshold"]}, build_pair_head)
    return _Parsed(cfg, build, head)


def save_model(
    encoder: RnaFmEncoder,
    folder: str | os.PathLike,
    *,
    head: PairHead | None = None,
    threshold: float | None = None,
) -> Path:
    """Write ``encoder`` in the native layout (``config.json`` + ``model.safetensors``).

    Files are written to temporary names and moved into place, so an interrupted save never
    leaves a half-written checkpoint behind. ``config.json`` records the SHA-256 of the weights
    file, and the weights file records the config (in its safetensors metadata): loading
    detects a change to either.

    Parameters
    ----------
    encoder : RnaFmEncoder
        The model to save.
    folder : path
        Destination folder (created if needed).
    head : PairHead, optional
        A secondary-structure head to store with the encoder (``pair_head.*`` tensors, its
        architecture in ``config.json``); :func:`load_pair_head` reads it back.
    threshold : float, optional
        The head's probability threshold (recorded with it); default 0.5.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    AttributeError
        ``encoder`` is not an :class:`RnaFmEncoder` (it has no ``config``).
    OSError
        The folder cannot be created or written; nothing is left half-written.

    Examples
    --------
    >>> import tempfile
    >>> from rnafm_sklearn import load_model, save_model
    >>> folder = save_model(load_model("tests/fixtures/RNA-FM_tiny.pth"), tempfile.mkdtemp())
    >>> sorted(p.name for p in folder.iterdir())
    ['config.json', 'model.safetensors']
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    head_entry = None
    if head is not None:
        if head.embed_dim != encoder.config.hidden_size:
            raise ValueError(
                f"The structure head reads {head.embed_dim}-dimensional states but the encoder "
                f"gives {encoder.config.hidden_size}; they do not belong together."
            )
        t = DEFAULT_STRUCTURE_THRESHOLD if threshold is None else float(threshold)
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be a probability in [0, 1], got {threshold!r}.")
        head_entry = {"config": head.config, "threshold": t}
        for k, v in head.state_dict().items():
            if not k.endswith(".num_batches_tracked"):
                state[NATIVE_HEAD_PREFIX + k] = v.detach().to("cpu", torch.float32).contiguous()
    fd, tmp_weights = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".tmp")
    os.close(fd)
    try:
        config = encoder.config.to_dict()
        metadata = {
            "format": "pt",
            "producer": NATIVE_FORMAT,
            _CONFIG_META: json.dumps(config, sort_keys=True),
        }
        if head_entry is not None:
            metadata[_HEAD_META] = json.dumps(head_entry, sort_keys=True)
        save_file(state, tmp_weights, metadata=metadata)
        meta = {
            "format": NATIVE_FORMAT,
            "format_version": 1 if head_entry is None else NATIVE_FORMAT_VERSION,
            "config": config,
            "sha256": sha256_file(Path(tmp_weights)),
        }
        if head_entry is not None:
            meta["pair_head"] = head_entry
        tmp_config = folder / ".config.json.tmp"
        tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_weights, folder / _WEIGHTS)
        os.replace(tmp_config, folder / "config.json")
    finally:
        if os.path.exists(tmp_weights):
            os.unlink(tmp_weights)
    return folder
