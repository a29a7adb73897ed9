"""mRNA-FM: codon tokens under the same API (tiny random models; one full-size check)."""

import re

import numpy as np
import pandas as pd
import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import DATA, FIXTURES

from rnafm_sklearn import RnaFmEmbedder, load_model
from rnafm_sklearn._cli import main as cli_main
from rnafm_sklearn._windows import window_ownership

TINY = FIXTURES / "mRNA-FM_tiny.pth"
TINY_HF = FIXTURES / "multimolecule-mrnafm-tiny"
TOL = 1e-5


def emb(**kw):
    return RnaFmEmbedder(model=str(kw.pop("model", TINY)), progress=False, **kw)


@pytest.fixture(scope="module")
def official():
    return load_official(TINY, alphabet="codon")


@pytest.fixture(scope="module")
def cds():
    """Real coding-frame slices of the mRNA designs (start at the AUG, whole codons)."""
    df = pd.read_csv(DATA / "mrna233-degradation" / "233x_sequences_degdata_081120.csv")
    out = []
    for seq in df.RNA_sequence.iloc[:12]:
        start = seq.find("AUG")
        body = seq[start : start + 3 * (60 + 17 * len(out))]
        out.append(body[: len(body) // 3 * 3])
    return out


@torch.no_grad()
def _official_states(official, seqs, layers):
    model, alpha = official
    tokens = official_tokens(alpha, seqs)
    return tokens, model(tokens, repr_layers=layers)["representations"]


def test_pooled_and_per_codon_match_official(official, cds):
    tokens, reps = _official_states(official, cds, [0, 1, 2])
    X = emb(pooling=["mean", "cls", "eos", "max"], layers=[0, 2]).transform(cds)
    per_codon = emb(layers=[0, 2]).transform_tokens(cds)
    for i, s in enumerate(cds):
        n = len(s) // 3
        assert per_codon[i].shape == (n, 64)
        for g, layer in enumerate((0, 2)):
            h = reps[layer][i]
            ref = torch.cat([h[1 : 1 + n].mean(0), h[0], h[1 + n], h[1 : 1 + n].max(0).values])
            np.testing.assert_allclose(X[i, g * 128 : (g + 1) * 128], ref.numpy(), atol=TOL)
            np.testing.assert_allclose(
                per_codon[i][:, g * 32 : (g + 1) * 32], h[1 : 1 + n].numpy(), atol=TOL
            )


def test_multimolecule_codon_folder_matches_official(official, cds):
    """Produced by multimolecule's own converter (tests/fixtures/make_multimolecule_fixture.py)."""
    encoder = load_model(TINY_HF)
    assert encoder.config.alphabet == "codon" and not encoder.config.emb_layer_norm_before
    tokens, reps = _official_states(official, cds, [0, 1, 2])
    with torch.no_grad():
        out = encoder(tokens, layers=[0, 1, 2])
    real = tokens.ne(1)
    assert max((out[k] - reps[k])[real].abs().max().item() for k in reps) <= TOL


def test_feature_names_say_which_model():
    names = emb(layers=[0, -1]).get_feature_names_out()
    assert names[0] == "mrnafm_l0_mean_0" and names[-1] == "mrnafm_l2_mean_31"


def test_codon_errors_name_row_and_position():
    with pytest.raises(
        ValueError, match=re.escape("Sequence at row 1 (0-based) has 7 nt, not a multiple of 3")
    ):
        emb().transform(["AUGAAA", "AUGAAAU"])
    with pytest.raises(
        ValueError,
        match=re.escape("Sequence at row 0 (0-based) contains characters that mRNA-FM cannot read: 'N' at 5"),
    ):
        emb().transform(["AUGANAUAA"])
    with pytest.raises(ValueError, match=re.escape("'R' at 2")):
        emb().transform(["ARG"])


def test_stop_codons_mid_frame_are_embedded(official):
    """Documented choice: UAA/UAG/UGA are vocabulary tokens; a mid-frame stop is not an error."""
    seq = "AUGUAAGGCUGAUAG"
    X = emb(pooling="cls").transform([seq])
    _, reps = _official_states(official, [seq], [2])
    np.testing.assert_allclose(X[0], reps[2][0, 0].numpy(), atol=TOL)


def test_long_sequences_in_codons(official):
    rng = np.random.default_rng(0)
    seq = "".join(rng.choice(list("ACGU"), 3 * 2500))
    with pytest.raises(
        ValueError, match=re.escape("exceed mRNA-FM's limit of 1022 codons: row 0 (0-based) (2500 codons)")
    ):
        emb().transform([seq])
    states = emb(long_sequences="window").transform_tokens([seq])[0]
    assert states.shape == (2500, 32)
    model, alpha = official
    for s, a, b in window_ownership(2500, 1022, 511):
        piece = seq[3 * s : 3 * (s + 1022)]
        with torch.no_grad():
            h = model(official_tokens(alpha, [piece]), repr_layers=[2])["representations"][2]
        np.testing.assert_allclose(states[a:b], h[0, 1 + a - s : 1 + b - s].numpy(), atol=TOL)


def test_cache_and_cli(tmp_path, cds):
    X = emb(cache=str(tmp_path / "c")).transform(cds)
    np.testing.assert_array_equal(emb(cache=str(tmp_path / "c")).transform(cds), X)
    fasta = tmp_path / "cds.fa"
    fasta.write_text("".join(f">cds{i}\n{s}\n" for i, s in enumerate(cds)))
    assert cli_main([str(fasta), "-o", str(tmp_path / "x.npy"), "--model", str(TINY)]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), X, atol=1e-6)


@pytest.mark.slow
@torch.no_grad()
def test_full_size_mrna_fm(tmp_path, cds):
    """1280 hidden, 20 heads, 12 layers, random weights: hidden state 12 within 1e-4."""
    path = make_official_checkpoint(
        tmp_path / "mRNA-FM_full.pth", layers=12, embed_dim=1280, heads=20, ffn=5120,
        alphabet="codon", emb_layer_norm_before=False, seed=13,
    )  # fmt: skip
    seqs = [cds[0], cds[3]]  # 60 and 111 codons
    official = load_official(path, alphabet="codon")
    tokens, reps = _official_states(official, seqs, [12])
    del official
    ours = load_model(path)
    out = ours(tokens, layers=[12])[12]
    real = tokens.ne(1)
    assert (out - reps[12])[real].abs().max().item() <= 1e-4
