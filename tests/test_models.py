"""The process-wide model registry: reloading on change, configs, device names."""

import json
import os
import shutil

import pytest
import torch
from _official import make_official_checkpoint
from conftest import TINY_HF, TINY_PTH

import rnafm_sklearn._models as models
from rnafm_sklearn import InvalidParameterError, RnaFmConfig, load_model, save_model

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_registry():
    models.clear_model_cache()
    yield
    models.clear_model_cache()


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _overwrite_in_place(dst, src):
    """Rewrite ``dst`` with ``src``'s bytes through the same inode (as ``cp`` does)."""
    data = src.read_bytes()
    assert len(data) == dst.stat().st_size  # same size: a size change alone must not matter
    with open(dst, "r+b") as fh:
        fh.write(data)


def _ctime_past(path, ctime_ns):
    """Make sure ``path``'s ctime (part of the registry's key) moved past ``ctime_ns``.

    A write within the file system clock's tick keeps the old ctime; ``os.utime`` with the
    file's own times changes nothing but the ctime, so it is repeated until the clock ticks
    (no fixed sleep that a coarse clock or a loaded machine could outlast).
    """
    for _ in range(10_000_000):
        st = path.stat()
        if st.st_ctime_ns != ctime_ns:
            return
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    raise AssertionError(f"the ctime of {path} never changed")


@pytest.mark.parametrize("keep_file_mtime", [False, True])
def test_weights_rewritten_in_place_are_reloaded(tmp_path, keep_file_mtime):
    """``cp new/* folder/`` keeps the folder's mtime (and ``cp -p`` the files' mtimes too)."""
    folder = save_model(load_model(TINY_PTH), tmp_path / "model")
    other = load_model(make_official_checkpoint(tmp_path / "other.pth", seed=7))
    new = save_model(other, tmp_path / "new")
    first = models.get_encoder(str(folder), CPU, torch.float32)
    assert not _same_weights(first, other)

    folder_stat = folder.stat()
    for name in ("model.safetensors", "config.json"):
        before = (folder / name).stat()
        _overwrite_in_place(folder / name, new / name)
        if keep_file_mtime:
            os.utime(folder / name, ns=(before.st_atime_ns, before.st_mtime_ns))
        _ctime_past(folder / name, before.st_ctime_ns)
    os.utime(folder, ns=(folder_stat.st_atime_ns, folder_stat.st_mtime_ns))
    assert folder.stat().st_mtime_ns == folder_stat.st_mtime_ns

    second = models.get_encoder(str(folder), CPU, torch.float32)
    assert second is not first
    assert _same_weights(second, other)


def test_hf_vocab_rewrite_is_reloaded(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    first = models.get_encoder(str(folder), CPU, torch.float32)
    assert models.get_encoder(str(folder), CPU, torch.float32) is first
    vocab = (folder / "vocab.txt").read_text()
    (folder / "vocab.txt").write_text(vocab)  # same content, rewritten: reloaded (cheap check)
    assert models.get_encoder(str(folder), CPU, torch.float32) is not first


def test_unrelated_files_do_not_reload(tmp_path):
    folder = tmp_path / "hf"
    shutil.copytree(TINY_HF, folder)
    first = models.get_encoder(str(folder), CPU, torch.float32)
    (folder / "README.md").write_text("notes")
    assert models.get_encoder(str(folder), CPU, torch.float32) is first


# ---------------------------------------------------------------------------- get_config


def test_get_config_reads_no_weights(monkeypatch):
    before = models.LOAD_COUNT
    config = models.get_config(str(TINY_PTH))
    assert config == load_model(TINY_PTH).config
    assert models.LOAD_COUNT == before


def test_get_config_is_cached_per_source(monkeypatch, tmp_path):
    calls = []
    real = models.read_config

    def counting(source):
        calls.append(source)
        return real(source)

    monkeypatch.setattr(models, "read_config", counting)
    path = tmp_path / "m.pth"
    shutil.copy(TINY_PTH, path)
    assert models.get_config(path) == models.get_config(str(path))
    assert len(calls) == 1
    make_official_checkpoint(path, layers=3)  # replaced on disk: read again
    assert models.get_config(path).num_layers == 3
    assert len(calls) == 2


def test_get_config_agrees_with_a_loaded_encoder(monkeypatch):
    encoder = models.get_encoder(str(TINY_PTH), CPU, torch.float32)

    def refuse(source):
        raise AssertionError("config read again although the encoder is loaded")

    monkeypatch.setattr(models, "read_config", refuse)
    assert models.get_config(str(TINY_PTH)) is encoder.config


def test_get_config_of_named_models_downloads_nothing():
    assert models.get_config("rna-fm") == RnaFmConfig()
    assert models.get_config("mrna-fm") == RnaFmConfig.mrna_fm()


# ------------------------------------------------------------------------ resolve_device


def test_cuda_unavailable_is_a_named_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(InvalidParameterError) as err:
            models.resolve_device(device)
        msg = str(err.value)
        assert f"The 'device' parameter is {device!r}" in msg
        assert "CUDA is not available here" in msg
        assert "use device='cpu' or device='auto'" in msg


def test_cuda_index_out_of_range(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InvalidParameterError, match=r"'cuda:1'.*only 1 CUDA device \(cuda:0\)"):
        models.resolve_device("cuda:1")
    assert models.resolve_device("cuda:0") == torch.device("cuda:0")


def test_mps_unavailable_is_a_named_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(InvalidParameterError, match="Apple MPS is not available here"):
        models.resolve_device("mps")


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "", "meta", "xla"])
def test_unknown_device_is_a_named_error(device):
    with pytest.raises(InvalidParameterError, match=r"'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        models.resolve_device(device)


def test_auto_and_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert models.resolve_device("auto") == CPU
    assert models.resolve_device("cpu") == CPU


def test_source_key_covers_config_json(tmp_path):
    """A native folder's config.json is part of the source key (it changes the numbers)."""
    folder = save_model(load_model(TINY_PTH), tmp_path / "model")
    key = models._source_key(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config, indent=4))
    assert models._source_key(folder) != key
