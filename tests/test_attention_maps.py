"""Attention maps and contacts (``transform_attention`` / ``transform_contacts``).

Parity with the official ``fm`` forward pass (``need_head_weights`` / ``return_contacts``) on
random std-0.02 models, batched with mixed lengths; checkpoint layouts; argument errors; long
sequences.
"""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import FIXTURES, TINY_HF, TINY_PTH, mixed_real_sequences

from rnafm_sklearn import InvalidParameterError, RnaFmEmbedder, convert_checkpoint, load_model
from rnafm_sklearn._models import weights_fingerprint

TOL = 1e-5  # float32


def emb(model, **kw):
    return RnaFmEmbedder(model=str(model), progress=False, **kw)


@torch.no_grad()
def official_maps(path, sequences, alphabet="rna"):
    """Official attentions ``(B, layers, heads, T, T)`` and contacts ``(B, T-2, T-2)``."""
    model, alpha = load_official(path, alphabet=alphabet)
    out = model(official_tokens(alpha, sequences), return_contacts=True)
    return out["attentions"].numpy(), out["contacts"].numpy()


@pytest.fixture(scope="module")
def seqs():
    return mixed_real_sequences(10)  # 62..520 nt, IUPAC codes included


@pytest.mark.parametrize("token_dropout", [False, True])
@pytest.mark.parametrize("batch_tokens", [600, 8192])
def test_attention_and_contacts_match_official(tmp_path, seqs, token_dropout, batch_tokens, device):
    path = make_official_checkpoint(
        tmp_path / "RNA-FM.pth", layers=3, token_dropout=token_dropout, seed=3
    )
    att, con = official_maps(path, seqs)
    est = emb(path, device=device, batch_tokens=batch_tokens)
    maps = est.transform_attention(seqs)
    contacts = est.transform_contacts(seqs)
    for i, s in enumerate(seqs):
        L = len(s)
        assert maps[i].shape == (3, 4, L, L) and maps[i].dtype == np.float32
        np.testing.assert_allclose(maps[i], att[i, :, :, 1 : L + 1, 1 : L + 1], atol=TOL, rtol=0)
        assert contacts[i].shape == (L, L) and contacts[i].dtype == np.float32
        np.testing.assert_allclose(contacts[i], con[i, :L, :L], atol=TOL, rtol=0)


def test_selected_layers_and_heads_in_the_order_asked(seqs, device):
    att, _ = official_maps(TINY_PTH, seqs[:3])
    maps = emb(TINY_PTH, device=device).transform_attention(seqs[:3], layers=[-1, 1], heads=[3, 0])
    for i, s in enumerate(seqs[:3]):
        L = len(s)
        ref = att[i][np.ix_([1, 0], [3, 0])][..., 1 : L + 1, 1 : L + 1]
        assert maps[i].shape == (2, 2, L, L)
        np.testing.assert_allclose(maps[i], ref, atol=TOL, rtol=0)
    L = len(seqs[0])
    one = emb(TINY_PTH, device=device).transform_attention(seqs[:1], layers=2, heads=1)[0]
    assert one.shape == (1, 1, L, L)
    np.testing.assert_allclose(one[0, 0], att[0, 1, 1, 1 : L + 1, 1 : L + 1], atol=TOL, rtol=0)


def test_rows_sum_to_one_minus_the_special_tokens(seqs):
    att, _ = official_maps(TINY_PTH, seqs[:1])
    L = len(seqs[0])
    maps = emb(TINY_PTH).transform_attention(seqs[:1])[0]
    special = att[0, :, :, 1 : L + 1, 0] + att[0, :, :, 1 : L + 1, L + 1]  # to <cls>, <eos>
    np.testing.assert_allclose(maps.sum(-1) + special, 1.0, atol=TOL)
    assert (maps.sum(-1) < 1 - 1e-4).all()


