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
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ._alphabet import get_alphabet
from ._encoder import RnaFmConfig, RnaFmEncoder
from ._errors import CheckpointError
from ._hub import PRETRAINED, cached_pretrained_path, pretrained_path, sha256_file

__all__ = ["CheckpointError", "convert_checkpoint", "load_model", "read_config", "save_model"]

logger = logging.getLogger("rnafm_sklearn")

NATIVE_FORMAT = "rnafm_sklearn"
NATIVE_FORMAT_VERSION = 1
_WEIGHTS = "model.safetensors"
# safetensors metadata entry of a native folder: the config, as canonical JSON. The weights
# file is covered by the SHA-256 in config.json, so config.json cannot change unnoticed.
_CONFIG_META = "rnafm_sklearn_config"
_NATIVE_KEYS = ("format", "format_version", "config", "sha256")
_INT_FIELDS = ("num_layers", "hidden_size", "num_heads", "ffn_size", "max_positions")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors dtype names
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip format) ...
_PICKLE_PROTO = b"\x80"  # ... or the legacy format: a pickle (protocol >= 2)

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class _Parsed:
    """A checkpoint whose metadata passed every check: its config, and how to read the weights."""

    config: RnaFmConfig
    build: Callable[[], RnaFmEncoder]


# ------------------------------------------------------------------------------ validation


