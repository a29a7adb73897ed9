"""Probability map -> pairs: greedy against the official rule, nested against brute force."""

import itertools
import time

import numpy as np
import pytest

from rnafm_sklearn._decoding import decode_greedy, decode_nested
from rnafm_sklearn._pairs import _max_nested

CANONICAL = ["AU", "UA", "GC", "CG", "GU", "UG"]


def official_postprocess(prob_map, seq, threshold=0.5, allow_nc=True):
    """Naive re-implementation of the official rule, for reference only.

    Read from ml4bio/RNA-FM, commit 348951516e0963d22bbb33b3c9fc18c89081d38e,
    redevelop/engine/predictor.py, ``postprocess``: zero the diagonal, threshold (strict), take
    the above-threshold entries of the FULL matrix (both triangles) by decreasing probability,
    skip |x - y| <= 1, skip non-canonical pairs unless allowed, skip (x, y) when row x or column
    y is already used (two separate sets), else keep it. Sorting here is stable so that ties
    are reproducible; the official np.argsort default is not.
    """
    prob_map = prob_map * (1 - np.eye(prob_map.shape[0]))
    xs, ys = np.nonzero(prob_map > threshold)
    probs = prob_map[xs, ys]
    used_x, used_y, kept = set(), set(), set()
    for k in np.argsort(-probs, kind="stable"):
        x, y = xs[k], ys[k]
        if abs(x - y) <= 1:
            continue
        if not allow_nc and seq[x] + seq[y] not in CANONICAL:
            continue
        if x in used_x or y in used_y:
            continue
        used_x.add(x)
        used_y.add(y)
        kept.add((int(min(x, y)), int(max(x, y))))
    return sorted(kept)


def random_map(rng, n, symmetric=True, distinct=True):
    p = rng.random((n, n)) if distinct else rng.integers(0, 4, (n, n)) / 4
    p = np.triu(p, 1)
    return p + p.T if symmetric else p


def random_seq(rng, n):
    return "".join(rng.choice(list("ACGUN"), n, p=[0.24, 0.24, 0.24, 0.24, 0.04]))


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.8, 0.95])
@pytest.mark.parametrize("canonical_only", [False, True])
def test_greedy_equals_the_official_rule(threshold, canonical_only):
    rng = np.random.default_rng(int(threshold * 100) + canonical_only)
    for _ in range(40):
        n = int(rng.integers(1, 60))
        p, seq = random_map(rng, n), random_seq(rng, n)
        got = decode_greedy(p, seq, threshold=threshold, canonical_only=canonical_only)
        want = official_postprocess(p, seq, threshold, allow_nc=not canonical_only)
        assert got.tolist() == [list(x) for x in want]


def test_greedy_matches_the_official_rule_on_the_real_bprna_length_scale():
    rng = np.random.default_rng(7)
    p, seq = random_map(rng, 300), random_seq(rng, 300)
    p = np.where(p > 0.97, p, p * 0.3)  # ~3 % candidates, like a trained head's map
    want = official_postprocess(p, seq, 0.5)
    got = decode_greedy(p, seq, threshold=0.5)
    assert len(want) > 20
    assert got.tolist() == [list(x) for x in want]


def test_greedy_keeps_crossing_pairs_and_skips_used_bases():
    p = np.zeros((8, 8))
    for (i, j), v in {(0, 5): 0.9, (1, 7): 0.6, (2, 6): 0.7, (0, 7): 0.8}.items():
        p[i, j] = p[j, i] = v
    assert decode_greedy(p, "A" * 8, threshold=0.5).tolist() == [[0, 5], [1, 7], [2, 6]]


