"""Checkpoint formats: official .pth, multimolecule folder, native folder; and their errors."""

import argparse
import json
import re
import shutil

import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import TINY_HF, TINY_PTH

from rnafm_sklearn import CheckpointError, convert_checkpoint, load_model, save_model

TOL = 1e-5


@torch.no_grad()
def _parity(encoder, official, alpha, sequences):
    tokens = official_tokens(alpha, sequences)
    layers = list(range(encoder.num_layers + 1))
    ref = official(tokens, repr_layers=layers)["representations"]
    out = encoder(tokens, layers=layers)
    real = tokens.ne(1)
    return max((out[k] - ref[k])[real].abs().max().item() for k in layers)


@pytest.fixture(scope="module")
def official_tiny():
    return load_official(TINY_PTH)


@pytest.mark.parametrize("prefix", ["encoder.encoder.", "encoder.sentence_encoder.", ""])
def test_official_prefixes(tmp_path, prefix, real_sequences):
    path = make_official_checkpoint(tmp_path / "RNA-FM_p.pth", prefix=prefix, seed=2)
    official, alpha = load_official(path)
    assert _parity(load_model(path), official, alpha, real_sequences) <= TOL


def test_official_without_contact_head(tmp_path, real_sequences):
    path = make_official_checkpoint(tmp_path / "RNA-FM_nc.pth", contact_head=False, seed=4)
    with pytest.warns(UserWarning, match="Regression weights not found"):
        official, alpha = load_official(path)
    assert _parity(load_model(path), official, alpha, real_sequences) <= TOL


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_multimolecule_folder_matches_official(tmp_path, weights, official_tiny, real_sequences):
    """The fixture was produced by multimolecule's own converter (see fixtures/make_*.py)."""
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    other = {"model.safetensors": "pytorch_model.bin", "pytorch_model.bin": "model.safetensors"}
    (folder / other[weights]).unlink()
    encoder = load_model(folder)
    assert _parity(encoder, *official_tiny, real_sequences) <= TOL


