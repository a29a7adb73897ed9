"""RnaFmEmbedder: numbers (vs the official forward), scikit-learn behaviour, input handling."""

import pickle
import re

import numpy as np
import pandas as pd
import pytest
import torch
from _official import load_official, official_tokens
from _tolerance import assert_close
from conftest import TINY_HF, TINY_PTH, rfam
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks as checks

import rnafm_sklearn._models as models
from rnafm_sklearn import InvalidParameterError, RnaFmEmbedder

TOL = 1e-5
MODEL = str(TINY_PTH)


def emb(**kw):
    return RnaFmEmbedder(model=MODEL, progress=False, **kw)


@pytest.fixture(scope="module")
def official():
    return load_official(TINY_PTH)


@torch.no_grad()
def _official_pooled(official, seqs, layer, pooling):
    model, alpha = official
    tokens = official_tokens(alpha, seqs)
    h = model(tokens, repr_layers=[layer])["representations"][layer]
    rows = []
    for i, s in enumerate(seqs):
        n = len(s)
        rows.append(
            {
                "mean": h[i, 1 : 1 + n].mean(0),  # the official CLI's "mean"
                "max": h[i, 1 : 1 + n].max(0).values,
                "cls": h[i, 0],  # the CLI's "bos"
                "eos": h[i, 1 + n],
            }[pooling]
        )
    return torch.stack(rows).numpy()


@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "eos"])
@pytest.mark.parametrize("layer", [0, 1, 2, -1])
def test_pooled_features_match_official(official, real_sequences, pooling, layer, device):
    ours = emb(pooling=pooling, layers=layer, device=device).fit_transform(real_sequences)
    ref = _official_pooled(official, real_sequences, layer % 3, pooling)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=TOL, rtol=0)


def test_multi_layer_concat_and_mean(official, real_sequences, device):
    seqs = real_sequences[:10]
    concat = emb(layers=[0, 2], pooling="mean+max", device=device).fit_transform(seqs)
    parts = [
        _official_pooled(official, seqs, layer, p) for layer in (0, 2) for p in ("mean", "max")
    ]
    np.testing.assert_allclose(concat, np.hstack(parts), atol=TOL, rtol=0)

    averaged = emb(layers=[1, 2], layer_aggregation="mean", device=device).fit_transform(seqs)
    model, alpha = official
    with torch.no_grad():
        reps = model(official_tokens(alpha, seqs), repr_layers=[1, 2])["representations"]
    h = (reps[1] + reps[2]) / 2
    ref = np.stack([h[i, 1 : 1 + len(s)].mean(0).numpy() for i, s in enumerate(seqs)])
    np.testing.assert_allclose(averaged, ref, atol=TOL, rtol=0)


def test_only_pooled_vectors_cross_to_the_host(monkeypatch, real_sequences, device):
    """transform() pools on the encoder's device: the host receives the pooled rows only.

    Counts the floats that reach the CPU through ``.cpu()`` or ``.to("cpu")``: hidden states
    of a batch (layers x sequences x tokens x hidden) would be far more than the output.
    """
    long = "".join(np.random.default_rng(0).choice(list("ACGU"), 2500))  # 4 windows
    seqs = real_sequences[:6] + [long]
    e = emb(long_sequences="window", layers=[0, 2], pooling="mean+max", device=device)
    e.transform(seqs[:1])  # load the weights before counting
    moved = []
    real_cpu, real_to = torch.Tensor.cpu, torch.Tensor.to

    def to_host(dest):
        return str(dest) == "cpu"

    def spy_cpu(self, *args, **kwargs):
        if self.is_floating_point():
            moved.append(self.numel())
        return real_cpu(self, *args, **kwargs)

    def spy_to(self, *args, **kwargs):
        dests = [*args, kwargs.get("device")]
        if self.is_floating_point() and any(to_host(d) for d in dests):
            moved.append(self.numel())
        return real_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", spy_cpu)
    monkeypatch.setattr(torch.Tensor, "to", spy_to)
    X = e.transform(seqs)
    assert X.shape == (7, 2 * 2 * 32)
    assert 0 < sum(moved) == X.size