def _short(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object) -> str:
    """A bad value for an error message: its (shortened) repr and its type."""
    return f"{_short(value)} ({type(value).__name__})"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(items: Iterable[str], limit: int = 10) -> str:
    items = list(items)
    more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _positive_int(value: object, where: str, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CheckpointError(f"{where}: {label} must be a positive int, found {_show(value)}.")
    return value


def _bool(value: object, where: str, label: str) -> bool:
    if not isinstance(value, bool):
        raise CheckpointError(f"{where}: {label} must be true or false, found {_show(value)}.")
    return value


def _matrix(shapes: Shapes, key: str, where: str) -> tuple[int, ...] | None:
    """The shape of a 2-D tensor ``key``, ``None`` if absent; an error if not 2-D."""
    shape = shapes.get(key)
    if shape is not None and len(shape) != 2:
        raise CheckpointError(f"{where}: {key} has shape {shape}; expected a matrix.")
    return shape


_LAYER_KEY = re.compile(r"layers\.([0-9]{1,9})\.")


def _architecture(
    shapes: Shapes, where: str, claims: Mapping[str, tuple[str, object]], **fixed: object
) -> RnaFmConfig:
    """The config of official-named (or native-named) tensors ``shapes``.

    The number of layers is counted from the ``layers.{i}.`` keys and the widths are read from
    the shapes; ``claims`` maps config fields to ``(label, value)`` as the file states them, and
    each must be a positive int that agrees. The number of heads cannot be seen in the shapes:
    it must divide the hidden size. Nothing is allocated: the layer count is bounded by the keys.
    """
    values = {f: _positive_int(v, where, label) for f, (label, v) in claims.items()}
    label = {f: lab for f, (lab, _) in claims.items()}
    layer_ids = sorted({int(m.group(1)) for k in shapes if (m := _LAYER_KEY.match(k))})
    n = len(layer_ids)
    if layer_ids != list(range(n)):
        raise CheckpointError(
            f"{where}: the weights hold layers [{_listing(map(str, layer_ids), 8)}]; "
            f"expected layers 0 to {n - 1} without gaps."
        )
    words = _matrix(shapes, "embed_tokens.weight", where)
    if words is None:
        raise CheckpointError(f"{where}: the weights lack the token embedding embed_tokens.weight.")
    padding_idx = get_alphabet(str(fixed["alphabet"])).padding_idx
    derived = {
        "num_layers": (n, f"the weights hold {n} layer(s)"),
        "hidden_size": (words[1], f"embed_tokens.weight has shape {words}"),
    }
    if (fc2 := _matrix(shapes, "layers.0.fc2.weight", where)) is not None:
        derived["ffn_size"] = (fc2[1], f"layers.0.fc2.weight has shape {fc2}")
    if (pos := _matrix(shapes, "embed_positions.weight", where)) is not None:
        derived["max_positions"] = (
            pos[0] - padding_idx - 1,
            f"embed_positions.weight has shape {pos} (max_positions + {padding_idx + 1} rows)",
        )
    for field, (value, origin) in derived.items():
        if field not in values:
            values[field] = value
            label[field] = origin
        elif values[field] != value:
            raise CheckpointError(f"{where}: {label[field]} is {values[field]}, but {origin}.")
    if missing := [f for f in _INT_FIELDS if f not in values]:
        raise CheckpointError(f"{where}: cannot tell {', '.join(missing)} from the file.")
    if values["max_positions"] < 3:
        raise CheckpointError(
            f"{where}: {label['max_positions']}: max_positions={values['max_positions']} leaves "
            "no room for a sequence between <cls> and <eos>."
        )
    heads, hidden = values["num_heads"], values["hidden_size"]
    if hidden % heads:
        raise CheckpointError(
            f"{where}: {label['num_heads']} is {heads}, which does not divide the hidden size "
            f"{hidden} (each head gets hidden_size / num_heads dimensions)."
        )
    try:
        return RnaFmConfig(**values, **fixed)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


def _check_tensors(shapes: Shapes, expected: Shapes, where: str, cfg: RnaFmConfig) -> None:
    """Every tensor the encoder needs is there with its shape, and nothing else is."""
    problems = []
    if missing := sorted(set(expected) - set(shapes)):
        problems.append(f"missing key(s): {_listing(missing)}")
    if unexpected := sorted(set(shapes) - set(expected)):
        problems.append(f"unexpected key(s): {_listing(unexpected)}")
    bad_shapes = sorted(
        f"{k} has shape {shapes[k]}, expected {expected[k]}"
        for k in set(expected) & set(shapes)
        if shapes[k] != expected[k]
    )
    if bad_shapes:
        more = f"; ... ({len(bad_shapes) - 5} more)" if len(bad_shapes) > 5 else ""
        problems.append(f"shape mismatch: {'; '.join(bad_shapes[:5])}{more}")
    if problems:
        raise CheckpointError(
            f"{where} does not match an RNA-FM encoder with {cfg}: " + " | ".join(problems)
        )


def _state_shapes(
    state: object, where: str, label: str, rename: Callable[[str], str]
) -> tuple[dict[str, torch.Tensor], Shapes]:
    """Check a loaded state dict; return it renamed, without unused heads, and its shapes."""
    if not isinstance(state, Mapping):
        raise CheckpointError(
            f"{where}: {label} is a {type(state).__name__}, expected a dict of tensors."
        )
    tensors: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: {label} has the key {_show(key)}; expected str keys.")
        name = rename(key)
        if _UNUSED.match(name):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{where}: {label}[{key!r}] is {_show(value)}, not a tensor.")
        if (
            value.layout != torch.strided
            or value.device.type != "cpu"
            or not value.is_floating_point()
        ):
            raise CheckpointError(
                f"{where}: {label}[{key!r}] is a {value.dtype} tensor ({value.layout}, on "
                f"{value.device.type}); expected dense floating-point weights."
            )
        tensors[name] = value
    return tensors, {k: tuple(v.shape) for k, v in tensors.items()}


def _safetensors_header(path: Path) -> tuple[Shapes, dict[str, str], dict[str, str]]:
    """Shapes, dtypes and metadata of a safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            metadata = fh.metadata() or {}
            shapes, dtypes = {}, {}
            for key in fh.keys():
                tensor = fh.get_slice(key)
                shapes[key] = tuple(tensor.get_shape())
                dtypes[key] = tensor.get_dtype()
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(
            f"Could not read the weights in {path}: truncated or corrupt file ({_one_line(exc)})."
        ) from exc
    return shapes, dtypes, metadata


def _header_shapes(path: Path, rename: Callable[[str], str]) -> tuple[Shapes, dict[str, str]]:
    """Renamed shapes (unused heads left out) and metadata of a safetensors file."""
    raw, dtypes, metadata = _safetensors_header(path)
    shapes = {}
    for key, shape in raw.items():
        name = rename(key)
        if _UNUSED.match(name):
            continue
        if dtypes[key] not in _FLOAT_DTYPES:
            raise CheckpointError(
                f"Checkpoint {path}: tensor {key!r} has dtype {dtypes[key]}; "
                "expected floating-point weights."
            )
        shapes[name] = shape
    return shapes, metadata


def _load_safetensors(paths: list[Path], rename: Callable[[str], str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            loaded = load_file(path)
        except Exception as exc:  # safetensors raises its own error types
            raise CheckpointError(
                f"Could not read the weights in {path}: truncated or corrupt file "
                f"({_one_line(exc)})."
            ) from exc
        for key, value in loaded.items():
            if not _UNUSED.match(name := rename(key)):
                state[name] = value
    return state


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected JSON."
        ) from exc
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise CheckpointError(f"{path} is not valid JSON: nested too deeply.") from exc


_JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number"}


def _json_object(path: Path) -> dict:
    data = _read_json(path)
    if not isinstance(data, dict):
        found = "null" if data is None else _JSON_TYPES.get(type(data), type(data).__name__)
        raise CheckpointError(
            f"{path} must hold a JSON object (the model config), found {found}."
        )
    return data


# --------------------------------------------------------------------------- official layout


def _official_shapes(cfg: RnaFmConfig) -> Shapes:
    """Every tensor the encoder needs, by its official (prefix-stripped) name."""
    E, F, V = cfg.hidden_size, cfg.ffn_size, cfg.vocab_size
    shapes: Shapes = {
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


def _native_shapes(cfg: RnaFmConfig) -> Shapes:
    """Every tensor of :class:`RnaFmEncoder` (q, k and v fused into ``qkv_proj``)."""
    shapes: Shapes = {}
    for key, shape in _official_shapes(cfg).items():
        if ".self_attn.q_proj." in key:
            shapes[key.replace("q_proj", "qkv_proj")] = (3 * shape[0], *shape[1:])
        elif ".self_attn.k_proj." not in key and ".self_attn.v_proj." not in key:
            shapes[key] = shape
    return shapes


# Heads of the pre-training model that an encoder does not use.
_UNUSED = re.compile(r"^(lm_head|contact_head|ss_head|pooler|model\.pooler)\.")


def _to_encoder(state: Mapping[str, torch.Tensor], cfg: RnaFmConfig) -> RnaFmEncoder:
    """Load an official-named state dict, already checked against ``cfg``, into an encoder."""
    native: dict[str, torch.Tensor] = {}
    for key in _official_shapes(cfg):
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


def _refused_global(exc: BaseException) -> str:
    """The class a ``weights_only`` load refused, from torch's (multi-line) message."""
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    return f" (it refers to {found.group(1)})" if found else ""


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; only ``argparse.Namespace`` is allowed.

    The file is memory-mapped when its format allows it: the released RNA-FM file (1.2 GB)
    also holds training state, and only the tensors the encoder uses are then read.
    """
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_PROTO)):
        found = "an empty file" if not head else f"a file that starts with {head!r}"
        raise CheckpointError(
            f"Could not read checkpoint {path}: the file is not an RNA-FM checkpoint (expected "
            f"a PyTorch .pth file, which is a zip archive or a pickle; found {found})."
        )
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
            f"Checkpoint {path} holds Python objects that cannot be loaded safely"
            f"{_refused_global(exc)}: only tensors, containers and argparse.Namespace are "
            "allowed. rnafm_sklearn never unpickles arbitrary code; convert the file with the "
            "tool that wrote it, or check that it is an RNA-FM checkpoint."
        ) from exc
    except Exception as exc:  # torch raises many types for a damaged file
        if isinstance(exc, FileNotFoundError):
            raise
        raise CheckpointError(
            f"Could not read checkpoint {path}: the file is truncated or corrupt "
            f"({_one_line(exc)}). Delete it and download or copy it again."
        ) from exc


def _official_args(args: object, where: str) -> tuple[dict[str, object], dict[str, str]]:
    """Rename fairseq ``encoder_*`` arguments the way the official loader does.

    Returns the renamed arguments and, for messages, how each was spelled in the file.
    """
    if not isinstance(args, argparse.Namespace | dict):
        raise CheckpointError(
            f"{where}: 'args' is {_show(args)}, expected argparse.Namespace."
        )
    items = vars(args).items() if isinstance(args, argparse.Namespace) else args.items()
    renamed, labels = {}, {}
    for key, value in items:
        if not isinstance(key, str):
            raise CheckpointError(f"{where}: 'args' has the key {_show(key)}; expected names.")
        # fm/pretrained.py: "".join(s.split("encoder_")[1:] if "encoder" in s else s)
        name = "".join(key.split("encoder_")[1:]) if "encoder" in key else key
        renamed[name], labels[name] = value, f"args.{key}"
    return renamed, labels


def _strip_prefix(key: str) -> str:
    """Official prefix stripping: ``encoder.sentence_encoder.`` and ``encoder.`` (in this order)."""
    if "sentence_encoder" in key:
        key = "".join(key.split("sentence_encoder.")[1:])
    if "encoder" in key:
        key = "".join(key.split("encoder.")[1:])
    return key


def _parse_official(path: Path) -> _Parsed:
    where = f"Checkpoint {path}"
    data = _torch_load(path)
    if not isinstance(data, dict) or "model" not in data or "args" not in data:
        if isinstance(data, dict):
            names = sorted(map(str, data))
            found = repr(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        else:
            found = type(data).__name__
        raise CheckpointError(
            f"{where} is not in the official RNA-FM layout: expected a dict with 'model' and "
            f"'args', found {found}."
        )
    args, labels = _official_args(data["args"], where)
    if args.get("arch") != "roberta_large":
        raise CheckpointError(
            f"{where} has {labels.get('arch', 'args.arch')}={_short(args.get('arch'))}; "
            "only the ESM-1b-style 'roberta_large' architecture of RNA-FM is supported."
        )
    required = ("layers", "embed_dim", "ffn_embed_dim", "attention_heads", "max_positions")
    if absent := [k for k in required if k not in args]:
        raise CheckpointError(f"{where}: 'args' lacks {', '.join(absent)}.")
    state, shapes = _state_shapes(data["model"], where, "'model'", _strip_prefix)
    token_dropout = args.get("token_dropout", False)
    if token_dropout is None:  # the official forward tests it for truth
        token_dropout = False
    fields_of = {
        "num_layers": "layers",
        "hidden_size": "embed_dim",
        "num_heads": "attention_heads",
        "ffn_size": "ffn_embed_dim",
        "max_positions": "max_positions",
    }
    cfg = _architecture(
        shapes,
        where,
        {f: (labels[a], args[a]) for f, a in fields_of.items()},
        alphabet=_alphabet_for_rows(shapes, where),
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before") for k in shapes),
        token_dropout=_bool(token_dropout, where, labels.get("token_dropout", "token_dropout")),
    )
    _check_tensors(shapes, _official_shapes(cfg), where, cfg)
    return _Parsed(cfg, lambda: _to_encoder(state, cfg))


def _alphabet_for_rows(shapes: Shapes, where: str) -> str:
    words = _matrix(shapes, "embed_tokens.weight", where)
    if words is None:
        raise CheckpointError(f"{where} has no token embedding (embed_tokens.weight).")
    for name in ("rna", "codon"):
        if words[0] == len(get_alphabet(name)):
            return name
    raise CheckpointError(
        f"{where}: the token embedding has {words[0]} rows; RNA-FM has 25 (single nucleotides) "
        f"and mRNA-FM 73 (codons) (embed_tokens.weight has shape {words})."
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
# config.json field of each config field that a multimolecule folder must state
_HF_FIELDS = {
    "num_layers": "num_hidden_layers",
    "hidden_size": "hidden_size",
    "num_heads": "num_attention_heads",
    "ffn_size": "intermediate_size",
}


def _hf_rename(key: str) -> str:
    for pattern, replacement in _HF_RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return key  # left for the unused-head filter or reported as unexpected


def _shards(index: Path, folder: Path) -> list[Path]:
    """The shard files listed by a ``model.safetensors.index.json``, all inside ``folder``."""
    data = _read_json(index)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if (
        not isinstance(weight_map, dict)
        or not weight_map
        or not all(isinstance(v, str) for v in weight_map.values())
    ):
        raise CheckpointError(
            f"{index}: 'weight_map' must map tensor names to shard file names, "
            f"found {_show(weight_map if isinstance(data, dict) else data)}."
        )
    shards = []
    for name in sorted(set(weight_map.values())):
        if name in ("", ".", "..") or "/" in name or "\\" in name or Path(name).name != name:
            raise CheckpointError(
                f"{index}: 'weight_map' names the shard {_short(name)}, which is not a file "
                f"name inside {folder}."
            )
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} is missing (a shard listed in {index}).")
        shards.append(folder / name)
    return shards


def _hf_weights(folder: Path) -> tuple[Shapes, Callable[[], dict[str, torch.Tensor]]]:
    """Official-named shapes of a multimolecule folder's weights, and a reader for them."""
    index = folder / f"{_WEIGHTS}.index.json"
    if (folder / _WEIGHTS).exists():
        files = [folder / _WEIGHTS]
    elif index.exists():
        files = _shards(index, folder)
    elif (bin_file := folder / "pytorch_model.bin").exists():
        state, shapes = _state_shapes(
            _torch_load(bin_file), f"Checkpoint {bin_file}", "the state dict", _hf_rename
        )
        return shapes, lambda: dict(state)
    else:
        raise FileNotFoundError(
            f"No weights in {folder}: expected {_WEIGHTS} or pytorch_model.bin next to "
            "config.json."
        )
    shapes: Shapes = {}
    for path in files:
        shapes.update(_header_shapes(path, _hf_rename)[0])
    return shapes, lambda: _load_safetensors(files, _hf_rename)


def _read_vocab(folder: Path) -> list[str]:
    vocab_file = folder / "vocab.txt"
    if not vocab_file.exists():
        raise FileNotFoundError(
            f"{vocab_file} is missing: it is needed to map the embedding rows of a "
            "multimolecule checkpoint back to RNA-FM's token ids."
        )
    try:
        text = vocab_file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"{vocab_file} is not UTF-8 text ({exc.reason} at byte {exc.start}); expected one "
            "token per line."
        ) from exc
    return [line.strip() for line in text.splitlines() if line.strip()]


