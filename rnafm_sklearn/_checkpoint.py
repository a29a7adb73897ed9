"""Reading and writing RNA-FM checkpoints.

Three layouts are understood, detected from what is on disk:

* **official** ``.pth`` (``RNA-FM_pretrained.pth``): a pickled ``{"model", "args"}`` dict, read with
  ``torch.load(weights_only=True)`` and only ``argparse.Namespace`` allow-listed;
* **multimolecule** Hugging Face folder: ``config.json`` + ``model.safetensors`` or
  ``pytorch_model.bin`` + ``vocab.txt``; embedding rows are mapped back by token string;
* **native**: a folder written by :func:`save_model` (``config.json`` with
  ``"format": "rnafm_sklearn"`` + ``model.safetensors``), checked against a stored SHA-256.

Every layout is first brought to the official parameter names (the key tables below), checked
for missing, unexpected and mis-shaped tensors, then loaded into :class:`RnaFmEncoder`.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ._alphabet import get_alphabet
from ._encoder import RnaFmConfig, RnaFmEncoder
from ._errors import CheckpointError
from ._hub import PRETRAINED, pretrained_path, sha256_file

__all__ = ["CheckpointError", "convert_checkpoint", "load_model", "save_model"]

NATIVE_FORMAT = "rnafm_sklearn"
NATIVE_FORMAT_VERSION = 1
_WEIGHTS = "model.safetensors"


# --------------------------------------------------------------------------- official layout


def _official_shapes(cfg: RnaFmConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor the encoder needs, by its official (prefix-stripped) name."""
    E, F, V = cfg.hidden_size, cfg.ffn_size, cfg.vocab_size
    shapes: dict[str, tuple[int, ...]] = {
        "embed_tokens.weight": (V, E),
        "embed_positions.weight": (cfg.max_positions + cfg.padding_idx + 1, E),
        "emb_layer_norm_after.weight": (E,),
        "emb_layer_norm_after.bias": (E,),
    }
    if cfg.emb_layer_norm_before:
        shapes["emb_layer_norm_before.weight"] = (E,)
        shapes["emb_layer_norm_before.bias"] = (E,)
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        for name, (out_dim, in_dim) in {
            "self_attn.q_proj": (E, E),
            "self_attn.k_proj": (E, E),
            "self_attn.v_proj": (E, E),
            "self_attn.out_proj": (E, E),
            "fc1": (F, E),
            "fc2": (E, F),
        }.items():
            shapes[p + name + ".weight"] = (out_dim, in_dim)
            shapes[p + name + ".bias"] = (out_dim,)
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[p + name + ".weight"] = (E,)
            shapes[p + name + ".bias"] = (E,)
    return shapes


# Heads of the pre-training model that an encoder does not use.
_UNUSED = re.compile(r"^(lm_head|contact_head|ss_head|pooler|model\.pooler)\.")