def test_lowercase_and_dna_input_equal_rna(real_sequences):
    seqs = real_sequences[:5]
    dna = [s.lower().replace("u", "t") for s in seqs]
    e = emb()
    np.testing.assert_array_equal(e.transform(dna), e.transform(seqs))  # same tokens, same batches


def test_hf_checkpoint_gives_same_features(real_sequences, device):
    a = emb(device=device).fit_transform(real_sequences)
    b = RnaFmEmbedder(model=str(TINY_HF), progress=False, device=device).fit_transform(
        real_sequences
    )
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


# ------------------------------------------------------------------ scikit-learn checks

DATA_INDEPENDENT_CHECKS = [
    checks.check_no_attributes_set_in_init,
    checks.check_get_params_invariance,
    checks.check_set_params,
    checks.check_parameters_default_constructible,
    checks.check_estimator_repr,
    checks.check_mixin_order,
    checks.check_do_not_raise_errors_in_init_or_set_params,
    checks.check_valid_tag_types,
    checks.check_estimator_cloneable,
]


@pytest.mark.parametrize("check", DATA_INDEPENDENT_CHECKS, ids=lambda c: c.__name__)
def test_sklearn_data_independent_checks(check):
    check("RnaFmEmbedder", RnaFmEmbedder())


def test_tags():
    tags = RnaFmEmbedder().__sklearn_tags__()
    assert tags.input_tags.string and not tags.input_tags.two_d_array
    assert tags.requires_fit is False
    # stateless: usable without fit, like HashingVectorizer
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(RnaFmEmbedder())


def test_sample_order_invariance(real_sequences, device):
    e = emb(device=device)
    X = e.transform(real_sequences)
    perm = np.random.default_rng(0).permutation(len(real_sequences))
    assert_close(e.transform([real_sequences[i] for i in perm]), X[perm])


def test_subset_invariance(real_sequences, device):
    e = emb(device=device)
    X = e.transform(real_sequences)
    assert_close(e.transform(real_sequences[3:9]), X[3:9])


@pytest.mark.parametrize("budget", [1, 300, 100_000])
def test_batch_size_invariance(real_sequences, budget, device):
    ref = emb(batch_tokens=4096, device=device).transform(real_sequences)
    got = emb(batch_tokens=budget, device=device).transform(real_sequences)
    assert_close(got, ref)


def test_fit_returns_self_and_fit_transform_equals_transform(real_sequences):
    e = emb()
    assert e.fit(real_sequences) is e
    np.testing.assert_array_equal(e.fit_transform(real_sequences), e.transform(real_sequences))


def test_clone_and_pickle_roundtrip(real_sequences):
    e = emb(pooling=["cls", "mean"], layers=[0, -1]).fit(real_sequences)
    X = e.transform(real_sequences)
    # exact: the same rows in the same batches, in the same process
    np.testing.assert_array_equal(clone(e).transform(real_sequences), X)
    blob = pickle.dumps(e)
    assert len(blob) < 5_000  # parameters only, never the weights
    models.clear_model_cache()
    np.testing.assert_array_equal(pickle.loads(blob).transform(real_sequences), X)


def test_clones_share_the_loaded_model(real_sequences):
    models.clear_model_cache()
    before = models.LOAD_COUNT
    e = emb()
    e.fit(real_sequences[:3])
    for _ in range(3):
        clone(e).fit_transform(real_sequences[:3])
    GridSearchCV(
        Pipeline([("emb", emb()), ("clf", LogisticRegression())]),
        {"emb__pooling": ["mean", "cls"], "emb__layers": [1, 2]},
        cv=2,
    ).fit(real_sequences[:12], [0, 1] * 6)
    assert models.LOAD_COUNT - before == 1


def test_identical_sequences_are_embedded_once(monkeypatch, real_sequences):
    seen = []
    from rnafm_sklearn import _inference

    real_pooled = _inference.Runner.pooled

    def spy(self, tokens, plan):
        seen.append(len(tokens))
        return real_pooled(self, tokens, plan)

    monkeypatch.setattr(_inference.Runner, "pooled", spy)
    seqs = real_sequences[:4] * 3 + [real_sequences[0].lower()]
    X = emb().transform(seqs)
    assert seen == [4]
    np.testing.assert_array_equal(X[0], X[4])  # one computed row, copied
    np.testing.assert_array_equal(X[0], X[-1])