def test_multimolecule_vocab_is_read_not_assumed(tmp_path, official_tiny, real_sequences):
    """Re-order vocab.txt and the embedding rows together: the numbers must not change."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    (folder / "pytorch_model.bin").unlink()
    vocab = (folder / "vocab.txt").read_text().split()
    state = load_file(folder / "model.safetensors")
    perm = list(reversed(range(len(vocab))))
    (folder / "vocab.txt").write_text("\n".join(vocab[i] for i in perm) + "\n")
    key = "model.embeddings.word_embeddings.weight"
    state[key] = state[key][perm].contiguous()
    save_file(state, folder / "model.safetensors")
    assert _parity(load_model(folder), *official_tiny, real_sequences) <= TOL


def test_multimolecule_eps_is_not_trusted(tmp_path, official_tiny, real_sequences):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    config = json.loads((folder / "config.json").read_text())
    config["layer_norm_eps"] = 1e-12
    (folder / "config.json").write_text(json.dumps(config))
    encoder = load_model(folder)
    assert encoder.config.layer_norm_eps == 1e-5
    assert _parity(encoder, *official_tiny, real_sequences) <= TOL


def test_native_roundtrip_and_convert(tmp_path, official_tiny, real_sequences):
    for source in (TINY_PTH, TINY_HF):
        out = convert_checkpoint(source, tmp_path / f"native-{source.name}")
        assert json.loads((out / "config.json").read_text())["format"] == "rnafm_sklearn"
        assert _parity(load_model(out), *official_tiny, real_sequences) <= TOL
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


def test_mask_row_is_zeroed_as_officially(official_tiny):
    official, alpha = official_tiny
    assert official.embed_tokens.weight[alpha.mask_idx].abs().max() == 0
    assert load_model(TINY_PTH).embed_tokens.weight[alpha.mask_idx].abs().max() == 0


# ----------------------------------------------------------------------------- error paths


def test_missing_path_never_downloads(tmp_path):
    missing = tmp_path / "nope" / "RNA-FM_pretrained.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(f"Checkpoint not found: {missing}")):
        load_model(missing)


def test_missing_name_hints_at_pretrained_names():
    with pytest.raises(
        FileNotFoundError, match=r"Named pretrained models: mrna-fm, rna-fm, rna-fm-ss\."
    ):
        load_model("rnafm")


def test_truncated_official_file(tmp_path):
    data = TINY_PTH.read_bytes()
    bad = tmp_path / "RNA-FM_truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        CheckpointError,
        match=re.escape(f"Could not read checkpoint {bad}: the file is truncated or corrupt"),
    ):
        load_model(bad)


def test_garbage_file(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match=re.escape(f"Could not read checkpoint {bad}")):
        load_model(bad)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.Namespace(arch="roberta_large"), "x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"holds Python objects that cannot be loaded safely"):
        load_model(path)


def test_not_official_layout(tmp_path):
    path = tmp_path / "state.pth"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(
        CheckpointError,
        match=re.escape(
            "expected a dict with 'model' and 'args' (RNA-FM_pretrained.pth) or with "
            "'backbone.*' keys (the structure predictor RNA-FM-ResNet_*.pth), found ['weights']"
        ),
    ):
        load_model(path)


def _edit_official(tmp_path, edit):
    data = torch.load(TINY_PTH, weights_only=False)
    edit(data)
    path = tmp_path / "RNA-FM_edited.pth"
    torch.save(data, path)
    return path


def test_missing_and_unexpected_keys_listed_sorted(tmp_path):
    def edit(data):
        m = data["model"]
        m.pop("encoder.encoder.layers.1.fc2.bias")
        m.pop("encoder.encoder.layers.0.fc1.weight")
        m["encoder.encoder.layers.0.extra.weight"] = torch.zeros(1)

    with pytest.raises(CheckpointError) as err:
        load_model(_edit_official(tmp_path, edit))
    msg = str(err.value)
    assert "missing key(s): layers.0.fc1.weight, layers.1.fc2.bias" in msg
    assert "unexpected key(s): layers.0.extra.weight" in msg


def test_shape_mismatch(tmp_path):
    def edit(data):
        data["model"]["encoder.encoder.layers.0.fc1.weight"] = torch.zeros(63, 32)

    with pytest.raises(
        CheckpointError,
        match=re.escape("layers.0.fc1.weight has shape (63, 32), expected (64, 32)"),
    ):
        load_model(_edit_official(tmp_path, edit))


def test_wrong_architecture(tmp_path):
    def edit(data):
        data["args"].arch = "protein_bert_base"

    with pytest.raises(CheckpointError, match="arch='protein_bert_base'; only the ESM-1b-style"):
        load_model(_edit_official(tmp_path, edit))


def test_missing_args(tmp_path):
    def edit(data):
        del data["args"].encoder_attention_heads

    with pytest.raises(CheckpointError, match="'args' lacks attention_heads"):
        load_model(_edit_official(tmp_path, edit))


def test_unknown_vocabulary_size(tmp_path):
    def edit(data):
        data["model"]["encoder.encoder.embed_tokens.weight"] = torch.zeros(30, 32)

    with pytest.raises(CheckpointError, match="token embedding has 30 rows; RNA-FM has 25"):
        load_model(_edit_official(tmp_path, edit))


def test_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="is a folder without config.json"):
        load_model(tmp_path)


def test_multimolecule_missing_vocab(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    (folder / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder / 'vocab.txt'} is missing")):
        load_model(folder)


def test_multimolecule_missing_weights(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").unlink()
    with pytest.raises(FileNotFoundError, match="expected model.safetensors or pytorch_model.bin"):
        load_model(folder)


def test_multimolecule_truncated_safetensors(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:-1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_model(folder)


def test_foreign_hf_model(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "rnabert"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="describes a 'rnabert' model, not RNA-FM"):
        load_model(folder)


def test_native_corruption_detected(tmp_path):
    out = save_model(load_model(TINY_PTH), tmp_path / "native")
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # flip bits inside a tensor: safetensors alone would not notice
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=re.escape(f"{weights} is corrupt: its SHA-256 is")):
        load_model(out)


def test_invalid_json_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json is not valid JSON"):
        load_model(tmp_path)


def test_save_leaves_no_temporary_files(tmp_path):
    out = save_model(load_model(TINY_PTH), tmp_path / "native")
    save_model(load_model(TINY_PTH), out)  # overwrite in place
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]


# ------------------------------------------------------------ crafted checkpoints (A6, B3)
#
# Each case writes a damaged or hand-crafted checkpoint and names the field the error must
# mention. Every case must raise CheckpointError naming the path and the field, from both
# load_model and read_config, without building an encoder and without a large allocation.


def _set_arg(name, value):
    def edit(data):
        setattr(data["args"], name, value)

    return edit


def _set_data(name, value):
    def edit(data):
        data[name] = value

    return edit


def _set_tensor(key, value):
    def edit(data):
        data["model"]["encoder.encoder." + key] = value

    return edit


def _int_key(data):
    data["model"][5] = torch.zeros(2)


def _layer_gap(data):
    m = data["model"]
    for k in [k for k in m if ".layers.1." in k]:
        m[k.replace(".layers.1.", ".layers.5.")] = m.pop(k)


def _official(edit):
    def build(tmp_path):
        return _edit_official(tmp_path, edit)

    return build


def _hf(edit_config=None, files=None, drop=()):
    """A copy of the multimolecule fixture with its config edited and/or files replaced."""

    def build(tmp_path):
        folder = tmp_path / "hf"
        shutil.copytree(TINY_HF, folder)
        for name in drop:
            (folder / name).unlink()
        if edit_config is not None:
            config = json.loads((folder / "config.json").read_text())
            result = edit_config(config)
            text = json.dumps(config if result is None else result)
            (folder / "config.json").write_text(text)
        for name, payload in (files or {}).items():
            if callable(payload):
                payload(folder / name)
            else:
                (folder / name).write_bytes(payload)
        return folder

    return build


def _hf_set(key, value):
    def edit(config):
        config[key] = value

    return edit


def _hf_del(key):
    def edit(config):
        del config[key]

    return edit


def _hf_replace(value):
    return lambda config: value


def _save_bin(obj):
    return lambda path: torch.save(obj, path)


def _safetensors_with_int(path):
    from safetensors.torch import load_file, save_file

    state = load_file(path)
    key = "model.encoder.layer.0.intermediate.dense.weight"
    state[key] = state[key].to(torch.int32)
    save_file(state, path)


def _native(edit):
    def build(tmp_path):
        folder = save_model(load_model(TINY_PTH), tmp_path / "native")
        config = json.loads((folder / "config.json").read_text())
        edit(config)
        (folder / "config.json").write_text(json.dumps(config))
        return folder

    return build


def _nat_set(key, value):
    def edit(config):
        config["config"][key] = value

    return edit


def _nat_top(key, value):
    def edit(config):
        config[key] = value

    return edit


def _nat_del(key):
    def edit(config):
        del config["config"][key]

    return edit


def _nat_del_top(key):
    def edit(config):
        del config[key]

    return edit


HEADS, LN_BEFORE = "encoder_attention_heads", "emb_layer_norm_before"
_BAD_INTS = [("zero", 0), ("negative", -4), ("str", "4"), ("bool", True), ("float", 4.0)]
CRAFTED = [
    # official .pth: args fields
    *[
        (f"pth-heads-{n}", _official(_set_arg(HEADS, v)), HEADS)
        for n, v in [*_BAD_INTS, ("huge", 10**9), ("not-divisor", 5), ("none", None)]
    ],
    *[
        (f"pth-layers-{n}", _official(_set_arg("encoder_layers", v)), "encoder_layers")
        for n, v in [*_BAD_INTS, ("huge", 10**6), ("wrong", 3)]
    ],
    *[
        (f"pth-embed-{n}", _official(_set_arg("encoder_embed_dim", v)), "encoder_embed_dim")
        for n, v in [*_BAD_INTS, ("huge", 10**9), ("wrong", 64)]
    ],
    *[
        (f"pth-ffn-{n}", _official(_set_arg("encoder_ffn_embed_dim", v)), "encoder_ffn_embed_dim")
        for n, v in [*_BAD_INTS, ("huge", 10**12), ("wrong", 128)]
    ],
    *[
        (f"pth-maxpos-{n}", _official(_set_arg("max_positions", v)), "max_positions")
        for n, v in [*_BAD_INTS, ("huge", 10**9), ("wrong", 2048)]
    ],
    ("pth-token-dropout-str", _official(_set_arg("token_dropout", "yes")), "token_dropout"),
    ("pth-arch-int", _official(_set_arg("arch", 5)), "arch"),
    # official .pth: structure
    ("pth-args-list", _official(_set_data("args", [1, 2])), "'args'"),
    ("pth-args-none", _official(_set_data("args", None)), "'args'"),
    ("pth-args-str", _official(_set_data("args", "roberta_large")), "'args'"),
    ("pth-model-list", _official(_set_data("model", [torch.zeros(2)])), "'model'"),
    ("pth-model-none", _official(_set_data("model", None)), "'model'"),
    ("pth-key-int", _official(_int_key), "'model'"),
    *[
        (f"pth-{name}", _official(_set_tensor(key, value)), key)
        for name, key, value in [
            ("tensor-str", "layers.0.fc1.weight", "w"),
            ("tensor-list", "layers.0.fc1.bias", [0.0] * 64),
            ("tensor-int-dtype", "layers.0.fc2.weight", torch.zeros(32, 64, dtype=torch.int64)),
            ("embedding-1d", "embed_tokens.weight", torch.zeros(25)),
            ("positions-1d", "embed_positions.weight", torch.zeros(9)),
        ]
    ],
    ("pth-layer-gap", _official(_layer_gap), "layers [0, 5]"),
    # multimolecule folder: config.json
    ("hf-config-list", _hf(_hf_replace([1, 2])), "JSON object"),
    ("hf-config-number", _hf(_hf_replace(3)), "JSON object"),
    ("hf-config-null", _hf(files={"config.json": b"null"}), "JSON object"),
    ("hf-config-str", _hf(_hf_replace("rnafm")), "JSON object"),
    ("hf-config-not-utf8", _hf(files={"config.json": b"\xff\xfe{}"}), "UTF-8"),
    *[(f"hf-missing-{k}", _hf(_hf_del(k)), k) for k in (
        "num_attention_heads", "num_hidden_layers", "hidden_size", "intermediate_size"
    )],
    *[
        (f"hf-heads-{n}", _hf(_hf_set("num_attention_heads", v)), "num_attention_heads")
        for n, v in [*_BAD_INTS, ("huge", 10**9), ("not-divisor", 5), ("half", 4.5)]
    ],
    *[
        (f"hf-layers-{n}", _hf(_hf_set("num_hidden_layers", v)), "num_hidden_layers")
        for n, v in [*_BAD_INTS, ("huge", 10**6)]
    ],
    *[
        (f"hf-hidden-{n}", _hf(_hf_set("hidden_size", v)), "hidden_size")
        for n, v in [*_BAD_INTS, ("huge", 10**9), ("wrong", 64)]
    ],
    *[
        (f"hf-ffn-{n}", _hf(_hf_set("intermediate_size", v)), "intermediate_size")
        for n, v in [*_BAD_INTS, ("huge", 10**9)]
    ],
    *[
        (f"hf-maxpos-{n}", _hf(_hf_set("max_position_embeddings", v)), "max_position_embeddings")
        for n, v in [*_BAD_INTS, ("wrong", 2048)]
    ],
    ("hf-codon-str", _hf(_hf_set("codon", "no")), "codon"),
    ("hf-token-dropout-str", _hf(_hf_set("token_dropout", "no")), "token_dropout"),
    ("hf-model-type-int", _hf(_hf_set("model_type", 5)), "model_type"),
    # multimolecule folder: other files
    ("hf-vocab-not-utf8", _hf(files={"vocab.txt": b"<pad>\n\xff\xfe\n"}), "vocab.txt"),
    ("hf-vocab-short", _hf(files={"vocab.txt": b"<pad>\nA\nC\n"}), "vocab.txt"),
    (
        "hf-bin-list",
        _hf(drop=["model.safetensors"], files={"pytorch_model.bin": _save_bin([1, 2])}),
        "pytorch_model.bin",
    ),
    (
        "hf-bin-str-value",
        _hf(drop=["model.safetensors"], files={"pytorch_model.bin": _save_bin({"a.weight": "x"})}),
        "a.weight",
    ),
    (
        "hf-safetensors-int",
        _hf(files={"model.safetensors": _safetensors_with_int}),
        "model.encoder.layer.0.intermediate.dense.weight",
    ),
    (
        "hf-index-list",
        _hf(
            drop=["model.safetensors", "pytorch_model.bin"],
            files={"model.safetensors.index.json": b"[1, 2]"},
        ),
        "weight_map",
    ),
    (
        "hf-index-escapes-folder",
        _hf(
            drop=["model.safetensors", "pytorch_model.bin"],
            files={"model.safetensors.index.json": b'{"weight_map": {"a": "../x.safetensors"}}'},
        ),
        "weight_map",
    ),
    # native folder
    ("native-unknown-key", _native(_nat_set("foo", 1)), "foo"),
    ("native-unknown-top-key", _native(_nat_top("extra", 1)), "extra"),
    ("native-missing-key", _native(_nat_del("num_heads")), "num_heads"),
    ("native-config-list", _native(_nat_top("config", [1])), "'config'"),
    *[
        (f"native-heads-{n}", _native(_nat_set("num_heads", v)), "num_heads")
        for n, v in [*_BAD_INTS, ("not-divisor", 5), ("huge", 10**9)]
    ],
    *[
        (f"native-layers-{n}", _native(_nat_set("num_layers", v)), "num_layers")
        for n, v in [*_BAD_INTS, ("huge", 10**6)]
    ],
    ("native-hidden-huge", _native(_nat_set("hidden_size", 10**9)), "hidden_size"),
    ("native-ffn-str", _native(_nat_set("ffn_size", "64")), "ffn_size"),
    ("native-eps-str", _native(_nat_set("layer_norm_eps", "1e-5")), "layer_norm_eps"),
    ("native-eps-negative", _native(_nat_set("layer_norm_eps", -1.0)), "layer_norm_eps"),
    ("native-eps-bool", _native(_nat_set("layer_norm_eps", True)), "layer_norm_eps"),
    ("native-token-dropout-int", _native(_nat_set("token_dropout", 1)), "token_dropout"),
    ("native-ln-before-str", _native(_nat_set(LN_BEFORE, "yes")), LN_BEFORE),
    ("native-alphabet-unknown", _native(_nat_set("alphabet", "dna")), "alphabet"),
    ("native-alphabet-int", _native(_nat_set("alphabet", 5)), "alphabet"),
    ("native-sha-missing", _native(_nat_del_top("sha256")), "sha256"),
    ("native-sha-int", _native(_nat_top("sha256", 5)), "sha256"),
    ("native-version-str", _native(_nat_top("format_version", "1")), "format_version"),
    ("native-version-bool", _native(_nat_top("format_version", True)), "format_version"),
    ("native-version-zero", _native(_nat_top("format_version", 0)), "format_version"),
]


@pytest.mark.parametrize("reader", ["load_model", "read_config"])
@pytest.mark.parametrize("build, field", [c[1:] for c in CRAFTED], ids=[c[0] for c in CRAFTED])
def test_crafted_checkpoint(tmp_path, monkeypatch, reader, build, field):
    import tracemalloc

    import rnafm_sklearn._checkpoint as checkpoint
    from rnafm_sklearn import RnaFmEncoder

    path = build(tmp_path)
    built = []
    original_init = RnaFmEncoder.__init__

    def spy(self, *args, **kwargs):
        built.append(args)
        original_init(self, *args, **kwargs)

    monkeypatch.setattr(RnaFmEncoder, "__init__", spy)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError) as err:
            getattr(checkpoint, reader)(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    msg = str(err.value)
    assert str(path) in msg
    assert field in msg
    assert "\n" not in msg
    assert built == []  # no encoder was built, not even on the meta device
    assert peak < 20 * 2**20  # Python-level allocations (10**6 layers took > 3 GB)


def test_load_model_and_read_config_agree(tmp_path):
    from rnafm_sklearn._checkpoint import read_config

    native = save_model(load_model(TINY_PTH), tmp_path / "native")
    mrna = TINY_PTH.parent / "mRNA-FM_tiny.pth"
    mrna_hf = TINY_PTH.parent / "multimolecule-mrnafm-tiny"
    for source in (TINY_PTH, TINY_HF, native, mrna, mrna_hf):
        assert read_config(source) == load_model(source).config
    td = make_official_checkpoint(tmp_path / "RNA-FM_td.pth", token_dropout=True)
    assert read_config(td).token_dropout and load_model(td).config.token_dropout


def test_read_config_reads_no_weights(monkeypatch, tmp_path):
    """read_config never loads tensor data: safetensors only via its header."""
    import safetensors.torch

    import rnafm_sklearn._checkpoint as checkpoint
    import rnafm_sklearn._checkpoint_native as native_layout

    def refuse(*args, **kwargs):
        raise AssertionError("read_config loaded tensor data")

    native = save_model(load_model(TINY_PTH), tmp_path / "native")
    hf = tmp_path / "hf"
    shutil.copytree(TINY_HF, hf)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(checkpoint, "sha256_file", refuse)
    monkeypatch.setattr(native_layout, "sha256_file", refuse)
    assert checkpoint.read_config(native).hidden_size == 32
    assert checkpoint.read_config(hf).num_heads == 4


# --------------------------------------------------------- native config integrity (A7)


@pytest.mark.parametrize(
    "field, value", [("layer_norm_eps", 1e-6), ("token_dropout", True), ("max_positions", 1024)]
)
def test_native_config_edit_detected(tmp_path, field, value):
    out = save_model(load_model(TINY_PTH), tmp_path / "native")
    config = json.loads((out / "config.json").read_text())
    if config["config"][field] == value:  # max_positions: an edit that changes nothing loads
        load_model(out)
        value = 512
    config["config"][field] = value
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        load_model(out)
    msg = str(err.value)
    assert str(out / "config.json") in msg and field in msg


def test_native_folder_without_recorded_config_still_loads(tmp_path, caplog):
    """Folders written before the config was recorded in the weights file load, with a warning."""
    from safetensors.torch import load_file, save_file

    from rnafm_sklearn._hub import sha256_file

    out = save_model(load_model(TINY_PTH), tmp_path / "native")
    weights = out / "model.safetensors"
    save_file(load_file(weights), weights, metadata={"format": "pt", "producer": "rnafm_sklearn"})
    config = json.loads((out / "config.json").read_text())
    config["sha256"] = sha256_file(weights)
    (out / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="rnafm_sklearn"):
        encoder = load_model(out)
    assert encoder.config == load_model(TINY_PTH).config
    assert "is not covered by its checksum" in caplog.text


# ------------------------------------------------------------- not a checkpoint (A13)


@pytest.mark.parametrize(
    "content", [b">seq1\nACGUACGU\n", b"", b"PK\x05\x06" + bytes(18), b"\x00\x01binary"]
)
def test_not_a_checkpoint_is_one_line(tmp_path, content):
    path = tmp_path / "seqs.fasta"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "is not an RNA-FM checkpoint (expected" in msg
    assert "\n" not in msg and "weights_only" not in msg


def test_refused_pickle_is_one_line(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.Namespace(arch="roberta_large"), "x": Evil()}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    msg = str(err.value)
    assert str(path) in msg and "(it refers to " in msg and "print" in msg
    assert "\n" not in msg and "weights_only=False" not in msg


def test_legacy_serialization_still_loads(tmp_path, official_tiny, real_sequences):
    """torch's pre-1.6 format (a bare pickle, not a zip) passes the magic-byte check."""
    from rnafm_sklearn._checkpoint import read_config

    path = tmp_path / "RNA-FM_legacy.pth"
    torch.save(torch.load(TINY_PTH, weights_only=False), path, _use_new_zipfile_serialization=False)
    assert path.read_bytes()[:1] == b"\x80"
    assert read_config(path) == read_config(TINY_PTH)
    assert _parity(load_model(path), *official_tiny, real_sequences) <= TOL
