"""Checks shared by every RNA-FM checkpoint layout, and the code that builds the encoder.

* :class:`_Parsed`, the record of a checkpoint whose metadata passed every check;
* validation helpers for values and messages (``_positive_int``, ``_bool``, ``_matrix``,
  ``_show``...);
* :func:`_architecture`, the config of a set of tensor shapes (layers counted from the keys,
  widths read from the shapes, every claim of the file checked against them);
* the tensors an encoder needs (``_official_shapes``, ``_native_shapes``), checked with
  :func:`_check_tensors`, and the check of a loaded state dict (``_state_shapes``);
* readers of safetensors headers and weights, and of JSON files;
* :func:`_to_encoder`, which turns an official-named state dict into an :class:`RnaFmEncoder`.

Nothing here knows a layout: the readers of each are in :mod:`._checkpoint_formats` (official
``.pth``, multimolecule) and :mod:`._checkpoint_native`; the public entry points are in
:mod:`._checkpoint`. Every failure is a :class:`CheckpointError` naming the file and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ._alphabet import get_alphabet
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import CheckpointError

_WEIGHTS = "model.safetensors"
_INT_FIELDS = ("num_layers", "hidden_size", "num_heads", "ffn_size", "max_positions")
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}  # safetensors dtype names

Shapes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class _Parsed:
    """A checkpoint whose metadata passed every check: its config, and how to read the weights."""

    config: RnaFmConfig
    build: Callable[[], RnaFmEncoder]
    # A structure head in the file: its architecture (a dict) and how to read it.
    head: tuple[dict, Callable[[], object]] | None = None


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


# ----------------------------------------------------------------------- expected tensors


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


def _head_shapes(cfg: RnaFmConfig) -> Shapes:
    """The masked-LM head, by its official name (its output weight is the token embedding)."""
    E = cfg.hidden_size
    return {
        "lm_head.dense.weight": (E, E),
        "lm_head.dense.bias": (E,),
        "lm_head.layer_norm.weight": (E,),
        "lm_head.layer_norm.bias": (E,),
        "lm_head.bias": (cfg.vocab_size,),
    }


def _contact_head_shapes(cfg: RnaFmConfig) -> Shapes:
    """The contact regression: one weight per (layer, head) attention map, and a bias."""
    return {
        "contact_head.regression.weight": (1, cfg.num_layers * cfg.num_heads),
        "contact_head.regression.bias": (1,),
    }


def _with_head(expected: Shapes, shapes: Shapes, cfg: RnaFmConfig) -> Shapes:
    """``expected`` plus the masked-LM head when the file holds any of it (then all of it),
    and the same for the contact head (``contact_head.regression.*``).

    The heads are optional: a checkpoint without them still gives embeddings. A partial head
    is reported as missing keys by :func:`_check_tensors`, never silently dropped.
    """
    if any(k.startswith("lm_head.") for k in shapes):
        expected = {**expected, **_head_shapes(cfg)}
    if any(k.startswith("contact_head.") for k in shapes):
        expected = {**expected, **_contact_head_shapes(cfg)}
    return expected


# Heads of the pre-training model that an encoder does not use, and the masked-LM head's
# output weight, which is tied to (the same tensor as) the token embedding. The contact
# regression (``contact_head.regression.*``) is kept: attention maps use it.
_UNUSED = re.compile(
    r"^(?!contact_head\.regression\.(weight|bias)$)(contact_head|ss_head|pooler|model\.pooler)\."
    r"|^lm_head\.(weight|decoder\.weight)$"
)


def _to_encoder(state: Mapping[str, torch.Tensor], cfg: RnaFmConfig) -> RnaFmEncoder:
    """Load an official-named state dict, already checked against ``cfg``, into an encoder."""
    native: dict[str, torch.Tensor] = {}
    expected = _with_head(_official_shapes(cfg), {k: () for k in state}, cfg)
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
    # The head's per-token bias of the <null_i> rows is zeroed for the same reason: those
    # columns of the logits are vocabulary padding that no input holds and no score reads.
    words = native["embed_tokens.weight"]  # already our own copy (above)
    bias = native.get("lm_head.bias")
    for i, tok in enumerate(get_alphabet(cfg.alphabet).tokens):
        if tok == "<mask>" or tok.startswith("<null_"):
            words[i] = 0.0
        if bias is not None and tok.startswith("<null_"):
            bias[i] = 0.0
    return RnaFmEncoder.from_state_dict(cfg, native)