def test_codon_model_maps_are_per_codon(tmp_path, device):
    path = make_official_checkpoint(
        tmp_path / "mRNA-FM.pth", alphabet="codon", emb_layer_norm_before=False, seed=4
    )
    rng = np.random.default_rng(0)
    cds = ["".join(rng.choice(list("ACGU"), 3 * n)) for n in (40, 7, 23)]
    att, con = official_maps(path, cds, alphabet="codon")
    est = emb(path, device=device)
    maps, contacts = est.transform_attention(cds), est.transform_contacts(cds)
    for i, s in enumerate(cds):
        L = len(s) // 3
        assert maps[i].shape == (2, 4, L, L) and contacts[i].shape == (L, L)
        np.testing.assert_allclose(maps[i], att[i, :, :, 1 : L + 1, 1 : L + 1], atol=TOL, rtol=0)
        np.testing.assert_allclose(contacts[i], con[i, :L, :L], atol=TOL, rtol=0)


def test_every_layout_keeps_the_contact_head(tmp_path, seqs):
    _, con = official_maps(TINY_PTH, seqs[:2])
    native = convert_checkpoint(TINY_PTH, tmp_path / "native")
    for source in (TINY_HF, native):
        contacts = emb(source).transform_contacts(seqs[:2])
        for i, s in enumerate(seqs[:2]):
            np.testing.assert_allclose(contacts[i], con[i, : len(s), : len(s)], atol=TOL, rtol=0)
    hf_codon = FIXTURES / "multimolecule-mrnafm-tiny"
    ours = load_model(hf_codon).contact_head.regression.weight
    ref = load_model(FIXTURES / "mRNA-FM_tiny.pth").contact_head.regression.weight
    assert torch.equal(ours, ref)


def test_a_checkpoint_without_contact_head_says_so(tmp_path, seqs):
    path = make_official_checkpoint(tmp_path / "RNA-FM_nohead.pth", contact_head=False)
    # the same weights with the head (the official loader cannot load a file without it)
    with_head = make_official_checkpoint(tmp_path / "RNA-FM_head.pth", contact_head=True)
    est = emb(path)
    with pytest.raises(ValueError, match=re.escape(f"The checkpoint {path} has no contact head")):
        est.transform_contacts(seqs[:1])
    att, _ = official_maps(with_head, seqs[:1])  # attention maps need no head
    L = len(seqs[0])
    np.testing.assert_allclose(
        est.transform_attention(seqs[:1])[0], att[0, :, :, 1 : L + 1, 1 : L + 1], atol=TOL
    )
    # the contact head changes neither embeddings nor their cache keys
    assert weights_fingerprint(load_model(with_head)) == weights_fingerprint(load_model(path))