def test_feature_names():
    e = emb(layers=[0, -1], pooling="mean+max")
    names = e.get_feature_names_out()
    assert len(names) == 2 * 2 * 32
    assert names[0] == "rnafm_l0_mean_0" and names[32] == "rnafm_l0_max_0"
    assert names[-1] == "rnafm_l2_max_31"
    avg = emb(layers=[1, 2], layer_aggregation="mean").get_feature_names_out()
    assert avg[0] == "rnafm_l1+2avg_mean_0" and len(avg) == 32


def test_feature_names_and_parameter_errors_need_no_weights(tmp_path):
    models.clear_model_cache()
    before = models.LOAD_COUNT
    assert emb(layers=[0, 1]).get_feature_names_out()[-1] == "rnafm_l1_mean_31"
    with pytest.raises(InvalidParameterError, match="'layers' parameter"):
        emb(layers=5).get_feature_names_out()
    assert models.LOAD_COUNT == before  # read from the checkpoint's metadata only
    # the named model's architecture is known without its 1.2 GB file
    names = RnaFmEmbedder(model="rna-fm").get_feature_names_out()
    assert len(names) == 640 and names[0] == "rnafm_l12_mean_0"
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.pth"))


def test_n_features_in_is_not_defined_for_string_input(real_sequences):
    e = emb().fit(real_sequences)
    assert not hasattr(e, "n_features_in_")


def test_transform_tokens(official, real_sequences, device):
    seqs = real_sequences[:6]
    out = emb(layers=[0, 2], device=device).transform_tokens(seqs)
    model, alpha = official
    with torch.no_grad():
        reps = model(official_tokens(alpha, seqs), repr_layers=[0, 2])["representations"]
    for i, s in enumerate(seqs):
        assert out[i].shape == (len(s), 64)
        ref = torch.cat([reps[0][i, 1 : 1 + len(s)], reps[2][i, 1 : 1 + len(s)]], 1).numpy()
        np.testing.assert_allclose(out[i], ref, atol=TOL, rtol=0)


def test_empty_input():
    X = emb().transform([])
    assert X.shape == (0, 32) and X.dtype == np.float32


# -------------------------------------------------------------------- DataFrames, pandas


def test_series_dataframe_and_column(real_sequences):
    s = pd.Series(real_sequences[:5], index=[f"r{i}" for i in range(5)], name="seq")
    ref = emb().transform(real_sequences[:5])  # exact below: the same rows, the same batches
    np.testing.assert_array_equal(emb().transform(s), ref)
    np.testing.assert_array_equal(emb().transform(s.to_frame()), ref)
    df = pd.DataFrame({"x": range(5), "seq": s})
    np.testing.assert_array_equal(emb(column="seq").transform(df), ref)
    np.testing.assert_array_equal(emb().transform(np.array(real_sequences[:5])[:, None]), ref)


def test_set_output_pandas_keeps_index(real_sequences):
    s = pd.Series(real_sequences[:4], index=["a", "b", "c", "d"])
    out = emb().set_output(transform="pandas").fit_transform(s)
    assert isinstance(out, pd.DataFrame)
    assert list(out.index) == ["a", "b", "c", "d"]
    assert list(out.columns[:2]) == ["rnafm_l2_mean_0", "rnafm_l2_mean_1"]


# ------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def rfam_small():
    df = rfam().groupby("family").head(20).reset_index()
    return df


def test_pipeline_cross_val_score_n_jobs(rfam_small):
    pipe = Pipeline([("emb", emb()), ("clf", LogisticRegression(max_iter=2000))])
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    s1 = cross_val_score(pipe, rfam_small.sequence, rfam_small.family, cv=cv, n_jobs=1)
    s2 = cross_val_score(pipe, rfam_small.sequence, rfam_small.family, cv=cv, n_jobs=2)
    np.testing.assert_array_equal(s1, s2)  # accuracies: discrete, robust to rounding
    assert s1.mean() > 0.6  # three well-separated families; even random weights see length


