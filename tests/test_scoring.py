"""Masked-LM scoring: the head vs the official model, every convention vs a brute-force
reference written here on the official ``fm`` forward pass, pass counts, estimators, errors."""

import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from _tolerance import assert_close
from conftest import FIXTURES, TINY_HF, TINY_PTH
from scipy.stats import spearmanr
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

import rnafm_sklearn._models as models
from rnafm_sklearn import (
    CheckpointError,
    RnaFmEmbedder,
    RnaFmLikelihood,
    RnaFmVariantScorer,
    convert_checkpoint,
    get_alphabet,
    load_model,
    score_variants,
)
from rnafm_sklearn._inference import Runner
from rnafm_sklearn._windows import window_ownership

TOL = 1e-4
MRNA_PTH = FIXTURES / "mRNA-FM_tiny.pth"
MRNA_HF = FIXTURES / "multimolecule-mrnafm-tiny"
METHODS = ["wt-marginal", "masked-marginal", "mutant-marginal", "pseudo-likelihood"]


def col(method):
    """The output column of a method: ``score_masked_marginal``."""
    return "score_" + method.replace("-", "_")


def random_rna(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGU"), n))


# ------------------------------------------------------------------ official reference


class Official:
    """The official model with explicit masking loops: the reference for every convention."""

    def __init__(self, path, alphabet="rna"):
        self.model, self.alpha = load_official(path, alphabet)
        self.k = 3 if alphabet == "codon" else 1
        vocab = get_alphabet(alphabet)
        self.cands = ["A", "C", "G", "U"] if self.k == 1 else [
            t for t in vocab.standard_tokens if set(t) <= set("ACGU")
        ]
        self.cols = [self.alpha.get_idx(t) for t in self.cands]

    @torch.no_grad()
    def log_probs(self, seq, masked=None):
        """(L, C) renormalised log-probabilities of ``seq``, position ``masked`` masked."""
        tokens = official_tokens(self.alpha, [seq])
        if masked is not None:
            tokens[0, 1 + masked] = self.alpha.mask_idx
        logits = self.model(tokens)["logits"][0, 1:-1][:, self.cols]
        return torch.log_softmax(logits.double(), -1).numpy()

    def col(self, token):
        return self.cands.index(token)

    def tokens(self, seq):
        return [seq[i : i + self.k] for i in range(0, len(seq), self.k)]

    def pll(self, seq):
        toks = self.tokens(seq)
        return sum(
            self.log_probs(seq, masked=i)[i, self.col(t)]
            for i, t in enumerate(toks)
            if t in self.cands
        )

    def score(self, method, wt, mt):
        """Brute force of one variant given as wild type and mutant sequence."""
        if method == "pseudo-likelihood":
            return self.pll(mt) - self.pll(wt)
        a, b = self.tokens(wt), self.tokens(mt)
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        total = 0.0
        for i in diff:
            if method == "wt-marginal":
                lp = self.log_probs(wt)
            elif method == "mutant-marginal":
                lp = self.log_probs(mt)
            else:
                lp = self.log_probs(wt, masked=i)
            total += lp[i, self.col(b[i])] - lp[i, self.col(a[i])]
        return total


@pytest.fixture(scope="module")
def official():
    return Official(TINY_PTH)


def mutate(seq, changes):
    s = list(seq)
    for pos, alt in changes:
        s[pos - 1] = alt
    return "".join(s)


# ----------------------------------------------------------------------- the head itself


def _non_null_columns(alpha):
    return [i for i, t in enumerate(alpha.all_toks) if not t.startswith("<null")]


@pytest.mark.parametrize("token_dropout", [False, True])
@pytest.mark.parametrize("alphabet", ["rna", "codon"])
def test_logits_match_official_with_and_without_masks(tmp_path, token_dropout, alphabet, device):
    path = make_official_checkpoint(
        tmp_path / ("RNA-FM_x.pth" if alphabet == "rna" else "mRNA-FM_x.pth"),
        alphabet=alphabet,
        token_dropout=token_dropout,
        emb_layer_norm_before=alphabet == "rna",
        seed=11,
    )
    model, alpha = load_official(path, alphabet)
    ours = load_model(path).to(device)
    seqs = [random_rna(90, 1), random_rna(30, 2), random_rna(3, 3)]
    tokens = official_tokens(alpha, seqs)
    masked = tokens.clone()
    masked[0, [3, 10, 11]] = alpha.mask_idx
    masked[1, 5] = alpha.mask_idx
    cols = _non_null_columns(alpha)
    for t in (tokens, masked):
        with torch.no_grad():
            ref, got = model(t)["logits"], ours.logits(t.to(device)).cpu()
        real = t.ne(alpha.padding_idx)
        assert (ref - got)[..., cols][real].abs().max() <= TOL
        assert got[~real].abs().max() == 0  # padding rows are zero


@pytest.mark.parametrize(("pth", "hf", "alphabet"), [(TINY_PTH, TINY_HF, "rna"), (MRNA_PTH, MRNA_HF, "codon")])
def test_multimolecule_head_equals_official(pth, hf, alphabet, device):
    model, alpha = load_official(pth, alphabet)
    ours = load_model(hf).to(device)
    tokens = official_tokens(alpha, [random_rna(60, 4), random_rna(33, 5)])
    tokens[0, 7] = alpha.mask_idx
    with torch.no_grad():
        ref, got = model(tokens)["logits"], ours.logits(tokens.to(device)).cpu()
    real = tokens.ne(alpha.padding_idx)
    assert (ref - got)[..., _non_null_columns(alpha)][real].abs().max() <= TOL


@torch.no_grad()
def test_head_mistakes_would_be_caught():
    """A missing LayerNorm or bias in the head moves the logits far above the tolerance."""
    ours = load_model(TINY_PTH)
    tokens = torch.tensor([get_alphabet("rna").encode(random_rna(50, 6))])
    good = ours.logits(tokens)
    head = ours.lm_head
    saved = head.layer_norm
    head.layer_norm = torch.nn.Identity()
    assert (ours.logits(tokens) - good).abs().max() > 100 * TOL
    head.layer_norm = saved
    bias = head.bias.detach().clone()
    head.bias.data.zero_()
    assert (ours.logits(tokens) - good).abs().max() > 100 * TOL
    head.bias.data.copy_(bias)
    assert torch.equal(ours.logits(tokens), good)  # the same computation again: exact


def _read_out_batch(encoder):
    """A padded batch: a masked 1022-nt window piece of an 1100-nt sequence (T = 1024) and
    two short masked sequences; and read-out pairs (masked rows, <cls>, <eos>, several rows
    of one sequence, out of order)."""
    alphabet = get_alphabet("rna")
    runner = Runner(encoder, batch_tokens=4096)
    long, short = alphabet.encode_body(random_rna(1100, 40)), alphabet.encode_body(random_rna(30, 41))
    window = next(p for p in runner._pieces([long], 300) if p.start > 0)  # a later window
    window.masked = window.keep[0] + 5
    pieces = [window, runner._pieces([short], 300)[0], runner._pieces([short[:3]], 300)[0]]
    pieces[0].seq, pieces[1].seq, pieces[2].seq = 0, 1, 2
    pieces[1].masked = 0
    ids = runner._ids(pieces, [long, short, short[:3]])
    assert ids.shape == (3, 1024) and ids.eq(alphabet.padding_idx).sum() > 0
    mask_pos = 1 + window.masked - window.start
    at = torch.tensor([[0, mask_pos], [1, 1], [2, 0], [2, 4], [0, 0], [0, 1023], [1, 31], [0, 7]])
    return ids, at


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("packed", [False, True])
def test_logits_at_read_out_rows_equal_the_full_logits(dtype, packed, device):
    """The last layer and the head run for the read-out rows only; same numbers as all rows."""
    encoder = load_model(TINY_PTH).to(device, dtype)
    if packed:
        encoder.pack_for_cpu()
    ids, at = _read_out_batch(encoder)
    with torch.inference_mode():
        full = encoder.logits(ids)
        got = encoder.logits(ids, at.to(device))
    want = full[at[:, 0], at[:, 1]]
    assert got.shape == (len(at), encoder.config.vocab_size) and got.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert (got.float() - want.float()).abs().max() <= tol
    # the rows differ from each other by far more than tol: a wrong row would fail
    assert (want[1:].float() - want[:1].float()).abs().amax(1).min() > 0.1
    assert encoder.logits(ids, at[:0].to(device)).shape == (0, encoder.config.vocab_size)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_attention_at_some_query_rows_equals_full_attention(dtype, device):
    """The read-out attention (either kernel) on O(1) random q/k/v, where a wrong key range,
    sequence or scale moves the output far beyond bf16 rounding."""
    from rnafm_sklearn._encoder_attention import _attention_at, _Layout, attention

    lengths = [40, 7, 1, 25]
    pad = torch.arange(40)[None, :] >= torch.tensor(lengths)[:, None]
    layout = _Layout(pad.to(device))
    qkv = torch.randn(layout.rows, 3 * 64, generator=torch.Generator().manual_seed(0))
    qkv = qkv.to(device, dtype)
    starts = [0, 40, 47, 48]
    picks = [(3, 24), (0, 0), (0, 39), (2, 0), (1, 3), (3, 0), (0, 17)]  # (sequence, token)
    rows = torch.tensor([starts[b] + t for b, t in picks], device=device)
    with torch.inference_mode():
        want = attention(qkv, layout, num_heads=4)[rows]
        got = _attention_at(qkv, layout, rows, [b for b, _ in picks], num_heads=4)
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    assert (got.float() - want.float()).abs().max() <= tol
    assert (want[1:].float() - want[:1].float()).abs().amax(1).min() > 0.2


def test_logits_at_rejects_rows_that_are_not_real_tokens():
    encoder = load_model(TINY_PTH)
    ids, _ = _read_out_batch(encoder)
    for at, where in (([[2, 10]], "at[0] = [2, 10]"), ([[0, 1], [3, 0]], "at[1] = [3, 0]"),
                      ([[0, -1]], "at[0] = [0, -1]"), ([[0, 1024]], "at[0] = [0, 1024]")):
        with pytest.raises(ValueError, match=re.escape(where) + r" is not a real token of the \(B, T\) = \(3, 1024\) batch \(out of range or <pad>\)"):
            encoder.logits(ids, torch.tensor(at))
    with pytest.raises(ValueError, match=re.escape("at must be a (K, 2) integer tensor of (batch row, position) pairs; got torch.float32 of shape (1, 2)")):
        encoder.logits(ids, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=re.escape("got torch.int64 of shape (2,)")):
        encoder.logits(ids, torch.tensor([0, 1]))


def test_native_folder_keeps_the_head(tmp_path):
    folder = convert_checkpoint(TINY_PTH, tmp_path / "native")
    tokens = torch.tensor([get_alphabet("rna").encode(random_rna(40, 7))])
    with torch.no_grad():  # exact: the same weights (bit for bit), the same computation
        assert torch.equal(load_model(folder).logits(tokens), load_model(TINY_PTH).logits(tokens))


@pytest.fixture
def headless(tmp_path):
    import argparse

    data = torch.load(TINY_PTH, weights_only=False)
    data["model"] = {k: v for k, v in data["model"].items() if ".lm_head." not in k}
    data["args"] = argparse.Namespace(**vars(data["args"]))
    path = tmp_path / "RNA-FM_headless.pth"
    torch.save(data, path)
    return path


def test_checkpoint_without_head_embeds_but_does_not_score(headless):
    seqs = [random_rna(40, 8), random_rna(20, 9)]
    np.testing.assert_array_equal(  # the same encoder weights, the same batches: exact
        RnaFmEmbedder(model=str(headless)).transform(seqs),
        RnaFmEmbedder(model=str(TINY_PTH)).transform(seqs),
    )
    assert load_model(headless).lm_head is None
    message = re.escape(f"The checkpoint {headless} has no masked-LM head (lm_head.* tensors)")
    with pytest.raises(ValueError, match=message + ".*official RNA-FM_pretrained.pth"):
        RnaFmLikelihood(model=str(headless)).fit_transform(seqs)
    with pytest.raises(ValueError, match=message):
        score_variants(seqs[:1], ["A1G" if seqs[0][0] == "A" else "WT"], model=str(headless))
    with pytest.raises(ValueError, match=message):
        RnaFmEmbedder(model=str(headless)).transform_logits(seqs)


def test_partial_head_is_a_checkpoint_error(tmp_path):
    import argparse

    data = torch.load(TINY_PTH, weights_only=False)
    data["model"] = {k: v for k, v in data["model"].items() if "lm_head.layer_norm" not in k}
    data["args"] = argparse.Namespace(**vars(data["args"]))
    torch.save(data, tmp_path / "RNA-FM_partial.pth")
    with pytest.raises(CheckpointError, match=r"missing key\(s\): lm_head.layer_norm.bias"):
        load_model(tmp_path / "RNA-FM_partial.pth")


def test_embedding_cache_is_shared_with_and_without_head(tmp_path, headless):
    seqs = [random_rna(40, 10)]
    RnaFmEmbedder(model=str(TINY_PTH), cache=tmp_path, progress=False).transform(seqs)
    enc_a, enc_b = load_model(TINY_PTH), load_model(headless)
    assert models.weights_fingerprint(enc_a) == models.weights_fingerprint(enc_b)
    assert models.weights_fingerprint(enc_a, head=True) != models.weights_fingerprint(enc_a)


# ------------------------------------------------------------------ per-position log-probs


def test_transform_logits_equals_official(official, device):
    seqs = [random_rna(40, 12), "ACGUNNAC", random_rna(40, 12)]
    emb = RnaFmEmbedder(model=str(TINY_PTH), progress=False, device=device)
    unmasked = emb.transform_logits(seqs)
    masked = emb.transform_logits(seqs, masked=True)
    for seq, u, m in zip(seqs, unmasked, masked, strict=True):
        assert u.shape == m.shape == (len(seq), 4)
        np.testing.assert_allclose(u, official.log_probs(seq), atol=TOL)
        ref = np.stack([official.log_probs(seq, masked=i)[i] for i in range(len(seq))])
        np.testing.assert_allclose(m, ref, atol=TOL)
        np.testing.assert_allclose(np.exp(m).sum(1), 1, atol=1e-5)  # renormalised over ACGU
    assert not np.shares_memory(unmasked[0], unmasked[2])


# ------------------------------------------------------------------------ every convention


def test_every_convention_equals_the_brute_force_reference(official, device):
    wt = random_rna(48, 13)
    variants = [
        [(1, "G" if wt[0] != "G" else "A")],  # first nucleotide
        [(48, "C" if wt[47] != "C" else "U")],  # last nucleotide
        [(5, "A" if wt[4] != "A" else "C"), (20, "U" if wt[19] != "U" else "G")],
        [(10, "G" if wt[9] != "G" else "C"), (11, "G" if wt[10] != "G" else "C"), (30, "A" if wt[29] != "A" else "U")],
    ]
    mutation_strings = [":".join(f"{wt[p - 1]}{p}{alt}" for p, alt in v) for v in variants]
    mutants = [mutate(wt, v) for v in variants]
    options = dict(model=str(TINY_PTH), method=METHODS, progress=False, device=device)
    by_strings = score_variants([wt] * len(variants), mutation_strings, **options)
    by_mutants = score_variants([wt] * len(variants), mutants=mutants, **options)
    for method in METHODS:
        ref = [official.score(method, wt, mt) for mt in mutants]
        np.testing.assert_allclose(by_strings[col(method)], ref, atol=TOL, err_msg=method)
        np.testing.assert_allclose(by_mutants[col(method)], ref, atol=TOL, err_msg=method)
    # the conventions really differ (a test that mixed them up would fail)
    assert np.abs(by_strings[col("wt-marginal")] - by_strings[col("masked-marginal")]).max() > 10 * TOL


def test_token_dropout_masked_scores_follow_the_official_ratio(tmp_path, device):
    path = make_official_checkpoint(tmp_path / "RNA-FM_td.pth", token_dropout=True, seed=14)
    official = Official(path)
    wt = random_rna(30, 15)
    mt = mutate(wt, [(7, "A" if wt[6] != "A" else "G")])
    got = score_variants(
        [wt], mutants=[mt], model=str(path), method=METHODS, progress=False, device=device
    )
    for method in METHODS:
        assert abs(got[col(method)].iloc[0] - official.score(method, wt, mt)) <= TOL, method


def test_windows_score_each_position_where_it_is_farthest_from_an_edge(official, device):
    n, window, stride = 1300, 1022, 300
    wt = random_rna(n, 16)
    positions = [1, 400, 700, 1000, n]
    mt = mutate(wt, [(p, "A" if wt[p - 1] != "A" else "C") for p in positions])
    got = score_variants(
        [wt], mutants=[mt], model=str(TINY_PTH), method=["wt-marginal", "masked-marginal"],
        long_sequences="window", window_stride=stride, progress=False, device=device,
    )
    ref = {"wt-marginal": 0.0, "masked-marginal": 0.0}
    for p in positions:
        i = p - 1
        start = next(s for s, a, b in window_ownership(n, window, stride) if a <= i < b)
        w_wt, w_mt = wt[start : start + window], mt[start : start + window]
        j = i - start
        for method, masked in (("wt-marginal", None), ("masked-marginal", j)):
            lp = official.log_probs(w_wt, masked=masked)
            ref[method] += lp[j, official.col(w_mt[j])] - lp[j, official.col(w_wt[j])]
    for method, value in ref.items():
        assert abs(got[col(method)].iloc[0] - value) <= TOL, method
    with pytest.raises(ValueError, match="exceed RNA-FM's limit of 1022 nt") as err:
        score_variants([wt], mutants=[mt], model=str(TINY_PTH), progress=False)
    assert "Use long_sequences='window'" in str(err.value) and "truncate" not in str(err.value)


def test_mrna_fm_scores_codon_changes(device):
    official = Official(MRNA_PTH, "codon")
    wt = "AUGGCUGAAAAACCCGGGUUUAAA"
    # G6A: GCU -> GCA (synonymous alanine), two changes in codon 4 merge into one codon change
    mutation = "U6A:A10G:A11C"
    mt = mutate(wt, [(6, "A"), (10, "G"), (11, "C")])
    got = score_variants(
        [wt], [mutation], model=str(MRNA_PTH), method=METHODS, progress=False, device=device
    )
    for method in METHODS:
        assert abs(got[col(method)].iloc[0] - official.score(method, wt, mt)) <= TOL, method
    with pytest.raises(ValueError, match="not a multiple of 3"):
        score_variants([wt + "A"], ["U6A"], model=str(MRNA_PTH), progress=False)


def test_likelihood_features_equal_the_reference(official, device):
    seqs = [random_rna(25, 17), "ACGNNUAGG-CU", random_rna(25, 17)]
    lik = RnaFmLikelihood(model=str(TINY_PTH), kind="both", progress=False, device=device)
    X = lik.fit_transform(seqs)
    assert list(lik.get_feature_names_out()) == ["pll", "pll_per_nt", "ll_unmasked", "ll_unmasked_per_nt"]
    for row, seq in zip(X, seqs, strict=True):
        scored = [i for i, c in enumerate(seq) if c in "ACGU"]  # N and '-' are skipped
        pll = official.pll(seq)
        lp = official.log_probs(seq)
        unmasked = sum(lp[i, official.col(seq[i])] for i in scored)
        np.testing.assert_allclose(row, [pll, pll / len(scored), unmasked, unmasked / len(scored)], atol=TOL)


@pytest.fixture(scope="module")
def small_window(tmp_path_factory):
    """A tiny official checkpoint with 64-token windows: many windows at a small cost."""
    path = make_official_checkpoint(
        tmp_path_factory.mktemp("w64") / "RNA-FM_w64.pth", max_positions=66, seed=4
    )
    return path, Official(path)


def test_likelihood_windows_match_the_reference(small_window, device):
    """Each position is scored, masked, in the one window that owns it: 150 nt over 64-token
    windows (stride 32, four windows) against the official model's masked passes."""
    path, official = small_window
    n, window, stride = 150, 64, 32
    seq = random_rna(n, 18)
    got = RnaFmLikelihood(
        model=str(path), long_sequences="window", progress=False, device=device
    ).fit_transform([seq])
    # windows start every 32 (the last one flush with the end); each position belongs to the
    # window it is farthest from an edge in: the overlaps split at their midpoints
    spans = [(0, 0, 48), (32, 48, 80), (64, 80, 107), (86, 107, 150)]  # (start, a, b)
    assert window_ownership(n, window, stride) == spans
    ref = 0.0
    for s, a, b in spans:
        w = seq[s : s + window]
        for i in range(a, b):
            ref += official.log_probs(w, masked=i - s)[i - s, official.col(seq[i])]
    assert abs(got[0, 0] - ref) <= 10 * TOL  # a sum of 150 terms


# -------------------------------------------------------------------------- pass counting


@pytest.fixture
def passes(monkeypatch):
    """Counts forward passes (rows) and batches that reach the model."""
    counts = {"rows": 0, "batches": 0}
    real = Runner._ids

    def spy(self, batch, token_lists):
        counts["rows"] += len(batch)
        counts["batches"] += 1
        return real(self, batch, token_lists)

    monkeypatch.setattr(Runner, "_ids", spy)
    return counts


def test_identical_masked_contexts_are_computed_once(passes):
    wt = random_rna(60, 19)
    rng = np.random.default_rng(0)
    positions = rng.choice(np.arange(1, 61), size=12, replace=False)
    strings = []
    for _ in range(200):
        p = int(rng.choice(positions))
        alt = rng.choice([c for c in "ACGU" if c != wt[p - 1]])
        strings.append(f"{wt[p - 1]}{p}{alt}")
    score_variants([wt] * 200, strings, model=str(TINY_PTH), progress=False)
    distinct = len({int(s[1:-1]) for s in strings})
    assert passes["rows"] == distinct <= 12  # 200 variants, one pass per distinct position


def test_pseudo_likelihood_is_one_masked_row_per_scorable_position_batched(passes):
    seq = random_rna(100, 20)[:50] + "NN" + random_rna(48, 21)
    RnaFmLikelihood(model=str(TINY_PTH), batch_tokens=1024, progress=False).fit_transform([seq, seq])
    assert passes["rows"] == 98  # 100 positions, 2 ambiguous skipped, the duplicate shared
    assert passes["batches"] == -(-98 // (1024 // 102))  # packed into token-budget batches


@pytest.mark.parametrize(
    ("dtype", "batch_tokens", "n_batches"),
    [("bfloat16", None, 5), ("bfloat16", 1024, 10), ("float32", None, 10)],
)
def test_bf16_masked_passes_on_the_cpu_use_a_larger_default_budget(passes, dtype, batch_tokens, n_batches):
    """100 masked copies of 102 tokens: 20 per batch of 2048 tokens, 10 per batch of 1024."""
    seq = random_rna(100, 23)
    RnaFmLikelihood(model=str(TINY_PTH), dtype=dtype, batch_tokens=batch_tokens, device="cpu", progress=False).fit_transform([seq])
    assert passes["rows"] == 100 and passes["batches"] == n_batches
    # the embedder's per-position masked log-probabilities follow the same rule
    passes["rows"] = passes["batches"] = 0
    emb = RnaFmEmbedder(model=str(TINY_PTH), dtype=dtype, batch_tokens=batch_tokens, device="cpu", progress=False)
    emb.transform_logits([seq], masked=True)
    assert passes["rows"] == 100 and passes["batches"] == n_batches


def test_all_single_mutants_cost_one_pass_per_position(passes):
    from rnafm_sklearn._mutations import all_single_mutants

    wt = random_rna(40, 22)
    strings = all_single_mutants(wt)
    out = score_variants([wt] * len(strings), strings, model=str(TINY_PTH), progress=False)
    assert len(out) == 3 * 40 and passes["rows"] == 40


# ------------------------------------------------------------------------ scikit-learn


def test_likelihood_in_pipelines_and_with_the_cache(tmp_path, passes):
    seqs = pd.Series([random_rna(30 + i, 30 + i) for i in range(12)], index=[f"s{i}" for i in range(12)])
    y = np.arange(12.0)
    lik = RnaFmLikelihood(model=str(TINY_PTH), cache=tmp_path, progress=False)
    first = lik.set_output(transform="pandas").fit_transform(seqs)
    assert list(first.columns) == ["pll", "pll_per_nt"] and list(first.index) == list(seqs.index)
    rows = passes["rows"]
    again = RnaFmLikelihood(model=str(TINY_PTH), cache=tmp_path, progress=False).fit_transform(seqs)
    assert passes["rows"] == rows  # every sequence from the cache
    np.testing.assert_array_equal(again, first.to_numpy())
    frame = pd.DataFrame({"sequence": seqs, "length": seqs.str.len()})
    ct = ColumnTransformer([("lik", RnaFmLikelihood(model=str(TINY_PTH), cache=tmp_path, progress=False), "sequence"), ("n", "passthrough", ["length"])])
    # cache hits: the stored bytes, exactly
    np.testing.assert_array_equal(ct.fit_transform(frame), np.column_stack([first, frame.length]))
    scores = cross_val_score(Pipeline([("lik", lik), ("ridge", RidgeCV())]), seqs, y, cv=3)
    np.testing.assert_array_equal(scores, cross_val_score(RidgeCV(), first.to_numpy(), y, cv=3))


def test_bf16_likelihood_tracks_float32():
    seqs = [random_rna(40 + 3 * i, 40 + i) for i in range(20)]
    fp32 = RnaFmLikelihood(model=str(TINY_PTH), progress=False).fit_transform(seqs)[:, 1]
    bf16 = RnaFmLikelihood(model=str(TINY_PTH), dtype="bfloat16", progress=False).fit_transform(seqs)[:, 1]
    assert spearmanr(fp32, bf16).statistic > 0.95
    assert np.abs(fp32 - bf16).max() < 0.05


def test_variant_scorer_as_features_next_to_others():
    wt = random_rna(30, 23)
    strings = [f"{wt[p]}{p + 1}{'A' if wt[p] != 'A' else 'G'}" for p in range(0, 30, 3)]
    X = pd.DataFrame({"sequence": wt, "mutations": strings, "dose": np.linspace(0, 1, 10)})
    scorer = RnaFmVariantScorer(model=str(TINY_PTH), method=["wt-marginal", "masked-marginal"], progress=False)
    ct = ColumnTransformer([("zs", scorer, ["sequence", "mutations"]), ("dose", "passthrough", ["dose"])])
    ct.set_output(transform="pandas")
    out = ct.fit_transform(X)
    assert list(out.columns) == ["zs__score_wt_marginal", "zs__score_masked_marginal", "dose__dose"]
    direct = score_variants(X.sequence, X.mutations, model=str(TINY_PTH), method="masked-marginal", progress=False)
    assert_close(out["zs__score_masked_marginal"], direct["score_masked_marginal"])  # batched with wt-marginal


def test_score_variants_keeps_the_index_and_names_columns():
    wt = random_rna(20, 24)
    s = pd.Series([wt, wt], index=["v1", "v2"])
    m = pd.Series([f"{wt[0]}1{'A' if wt[0] != 'A' else 'C'}", "WT"], index=["v1", "v2"])
    single = score_variants(s, m, model=str(TINY_PTH), progress=False)
    assert list(single.index) == ["v1", "v2"] and list(single.columns) == ["score_masked_marginal"]
    assert single["score_masked_marginal"].iloc[1] == 0.0
    both = score_variants(s, m, model=str(TINY_PTH), method=["wt-marginal", "pseudo-likelihood"], progress=False)
    assert list(both.columns) == ["score_wt_marginal", "score_pseudo_likelihood"]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ("G1A", "Mutation at row 1 (0-based; index 'b'): 'G1A' does not match the wild type: position 1 is 'A' in the wild type, not 'G'"),
        ("A99G", "Mutation at row 1 (0-based; index 'b')"),
        ("A1", "Mutation at row 1 (0-based; index 'b')"),
        ("A1X", "Mutation at row 1 (0-based; index 'b')"),
    ],
)
def test_bad_mutations_name_the_row(mutation, message):
    s = pd.Series(["ACGUACGU", "ACGUACGU"], index=["a", "b"])
    m = pd.Series(["WT", mutation], index=["a", "b"])
    with pytest.raises(ValueError, match=re.escape(message)):
        score_variants(s, m, model=str(TINY_PTH), progress=False)