def test_a_foreign_multimolecule_ss_head_is_left_out(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "mm"
    shutil.copytree(TINY_HF, folder)
    (folder / "pytorch_model.bin").unlink()
    state = load_file(folder / "model.safetensors")
    state["ss_head.decoder.weight"] = torch.zeros(3, 16)  # some other head, not the regression
    save_file(state, folder / "model.safetensors")
    assert load_model(folder).contact_head is None


@pytest.mark.parametrize(
    ("layers", "shown"),
    [
        (0, "0"),
        (3, "3"),
        (-3, "-3"),
        ([1, 1], "[1, 1]"),
        ([1, -2], "[1, -2]"),
        ([], "[]"),
        ("1", "'1'"),
        (True, "True"),
        (1.0, "1.0"),
    ],
)
def test_invalid_layers(layers, shown):
    with pytest.raises(InvalidParameterError) as info:
        emb(TINY_PTH).transform_attention(["ACGU"], layers=layers)
    assert str(info.value) == (
        "The 'layers' argument of RnaFmEmbedder.transform_attention must be None, an int or a "
        "non-empty list of distinct ints in 1..2 (or -2..-1 counted from the end) for this "
        f"model; layer 0, the embeddings, has no attention. Got {shown} instead."
    )


@pytest.mark.parametrize(
    ("heads", "shown"), [(4, "4"), (-1, "-1"), ([0, 0], "[0, 0]"), ([], "[]"), ("0", "'0'")]
)
def test_invalid_heads(heads, shown):
    with pytest.raises(InvalidParameterError) as info:
        emb(TINY_PTH).transform_attention(["ACGU"], heads=heads)
    assert str(info.value) == (
        "The 'heads' argument of RnaFmEmbedder.transform_attention must be None, an int or a "
        f"non-empty list of distinct ints in 0..3 for this model. Got {shown} instead."
    )


def test_long_sequences():
    rng = np.random.default_rng(1)
    long = "".join(rng.choice(list("ACGU"), 1100))
    short = "GGGAAACCCU"
    with pytest.raises(ValueError, match=r"1 sequence\(s\) exceed RNA-FM's limit of 1022 nt"):
        emb(TINY_PTH).transform_contacts([short, long])
    for method in ("transform_attention", "transform_contacts"):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"{method} cannot use long_sequences='window': attention exists only within one "
                "forward pass of at most 1022 nt, and row 1 (0-based) has 1100 nt."
            ),
        ):
            getattr(emb(TINY_PTH, long_sequences="window"), method)([short, long])
    # short sequences are the same under every policy
    same = emb(TINY_PTH, long_sequences="window").transform_contacts([short])[0]
    np.testing.assert_array_equal(same, emb(TINY_PTH).transform_contacts([short])[0])
    for side, kept in (("right", long[:1022]), ("left", long[-1022:])):
        est = emb(TINY_PTH, long_sequences="truncate", truncation_side=side)
        with pytest.warns(UserWarning, match="Truncated 1 of 2"):
            got = est.transform_contacts([short, long])
        ref = emb(TINY_PTH).transform_contacts([kept])[0]
        assert got[1].shape == (1022, 1022)
        np.testing.assert_allclose(got[1], ref, atol=TOL, rtol=0)


def test_duplicates_are_independent_arrays_in_input_order(seqs):
    est = emb(TINY_PTH, batch_tokens=300)
    out = est.transform_contacts([seqs[1], seqs[0], seqs[1]])
    ref = est.transform_contacts([seqs[0], seqs[1]])
    np.testing.assert_array_equal(out[1], ref[0])
    np.testing.assert_array_equal(out[0], ref[1])
    np.testing.assert_array_equal(out[2], ref[1])
    out[0][0, 0] = -1.0
    assert out[2][0, 0] != -1.0


def test_progress_counts_sequences(seqs, capsys):
    RnaFmEmbedder(model=str(TINY_PTH), progress=True).transform_attention(seqs[:3], layers=1)
    assert "3/3" in capsys.readouterr().err


def test_bfloat16_maps_are_float32_and_close(seqs):
    ref = emb(TINY_PTH).transform_attention(seqs[:3], layers=-1)
    got = emb(TINY_PTH, dtype="bfloat16").transform_attention(seqs[:3], layers=-1)
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == np.float32
        err = np.abs(g - r).max() / np.abs(r).max()
        assert 0 < err < 1e-2  # bfloat16 keeps ~3 significant digits; 0 would mean float32 ran


def test_one_and_two_nucleotides_match_official(seqs):
    batch = ["A", "GC", "ACG", seqs[0][:50]]
    att, con = official_maps(TINY_PTH, batch)
    est = emb(TINY_PTH)
    maps, contacts = est.transform_attention(batch), est.transform_contacts(batch)
    for i, s in enumerate(batch):
        L = len(s)
        assert contacts[i].shape == (L, L)
        np.testing.assert_allclose(maps[i], att[i, :, :, 1 : L + 1, 1 : L + 1], atol=TOL, rtol=0)
        np.testing.assert_allclose(contacts[i], con[i, :L, :L], atol=TOL, rtol=0)
