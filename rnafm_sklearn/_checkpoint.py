"""Reading and writing RNA-FM checkpoints.

Three layouts are understood, detected from what is on disk:

* **official** ``.pth`` (``RNA-FM_pretrained.pth``): a pickled ``{"model", "args"}`` dict, read with
  ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed;
* **multimolecule** Hugging Face folder: ``config.json`` + ``model.safetensors`` (or shards) or
  ``pytorch_model.bin`` + ``vocab.txt``; embedding rows are mapped back by token string;
* **native**: a folder written by :func:`save_model` (``config.json`` with
  ``"format": "rnafm_sklearn"`` + ``model.safetensors``), checked against a stored SHA-256; the
  weights file also records the config, so an edited ``config.json`` is detected too.

Every layout is read in two steps. The first (:func:`read_config`) reads only metadata: the
config, and the names and shapes of the tensors (a memory-mapped ``torch.load``, a safetensors
header). It counts the layers from the ``layers.{i}.`` keys, reads the widths from the tensor
shapes, checks that every value the file claims agrees with them, and checks every tensor's name
and shape, all before anything is allocated. The second (:func:`load_model`) reads the tensors
of a checkpoint that passed. Every failure is a :class:`CheckpointError` naming the file and the
field.

This module holds the dispatch on what is on disk and the public entry points. The native
layout (:func:`save_model` and its reader) is in :mod:`._checkpoint_native`, the checks shared
by every layout in :mod:`._checkpoint_check`, the official and multimolecule readers in
:mod:`._checkpoint_formats`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ._checkpoint_check import _json_object, _Parsed
from ._checkpoint_formats import _parse_hf, _parse_official
from ._checkpoint_native import NATIVE_FORMAT, _parse_native, save_model
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import CheckpointError
from ._hub import (
    DEFAULT_STRUCTURE_THRESHOLD,
    KNOWN_STRUCTURE_FILES,
    PRETRAINED,
    STRUCTURE_THRESHOLDS,
    cached_pretrained_path,
    pretrained_path,
    sha256_file,
)
from ._pair_head import PairHead

__all__ = [
    "CheckpointError",
    "convert_checkpoint",
    "load_model",
    "load_pair_head",
    "read_config",
]


def _parse(source: str | os.PathLike) -> _Parsed:
    """Read and check the metadata of a local checkpoint (file or folder)."""
    path = Path(source).expanduser()
    if not path.exists():
        hint = (
            f" Named pretrained models: {', '.join(sorted(PRETRAINED))}."
            if isinstance(source, str) and os.sep not in source and "." not in source
            else ""
        )
        raise FileNotFoundError(f"Checkpoint not found: {path}.{hint}")
    if path.is_file():
        return _parse_official(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{path} is a folder without config.json: expected a multimolecule (Hugging Face) "
            "or rnafm_sklearn checkpoint folder, or give the path of an official .pth file."
        )
    config = _json_object(config_file)
    if config.get("format") == NATIVE_FORMAT:
        return _parse_native(path, config, config_file)
    return _parse_hf(path, config, config_file)


def read_config(source: str | os.PathLike) -> RnaFmConfig:
    """The architecture of a checkpoint, read from its metadata without loading the weights.

    The checks are those of :func:`load_model` (which calls the same code), so a config read
    here is the config of the encoder that :func:`load_model` returns, and a checkpoint that
    fails here fails there. Nothing is downloaded: for a named pretrained model that is not in
    the cache yet, the published architecture is returned (``PRETRAINED[name].config``); once
    it is cached, the file is read (its ``token_dropout`` flag is known only from the file).

    Parameters
    ----------
    source : str or path
        ``"rna-fm"``, ``"mrna-fm"``, an official ``.pth`` file, a multimolecule Hugging Face
        folder, or a folder written by :func:`save_model`.

    Returns
    -------
    RnaFmConfig

    Raises
    ------
    FileNotFoundError
        A local path does not exist.
    CheckpointError
        The file is corrupt, or its config and tensors disagree; the message names the file
        and the field.

    Examples
    --------
    >>> from rnafm_sklearn._checkpoint import read_config
    >>> read_config("tests/fixtures/RNA-FM_tiny.pth").hidden_size
    32
    >>> read_config("rna-fm").num_layers  # nothing is downloaded
    12
    """
    if isinstance(source, str) and source in PRETRAINED:
        cached = cached_pretrained_path(source)
        if cached is None:
            return RnaFmConfig(**PRETRAINED[source].config)
        source = cached
    return _parse(source).config


def load_model(source: str | os.PathLike) -> RnaFmEncoder:
    """Load an RNA-FM encoder from a named pretrained model or a local checkpoint.

    The file's metadata is checked first (see :func:`read_config`): the config must agree with
    the tensors present, so a damaged or crafted file fails before any weights are allocated.

    Parameters
    ----------
    source : str or path
        ``"rna-fm"`` (the released weights, downloaded once into the cache; see
        :func:`rnafm_sklearn.pretrained_path`), an official ``.pth`` file, a multimolecule
        Hugging Face folder, or a folder written by :func:`save_model`.

    Returns
    -------
    RnaFmEncoder
        In evaluation mode, on the CPU, in float32.

    Raises
    ------
    FileNotFoundError
        A local path does not exist (nothing is downloaded instead).
    CheckpointError
        The file is corrupt, truncated, of another model, not a checkpoint at all, or does not
        match its config; the message names the file and the field.

    Examples
    --------
    >>> from rnafm_sklearn import load_model
    >>> enc = load_model("tests/fixtures/RNA-FM_tiny.pth")
    >>> enc.config.num_layers, enc.config.hidden_size
    (2, 32)
    """
    if isinstance(source, str) and source in PRETRAINED:
        source = pretrained_path(source)
    return _parse(source).build()


def load_pair_head(source: str | os.PathLike) -> tuple[PairHead, dict[str, object]] | None:
    """The secondary-structure head of a checkpoint, or ``None`` if it has none.

    Parameters
    ----------
    source : str or path
        ``"rna-fm-ss"`` (the official PDB-All predictor), an official structure predictor
        ``.pth`` (``RNA-FM-ResNet_*.pth``), or a native folder saved with a head.

    Returns
    -------
    (PairHead, dict) or None
        The head (float32, CPU, eval mode) and its description: the architecture
        (``embed_dim``, ``channels``, ``blocks``, ``proj_dim``, ``dropout``), ``threshold``
        (the calibrated probability threshold where the head is known, else 0.5) and
        ``origin`` (``"RNA-FM-ResNet_PDB-All"``, ``"native"`` or ``"unknown"``).

    Examples
    --------
    >>> from rnafm_sklearn._checkpoint import load_pair_head
    >>> load_pair_head("tests/fixtures/RNA-FM_tiny.pth") is None  # a backbone only
    True
    """
    if isinstance(source, str) and source in PRETRAINED:
        source = pretrained_path(source)
    parsed = _parse(source)
    if parsed.head is None:
        return None
    info, build = parsed.head
    info = dict(info)
    if "threshold" in info:
        info["origin"] = "native"
    else:
        origin = KNOWN_STRUCTURE_FILES.get(sha256_file(Path(source)))
        info["origin"] = origin or "unknown"
        info["threshold"] = STRUCTURE_THRESHOLDS.get(origin, DEFAULT_STRUCTURE_THRESHOLD)
    return build(), info


def convert_checkpoint(source: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Convert any supported checkpoint to the native layout and verify it.

    The written folder is loaded again and every tensor compared with the source
    (``torch.equal``); a mismatch raises ``RuntimeError``.

    Parameters
    ----------
    source : str or path
        ``"rna-fm"``/``"mrna-fm"``, an official ``.pth``, a multimolecule folder or a native
        folder.
    folder : path
        Destination folder (created if needed).

    Returns
    -------
    pathlib.Path
        The written folder.

    Raises
    ------
    rnafm_sklearn.CheckpointError
        ``source`` is damaged or not a checkpoint (see :func:`load_model`).
    RuntimeError
        The written copy does not reproduce the source exactly (nothing is trusted then).
    FileNotFoundError
        ``source`` is a path that does not exist.

    Examples
    --------
    >>> import tempfile
    >>> from rnafm_sklearn import convert_checkpoint, load_model
    >>> out = convert_checkpoint("tests/fixtures/RNA-FM_tiny.pth", tempfile.mkdtemp())
    >>> load_model(out).config.hidden_size
    32
    """
    encoder = load_model(source)
    head = load_pair_head(source)
    if head is None:
        folder = save_model(encoder, folder)
    else:
        folder = save_model(encoder, folder, head=head[0], threshold=head[1]["threshold"])
    reloaded = load_model(folder)
    pairs = [(reloaded.state_dict(), encoder.state_dict())]
    if head is not None:
        reloaded_head = load_pair_head(folder)
        pairs.append((reloaded_head[0].state_dict(), head[0].state_dict()))
    for new, original in pairs:
        for key, value in new.items():
            if not torch.equal(value, original[key]):
                raise RuntimeError(f"Conversion of {source} changed tensor {key}; not trusted.")
    if reloaded.config != encoder.config:
        raise RuntimeError(f"Conversion of {source} changed the config; not trusted.")
    return folder
