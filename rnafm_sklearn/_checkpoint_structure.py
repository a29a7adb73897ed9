"""The official structure-predictor layout (``RNA-FM-ResNet_PDB-All.pth`` and its siblings).

Such a file is a plain ``state_dict`` of ``fm.downstream.Baseline``, without ``args``:

* ``backbone.*``: the whole ``fm.BioBertModel`` (its keys unprefixed: ``embed_tokens.weight``,
  ``layers.{i}.*``, ``lm_head.*``, ``contact_head.*``);
* ``downstream_modules.pc-resnet_1_sym_first:r-ss.*``: the ResNet pair head
  (:class:`._pair_head.PairHead`), BatchNorm running statistics included.

With no ``args``, the architecture is read from the shapes; the number of attention heads, which
shapes do not show, from the contact head (a regression over ``layers * heads`` attention maps).
The head's widths and block count are read from its keys and shapes, and every key and shape is
checked before anything is allocated. :func:`_head_from_native` reads the same head from a
native folder (``pair_head.*`` tensors). Every failure is a :class:`CheckpointError` naming the
file and the field.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from ._checkpoint_check import (
    Shapes,
    _architecture,
    _check_tensors,
    _listing,
    _matrix,
    _official_shapes,
    _Parsed,
    _positive_int,
    _show,
    _state_shapes,
    _to_encoder,
    _with_head,
)
from ._errors import CheckpointError
from ._pair_head import HEAD_KEY, PairHead, head_key_map

BACKBONE = "backbone."
HEAD_PREFIX = f"downstream_modules.{HEAD_KEY}."
NATIVE_HEAD_PREFIX = "pair_head."
# The official Baseline builds its backbone with rna_fm_t12(), whose args the file does not
# carry; token dropout (a 0.88 embedding scale when set) is taken as off.
_TOKEN_DROPOUT = False
_BLOCK_KEY = re.compile(r"blocks\.([0-9]{1,9})\.")
_HEAD_DROPOUT = 0.3  # not stored in any file: the official MyBasicResBlock's value


def is_structure_layout(data: object) -> bool:
    """Whether a loaded ``.pth`` holds a ``Baseline`` state dict (``backbone.*`` keys)."""
    return (
        isinstance(data, Mapping)
        and "model" not in data
        and any(isinstance(k, str) and k.startswith(BACKBONE) for k in data)
    )


def head_shapes(config: Mapping[str, int]) -> Shapes:
    """Every tensor of a :class:`PairHead` with ``config``, by its name in the module."""
    E, P, C = config["embed_dim"], config["proj_dim"], config["channels"]
    shapes: Shapes = {
        "proj.weight": (P, E),
        "proj.bias": (P,),
        "pair.weight": (C, 2 * P, 1, 1),
        "pair.bias": (C,),
        "final.weight": (1, C, 3, 3),
        "final.bias": (1,),
    }
    for i in range(config["blocks"]):
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"blocks.{i}.norm.{name}"] = (C,)
        shapes[f"blocks.{i}.conv1.weight"] = (C, C, 3, 3)
        shapes[f"blocks.{i}.conv2.weight"] = (C, C, 3, 3)
    return shapes


def head_config(shapes: Shapes, where: str, embed_dim: int) -> dict[str, int | float]:
    """A head's architecture from its (module-named) shapes; checks every key and shape."""
    proj = _matrix(shapes, "proj.weight", where)
    pair = shapes.get("pair.weight")
    if proj is None or pair is None or len(pair) != 4:
        raise CheckpointError(
            f"{where}: the structure head lacks its projection (pre_reduction.weight) or its "
            f"first convolution (proj.first.0.weight, 4-D); found {pair}."
        )
    ids = sorted({int(m.group(1)) for k in shapes if (m := _BLOCK_KEY.match(k))})
    if ids != list(range(len(ids))):
        raise CheckpointError(
            f"{where}: the structure head holds residual blocks [{_listing(map(str, ids), 8)}]; "
            f"expected blocks 0 to {len(ids) - 1} without gaps."
        )
    config = {"embed_dim": embed_dim, "channels": pair[0], "blocks": len(ids), "proj_dim": proj[0]}
    expected = head_shapes(config)
    problems = []
    if missing := sorted(set(expected) - set(shapes)):
        problems.append(f"missing key(s): {_listing(missing)}")
    if unexpected := sorted(set(shapes) - set(expected)):
        problems.append(f"unexpected key(s): {_listing(unexpected)}")
    bad = sorted(
        f"{k} has shape {shapes[k]}, expected {expected[k]}"
        for k in set(expected) & set(shapes)
        if shapes[k] != expected[k]
    )
    if bad:
        problems.append(f"shape mismatch: {'; '.join(bad[:5])}")
    if problems:
        raise CheckpointError(
            f"{where}: the structure head does not match a PairHead with {config}: "
            + " | ".join(problems)
        )
    return {**config, "dropout": _HEAD_DROPOUT}