def test_greedy_ties_go_by_i_then_j():
    p = np.zeros((10, 10))
    for i, j in [(3, 9), (0, 9), (0, 6), (2, 6)]:
        p[i, j] = p[j, i] = 0.7
    # sorted (i, j): (0, 6), (0, 9), (2, 6), (3, 9) -> (0, 6) then (3, 9)
    assert decode_greedy(p, "A" * 10, threshold=0.5).tolist() == [[0, 6], [3, 9]]
    p = np.zeros((8, 8))
    for i, j in [(0, 7), (2, 7), (0, 5)]:
        p[i, j] = p[j, i] = 0.7
    # (0, 5) before (0, 7): then (2, 7) is free; j descending would keep (0, 7) alone
    assert decode_greedy(p, "A" * 8, threshold=0.5).tolist() == [[0, 5], [2, 7]]


def test_threshold_is_strict_and_min_loop_length_counts_enclosed_bases():
    p = np.zeros((7, 7))
    p[0, 4] = p[4, 0] = 0.5
    p[1, 3] = p[3, 1] = 0.9
    p[2, 6] = p[6, 2] = 0.6
    seq = "GGGAACC"
    assert decode_greedy(p, seq, threshold=0.5).tolist() == [[1, 3], [2, 6]]
    assert decode_greedy(p, seq, threshold=0.49).tolist() == [[0, 4], [1, 3], [2, 6]]
    # (1, 3) encloses one base: allowed with min_loop_length=1, refused with 2
    assert decode_greedy(p, seq, threshold=0.4, min_loop_length=2).tolist() == [[0, 4], [2, 6]]
    assert decode_greedy(p, seq, threshold=0.4, min_loop_length=4).tolist() == []
    adjacent = np.array([[0, 0.9], [0.9, 0]])
    assert decode_greedy(adjacent, "GC", threshold=0.5, min_loop_length=0).tolist() == [[0, 1]]


def test_canonical_only_reads_t_as_u_and_ignores_case():
    p = np.zeros((5, 5))
    p[0, 4] = p[4, 0] = 0.9
    for seq, want in [("AAAAT", [[0, 4]]), ("aaaau", [[0, 4]]), ("AAAAA", []), ("NAAAU", [])]:
        assert decode_greedy(p, seq, threshold=0.5, canonical_only=True).tolist() == want
        assert decode_nested(p, seq, threshold=0.5, canonical_only=True).tolist() == want


@pytest.mark.parametrize("decode", [decode_greedy, decode_nested])
def test_one_and_two_nucleotides_give_no_pairs(decode):
    for n in (0, 1, 2):
        out = decode(np.ones((n, n)), "G" * n, threshold=0.5)
        assert out.shape == (0, 2) and out.dtype == np.int64


@pytest.mark.parametrize("decode", [decode_greedy, decode_nested])
def test_upper_triangular_maps_decode_like_their_symmetric_version(decode):
    rng = np.random.default_rng(3)
    p = random_map(rng, 30)
    seq = random_seq(rng, 30)
    assert np.array_equal(decode(np.triu(p), seq, threshold=0.6), decode(p, seq, threshold=0.6))


@pytest.mark.parametrize("decode", [decode_greedy, decode_nested])
def test_bad_maps_are_refused_with_the_reason(decode):
    with pytest.raises(ValueError, match=r"square \(L, L\) array, got shape \(3, 4\)"):
        decode(np.zeros((3, 4)), "AAA", threshold=0.5)
    with pytest.raises(ValueError, match="probs is 3 x 3 but the sequence has 4 bases"):
        decode(np.zeros((3, 3)), "AAAA", threshold=0.5)
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite value \\(nan\\) at row 1, column 2"):
        decode(bad, "AAA", threshold=0.5)
    asym = np.random.default_rng(0).random((4, 4))
    with pytest.raises(ValueError, match=r"symmetrise the map first"):
        decode(asym, "AAAA", threshold=0.5)
    with pytest.raises(ValueError, match="threshold must be finite"):
        decode(np.zeros((3, 3)), "AAA", threshold=float("nan"))
    with pytest.raises(ValueError, match="min_loop_length must be a non-negative integer"):
        decode(np.zeros((3, 3)), "AAA", threshold=0.5, min_loop_length=-1)
    with pytest.raises(ValueError, match="square numeric array"):
        decode([["a", "b"], ["c", "d"]], "AA", threshold=0.5)
    with pytest.raises(TypeError, match="sequence must be a str"):
        decode(np.zeros((3, 3)), None, threshold=0.5)