def _to_encoder(state: Mapping[str, torch.Tensor], cfg: RnaFmConfig, source: Path) -> RnaFmEncoder:
    """Check an official-named state dict against ``cfg`` and load it into an encoder."""
    expected = _official_shapes(cfg)
    found = {k for k in state if not _UNUSED.match(k)}
    problems = []
    if missing := sorted(set(expected) - found):
        problems.append(f"missing key(s): {', '.join(missing)}")
    if unexpected := sorted(found - set(expected)):
        problems.append(f"unexpected key(s): {', '.join(unexpected)}")
    bad_shapes = sorted(
        f"{k} has shape {tuple(state[k].shape)}, expected {expected[k]}"
        for k in set(expected) & found
        if tuple(state[k].shape) != expected[k]
    )
    if bad_shapes:
        problems.append(f"shape mismatch: {'; '.join(bad_shapes)}")
    if problems:
        raise CheckpointError(
            f"Checkpoint {source} does not match an RNA-FM encoder with {cfg}: "
            + " | ".join(problems)
        )

    native: dict[str, torch.Tensor] = {}
    for key in expected:
        if ".self_attn.q_proj." in key:
            qkv = [state[key.replace("q_proj", n)] for n in ("q_proj", "k_proj", "v_proj")]
            native[key.replace("q_proj", "qkv_proj")] = torch.cat(qkv, dim=0)
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            native[key] = state[key]
    # Own copies: the source may be a memory-mapped file that someone could overwrite later.
    native = {
        k: v.detach().to(torch.float32).clone(memory_format=torch.contiguous_format)
        for k, v in native.items()
    }
    # The official loader zeroes the <mask> embedding ("for token drop"); so do we. The
    # <null_i> rows are padding of the vocabulary that no input ever uses: zeroed too, so that
    # the same weights give the same fingerprint whatever format they were stored in.
    words = native["embed_tokens.weight"]  # already our own copy (above)
    for i, tok in enumerate(get_alphabet(cfg.alphabet).tokens):
        if tok == "<mask>" or tok.startswith("<null_"):
            words[i] = 0.0
    return RnaFmEncoder.from_state_dict(cfg, native)


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; only ``argparse.Namespace`` is allowed.

    The file is memory-mapped when its format allows it: the released RNA-FM file (1.2 GB)
    also holds training state, and only the tensors the encoder uses are then read.
    """
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                # legacy (non-zip) serialization cannot be memory-mapped
                return torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Checkpoint {path} holds Python objects that cannot be loaded safely "
            f"(only tensors, containers and argparse.Namespace are allowed): {exc}. "
            "rnafm_sklearn never unpickles arbitrary code; convert the file with the tool "
            "that wrote it, or check that it is an RNA-FM checkpoint."
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(
            f"Could not read checkpoint {path}: the file is truncated or corrupt ({exc}). "
            "Delete it and download or copy it again."
        ) from exc


def _official_args(args: object, path: Path) -> dict[str, object]:
    """Rename fairseq ``encoder_*`` arguments the way the official loader does."""
    if not isinstance(args, argparse.Namespace | dict):
        raise CheckpointError(
            f"Checkpoint {path}: 'args' is a {type(args).__name__}, expected argparse.Namespace."
        )
    items = vars(args).items() if isinstance(args, argparse.Namespace) else args.items()
    # fm/pretrained.py: "".join(s.split("encoder_")[1:] if "encoder" in s else s)
    return {("".join(k.split("encoder_")[1:]) if "encoder" in k else k): v for k, v in items}


def _strip_prefix(key: str) -> str:
    """Official prefix stripping: ``encoder.sentence_encoder.`` and ``encoder.`` (in this order)."""
    if "sentence_encoder" in key:
        key = "".join(key.split("sentence_encoder.")[1:])
    if "encoder" in key:
        key = "".join(key.split("encoder.")[1:])
    return key


def _load_official(path: Path) -> RnaFmEncoder:
    data = _torch_load(path)
    if not isinstance(data, dict) or "model" not in data or "args" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(
            f"Checkpoint {path} is not in the official RNA-FM layout: expected a dict with "
            f"'model' and 'args', found {keys}."
        )
    args = _official_args(data["args"], path)
    state = {_strip_prefix(k): v for k, v in data["model"].items()}
    if args.get("arch") != "roberta_large":
        raise CheckpointError(
            f"Checkpoint {path} has arch={args.get('arch')!r}; only the ESM-1b-style "
            "'roberta_large' architecture of RNA-FM is supported."
        )
    required = ("layers", "embed_dim", "ffn_embed_dim", "attention_heads", "max_positions")
    if absent := [k for k in required if k not in args]:
        raise CheckpointError(f"Checkpoint {path}: 'args' lacks {', '.join(absent)}.")
    cfg = RnaFmConfig(
        num_layers=int(args["layers"]),
        hidden_size=int(args["embed_dim"]),
        num_heads=int(args["attention_heads"]),
        ffn_size=int(args["ffn_embed_dim"]),
        max_positions=int(args["max_positions"]),
        alphabet=_alphabet_for_rows(state, "embed_tokens.weight", path),
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before") for k in state),
        token_dropout=bool(args.get("token_dropout", False)),
    )
    return _to_encoder(state, cfg, path)


def _alphabet_for_rows(state: Mapping[str, torch.Tensor], key: str, path: Path) -> str:
    if key not in state:
        raise CheckpointError(f"Checkpoint {path} has no token embedding ({key}).")
    rows = state[key].shape[0]
    for name in ("rna", "codon"):
        if rows == len(get_alphabet(name)):
            return name
    raise CheckpointError(
        f"Checkpoint {path}: the token embedding has {rows} rows; RNA-FM has 25 "
        "(single nucleotides) and mRNA-FM 73 (codons)."
    )


# --------------------------------------------------------------------- multimolecule layout

# Explicit key table, Hugging Face (multimolecule) name -> official name; each stem is
# followed by ".weight" or ".bias". Keys may carry a "model." or "rnafm." prefix.
_LAYER = r"encoder\.layer\.(?P<i>\d+)\."
_HF_KEYS = [
    (r"embeddings\.word_embeddings", "embed_tokens"),
    (r"embeddings\.position_embeddings", "embed_positions"),
    (r"embeddings\.layer_norm", "emb_layer_norm_before"),
    (_LAYER + r"attention\.self\.query", r"layers.\g<i>.self_attn.q_proj"),
    (_LAYER + r"attention\.self\.key", r"layers.\g<i>.self_attn.k_proj"),
    (_LAYER + r"attention\.self\.value", r"layers.\g<i>.self_attn.v_proj"),
    (_LAYER + r"attention\.output\.dense", r"layers.\g<i>.self_attn.out_proj"),
    (_LAYER + r"attention\.layer_norm", r"layers.\g<i>.self_attn_layer_norm"),
    (_LAYER + r"intermediate\.dense", r"layers.\g<i>.fc1"),
    (_LAYER + r"output\.dense", r"layers.\g<i>.fc2"),
    (_LAYER + r"layer_norm", r"layers.\g<i>.final_layer_norm"),
    (r"encoder\.layer_norm", "emb_layer_norm_after"),
]
_HF_RULES = [
    (re.compile(r"^(?:model\.|rnafm\.)?" + src + r"\.(?P<p>weight|bias)$"), dst + r".\g<p>")
    for src, dst in _HF_KEYS
]


def _hf_rename(key: str) -> str:
    for pattern, replacement in _HF_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key  # left for the unused-head filter or reported as unexpected


def _read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = folder / f"{_WEIGHTS}.index.json"
    try:
        if (folder / _WEIGHTS).exists():
            return load_file(folder / _WEIGHTS)
        if index.exists():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(folder / shard))
            return state
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"Could not read the weights in {folder}: truncated or corrupt file ({exc})."
        ) from exc
    if (folder / "pytorch_model.bin").exists():
        state = _torch_load(folder / "pytorch_model.bin")
        if not isinstance(state, dict):
            raise CheckpointError(f"{folder / 'pytorch_model.bin'} is not a state dict.")
        return state
    raise FileNotFoundError(
        f"No weights in {folder}: expected {_WEIGHTS} or pytorch_model.bin next to config.json."
    )


def _load_hf(folder: Path, config: dict) -> RnaFmEncoder:
    if config.get("model_type", "rnafm") != "rnafm":
        raise CheckpointError(
            f"{folder / 'config.json'} describes a {config['model_type']!r} model, not RNA-FM."
        )
    vocab_file = folder / "vocab.txt"
    if not vocab_file.exists():
        raise FileNotFoundError(
            f"{vocab_file} is missing: it is needed to map the embedding rows of a "
            "multimolecule checkpoint back to RNA-FM's token ids."
        )
    vocab = [line.strip() for line in vocab_file.read_text().splitlines() if line.strip()]
    state = {_hf_rename(k): v for k, v in _read_hf_weights(folder).items()}
    alphabet = get_alphabet("codon" if config.get("codon") else "rna")
    words = state.get("embed_tokens.weight")
    if words is None or words.shape[0] != len(vocab):
        raise CheckpointError(
            f"{folder}: {len(vocab)} tokens in vocab.txt but the word embedding has "
            f"{None if words is None else words.shape[0]} rows."
        )
    # Rows are copied by token string: multimolecule re-orders the vocabulary.
    row_of = {tok: i for i, tok in enumerate(vocab)}
    rows, absent = [], []
    for tok in alphabet.tokens:
        name = "<null>" if tok.startswith("<null_") and tok not in row_of else tok
        if name in row_of:
            rows.append(words[row_of[name]])
        elif tok.startswith("<null_") or tok == "<mask>":
            rows.append(torch.zeros_like(words[0]))  # never fed to the model
        else:
            absent.append(tok)
    if absent:
        raise CheckpointError(
            f"{vocab_file} lacks RNA-FM token(s) {', '.join(absent)}; cannot map embeddings."
        )
    state["embed_tokens.weight"] = torch.stack(rows)
    cfg = RnaFmConfig(
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        ffn_size=int(config["intermediate_size"]),
        # 1026 rows = max_positions + padding_idx + 1 in RNA-FM's numbering
        max_positions=int(config.get("max_position_embeddings", 1026)) - alphabet.padding_idx - 1,
        alphabet=alphabet.name,
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before") for k in state),
        token_dropout=bool(config.get("token_dropout", False)),
        # config["layer_norm_eps"] is deliberately ignored: RNA-FM uses 1e-5 everywhere.
    )
    return _to_encoder(state, cfg, folder)


# ---------------------------------------------------------------------------- native layout


def _load_native(folder: Path, config: dict) -> RnaFmEncoder:
    from safetensors.torch import load_file

    if config.get("format_version") != NATIVE_FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} was written by a newer rnafm_sklearn (format_version="
            f"{config.get('format_version')}); upgrade rnafm_sklearn."
        )
    weights = folder / _WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{weights} is missing (referenced by {folder / 'config.json'}).")
    actual = sha256_file(weights)
    if actual != config["sha256"]:
        raise CheckpointError(
            f"{weights} is corrupt: its SHA-256 is {actual}, but {folder / 'config.json'} "
            f"records {config['sha256']}. Convert or download the checkpoint again."
        )
    cfg = RnaFmConfig(**config["config"])
    state = load_file(weights)
    try:
        return RnaFmEncoder.from_state_dict(cfg, state)
    except RuntimeError as exc:
        raise CheckpointError(f"{weights} does not match its config: {exc}") from exc


def save_model(encoder: RnaFmEncoder, folder: str | os.PathLike) -> Path:
    """Write ``encoder`` in the native layout (``config.json`` + ``model.safetensors``).

    Files are written to temporary names and moved into place, so an interrupted save never
    leaves a half-written checkpoint behind.

    Parameters
    ----------
    encoder : RnaFmEncoder
        The model to save.
    folder : path
        Destination folder (created if needed).

    Returns
    -------
    pathlib.Path
        The folder.

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
    fd, tmp_weights = tempfile.mkstemp(dir=folder, prefix=".model-", suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp_weights, metadata={"format": "pt", "producer": NATIVE_FORMAT})
        meta = {
            "format": NATIVE_FORMAT,
            "format_version": NATIVE_FORMAT_VERSION,
            "config": encoder.config.to_dict(),
            "sha256": sha256_file(Path(tmp_weights)),
        }
        tmp_config = folder / ".config.json.tmp"
        tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_weights, folder / _WEIGHTS)
        os.replace(tmp_config, folder / "config.json")
    finally:
        if os.path.exists(tmp_weights):
            os.unlink(tmp_weights)
    return folder


