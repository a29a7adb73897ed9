"""Parity of the encoder with the official ``fm`` forward pass."""

import re

import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import TINY_PTH

from rnafm_sklearn import RnaFmConfig, RnaFmEncoder, get_alphabet, load_model

TOL = 1e-5


def _max_diff(ours, ref, tokens):
    """Largest difference over real tokens; ``ours`` may be on any device, ``ref`` on the CPU."""
    real = tokens.ne(1).cpu()
    return max((ours[k].cpu() - ref[k])[real].abs().max().item() for k in ref)


@torch.no_grad()
def test_tiny_parity_every_hidden_state(real_sequences, device):
    official, alpha = load_official(TINY_PTH)
    ours = load_model(TINY_PTH).to(device)
    tokens = official_tokens(alpha, real_sequences)
    assert tokens.shape[0] >= 20 and tokens.eq(1).any()  # a padded, mixed-length batch
    ref = official(tokens, repr_layers=[0, 1, 2])["representations"]
    out = ours(tokens.to(device), layers=[0, 1, 2])
    assert _max_diff(out, ref, tokens) <= TOL


@torch.no_grad()
@pytest.mark.parametrize("token_dropout", [True, False, None])
@pytest.mark.parametrize("emb_layer_norm_before", [True, False])
def test_flags_are_honoured(
    tmp_path, token_dropout, emb_layer_norm_before, real_sequences, device
):
    path = make_official_checkpoint(
        tmp_path / "RNA-FM_flags.pth",
        layers=3,
        token_dropout=token_dropout,
        emb_layer_norm_before=emb_layer_norm_before,
        seed=7,
    )
    official, alpha = load_official(path)
    ours = load_model(path).to(device)
    assert ours.config.token_dropout is bool(token_dropout)
    assert ours.config.emb_layer_norm_before is emb_layer_norm_before
    tokens = official_tokens(alpha, real_sequences[:8])
    tokens[0, 5] = tokens[3, 9] = alpha.mask_idx  # exercise the observed-mask-ratio rescaling
    ref = official(tokens, repr_layers=[0, 1, 2, 3])["representations"]
    out = ours(tokens.to(device), layers=range(4))
    assert _max_diff(out, ref, tokens) <= TOL


@torch.no_grad()
def test_token_dropout_changes_numbers(tmp_path, real_sequences):
    """The flag is not a no-op: forgetting it would fail the parity test above."""
    on = load_model(make_official_checkpoint(tmp_path / "RNA-FM_a.pth", token_dropout=True))
    off = load_model(make_official_checkpoint(tmp_path / "RNA-FM_b.pth", token_dropout=False))
    tokens = torch.tensor([get_alphabet("rna").encode(real_sequences[0])])
    assert (on(tokens, layers=0)[0] - off(tokens, layers=0)[0]).abs().max() > 1e-3


@torch.no_grad()
def test_wrong_layer_norm_eps_would_be_caught(real_sequences):
    """With std-0.02 weights an eps of 1e-12 moves outputs far above the tolerance."""
    ours = load_model(TINY_PTH)
    wrong = RnaFmEncoder(
        RnaFmConfig(**{**ours.config.to_dict(), "layer_norm_eps": 1e-12}),
        lm_head=True,
        contact_head=True,
    )
    wrong.load_state_dict(ours.state_dict())
    tokens = torch.tensor([get_alphabet("rna").encode(real_sequences[0])])
    assert (ours(tokens)[2] - wrong(tokens)[2]).abs().max() > 10 * TOL


@torch.no_grad()
def test_batch_invariance(real_sequences, device):
    ours = load_model(TINY_PTH).to(device)
    rna = get_alphabet("rna")
    batch = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(rna.encode(s)) for s in real_sequences], batch_first=True, padding_value=1
    )
    together = ours(batch.to(device), layers=[0, 1, 2])
    for i, seq in enumerate(real_sequences):
        alone = ours(torch.tensor([rna.encode(seq)], device=device), layers=[0, 1, 2])
        n = len(seq) + 2
        for k in alone:
            assert (alone[k][0] - together[k][i, :n]).abs().max() <= TOL


@torch.no_grad()
def test_layers_requested_and_negative_indices():
    ours = load_model(TINY_PTH)
    tokens = torch.tensor([get_alphabet("rna").encode("ACGUACGU")])
    full = ours(tokens, layers=[0, 1, 2])
    neg = ours(tokens, layers=[-3, -1])
    assert sorted(neg) == [0, 2]
    # exact: the same tokens through the same layers; only which outputs are kept differs
    assert torch.equal(neg[2], full[2]) and torch.equal(neg[0], full[0])
    # stopping early after layer 1 gives the same layer 1
    assert torch.equal(ours(tokens, layers=1)[1], full[1])


def test_layer_out_of_range():
    ours = load_model(TINY_PTH)
    tokens = torch.tensor([get_alphabet("rna").encode("ACGU")])
    with pytest.raises(
        ValueError, match=re.escape("Layer 3 does not exist: this model has hidden states 0..2")
    ):
        ours(tokens, layers=3)
    with pytest.raises(ValueError, match=re.escape("Layer -4 does not exist")):
        ours(tokens, layers=[-4])


def test_too_many_tokens():
    ours = load_model(TINY_PTH)
    tokens = torch.tensor([get_alphabet("rna").encode("A" * 1023)])
    with pytest.raises(
        ValueError, match=re.escape("1025 tokens exceed the model's 1024 positions")
    ):
        ours(tokens)


def test_config_validation():
    with pytest.raises(ValueError, match="hidden_size=30 is not divisible by num_heads=4"):
        RnaFmConfig(hidden_size=30, num_heads=4)
    assert RnaFmConfig.mrna_fm().vocab_size == 73


@torch.no_grad()
def test_codon_model_parity(tmp_path, device):
    """mRNA-FM layout: 73 codon tokens, no embedding LayerNorm."""
    path = make_official_checkpoint(
        tmp_path / "mRNA-FM_tiny.pth", alphabet="codon", emb_layer_norm_before=False, seed=3
    )
    official, alpha = load_official(path, alphabet="codon")
    ours = load_model(path).to(device)
    assert ours.config.alphabet == "codon" and not ours.config.emb_layer_norm_before
    seqs = ["AUGGCCAAAUAA", "AUGCCCGGGUUUAAACCCGGGUGA", "GCU"]
    tokens = official_tokens(alpha, seqs)
    ours_tokens = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(get_alphabet("codon").encode(s)) for s in seqs], True, 1
    )
    assert torch.equal(tokens, ours_tokens)
    ref = official(tokens, repr_layers=[0, 1, 2])["representations"]
    assert _max_diff(ours(tokens.to(device), layers=[0, 1, 2]), ref, tokens) <= TOL
