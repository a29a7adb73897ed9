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
    with pytest.raises(FileNotFoundError, match=r"Named pretrained models: mrna-fm, rna-fm\."):
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
        match=re.escape("expected a dict with 'model' and 'args', found ['weights']"),
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
