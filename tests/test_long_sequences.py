"""Sequences longer than 1022 nt: error, truncate, window (stitching) and streaming."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _official import load_official, official_tokens
from conftest import DATA, TINY_PTH
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold, cross_val_predict
from sklearn.pipeline import Pipeline

from rnafm_sklearn import RnaFmConfig, RnaFmEmbedder, get_alphabet
from rnafm_sklearn._inference import Plan, Runner
from rnafm_sklearn._windows import window_ownership, window_starts

TOL = 1e-5
MODEL = str(TINY_PTH)


def emb(**kw):
    return RnaFmEmbedder(model=MODEL, **{"progress": False, **kw})


def random_rna(n, seed):
    return "".join(np.random.default_rng(seed).choice(list("ACGU"), n))


# ---------------------------------------------------------------------- the arithmetic


@given(n=st.integers(1, 5000), window=st.integers(1, 1100), data=st.data())
def test_ownership_covers_every_position_once_from_its_best_window(n, window, data):
    stride = data.draw(st.integers(1, window))
    parts = window_ownership(n, window, stride)
    starts = [s for s, _, _ in parts]
    assert starts == window_starts(n, window, stride)
    assert starts[0] == 0 and min(n, starts[-1] + window) == n
    covered = np.concatenate([np.arange(a, b) for _, a, b in parts])
    np.testing.assert_array_equal(covered, np.arange(n))  # each position exactly once, in order
    for s, a, b in parts:
        assert s <= a <= b <= s + window  # taken from a window that contains it
    # no other window gives a position more context on its closer side
    for p in range(0, n, max(1, n // 50)):
        mine = next(s for s, a, b in parts if a <= p < b)
        best = max(min(p - s, s + window - 1 - p) for s in starts if s <= p < s + window)
        assert min(p - mine, mine + window - 1 - p) == best


class PositionStub(torch.nn.Module):
    """Stands in for the encoder: the state of a token is (its position in the piece, its id)."""

    def __init__(self, window):
        super().__init__()
        self.config = RnaFmConfig(
            num_layers=1, hidden_size=2, num_heads=1, ffn_size=2, max_positions=window + 2
        )
        self.padding_idx = 1
        self.num_layers = 1
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, layers):
        pos = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        h = torch.stack([pos, tokens], -1).float()
        return {k: h for k in layers}


@pytest.mark.parametrize(("n", "window", "stride"), [(95, 10, 5), (100, 10, 3), (31, 10, 10)])
def test_stitching_with_position_revealing_stub(n, window, stride, device):
    rna = get_alphabet("rna")
    seq = random_rna(n, n)
    body = rna.encode_body(seq)
    runner = Runner(PositionStub(window).to(device), batch_tokens=37)
    (states,) = runner.per_token([body], Plan(layers=(1,), window_stride=stride))
    assert states.shape == (n, 2)
    np.testing.assert_array_equal(states[:, 1], list(body))  # every token in its place
    for s, a, b in window_ownership(n, window, stride):
        np.testing.assert_array_equal(states[a:b, 0], np.arange(a, b) - s + 1)


@pytest.mark.parametrize(("n", "window", "stride"), [(95, 10, 5), (100, 10, 3), (31, 10, 10)])
def test_pooled_stitching_with_position_revealing_stub(n, window, stride, device):
    """pooled() stitches a long sequence by ownership on the device, then pools: mean and max
    over the positions each window owns, <cls> and <eos> averaged over the windows."""
    rna = get_alphabet("rna")
    bodies = [rna.encode_body(random_rna(n, n)), rna.encode_body(random_rna(7, n))]
    runner = Runner(PositionStub(window).to(device), batch_tokens=37)
    plan = Plan(layers=(1,), window_stride=stride, poolings=("mean", "max", "cls", "eos"))
    rows = runner.pooled(bodies, plan)
    assert rows.shape == (2, 4 * 2)
    for body, row in zip(bodies, rows, strict=True):
        parts = window_ownership(len(body), window, stride)
        # the state of a position: (its place in the window that owns it, its token id)
        place = np.concatenate([np.arange(a, b) - s + 1 for s, a, b in parts])
        ids = np.array(list(body))
        eos_place = np.mean([1 + min(window, len(body) - s) for s, _, _ in parts])
        expected = [place.mean(), ids.mean(), place.max(), ids.max()]
        expected += [0, rna.cls_idx, eos_place, rna.eos_idx]
        np.testing.assert_allclose(row, expected, rtol=1e-6, atol=0)


# ------------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def official():
    return load_official(TINY_PTH)


@torch.no_grad()
def test_windowed_states_equal_official_forward_on_each_window(official, device):
    model, alpha = official
    seq = random_rna(3000, 1)
    e = emb(long_sequences="window", layers=[0, 1, 2], device=device)
    out = e.transform_tokens([seq])[0]
    assert out.shape == (3000, 3 * 32)
    for s, a, b in window_ownership(3000, 1022, 511):
        tokens = official_tokens(alpha, [seq[s : s + 1022]])
        reps = model(tokens, repr_layers=[0, 1, 2])["representations"]
        ref = torch.cat([reps[k][0, 1 + a - s : 1 + b - s] for k in (0, 1, 2)], 1).numpy()
        np.testing.assert_allclose(out[a:b], ref, atol=TOL, rtol=0)


@torch.no_grad()
def test_windowed_pooling(official, device):
    model, alpha = official
    seq = random_rna(2500, 2)
    e = emb(
        long_sequences="window",
        pooling=["mean", "max", "cls", "eos"],
        window_stride=700,
        device=device,
    )
    pooled = e.transform([seq])[0].reshape(4, 32)
    states = e.transform_tokens([seq])[0]
    np.testing.assert_allclose(pooled[0], states.mean(0), atol=TOL)
    np.testing.assert_allclose(pooled[1], states.max(0), atol=TOL)
    cls, eos = [], []
    for s in window_starts(2500, 1022, 700):
        n = min(1022, 2500 - s)
        h = model(official_tokens(alpha, [seq[s : s + n]]), repr_layers=[2])["representations"][2]
        cls.append(h[0, 0])
        eos.append(h[0, 1 + n])
    np.testing.assert_allclose(pooled[2], torch.stack(cls).mean(0).numpy(), atol=TOL)
    np.testing.assert_allclose(pooled[3], torch.stack(eos).mean(0).numpy(), atol=TOL)


def test_short_sequences_bit_identical_under_every_policy(real_sequences, device):
    seqs = real_sequences + ["A" * 1022]
    ref = emb(long_sequences="error", device=device).transform(seqs)
    for policy in ("truncate", "window"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing truncated, nothing to warn about
            got = emb(long_sequences=policy, device=device).transform(seqs)
            np.testing.assert_array_equal(got, ref)
    tokens = emb(long_sequences="window", device=device).transform_tokens(seqs)
    for t, r in zip(tokens, emb(device=device).transform_tokens(seqs), strict=True):
        np.testing.assert_array_equal(t, r)


def test_short_rows_unchanged_next_to_long_ones(real_sequences, device):
    ref = emb(device=device).transform(real_sequences)
    e = emb(long_sequences="window", device=device)
    mixed = e.transform(real_sequences + [random_rna(4000, 3)])
    np.testing.assert_allclose(mixed[:-1], ref, atol=TOL, rtol=0)


def test_error_policy_message_lists_rows_before_any_compute(monkeypatch):
    from rnafm_sklearn import _inference

    def boom(*a, **k):
        raise AssertionError("computed before the length check")

    monkeypatch.setattr(_inference.Runner, "pooled", boom)
    s = pd.Series(["ACGU", "A" * 1500, "GG", "C" * 1023], index=["a", "b", "c", "d"])
    msg = (
        "2 sequence(s) exceed RNA-FM's limit of 1022 nt: row 1 (0-based; index 'b') (1500 nt), "
        "row 3 (0-based; index 'd') (1023 nt). Choose a policy: long_sequences='window' embeds "
        "overlapping windows and stitches them (every nucleotide kept), "
        "long_sequences='truncate' keeps the first 1022 (truncation_side='left' keeps the last)."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        emb().transform(s)


def test_error_policy_message_is_capped():
    with pytest.raises(ValueError, match=re.escape("row 9 (0-based) (1100 nt) and 2 more.")):
        emb().transform(["A" * 1100] * 12)


@torch.no_grad()
@pytest.mark.parametrize(
    ("side", "piece"), [("right", slice(None, 1022)), ("left", slice(-1022, None))]
)
def test_truncate_policy(official, side, piece, device):
    model, alpha = official
    seq = random_rna(1500, 4)
    e = emb(long_sequences="truncate", truncation_side=side, device=device)
    with pytest.warns(UserWarning) as record:
        X = e.transform([seq, "ACGU", seq[:1100]])
    assert len(record) == 1  # one summary warning per call
    first_last = "first" if side == "right" else "last"
    assert str(record[0].message) == (
        f"Truncated 2 of 3 sequence(s) longer than 1022 nt to their {first_last} 1022 nt "
        "(longest: 1500 nt). Use long_sequences='window' to keep every nucleotide."
    )
    kept = seq[piece]
    h = model(official_tokens(alpha, [kept]), repr_layers=[2])["representations"][2]
    np.testing.assert_allclose(X[0], h[0, 1:1023].mean(0).numpy(), atol=TOL, rtol=0)
    with pytest.warns(UserWarning):
        assert e.transform_tokens([seq])[0].shape == (1022, 32)


def test_very_long_sequence_streams(real_sequences, device):
    """30 000 nt on the tiny model: 58 windows, all positions returned, linear cost."""
    seq = random_rna(30_000, 5)
    e = emb(long_sequences="window", device=device)
    (states,) = e.transform_tokens([seq])
    assert states.shape == (30_000, 32) and np.isfinite(states).all()
    X = e.transform([seq])
    np.testing.assert_allclose(X[0], states.mean(0), atol=TOL)


def test_mrna233_window_regression_end_to_end(tmp_path):
    df = pd.read_csv(DATA / "mrna233-degradation" / "233x_sequences_degdata_081120.csv")
    df = df[df.k_deg_per_hour.notna() & (df.single_exp_fit_ok == 1)]
    assert (df.RNA_sequence.str.len() > 1022).sum() > 50  # the long-sequence path is exercised
    pipe = Pipeline(
        [
            # the cache embeds every sequence once instead of once per fold (5x less work)
            ("emb", emb(long_sequences="window", cache=tmp_path)),
            ("ridge", RidgeCV(alphas=np.logspace(-3, 3, 13))),
        ]
    )
    pred = cross_val_predict(
        pipe, df.RNA_sequence, df.k_deg_per_hour, cv=KFold(5, shuffle=True, random_state=0)
    )
    assert pred.shape == (len(df),) and np.isfinite(pred).all()
    rho = spearmanr(pred, df.k_deg_per_hour).statistic
    assert rho > 0.3  # 0.62 with the tiny random model: nucleotide composition carries signal


def test_progress_bar_counts_windows(capsys):
    emb(long_sequences="window", progress=True).transform([random_rna(3000, 6), "ACGU"])
    err = capsys.readouterr().err
    assert "RNA-FM" in err and "6/6" in err and "window" in err  # 5 windows + 1 short sequence
    emb(progress=True).transform(["ACGU", "GGCC", "UUAA"])
    err = capsys.readouterr().err
    assert "3/3" in err and "seq" in err
    emb(progress=False).transform(["ACGU"])
    assert capsys.readouterr().err == ""