def test_mutant_of_another_length_explains_which_method_can_score_it():
    with pytest.raises(ValueError, match=r"Mutant at row 0 \(0-based\).*pseudo-likelihood"):
        score_variants(["ACGUACGU"], mutants=["ACGUACG"], model=str(TINY_PTH), method="wt-marginal", progress=False)
    # the pseudo-likelihood compares sequences of any length
    out = score_variants(["ACGUACGU"], mutants=["ACGUACG"], model=str(TINY_PTH), method="pseudo-likelihood", progress=False)
    pll = RnaFmLikelihood(model=str(TINY_PTH), progress=False).fit_transform(["ACGUACG", "ACGUACGU"])
    assert_close(out["score_pseudo_likelihood"], [pll[0, 0] - pll[1, 0]])  # PLL(mutant) - PLL(wild type)


def test_empty_input_gives_empty_output():
    assert RnaFmLikelihood(model=str(TINY_PTH), kind="both").fit_transform([]).shape == (0, 4)
    assert score_variants([], [], model=str(TINY_PTH), progress=False).shape == (0, 1)


def test_parameter_and_shape_errors():
    with pytest.raises(ValueError, match=re.escape("The 'method' parameter of RnaFmVariantScorer must be a str among")):
        score_variants(["ACGU"], ["A1G"], model=str(TINY_PTH), method="esm")
    with pytest.raises(ValueError, match="2 wild-type sequences but 1 mutation strings"):
        score_variants(["ACGU", "ACGU"], ["A1G"], model=str(TINY_PTH))
    with pytest.raises(TypeError, match="exactly one of mutations= and mutants="):
        score_variants(["ACGU"], model=str(TINY_PTH))
    with pytest.raises(ValueError, match=re.escape("The 'long_sequences' parameter of RnaFmVariantScorer must be a str among {'error', 'window'}")):
        score_variants(["ACGU"], ["A1G"], model=str(TINY_PTH), long_sequences="truncate")
    with pytest.raises(ValueError, match=re.escape("The 'kind' parameter of RnaFmLikelihood must be a str among")):
        RnaFmLikelihood(model=str(TINY_PTH), kind="pll").fit(["ACGU"])
    with pytest.raises(ValueError, match=re.escape("Sequence at row 1 (0-based) has no position holding A, C, G or U")):
        RnaFmLikelihood(model=str(TINY_PTH)).fit_transform(["ACGU", "NNN"])