def _parse_hf(folder: Path, config: dict, config_file: Path) -> _Parsed:
    where = str(config_file)
    model_type = config.get("model_type", "rnafm")
    if model_type != "rnafm":
        raise CheckpointError(
            f"{config_file} describes a {_short(model_type)} model, not RNA-FM (model_type)."
        )
    if absent := [name for name in _HF_FIELDS.values() if name not in config]:
        raise CheckpointError(
            f"{config_file} lacks {', '.join(map(repr, absent))}: not an RNA-FM config."
        )
    codon = _bool(config.get("codon", False), where, "'codon'")
    token_dropout = _bool(config.get("token_dropout", False), where, "'token_dropout'")
    alphabet = get_alphabet("codon" if codon else "rna")
    vocab = _read_vocab(folder)
    shapes, read_weights = _hf_weights(folder)

    words = _matrix(shapes, "embed_tokens.weight", f"Checkpoint {folder}")
    if words is None or words[0] != len(vocab):
        raise CheckpointError(
            f"{folder}: {len(vocab)} tokens in vocab.txt but the word embedding has "
            f"{None if words is None else words[0]} rows."
        )
    # Rows are copied by token string: multimolecule re-orders the vocabulary.
    row_of = {tok: i for i, tok in enumerate(vocab)}
    rows: list[int | None] = []
    absent = []
    for tok in alphabet.tokens:
        name = "<null>" if tok.startswith("<null_") and tok not in row_of else tok
        if name in row_of:
            rows.append(row_of[name])
        elif tok.startswith("<null_") or tok == "<mask>":
            rows.append(None)  # never fed to the model: a zero row
        else:
            absent.append(tok)
    if absent:
        raise CheckpointError(
            f"{folder / 'vocab.txt'} lacks RNA-FM token(s) {', '.join(absent)}; cannot map "
            "embeddings."
        )
    shapes["embed_tokens.weight"] = (len(alphabet), words[1])

    # 1026 rows = max_positions + padding_idx + 1 in RNA-FM's numbering
    if "max_position_embeddings" in config:
        rows_claimed = _positive_int(
            config["max_position_embeddings"], where, "'max_position_embeddings'"
        )
        pos = _matrix(shapes, "embed_positions.weight", f"Checkpoint {folder}")
        if pos is not None and pos[0] != rows_claimed:
            raise CheckpointError(
                f"{where}: 'max_position_embeddings' is {rows_claimed}, but the position "
                f"embedding has {pos[0]} rows."
            )
    cfg = _architecture(
        shapes,
        where,
        {f: (repr(name), config[name]) for f, name in _HF_FIELDS.items()},
        alphabet=alphabet.name,
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before") for k in shapes),
        token_dropout=token_dropout,
        # config["layer_norm_eps"] is deliberately ignored: RNA-FM uses 1e-5 everywhere.
    )
    _check_tensors(shapes, _official_shapes(cfg), f"Checkpoint {folder}", cfg)

    def build() -> RnaFmEncoder:
        state = read_weights()
        words = state["embed_tokens.weight"]
        state["embed_tokens.weight"] = torch.stack(
            [torch.zeros_like(words[0]) if i is None else words[i] for i in rows]
        )
        return _to_encoder(state, cfg)

    return _Parsed(cfg, build)