def build_head(
    state: Mapping[str, torch.Tensor], config: Mapping[str, int | float]
) -> PairHead:
    """A float32 CPU :class:`PairHead` in eval mode holding (copies of) ``state``."""
    head = PairHead(**config)
    # Own float32 copies: the source may be a memory-mapped file.
    own = {k: v.detach().to(torch.float32).clone() for k, v in state.items()}
    missing, unexpected = head.load_state_dict(own, strict=False)
    missing = [k for k in missing if not k.endswith(".num_batches_tracked")]
    if missing or unexpected:  # unreachable after head_config; kept as a guard
        raise CheckpointError(
            f"Structure head keys: missing {sorted(missing)}, unexpected {sorted(unexpected)}."
        )
    return head.eval()


def _renamed_head(raw: Mapping[str, object]) -> dict[str, object]:
    """The official head's entries by :class:`PairHead` names.

    Unknown keys keep their full official name (so that a message names them as in the file);
    the BatchNorm batch counters (integers, unused at inference) are left out.
    """
    blocks = {int(m.group(1)) for k in raw if (m := re.match(r"proj\.resnet\.(\d{1,9})\.", k))}
    table = head_key_map(max(blocks) + 1 if blocks else 0)
    return {
        table.get(k, HEAD_PREFIX + k): v
        for k, v in raw.items()
        if not k.endswith(".num_batches_tracked")
    }


def parse_structure(path, data: Mapping[str, object]) -> _Parsed:
    """Check a ``Baseline`` state dict's metadata; return the encoder and head readers."""
    where = f"Checkpoint {path}"
    backbone, head_raw, other = {}, {}, []
    for key, value in data.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{where} has the key {key!r} ({type(key).__name__}).")
        if key.startswith(BACKBONE):
            backbone[key[len(BACKBONE):]] = value
        elif key.startswith(HEAD_PREFIX):
            head_raw[key[len(HEAD_PREFIX):]] = value
        else:
            other.append(key)
    if other:
        raise CheckpointError(
            f"{where} holds key(s) outside the RNA-FM backbone and the {HEAD_KEY} structure "
            f"head: {_listing(sorted(other))}. Only the official structure predictor layout "
            "(backbone.* and downstream_modules.pc-resnet_1_sym_first:r-ss.*) is supported."
        )
    regression = backbone.get("contact_head.regression.weight")
    state, shapes = _state_shapes(backbone, where, "'backbone'", lambda k: k)
    layers = len({m.group(1) for k in shapes if (m := re.match(r"layers\.(\d{1,9})\.", k))})
    if not isinstance(regression, torch.Tensor) or regression.dim() != 2 or layers == 0:
        raise CheckpointError(
            f"{where}: the number of attention heads cannot be told: it is read from "
            "backbone.contact_head.regression.weight (shape (1, layers * heads)), which is "
            f"{'absent' if regression is None else 'malformed'}."
        )
    total = regression.shape[1]
    if total % layers:
        raise CheckpointError(
            f"{where}: backbone.contact_head.regression.weight has {total} inputs, not a "
            f"multiple of the {layers} layers (expected layers * heads)."
        )
    cfg = _architecture(
        shapes,
        where,
        {"num_heads": ("the contact head (layers * heads inputs)", total // layers)},
        alphabet="rna",  # the official Baseline's backbone is always RNA-FM
        emb_layer_norm_before=any(k.startswith("emb_layer_norm_before") for k in shapes),
        token_dropout=_TOKEN_DROPOUT,
    )
    _check_tensors(shapes, _with_head(_official_shapes(cfg), shapes, cfg), where, cfg)
    head_loader = None
    if head_raw:
        head_state, head_shape = _state_shapes(
            _renamed_head(head_raw), where, f"'{HEAD_PREFIX}*'", lambda k: k
        )
        config = head_config(head_shape, f"{where} ({HEAD_PREFIX}*)", cfg.hidden_size)
        head_loader = _loader(head_state, config)
    return _Parsed(cfg, lambda: _to_encoder(state, cfg), head_loader)


def _loader(
    state: Mapping[str, torch.Tensor], config: Mapping[str, int | float]
) -> tuple[dict[str, int | float], Callable[[], PairHead]]:
    return dict(config), lambda: build_head(state, config)


def _head_entry(value: object, where: str) -> dict[str, object]:
    """The ``"pair_head"`` entry of a native ``config.json``: ``{"config", "threshold"}``."""
    if not isinstance(value, dict) or sorted(map(str, value)) != ["config", "threshold"]:
        raise CheckpointError(
            f"{where}: 'pair_head' must be a JSON object with the fields "
            f"config, threshold, found {_show(value)}."
        )
    config = value["config"]
    names = ("embed_dim", "channels", "blocks", "proj_dim", "dropout")
    if not isinstance(config, dict) or sorted(config) != sorted(names):
        raise CheckpointError(
            f"{where}: 'pair_head.config' must hold exactly {', '.join(names)}, "
            f"found {_show(config)}."
        )
    for name in names[:4]:
        _positive_int(config[name], where, f"'pair_head.config.{name}'")
    for label, number, low, high in (
        ("'pair_head.config.dropout'", config["dropout"], 0.0, 1.0),
        ("'pair_head.threshold'", value["threshold"], 0.0, 1.0),
    ):
        if (
            isinstance(number, bool)
            or not isinstance(number, int | float)
            or not (low <= number < high or (label.endswith("threshold'") and number == high))
        ):
            raise CheckpointError(
                f"{where}: {label} must be a number in [{low}, {high}], found {_show(number)}."
            )
    return value
