"""The structure head (PairHead) against the official ``fm.downstream`` predictor.

Reference: ``sigmoid(Baseline(...)["r-ss"])`` of the official code on the same random weights
(tiny 12-layer backbone, full-size head: 64 channels, 32 blocks), each sequence run alone.
Tolerance: 1e-5 on probabilities (float32).
"""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from _official import official_tokens
from _official_structure import HEAD, make_official_structure, official_probabilities

from rnafm_sklearn import (
    CheckpointError,
    _hub,
    _models,
    _pair_head,
    convert_checkpoint,
    load_model,
    save_model,
)
from rnafm_sklearn._checkpoint import load_pair_head, read_config
from rnafm_sklearn._pair_head import PairHead, head_state_from_official

TOL = 1e-5
LENGTHS = [1, 2, 3, 17, 64, 100]


def _seq(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGU") for _ in range(n))


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    path, model, alpha = make_official_structure(tmp_path_factory.mktemp("ss"))
    return path, model, alpha


@pytest.fixture(scope="module")
def ours(structure):
    path = structure[0]
    head, info = load_pair_head(path)
    return load_model(path), head, info


@torch.no_grad()
def _our_probabilities(encoder, head, alpha, sequences):
    tokens = official_tokens(alpha, sequences)
    lengths = torch.tensor([len(s) for s in sequences])
    states = encoder(tokens, layers=[-1])[encoder.config.num_layers][:, 1 : 1 + int(lengths.max())]
    return torch.sigmoid(head(states, lengths))


def test_official_reference_is_not_trivial(structure):
    """The random weights spread the logits: a sigmoid comparison tests them all."""
    _, model, alpha = structure
    p = official_probabilities(model, alpha, _seq(64, 1))
    assert 0.05 < p.std().item() and p.min() < 0.2 and p.max() > 0.8


@pytest.mark.parametrize("n", LENGTHS)
def test_parity_alone(structure, ours, n):
    _, model, alpha = structure
    encoder, head, _ = ours
    seq = _seq(n, n)
    ref = official_probabilities(model, alpha, seq)
    out = _our_probabilities(encoder, head, alpha, [seq])[0]
    assert out.shape == (n, n)
    assert (out - ref).abs().max().item() <= TOL
    # the logits are mirrored exactly; the vectorised sigmoid may differ by an ulp
    assert (out - out.T).abs().max().item() <= 1e-7


def test_parity_batched_mixed_lengths(structure, ours):
    """One padded batch of mixed lengths: each block equals the official run alone."""
    _, model, alpha = structure
    encoder, head, _ = ours
    seqs = [_seq(n, 100 + n) for n in (17, 120, 1, 64, 3, 2, 90)]
    out = _our_probabilities(encoder, head, alpha, seqs)
    for i, seq in enumerate(seqs):
        n = len(seq)
        ref = official_probabilities(model, alpha, seq)
        assert (out[i, :n, :n] - ref).abs().max().item() <= TOL, n
        assert (out[i, n:, :] == 0.5).all() and (out[i, :, n:] == 0.5).all()  # logits 0


def test_masking_matters(structure, ours):
    """Without re-zeroing the padding before each convolution, short sequences differ."""
    _, model, alpha = structure
    encoder, head, _ = ours
    seqs = [_seq(60, 7), _seq(20, 8)]
    tokens = official_tokens(alpha, seqs)
    with torch.no_grad():
        states = encoder(tokens, layers=[-1])[12][:, 1:61]
        unmasked = torch.sigmoid(head._forward(states, torch.tensor([60, 60]), inplace=True))
    ref = official_probabilities(model, alpha, seqs[1])
    assert (unmasked[1, :20, :20] - ref).abs().max().item() > 100 * TOL


def test_logits_are_exactly_symmetric(ours):
    _, head, _ = ours
    with torch.no_grad():
        logits = head(torch.randn(2, 101, 32), torch.tensor([101, 60]))
    assert torch.equal(logits, logits.transpose(1, 2))


def test_chunking_gives_the_same_numbers(ours, monkeypatch):
    encoder, head, _ = ours
    states = torch.randn(5, 40, 32)
    lengths = torch.tensor([40, 7, 33, 1, 25])
    with torch.no_grad():
        whole = head(states, lengths)
        monkeypatch.setattr(_pair_head, "_PIXEL_BUDGET", 40 * 40)
        assert len(PairHead._chunks(lengths)) == 4
        chunked = head(states, lengths)
    assert (whole - chunked).abs().max().item() <= 1e-5


def test_band_parity_with_official_long(structure, ours):
    """256 nt: the band computation (86 % of the map's pixels, 4 strips) against the official."""
    _, model, alpha = structure
    encoder, head, _ = ours
    assert head._band_pays(256) and not head._band_pays(150)
    seq = _seq(256, 256)
    ref = official_probabilities(model, alpha, seq)
    out = _our_probabilities(encoder, head, alpha, [seq])[0]
    assert (out - ref).abs().max().item() <= TOL
    assert torch.equal(out, out.T)


def _small_head(blocks: int) -> PairHead:
    torch.manual_seed(blocks)
    head = PairHead(embed_dim=16, channels=8, blocks=blocks, proj_dim=4).eval()
    with torch.no_grad():  # BatchNorm shifts that make the zero padding matter
        for block in head.blocks:
            block.norm.running_mean.normal_(0, 0.2)
            block.norm.running_var.uniform_(0.5, 1.5)
            block.norm.weight.normal_(1, 0.2)
            block.norm.bias.normal_(0, 0.5)
    return head


@pytest.mark.parametrize(
    "lengths",
    [[9], [16], [17], [40], [64, 20], [65, 65, 3], [70, 1, 33, 2], [129]],
)
def test_band_equals_the_whole_map(monkeypatch, lengths):
    """Strips of 8 rows, 3 blocks (the pair map is read up to 22 below the diagonal): every
    strip boundary, frame and mask case of the band computation against the whole map."""
    monkeypatch.setattr(_pair_head, "_BAND_STRIP", 8)
    head = _small_head(3)
    assert head._reaches() == [(20, 18), (16, 12), (10, 2)]
    assert head._band_pays(40) and not head._band_pays(20)  # the predictor's choice
    L = max(lengths)
    states, n = torch.randn(len(lengths), L, 16), torch.tensor(lengths)
    with torch.no_grad():
        whole = head._forward(states, n, inplace=True)
        band = head._forward_band(states, n)
        assert torch.equal(head(states, n), band if head._band_pays(L) else whole)
        assert (band - whole).abs().max().item() <= 1e-6 * whole.abs().max().item() + 1e-7
        assert torch.equal(band, band.transpose(1, 2))
        # the dependence is real: reaching 2 less below the diagonal changes the result
        real = PairHead._reaches
        monkeypatch.setattr(
            PairHead, "_reaches", lambda self: [(r1 - 2, r2 - 2) for r1, r2 in real(self)]
        )
        if L >= 40:
            short = head._forward_band(states, n)
            assert (short - whole).abs().max().item() > 1e-3



def test_empty_inputs(ours):
    _, head, _ = ours
    with torch.no_grad():
        assert head(torch.zeros(0, 5, 32), torch.zeros(0, dtype=torch.long)).shape == (0, 5, 5)
        assert head(torch.zeros(2, 0, 32), torch.zeros(2, dtype=torch.long)).shape == (2, 0, 0)


# ------------------------------------------------------------------------------- training


def _official_head_module(structure):
    return structure[1].downstream_modules[HEAD]


def test_training_mode_matches_official_train_mode(structure):
    """Train-mode BatchNorm (batch statistics, running-stat update) as nn.BatchNorm2d does."""
    official = copy.deepcopy(_official_head_module(structure)).train()
    for block in official.proj.resnet:
        block.dropout.p = 0.0
    state = {k: v for k, v in official.state_dict().items()}
    head = PairHead(embed_dim=32, dropout=0.0)
    head.load_state_dict(head_state_from_official(state, 32))
    head.train()
    torch.manual_seed(0)
    states = torch.randn(3, 12, 32)  # equal lengths: the official has no padding to handle
    tokens = torch.full((3, 14), 4)  # any nucleotide ids, <cls> and <eos> around
    tokens[:, 0], tokens[:, -1] = 0, 2
    padded = torch.cat([torch.zeros(3, 1, 32), states, torch.zeros(3, 1, 32)], dim=1)
    ref = official(tokens, {"embedding": padded})
    out = head(states, torch.tensor([12, 12, 12]))
    assert (out - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
    ours_running = head.blocks[5].norm.running_var
    assert torch.allclose(ours_running, official.proj.resnet[5].bn1.running_var, atol=1e-5)


def test_masked_batch_norm_uses_valid_pixels_only():
    torch.manual_seed(0)
    head = PairHead(embed_dim=8, channels=4, blocks=1, proj_dim=4, dropout=0.0).train()
    states = torch.randn(2, 6, 8)
    head(states, torch.tensor([6, 3]))
    # the statistics of the first block's input over the 36 + 9 valid pixels
    with torch.no_grad():
        x = [_pair_map(head, states[0, :6]), _pair_map(head, states[1, :3])]
        pixels = torch.cat([m.reshape(4, -1) for m in x], dim=1)
    expected = 0.9 * 1.0 + 0.1 * pixels.var(dim=1, unbiased=True)
    assert torch.allclose(head.blocks[0].norm.running_var, expected, atol=1e-6)


def _pair_map(head, e):
    p = head.proj(e)
    w = head.pair.weight[:, :, 0, 0]
    P = head.proj_dim
    return (p @ w[:, :P].T)[:, None, :].permute(2, 0, 1) + (
        (p @ w[:, P:].T + head.pair.bias)[None, :, :].permute(2, 0, 1)
    )


def test_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    head = PairHead(embed_dim=8, channels=4, blocks=3, proj_dim=4, dropout=0.0).train()
    states = torch.randn(2, 9, 8)
    lengths = torch.tensor([9, 5])
    grads = []
    for ckpt in (False, True):
        head.zero_grad()
        head(states, lengths, checkpoint=ckpt).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in head.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    # running statistics were updated once per forward, not again by the recomputation
    assert int(head.blocks[0].norm.num_batches_tracked) == 2


# ---------------------------------------------------------------------- files and registry


def test_native_round_trip(structure, ours, tmp_path):
    _, model, alpha = structure
    encoder, head, info = ours
    assert info["origin"] == "unknown" and info["threshold"] == 0.5
    assert {k: info[k] for k in ("channels", "blocks", "proj_dim")} == {
        "channels": 64, "blocks": 32, "proj_dim": 128
    }
    folder = save_model(encoder, tmp_path / "native", head=head, threshold=0.25)
    head2, info2 = load_pair_head(folder)
    assert info2["threshold"] == 0.25 and info2["origin"] == "native"
    seqs = [_seq(30, 3), _seq(9, 4)]
    a = _our_probabilities(encoder, head, alpha, seqs)
    b = _our_probabilities(load_model(folder), head2, alpha, seqs)
    assert (a - b).abs().max().item() <= TOL
    assert json.loads((folder / "config.json").read_text())["format_version"] == 2


def test_convert_checkpoint_keeps_the_head(structure, tmp_path):
    folder = convert_checkpoint(structure[0], tmp_path / "converted")
    head, info = load_pair_head(folder)
    assert info["blocks"] == 32 and info["threshold"] == 0.5


def test_backbone_only_has_no_head(tmp_path):
    from conftest import TINY_PTH

    assert load_pair_head(TINY_PTH) is None
    folder = save_model(load_model(TINY_PTH), tmp_path / "plain")
    assert json.loads((folder / "config.json").read_text())["format_version"] == 1
    assert load_pair_head(folder) is None
    assert _models.get_pair_head(TINY_PTH, torch.device("cpu"), torch.float32) is None


def test_known_file_gets_its_calibrated_threshold(structure, monkeypatch):
    digest = _hub.sha256_file(structure[0])
    monkeypatch.setitem(_hub.KNOWN_STRUCTURE_FILES, digest, "RNA-FM-ResNet_PDB-All")
    _, info = load_pair_head(structure[0])
    assert info["threshold"] == 0.33993712 and info["origin"] == "RNA-FM-ResNet_PDB-All"


def test_registry_shares_and_reloads(structure, tmp_path):
    import shutil

    path = tmp_path / "RNA-FM-ResNet_copy.pth"
    shutil.copy(structure[0], path)
    cpu = torch.device("cpu")
    _models.clear_model_cache()
    first = _models.get_pair_head(path, cpu, torch.float32)
    assert _models.get_pair_head(path, cpu, torch.float32) is first
    enc = _models.get_encoder(path, cpu, torch.float32)
    assert enc.config.num_layers == 12 and enc.config.num_heads == 4
    # the file rewritten in place is read again
    state = torch.load(path)
    state[f"downstream_modules.{HEAD}.proj.final.bias"] += 1.0
    torch.save(state, path)
    second = _models.get_pair_head(path, cpu, torch.float32)
    assert second is not first
    assert torch.allclose(second[0].final.bias, first[0].final.bias + 1.0)


def test_bfloat16_on_a_cpu_without_bf16_arithmetic(structure, monkeypatch):
    monkeypatch.setattr(_models, "_native_bf16", lambda device: False)
    head, info = _models.get_pair_head(structure[0], torch.device("cpu"), torch.bfloat16)
    assert info["compute_dtype"] == "float32" and head.final.weight.dtype == torch.float32
    monkeypatch.setattr(_models, "_native_bf16", lambda device: True)
    head, info = _models.get_pair_head(structure[0], torch.device("cpu"), torch.bfloat16)
    assert info["compute_dtype"] == "bfloat16" and head.final.weight.dtype == torch.bfloat16


def test_bfloat16_head_is_close(ours):
    encoder, head, _ = ours
    h16 = copy.deepcopy(head).to(torch.bfloat16)
    states = torch.randn(1, 30, 32)
    with torch.no_grad():
        p32 = torch.sigmoid(head(states, torch.tensor([30])))
        p16 = torch.sigmoid(h16(states, torch.tensor([30])))
    assert p16.dtype == torch.float32
    assert (p32 - p16).abs().max().item() < 0.05


def test_named_structure_model_is_pinned_and_offline_safe(monkeypatch):
    entry = _hub.PRETRAINED["rna-fm-ss"]
    assert entry.filename == "SS/RNA-FM-ResNet_PDB-All.pth" and entry.size is None
    assert entry.sha256 == "bc9df2111ae6ba95b373641ed1ab35ef4fa8b4cd0f8d21065a55450f575fe15d"
    assert read_config("rna-fm-ss").hidden_size == 640  # nothing downloaded
    assert _hub.KNOWN_STRUCTURE_FILES[entry.sha256] == "RNA-FM-ResNet_PDB-All"
    assert _hub.STRUCTURE_THRESHOLDS["RNA-FM-ResNet_PDB-All"] == 0.33993712
    monkeypatch.setenv("RNAFM_SKLEARN_OFFLINE", "1")
    with pytest.raises(_hub.WeightsUnavailableError, match="RNA-FM-ResNet_PDB-All.pth"):
        load_pair_head("rna-fm-ss")
    dest = _hub.cache_dir() / "rna-fm-ss" / "RNA-FM-ResNet_PDB-All.pth"
    with pytest.raises(_hub.WeightsUnavailableError, match=str(dest)):
        _models.get_encoder("rna-fm-ss", torch.device("cpu"), torch.float32)


# --------------------------------------------------------------------------- crafted files


def _variant(structure, tmp_path, edit):
    state = dict(torch.load(structure[0]))
    edit(state)
    path = tmp_path / "RNA-FM-ResNet_crafted.pth"
    torch.save(state, path)
    return path


H = f"downstream_modules.{HEAD}."


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.pop(H + "proj.resnet.7.conv1.weight"), r"missing key\(s\): blocks\.7\.conv1"),
        (lambda s: s.update({H + "proj.resnet.3.extra": torch.zeros(2)}),
         r"unexpected key\(s\): downstream_modules\.pc-resnet_1_sym_first:r-ss\.proj\.resnet\.3\.extra"),
        (lambda s: s.update({H + "proj.final.weight": torch.zeros(1, 64, 5, 5)}),
         r"final\.weight has shape \(1, 64, 5, 5\), expected \(1, 64, 3, 3\)"),
        (lambda s: [s.pop(k) for k in list(s) if ".resnet.4." in k],
         r"residual blocks \[0, 1, 2, 3, 5, 6, 7, 8, \.\.\. \(23 more\)\]"),
        (lambda s: s.update({"optimizer": torch.zeros(1)}), r"key\(s\) outside .*: optimizer"),
        (lambda s: s.pop("backbone.contact_head.regression.weight"),
         r"number of attention heads cannot be told.*absent"),
        (lambda s: s.update({"backbone.contact_head.regression.weight": torch.zeros(1, 50)}),
         r"50 inputs, not a multiple of the 12 layers"),
        (lambda s: s.update({H + "pre_reduction.weight": "text"}), r"is 'text' \(str\), not a tensor"),
        (lambda s: s.pop("backbone.layers.3.fc1.weight"), r"missing key\(s\): layers\.3\.fc1\.weight"),
    ],
)
def test_crafted_structure_files(structure, tmp_path, edit, message):
    path = _variant(structure, tmp_path, edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_pair_head(path)
    assert str(path) in str(err.value)


def test_head_without_blocks_is_refused(structure, tmp_path):
    path = _variant(structure, tmp_path, lambda s: [s.pop(k) for k in list(s) if ".proj.first." in k])
    with pytest.raises(CheckpointError, match="lacks its projection .* or its first convolution"):
        load_pair_head(path)


def _native(ours, tmp_path):
    encoder, head, _ = ours
    return save_model(encoder, tmp_path / "native", head=head, threshold=0.3)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["pair_head"].update(threshold=0.9), "does not match the one recorded"),
        (lambda c: c["pair_head"].update(threshold=2.0), r"'pair_head.threshold' must be a number"),
        (lambda c: c["pair_head"]["config"].update(blocks=0), r"blocks' must be a positive int"),
        (lambda c: c["pair_head"].pop("config"), "'pair_head' must be a JSON object"),
        (lambda c: c.pop("pair_head"), r"holds structure-head tensors \(pair_head\.\*\) but"),
        (lambda c: c.update(format_version=1), r"unknown field\(s\) 'pair_head' for format_version 1"),
    ],
)
def test_crafted_native_head(ours, tmp_path, edit, message):
    folder = _native(ours, tmp_path)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        load_pair_head(folder)


def test_save_model_rejects_a_foreign_head(ours, tmp_path):
    encoder, _, _ = ours
    with pytest.raises(ValueError, match="reads 640-dimensional states but the encoder gives 32"):
        save_model(encoder, tmp_path / "x", head=PairHead(blocks=1))
    with pytest.raises(ValueError, match=r"threshold must be a probability in \[0, 1\], got 1.5"):
        save_model(encoder, tmp_path / "x", head=PairHead(embed_dim=32, blocks=1), threshold=1.5)