# ---------------------------------------------------------------------------- native layout


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
    if unknown := sorted(set(map(str, config)) - set(_NATIVE_KEYS)):
        raise CheckpointError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for format_version "
            f"{version}; expected {', '.join(_NATIVE_KEYS)}."
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
    shapes, metadata = _header_shapes(weights, lambda k: k)
    _check_recorded_config(stated, metadata, config_file, weights)
    cfg = _architecture(
        shapes,
        where,
        {f: (f"'config.{f}'", stated[f]) for f in _INT_FIELDS},
        alphabet=stated["alphabet"],
        emb_layer_norm_before=stated["emb_layer_norm_before"],
        token_dropout=stated["token_dropout"],
        layer_norm_eps=float(stated["layer_norm_eps"]),
    )
    _check_tensors(shapes, _native_shapes(cfg), f"Checkpoint {weights}", cfg)

    def build() -> RnaFmEncoder:
        actual = sha256_file(weights)
        if actual != digest:
            raise CheckpointError(
                f"{weights} is corrupt: its SHA-256 is {actual}, but {config_file} "
                f"records {digest}. Convert or download the checkpoint again."
            )
        state = _load_safetensors([weights], lambda k: k)
        try:
            return RnaFmEncoder.from_state_dict(cfg, state)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{weights} does not match its config: {_one_line(exc)}"
            ) from exc

    return _Parsed(cfg, build)


def save_model(encoder: RnaFmEncoder, folder: str | os.PathLike) -> Path:
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
        config = encoder.config.to_dict()
        metadata = {
            "format": "pt",
            "producer": NATIVE_FORMAT,
            _CONFIG_META: json.dumps(config, sort_keys=True),
        }
        save_file(state, tmp_weights, metadata=metadata)
        meta = {
            "format": NATIVE_FORMAT,
            "format_version": NATIVE_FORMAT_VERSION,
            "config": config,
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