def test_pseudo_likelihood_runs_in_bounded_chunks(monkeypatch):
    """The masked sites of all sequences are never planned at once (memory grows per chunk)."""
    from rnafm_sklearn import _likelihood
    from rnafm_sklearn._lm import LogProbs

    seqs = [random_rna(12 + i, 50 + i) for i in range(7)]
    whole = RnaFmLikelihood(model=str(TINY_PTH), progress=False).fit_transform(seqs)
    sizes = []
    real = LogProbs.pseudo_log_likelihood

    def spy(self, token_lists):
        sizes.append(len(token_lists))
        return real(self, token_lists)

    monkeypatch.setattr(LogProbs, "pseudo_log_likelihood", spy)
    monkeypatch.setattr(_likelihood, "_CHUNK", 3)
    chunked = RnaFmLikelihood(model=str(TINY_PTH), progress=False).fit_transform(seqs)
    assert sizes == [3, 3, 1]
    assert_close(chunked, whole)  # other batches


def test_logits_at_with_all_row_attention_as_on_a_gpu(monkeypatch):
    """Off the CPU the read-out layer runs attention for all rows and picks the read-out
    ones (one batched kernel instead of a launch per sequence): same logits."""
    import rnafm_sklearn._encoder_layers as enc

    encoder = load_model(TINY_PTH)
    ids, at = _read_out_batch(encoder)
    with torch.inference_mode():
        per_sequence = encoder.logits(ids, at)
        monkeypatch.setattr(enc, "_queries_per_sequence", lambda qkv: False)
        calls = []
        real = enc._attention_at
        monkeypatch.setattr(enc, "_attention_at", lambda *a: calls.append(1) or real(*a))
        all_rows = encoder.logits(ids, at)
    assert not calls  # the per-sequence path was not taken
    assert (all_rows - per_sequence).abs().max() <= 1e-6


