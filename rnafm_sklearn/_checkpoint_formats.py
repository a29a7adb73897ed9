"""Readers of the two foreign RNA-FM checkpoint layouts.

* **official** ``.pth`` (``RNA-FM_pretrained.pth``): :func:`_torch_load` (``weights_only``, only
  ``argparse.Namespace`` allowed, memory-mapped), the fairseq ``args`` and key prefixes, and
  :func:`_parse_official`;
* **multimolecule** Hugging Face folder: the key table (:func:`_hf_rename`), shards, ``vocab.txt``
  and :func:`_parse_hf`, which maps embedding rows back by token string.

Each parser checks the metadata with :mod:`._checkpoint_check` and returns a ``_Parsed`` whose
``build`` reads the weights. The native layout is in :mod:`._checkpoint_native`, the dispatch
in :mod:`._checkpoint`.
"""

from __future__ import annotations

import argparse
import pickle
import re
from collections.abc import Callable
from pathlib import Path

import torch

from ._alphabet import get_alphabet
from ._checkpoint_check import (
    _WEIGHTS,
    Shapes,
    _architecture,
    _bool,
    _check_tensors,
    _contact_head_shapes,
    _header_shapes,
    _load_safetensors,
    _matrix,
    _official_shapes,
    _one_line,
    _Parsed,
    _positive_int,
    _read_json,
    _short,
    _show,
    _state_shapes,
    _to_encoder,
    _with_head,
)
from ._checkpoint_structure import is_structure_layout, parse_structure
from ._encoder import RnaFmEncoder
from ._errors import CheckpointError

_ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip format) ...
_PICKLE_PROTO = b"\x80"  # ... or the legacy format: a pickle (protocol >= 2)


# --------------------------------------------------------------------------- official layout


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
    if is_structure_layout(data):
        return parse_structure(path, data)
    if not isinstance(data, dict) or "model" not in data or "args" not in data:
        if isinstance(data, dict):
            names = sorted(map(str, data))
            found = repr(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        else:
            found = type(data).__name__
        raise CheckpointError(
            f"{where} is not in the official RNA-FM layout: expected a dict with 'model' and "
            f"'args' (RNA-FM_pretrained.pth) or with 'backbone.*' keys (the structure predictor "
            f"RNA-FM-ResNet_*.pth), found {found}."
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
    _check_tensors(shapes, _with_head(_official_shapes(cfg), shapes, cfg), where, cfg)
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
    (r"lm_head\.transform\.dense", "lm_head.dense"),
    (r"lm_head\.transform\.layer_norm", "lm_head.layer_norm"),
    (r"lm_head\.decoder", "lm_head"),  # bias (per token) and the tied weight, where stored
    # the official contact regression (multimolecule 0.2 calls it ss_head); see _parse_hf
    (r"(?:ss_head|contact_head)\.decoder", "contact_head.regression"),
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
    # The masked-LM head's per-token bias is indexed by the same re-ordered vocabulary.
    if (bias := shapes.get("lm_head.bias")) is not None:
        if bias != (len(vocab),):
            raise CheckpointError(
                f"{folder}: {len(vocab)} tokens in vocab.txt but lm_head.bias has shape {bias}."
            )
        shapes["lm_head.bias"] = (len(alphabet),)

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
    # A head of another shape under those names is not the official contact regression.
    contact = _contact_head_shapes(cfg)
    foreign = any(shapes.get(k, v) != v for k, v in contact.items())
    if foreign:
        for k in contact:
            shapes.pop(k, None)
    expected = _with_head(_official_shapes(cfg), shapes, cfg)
    _check_tensors(shapes, expected, f"Checkpoint {folder}", cfg)

    def build() -> RnaFmEncoder:
        state = read_weights()
        if foreign:
            for k in contact:
                state.pop(k, None)
        for key in ("embed_tokens.weight", "lm_head.bias"):
            if key in state:
                old = state[key]
                state[key] = torch.stack(
                    [torch.zeros_like(old[0]) if i is None else old[i] for i in rows]
                )
        return _to_encoder(state, cfg)

    return _Parsed(cfg, build)
