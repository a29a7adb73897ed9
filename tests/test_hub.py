"""Pretrained weights: cache folder, offline behaviour, integrity check, atomic move."""

import hashlib
import re
from dataclasses import replace

import pytest

from rnafm_sklearn import (
    PRETRAINED,
    CheckpointError,
    WeightsUnavailableError,
    cache_dir,
    load_model,
    pretrained_path,
)

PAYLOAD = b"pretend these are RNA-FM weights"


@pytest.fixture
def fake_entry(monkeypatch):
    """Pin 'rna-fm' to a small payload so the download logic runs without a network."""
    entry = replace(
        PRETRAINED["rna-fm"], sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD)
    )
    monkeypatch.setitem(PRETRAINED, "rna-fm", entry)
    return entry


def _writer(payload, calls):
    def download(entry, folder):
        calls.append(folder)
        path = folder / entry.filename
        path.write_bytes(payload)
        return path

    return download


def test_cache_dir_env_override(tmp_path, monkeypatch):
    monkeypatch.setenv("RNAFM_SKLEARN_HOME", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("RNAFM_SKLEARN_HOME")
    assert "rnafm_sklearn" in str(cache_dir())


def test_download_verifies_and_moves_atomically(fake_entry):
    calls = []
    path = pretrained_path("rna-fm", download=_writer(PAYLOAD, calls))
    assert path == cache_dir() / "rna-fm" / "RNA-FM_pretrained.pth"
    assert path.read_bytes() == PAYLOAD
    # the temporary folder was inside the cache folder (same file system) and is gone
    assert calls[0].parent == path.parent and not calls[0].exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["RNA-FM_pretrained.pth"]
    # second call: served from the cache, no download
    assert pretrained_path("rna-fm", download=_writer(PAYLOAD, calls)) == path
    assert len(calls) == 1


def test_hash_mismatch_discards_the_file(fake_entry):
    corrupted = PAYLOAD[:-1] + b"?"
    with pytest.raises(
        CheckpointError,
        match=r"failed the integrity check: expected 32 bytes with SHA-256 [0-9a-f]{64}, got 32 bytes with SHA-256 [0-9a-f]{64}",
    ):
        pretrained_path("rna-fm", download=_writer(corrupted, []))
    folder = cache_dir() / "rna-fm"
    assert list(folder.iterdir()) == []


def test_size_mismatch(fake_entry):
    with pytest.raises(CheckpointError, match="got 3 bytes"):
        pretrained_path("rna-fm", download=_writer(b"abc", []))


@pytest.mark.parametrize("var", ["HF_HUB_OFFLINE", "RNAFM_SKLEARN_OFFLINE"])
def test_offline_gives_actionable_error(var, monkeypatch, fake_entry):
    monkeypatch.setenv(var, "1")
    calls = []
    with pytest.raises(WeightsUnavailableError) as err:
        pretrained_path("rna-fm", download=_writer(PAYLOAD, calls))
    msg = str(err.value)
    assert calls == []
    assert "offline mode is on" in msg
    assert "model='/path/to/RNA-FM_pretrained.pth'" in msg
    assert (
        "https://huggingface.co/cuhkaih/rnafm/resolve/91d4a46d28d8054a7b429955e8fc0c253ba0afd6/"
        "RNA-FM_pretrained.pth" in msg
    )
    assert str(cache_dir() / "rna-fm" / "RNA-FM_pretrained.pth") in msg


def test_network_failure_gives_actionable_error(fake_entry):
    def broken(entry, folder):
        raise ConnectionError("Name or service not known")

    with pytest.raises(
        WeightsUnavailableError, match=re.escape("the download failed (Name or service not known)")
    ):
        pretrained_path("rna-fm", download=broken)
    assert list((cache_dir() / "rna-fm").iterdir()) == []


def test_load_model_by_name_never_returns_random_weights(monkeypatch):
    """Offline and uncached: load_model('rna-fm') raises instead of building a model."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="'rna-fm' weights are not in the cache"):
        load_model("rna-fm")


def test_unknown_name():
    with pytest.raises(ValueError, match="Unknown pretrained model 'rna-fm2'"):
        pretrained_path("rna-fm2")


def test_mrna_fm_is_registered_with_a_pinned_digest(monkeypatch):
    entry = PRETRAINED["mrna-fm"]
    assert entry.filename == "mRNA-FM_pretrained.pth" and len(entry.sha256) == 64
    payload = b"not the mRNA-FM weights"
    with pytest.raises(CheckpointError, match=f"expected SHA-256 {entry.sha256}, got 23 bytes"):
        pretrained_path("mrna-fm", download=_writer(payload, []))


def test_named_models_error_names_both(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="'mrna-fm' weights are not in the cache"):
        load_model("mrna-fm")


@pytest.mark.network
def test_hub_files_exist_at_the_pinned_revision():
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    for entry in PRETRAINED.values():
        url = hf_hub_url(entry.repo_id, entry.filename, revision=entry.revision)
        meta = get_hf_file_metadata(url)
        assert entry.size is None or meta.size == entry.size


# ------------------------------------------------------------------ known configs (B3)


def test_pretrained_configs_are_known_without_download():
    from rnafm_sklearn import RnaFmConfig

    rna = RnaFmConfig(**PRETRAINED["rna-fm"].config)
    assert rna == RnaFmConfig(
        num_layers=12, hidden_size=640, num_heads=20, ffn_size=5120, max_positions=1024,
        alphabet="rna", emb_layer_norm_before=True,
    )
    assert RnaFmConfig(**PRETRAINED["mrna-fm"].config) == RnaFmConfig.mrna_fm()


def test_read_config_of_a_named_model_downloads_nothing(monkeypatch):
    import rnafm_sklearn._hub as hub
    from rnafm_sklearn import RnaFmConfig
    from rnafm_sklearn._checkpoint import read_config

    def no_network(*args, **kwargs):
        raise AssertionError("read_config tried the network")

    monkeypatch.setattr(hub, "_hf_download", no_network)
    monkeypatch.setattr(hub, "_probe", no_network)
    assert read_config("rna-fm").hidden_size == 640
    assert read_config("mrna-fm") == RnaFmConfig.mrna_fm()
    assert not cache_dir().exists()


def test_read_config_of_a_cached_named_model_reads_the_file(monkeypatch, tmp_path):
    """Once downloaded, the file itself is the authority (e.g. for token_dropout)."""
    from _official import make_official_checkpoint

    from rnafm_sklearn._checkpoint import read_config

    path = make_official_checkpoint(tmp_path / "x.pth", token_dropout=True)
    payload = path.read_bytes()
    entry = replace(
        PRETRAINED["rna-fm"], sha256=hashlib.sha256(payload).hexdigest(), size=len(payload)
    )
    monkeypatch.setitem(PRETRAINED, "rna-fm", entry)
    pretrained_path("rna-fm", download=_writer(payload, []))
    config = read_config("rna-fm")
    assert config.hidden_size == 32 and config.token_dropout


# ------------------------------------------------------------- no network: fail fast (A13)


@pytest.fixture
def probe(monkeypatch):
    """Replace the reachability probe; record its calls; forget any cached answer."""
    import rnafm_sklearn._hub as hub

    calls, answer = [], {"value": False}

    def fake(host, port, timeout):
        calls.append((host, port, timeout))
        return answer["value"]

    monkeypatch.setattr(hub, "_probe", fake)
    monkeypatch.setattr(hub, "_NETWORK", {})
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    return calls, answer


def _hub_calls(monkeypatch):
    import rnafm_sklearn._hub as hub

    calls = []

    def fake_download(entry, folder):
        calls.append(entry.name)
        raise ConnectionError("network unreachable")

    monkeypatch.setattr(hub, "_hf_download", fake_download)
    return calls


def test_no_network_fails_fast_without_hub_retries(probe, monkeypatch, fake_entry):
    calls, _ = probe
    downloads = _hub_calls(monkeypatch)
    for _ in range(2):
        with pytest.raises(
            WeightsUnavailableError, match=r"huggingface\.co:443 cannot be reached \(no network\?\)"
        ):
            pretrained_path("rna-fm")
    assert downloads == []  # huggingface_hub (and its retries) never ran
    assert calls == [("huggingface.co", 443, 3.0)]  # probed once per process


def test_probe_follows_hf_endpoint(probe, monkeypatch, fake_entry):
    calls, _ = probe
    monkeypatch.setenv("HF_ENDPOINT", "http://hf-mirror.example:8080")
    _hub_calls(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"hf-mirror\.example:8080 cannot be reached"):
        pretrained_path("rna-fm")
    assert calls == [("hf-mirror.example", 8080, 3.0)]


def test_network_reachable_goes_to_the_hub(probe, monkeypatch, fake_entry):
    calls, answer = probe
    answer["value"] = True
    downloads = _hub_calls(monkeypatch)
    failed = r"the download failed \(network unreachable\)"
    with pytest.raises(WeightsUnavailableError, match=failed):
        pretrained_path("rna-fm")
    assert downloads == ["rna-fm"] and len(calls) == 1


def test_no_probe_behind_a_proxy(probe, monkeypatch, fake_entry):
    """A direct connection proves nothing when traffic goes through a proxy."""
    calls, _ = probe
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    downloads = _hub_calls(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match="the download failed"):
        pretrained_path("rna-fm")
    assert calls == [] and downloads == ["rna-fm"]


def test_no_probe_with_a_custom_download(probe, fake_entry):
    calls, _ = probe
    pretrained_path("rna-fm", download=_writer(PAYLOAD, []))
    assert calls == []


def test_probe_against_local_sockets():
    """The real probe: True for a listening port, False for a closed one (no internet needed)."""
    import socket

    import rnafm_sklearn._hub as hub

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert hub._probe("127.0.0.1", port, 2.0) is True
    assert hub._probe("127.0.0.1", port, 2.0) is False