# ------------------------------------------------------- issue 23: contract and errors


def test_every_bad_mutation_is_reported_in_one_error():
    wt = "ACGUACGU"
    strings = ["WT"] * 5 + ["G1A"] * 25  # rows 5..29 do not match the wild type
    with pytest.raises(ValueError, match=r"^25 of 30 mutations cannot be scored:") as err:
        score_variants([wt] * 30, strings, model=str(TINY_PTH), progress=False)
    message = str(err.value)
    assert "Mutation at row 5 (0-based): 'G1A' does not match the wild type" in message
    assert "Mutation at row 24 (0-based)" in message  # the 20th bad row is listed
    assert "row 25 (0-based)" not in message and message.endswith("... and 5 more")
    # different faults in one call, each named
    with pytest.raises(ValueError, match=r"2 of 3 mutations") as err:
        score_variants([wt] * 3, ["A9G", "WT", "A1"], model=str(TINY_PTH), progress=False)
    assert "row 0 (0-based): 'A9G' is at position 9, outside" in str(err.value)
    assert "row 2 (0-based): 'A1' is not a substitution" in str(err.value)


def test_a_mutant_with_many_substitutions_warns_once_naming_the_rows():
    wt = random_rna(60, 40)
    shifted = wt[1:] + "A"  # a deletion written as a same-length sequence
    one = mutate(wt, [(3, "A" if wt[2] != "A" else "C")])
    with pytest.warns(UserWarning) as record:
        score_variants([wt] * 3, mutants=[one, shifted, shifted], model=str(TINY_PTH), progress=False)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("2 mutant(s) differ from their wild type in more than 10 positions")
    assert "row 1 (0-based), row 2 (0-based)." in message and "row 0" not in message
    assert "An insertion or deletion? use method='pseudo-likelihood'" in message
    # over 20 % of a short sequence's positions also warns; 2 of 40 does not
    with pytest.warns(UserWarning, match=r"1 mutant\(s\).*row 0 \(0-based\)"):
        score_variants(["ACGUACGUAC"], mutants=["CAUUACGUAC"], model=str(TINY_PTH), progress=False)
    wt40 = random_rna(40, 41)
    two = mutate(wt40, [(1, "A" if wt40[0] != "A" else "C"), (9, "A" if wt40[8] != "A" else "C")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        score_variants([wt40], mutants=[two], model=str(TINY_PTH), progress=False)


def test_pandas_sequences_and_mutants_are_paired_by_label():
    a, b = random_rna(20, 42), random_rna(20, 43)
    ma = mutate(a, [(2, "A" if a[1] != "A" else "C")])
    mb = mutate(b, [(5, "A" if b[4] != "A" else "C")])
    seqs = pd.Series([a, b], index=pd.Index(["a", "b"], name="variant"))
    aligned = score_variants(seqs, mutants=pd.Series([ma, mb], index=["a", "b"]), model=str(TINY_PTH), progress=False)
    swapped = score_variants(seqs, mutants=pd.Series([mb, ma], index=["b", "a"]), model=str(TINY_PTH), progress=False)
    assert aligned.index.name == "variant" and list(swapped.index) == ["a", "b"]
    assert aligned["score_masked_marginal"].abs().min() > 1e-4  # not trivially equal
    np.testing.assert_allclose(swapped.to_numpy(), aligned.to_numpy(), rtol=1e-5)
    ref_a = score_variants([a], mutants=[ma], model=str(TINY_PTH), progress=False)
    np.testing.assert_allclose(swapped["score_masked_marginal"].iloc[0], ref_a.iloc[0, 0], rtol=1e-5)
    strings = pd.Series([f"{b[4]}5{mb[4]}", f"{a[1]}2{ma[1]}"], index=["b", "a"])
    by_strings = score_variants(seqs, strings, model=str(TINY_PTH), progress=False)
    np.testing.assert_allclose(by_strings.to_numpy(), aligned.to_numpy(), rtol=1e-5)
    with pytest.raises(ValueError, match=re.escape("their labels differ (e.g. ['a'] in sequences only")):
        score_variants(seqs, mutants=pd.Series([ma, mb], index=["x", "b"]), model=str(TINY_PTH), progress=False)
    # a list is paired by position
    listed = score_variants(seqs, mutants=[ma, mb], model=str(TINY_PTH), progress=False)
    np.testing.assert_allclose(listed.to_numpy(), aligned.to_numpy(), rtol=1e-5)


@pytest.mark.parametrize("mutant", ["ACGUNNNN", "ACGU-CGU", "ACGUACGUN", "ACGN"])
def test_pseudo_likelihood_needs_corresponding_scored_positions(mutant):
    wt = "ACGUACGU"
    with pytest.raises(ValueError, match=r"Mutant at row 1 \(0-based\): .*Scored positions must correspond"):
        score_variants([wt, wt], mutants=[wt, mutant], method="pseudo-likelihood", model=str(TINY_PTH), progress=False)


def test_pseudo_likelihood_accepts_matching_ambiguity_codes_and_deletions():
    wt = "ACGUNCGUAC"
    out = score_variants([wt, wt], mutants=["ACGUNCGU", "AGGUNCGUAC"], method="pseudo-likelihood", model=str(TINY_PTH), progress=False)
    assert out.shape == (2, 1) and np.isfinite(out.to_numpy()).all()
    with pytest.raises(ValueError, match=r"nt 5 \(1-based\) holds 'A' in the mutant but 'N' in the wild type"):
        score_variants([wt], mutants=["ACGUACGUAC"], method="pseudo-likelihood", model=str(TINY_PTH), progress=False)


def test_empty_input_with_the_pseudo_likelihood():
    for kwargs in ({"mutants": []}, {"mutations": []}):
        out = score_variants([], method=["pseudo-likelihood", "wt-marginal"], model=str(TINY_PTH), progress=False, **kwargs)
        assert out.shape == (0, 2) and list(out.columns) == ["score_pseudo_likelihood", "score_wt_marginal"]


def test_variant_scorer_missing_column_names_what_exists():
    X = pd.DataFrame({"sequence": ["ACGU"], "mut": ["A1G"]})
    message = "Column 'mutations' not found in X; available columns: ['sequence', 'mut']. Set mutation_column= to one of them."
    with pytest.raises(ValueError, match=re.escape(message)):
        RnaFmVariantScorer(model=str(TINY_PTH), progress=False).fit_transform(X)
    with pytest.raises(ValueError, match=re.escape("Column 'wt' not found in X; available columns: ['sequence', 'mut']. Set sequence_column=")):
        RnaFmVariantScorer(model=str(TINY_PTH), sequence_column="wt", mutation_column="mut").fit_transform(X)


def test_masked_marginal_keeps_only_the_rows_it_reads():
    """2 000-nt wild type, 3 000 variants at 20 positions: NumPy's peak stays far below one
    (L, 4) float32 matrix per variant (3 000 x 2 000 x 4 x 4 bytes = 96 MB)."""
    wt = random_rna(2000, 44)
    rng = np.random.default_rng(45)
    positions = rng.choice(np.arange(1, 2001), size=20, replace=False)
    strings = []
    for k in range(3000):
        p = int(positions[k % 20])
        strings.append(f"{wt[p - 1]}{p}{[c for c in 'ACGU' if c != wt[p - 1]][k % 3]}")
    options = dict(model=str(TINY_PTH), long_sequences="window", progress=False)
    score_variants([wt], [strings[0]], **options)  # load the model outside the measurement
    tracemalloc.start()
    try:
        out = score_variants([wt] * 3000, strings, **options)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24e6, peak
    # the same numbers as the variants one position at a time
    few = score_variants([wt] * 6, strings[:6], **options)
    np.testing.assert_allclose(out.iloc[:6].to_numpy(), few.to_numpy(), rtol=1e-5, atol=1e-6)