def test_grid_search_over_pooling_and_layers(rfam_small, tmp_path):
    # with the cache, as the README recommends: each setting embeds each sequence once
    pipe = Pipeline([("emb", emb(cache=tmp_path)), ("clf", LogisticRegression(max_iter=2000))])
    grid = GridSearchCV(
        pipe, {"emb__pooling": ["mean", "cls", "mean+max"], "emb__layers": [0, -1, [1, 2]]}, cv=3
    )
    grid.fit(rfam_small.sequence, rfam_small.family)
    assert len(grid.cv_results_["params"]) == 9
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()


def test_column_transformer_with_numeric_columns(rfam_small):
    df = rfam_small.assign(length=rfam_small.sequence.str.len(), gc=0.5)
    ct = ColumnTransformer(
        [("rna", emb(pooling="mean"), "sequence"), ("num", StandardScaler(), ["length", "gc"])]
    )
    ct.set_output(transform="pandas")
    out = ct.fit_transform(df)
    assert out.shape == (len(df), 32 + 2)
    assert list(out.index) == list(df.index)
    assert out.columns[0] == "rna__rnafm_l2_mean_0" and out.columns[-1] == "num__gc"
    pipe = Pipeline([("ct", ct), ("clf", LogisticRegression(max_iter=2000))])
    assert cross_val_score(pipe, df, df.family, cv=3).mean() > 0.6


# ------------------------------------------------------------------------- bad input


def test_bare_string_is_rejected():
    with pytest.raises(TypeError, match=re.escape("got a single string. Wrap it in a list")):
        emb().transform("ACGU")


@pytest.mark.parametrize(
    ("bad", "exc", "msg"),
    [
        (["ACGU", None], ValueError, "Sequence at row 1 (0-based) is missing (None)"),
        (["ACGU", float("nan")], ValueError, "Sequence at row 1 (0-based) is missing (nan)"),
        (["ACGU", 42], TypeError, "Sequence at row 1 (0-based) is of type int (42)"),
        (
            ["ACGU", "ACXU"],
            ValueError,
            "Sequence at row 1 (0-based) contains characters that RNA-FM cannot read: 'X' at 3",
        ),
        (["ACGU", ""], ValueError, "Sequence at row 1 (0-based) is empty"),
    ],
)
def test_bad_rows(bad, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        emb().transform(bad)


def test_bad_row_in_series_names_index_label():
    s = pd.Series(["ACGU", None], index=["good", "bad"])
    with pytest.raises(ValueError, match=re.escape("Sequence at row 1 (0-based; index 'bad') is missing")):
        emb().fit(s)


def test_dataframe_column_errors():
    df = pd.DataFrame({"id": ["a"], "seq": ["ACGU"]})
    with pytest.raises(
        ValueError, match=re.escape("X is a DataFrame with 2 columns ['id', 'seq']; set column=")
    ):
        emb().transform(df)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Column 'sequence' not found in X; available columns: ['id', 'seq']. Set column= to "
            "one of them."
        ),
    ):
        emb(column="sequence").transform(df)


def test_duplicated_column_name_is_an_error():
    # pandas returns a DataFrame for a duplicated label; its column names must not be embedded
    df = pd.DataFrame([["ACGU", "GGGA", "x"]], columns=["seq", "seq", "id"])
    with pytest.raises(
        ValueError,
        match=re.escape("Column 'seq' appears 2 times in X (columns: ['seq', 'seq', 'id'])"),
    ):
        emb(column="seq").transform(df)


@pytest.mark.parametrize(
    ("X", "kind"),
    [({"a": "ACGU", "b": "GGCA"}, "dict"), ({"ACGU", "GGCA"}, "set"), (frozenset({"AC"}), "frozenset")],
)
def test_unordered_or_keyed_collections_are_rejected(X, kind):
    with pytest.raises(TypeError, match=re.escape(f"got a {kind}. For a dict of id -> sequence")):
        emb().transform(X)


@pytest.mark.parametrize("text", ["ACGß", "ſACG", "ACﬅ", "ACﬆG", "ACGÜ", "AC\u00a0", "\u2003ACGU"])
def test_non_ascii_characters_are_reported_not_case_mapped(text):
    # str.upper() maps 'ß' -> 'SS', 'ſ' -> 'S', 'ﬅ'/'ﬆ' -> 'ST' (then T -> U): content and length
    # would change silently. Only ASCII is normalised.
    bad = next(c for c in text if not c.isascii())
    with pytest.raises(ValueError, match=re.escape(f"cannot read: {bad!r} at {text.index(bad) + 1}")):
        emb().transform(["ACGU", text])