# ------------------------------------------------------------------------------ entry points


def load_model(source: str | os.PathLike) -> RnaFmEncoder:
    """Load an RNA-FM encoder from a named pretrained model or a local checkpoint.

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
        The file is corrupt, truncated, of another model, or does not match its config.

    Examples
    --------
    >>> from rnafm_sklearn import load_model
    >>> enc = load_model("tests/fixtures/RNA-FM_tiny.pth")
    >>> enc.config.num_layers, enc.config.hidden_size
    (2, 32)
    """
    if isinstance(source, str) and source in PRETRAINED:
        return load_model(pretrained_path(source))
    path = Path(source).expanduser()
    if not path.exists():
        hint = (
            f" Named pretrained models: {', '.join(sorted(PRETRAINED))}."
            if isinstance(source, str) and os.sep not in source and "." not in source
            else ""
        )
        raise FileNotFoundError(f"Checkpoint not found: {path}.{hint}")
    if path.is_file():
        return _load_official(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(
            f"{path} is a folder without config.json: expected a multimolecule (Hugging Face) "
            "or rnafm_sklearn checkpoint folder, or give the path of an official .pth file."
        )
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file} is not valid JSON: {exc}") from exc
    if config.get("format") == NATIVE_FORMAT:
        return _load_native(path, config)
    return _load_hf(path, config)


def convert_checkpoint(source: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Convert any supported checkpoint to the native layout and verify it.

    The written folder is loaded again and every tensor compared with the source
    (``torch.equal``); a mismatch raises ``RuntimeError``.

    Examples
    --------
    >>> import tempfile
    >>> from rnafm_sklearn import convert_checkpoint, load_model
    >>> out = convert_checkpoint("tests/fixtures/RNA-FM_tiny.pth", tempfile.mkdtemp())
    >>> load_model(out).config.hidden_size
    32
    """
    encoder = load_model(source)
    folder = save_model(encoder, folder)
    reloaded = load_model(folder)
    original = encoder.state_dict()
    for key, value in reloaded.state_dict().items():
        if not torch.equal(value, original[key]):
            raise RuntimeError(f"Conversion of {source} changed tensor {key}; not trusted.")
    if reloaded.config != encoder.config:
        raise RuntimeError(f"Conversion of {source} changed the config; not trusted.")
    return folder