def nested_matchings(cands):
    """Every crossing-free subset of candidate pairs with each base at most once."""
    out = []
    for r in range(len(cands) + 1):
        for sub in itertools.combinations(cands, r):
            bases = [b for pair in sub for b in pair]
            if len(set(bases)) != len(bases):
                continue
            if any(a < c < b < d for (a, b), (c, d) in itertools.permutations(sub, 2)):
                continue
            out.append(sub)
    return out


@pytest.mark.parametrize("distinct", [True, False])
def test_nested_is_the_brute_force_optimum(distinct):
    rng = np.random.default_rng(11 + distinct)
    for trial in range(150):
        n = int(rng.integers(1, 11))
        p, seq = random_map(rng, n, distinct=distinct), random_seq(rng, n)
        threshold = float(rng.choice([0.0, 0.25, 0.5, 0.7]))
        mll = int(rng.integers(0, 4))
        cands = [(i, j) for i in range(n) for j in range(i + mll + 1, n) if p[i, j] > threshold]
        if len(cands) > 14:
            cands = cands[:0]  # keep the enumeration small; the empty set is a case too
            threshold = 2.0
        best = max(nested_matchings(cands), key=lambda s: sum(p[i, j] for i, j in s))
        best_score = sum(p[i, j] for i, j in best)
        got = decode_nested(p, seq, threshold=threshold, min_loop_length=mll)
        got_pairs = [tuple(x) for x in got.tolist()]
        assert set(got_pairs) <= set(cands)
        assert got_pairs in [sorted(s) for s in nested_matchings(got_pairs)]  # valid
        assert sum(p[i, j] for i, j in got_pairs) == pytest.approx(best_score, abs=1e-12)
        if distinct:
            assert got_pairs == sorted(best), trial


def test_nested_ties_leave_the_5prime_base_unpaired_first():
    p = np.zeros((8, 8))
    for i, j in [(0, 4), (1, 5), (3, 7)]:
        p[i, j] = p[j, i] = 0.6
    # every two of these cross, so {(0,4)}, {(1,5)} and {(3,7)} all score 0.6: leaving base 0,
    # then base 1 unpaired stays optimal, so (3, 7) is chosen
    assert decode_nested(p, "A" * 8, threshold=0.5).tolist() == [[3, 7]]
    assert decode_nested(p, "A" * 8, threshold=0.5).tolist() == [[3, 7]]


def test_nested_never_crosses_and_beats_greedy_on_sum():
    rng = np.random.default_rng(5)
    for _ in range(20):
        p, seq = random_map(rng, 80), random_seq(rng, 80)
        nested = decode_nested(p, seq, threshold=0.9)
        greedy = decode_greedy(p, seq, threshold=0.9)
        a, b = nested[:, 0], nested[:, 1]
        crossing = (a[:, None] < a[None]) & (a[None] < b[:, None]) & (b[:, None] < b[None])
        assert not crossing.any()
        assert len(np.unique(nested)) == 2 * len(nested)
        tier0 = greedy[_max_nested(greedy)]  # a crossing-free subset of the greedy pairs
        assert len(tier0) > 0
        assert p[a, b].sum() >= p[tier0[:, 0], tier0[:, 1]].sum() - 1e-12


def test_both_decoders_are_fast_at_the_cli_length():
    """L = 1022 with ~2 % candidates (a realistic map); generous bounds for a loaded machine."""
    rng = np.random.default_rng(0)
    n = 1022
    u = np.triu(rng.random((n, n)), 1)
    p = np.where(u > 0.98, 0.5 + 0.5 * u, 0.3 * u)
    p = p + p.T
    seq = random_seq(rng, n)
    for decode, bound in [(decode_greedy, 2.0), (decode_nested, 5.0)]:
        start = time.perf_counter()
        out = decode(p, seq, threshold=0.5)
        assert time.perf_counter() - start < bound, decode.__name__
        assert len(out) > 100