def test_transform_tokens_returns_independent_arrays_for_duplicates():
    first, second, other = emb().transform_tokens(["ACGUAG", "ACGUAG", "GGG"])
    np.testing.assert_array_equal(first, second)
    before = second.copy()
    first[:] = 0.0
    np.testing.assert_array_equal(second, before)  # editing one row leaves the other intact
    assert not np.shares_memory(first, second)


def test_truncation_warning_points_at_the_callers_line():
    long = "ACGU" * 300
    e = emb(long_sequences="truncate").set_output(transform="pandas")
    with pytest.warns(UserWarning, match=re.escape("Truncated 1 of 2 sequence(s) longer than 1022 nt")) as rec:
        e.fit_transform(pd.Series([long, "ACGU"]))  # through scikit-learn's set_output wrapper
    assert rec[0].filename == __file__


def test_two_dimensional_array_rejected():
    with pytest.raises(
        ValueError,
        match=re.escape("X must be 1-D (one sequence per row); got an array of shape (2, 2)"),
    ):
        emb().transform(np.array([["A", "C"], ["G", "U"]]))


@pytest.mark.parametrize(
    ("param", "value", "msg"),
    [
        (
            "pooling",
            "avg",
            "The 'pooling' parameter of RnaFmEmbedder must be a str among {'cls', 'eos', 'max', 'mean', 'mean+max'} or a non-empty list of them. Got 'avg' instead.",
        ),
        ("pooling", [], "Got [] instead."),
        ("pooling", ["mean", "mean"], "without repeats. Got ['mean', 'mean'] instead."),
        (
            "layers",
            3,
            "The 'layers' parameter of RnaFmEmbedder must be an int or a non-empty list of distinct ints in -3..2 for this model. Got 3 instead.",
        ),
        ("layers", [2, -1], "Got [2, -1] instead."),
        ("layers", "12", "Got '12' instead."),
        (
            "layer_aggregation",
            "sum",
            "The 'layer_aggregation' parameter of RnaFmEmbedder must be a str among {'concat', 'mean'}. Got 'sum' instead.",
        ),
        (
            "long_sequences",
            "chunk",
            "must be a str among {'error', 'truncate', 'window'}. Got 'chunk' instead.",
        ),
        (
            "dtype",
            "float64",
            "The 'dtype' parameter of RnaFmEmbedder must be a str among {'bfloat16', 'float16', 'float32'}. Got 'float64' instead.",
        ),
        ("dtype", "float16", "'float16', which needs a GPU; on the CPU use 'bfloat16'"),
        (
            "batch_tokens",
            0,
            "The 'batch_tokens' parameter of RnaFmEmbedder must be a positive int or None. Got 0 instead.",
        ),
        (
            "progress",
            "yes",
            "The 'progress' parameter of RnaFmEmbedder must be a bool or 'auto'. Got 'yes' instead.",
        ),
        (
            "window_stride",
            2000,
            "The 'window_stride' parameter of RnaFmEmbedder must be an int in 1..1022 or None. Got 2000 instead.",
        ),
        ("device", "tpu", "The 'device' parameter of RnaFmEmbedder must be a torch device string"),
    ],
)
def test_invalid_parameters(param, value, msg):
    e = emb(**({"device": "cpu"} if param == "dtype" else {}))
    e.set_params(**{param: value})  # never raises: validation happens at fit/transform
    with pytest.raises(InvalidParameterError, match=re.escape(msg)):
        e.fit(["ACGU"])
    with pytest.raises(ValueError, match=re.escape(msg)):  # also a ValueError
        e.transform(["ACGU"])


@pytest.mark.parametrize("masked", ["no", 0, 1, None, "True"])
def test_transform_logits_masked_must_be_a_bool(masked):
    emb = RnaFmEmbedder(model=str(TINY_PTH), progress=False)
    with pytest.raises(TypeError, match=r"transform_logits: masked must be True or False; got "):
        emb.transform_logits(["ACGU"], masked=masked)
