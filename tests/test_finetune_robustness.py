"""Fine-tuning defects of issue 23 (C.2, E.3, E.4, E.6), each pinned by a test that failed before
the fix: a diverging fit, an interrupt between fitted attributes, the best validation score,
the regressor's target standardisation, the determinism tag, and two input errors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TINY_PTH

import rnafm_sklearn._finetune as finetune
import rnafm_sklearn._training as training
from rnafm_sklearn import RnaFmClassifier, RnaFmEmbedder, RnaFmRegressor

MODEL = str(TINY_PTH)
_rng = np.random.default_rng(5)
SEQS = ["".join(_rng.choice(list("ACGU"), int(n))) for n in _rng.integers(10, 30, 12)]
LABELS = np.array(["a", "b"] * 6)
VALUES = np.sin(np.arange(12.0))


def clf(**kw) -> RnaFmClassifier:
    params = {"model": MODEL, "train": "head", "max_epochs": 2, "random_state": 0}
    return RnaFmClassifier(progress=False, **{**params, **kw})


def _state(est) -> dict:
    return {k: v for k, v in est.__dict__.items() if k.endswith("_") or k == "_fitted"}


# ------------------------------------------------------------------------- E.3 divergence
@pytest.mark.parametrize(
    "params",
    [
        {"train": "lora", "learning_rate": 1e4, "batch_size": 4},
        {"train": "top:1", "learning_rate": 1e6, "batch_size": 4},
        # past float32's range AdamW's update overflows: torch's raw RuntimeError before
        {"train": "head", "learning_rate": 1e38, "head_learning_rate": 1e38, "batch_size": 4},
    ],
    ids=["lora", "top1", "overflow"],
)
def test_diverging_fit_raises_naming_learning_rate_and_keeps_the_estimator(params):
    """It returned normally with a NaN loss_curve_ and NaN probabilities (first class for
    every row); now a named error, and a fitted estimator stays as it was."""
    est = clf(train=params["train"], learning_rate=1e-3).fit(SEQS, LABELS)
    before = _state(est)
    proba = est.predict_proba(SEQS)
    est.set_params(max_epochs=4, **params)
    with pytest.raises(ValueError, match=r"diverged .*learning_rate=(10000|1e\+06|1e\+38)"):
        est.fit(SEQS, LABELS)
    assert _state(est).keys() == before.keys()
    assert all(_state(est)[k] is v for k, v in before.items())
    np.testing.assert_array_equal(est.predict_proba(SEQS), proba)


def test_diverging_fit_of_a_fresh_estimator_leaves_it_unfitted():
    est = clf(train="lora", learning_rate=1e4, batch_size=4, max_epochs=4)
    with pytest.raises(training.DivergedError, match="lower learning_rate"):
        est.fit(SEQS, LABELS)
    assert not hasattr(est, "_fitted") and not hasattr(est, "classes_")


# ------------------------------------------------------------------------ E.4 one commit
_POINTS = (
    "_fitted", "classes_", "loss_curve_", "validation_scores_", "best_validation_score_",
    "best_epoch_", "n_iter_",
)  # fmt: skip


@pytest.mark.parametrize("point", _POINTS)
def test_interrupt_at_any_assignment_leaves_old_or_new_never_mixed(point):
    """A KeyboardInterrupt while fit stores its results (here: raised when ``point`` is
    assigned as an attribute) used to leave the new model with the old classes."""

    class Interrupted(RnaFmClassifier):
        armed = False

        def __setattr__(self, name, value):
            if type(self).armed and name == point:
                raise KeyboardInterrupt
            super().__setattr__(name, value)

    est = Interrupted(model=MODEL, train="head", max_epochs=2, random_state=0, progress=False)
    est.fit(SEQS, LABELS)
    old = _state(est)
    Interrupted.armed = True
    try:
        est.fit(SEQS, np.where(LABELS == "a", "x", "y"))
    except KeyboardInterrupt:
        assert all(_state(est)[k] is v for k, v in old.items())  # wholly the old fit
    else:  # committed without setting attributes one by one: wholly the new fit
        assert est.classes_.tolist() == ["x", "y"]
        assert all(_state(est)[k] is not old[k] for k in ("_fitted", "classes_", "loss_curve_"))
        assert set(est.predict(SEQS)) <= {"x", "y"}


# --------------------------------------------------------------- C.2 best validation score
def test_best_validation_score_is_the_kept_epochs_score_even_beside_nan(monkeypatch):
    """It was max(validation_scores_): NaN when NaN came first, not the kept epoch's score."""
    scores = iter([float("nan"), 0.6, 0.7, 0.5])
    monkeypatch.setattr(training, "_validate", lambda *a, **k: next(scores))
    est = clf(max_epochs=4, validation_fraction=0.25, n_iter_no_change=None).fit(SEQS, LABELS)
    assert est.best_epoch_ == 2
    assert est.best_validation_score_ == 0.7


def test_best_validation_score_is_nan_when_no_epoch_scored_a_number(monkeypatch):
    monkeypatch.setattr(training, "_validate", lambda *a, **k: float("nan"))
    est = clf(max_epochs=2, validation_fraction=0.25, n_iter_no_change=None).fit(SEQS, LABELS)
    assert est.best_epoch_ is None and np.isnan(est.best_validation_score_)


# ------------------------------------------------- C.2 regressor's target standardisation
def test_regressor_standardises_targets_on_the_training_rows_weighted(monkeypatch):
    """The docstring said 'on the training rows'; the code used all rows, unweighted."""
    y = np.column_stack([VALUES * 10 + 3, np.arange(12.0) ** 2])
    w = np.linspace(0.5, 4.0, 12)
    val = np.array([1, 4, 9])
    train_rows = np.setdiff1d(np.arange(12), val)
    monkeypatch.setattr(finetune._RnaFmFineTuner, "_split", lambda *a: (train_rows, val))
    reg = RnaFmRegressor(model=MODEL, train="head", max_epochs=1, random_state=0, progress=False)
    reg.fit(SEQS, y, sample_weight=w)
    mean = np.average(y[train_rows], axis=0, weights=w[train_rows])
    std = np.sqrt(np.average((y[train_rows] - mean) ** 2, axis=0, weights=w[train_rows]))
    # the weights are kept in float32 (relative to the largest): ratios exact to ~1e-7
    np.testing.assert_allclose(reg._y_mean_, mean, rtol=1e-6)
    np.testing.assert_allclose(reg._y_scale_, std, rtol=1e-6)
    unweighted = y[train_rows].mean(0), y.mean(0)  # what the other rules give: far off
    assert all(np.abs(u - mean).min() > 1e-2 * np.abs(mean).max() for u in unweighted)


# ------------------------------------------------------------------- C.2 determinism tag
def test_seeded_cpu_fits_are_deterministic_whatever_random_state_none_means():
    """non_deterministic was set from random_state=None; scikit-learn's tag says whether a
    fixed random_state still gives varying results: two fits with one seed on the CPU agree."""
    from sklearn.utils import get_tags

    est = clf(random_state=None, device="cpu")
    assert get_tags(est).non_deterministic is False
    a = clf(device="cpu").fit(SEQS, LABELS).predict_proba(SEQS)
    b = clf(device="cpu").fit(SEQS, LABELS).predict_proba(SEQS)
    np.testing.assert_array_equal(a, b)  # same computation by construction, same process


# ------------------------------------------------------------------------ E.6 input errors
@pytest.mark.parametrize(
    "w", [np.ones(12) + 1j, [1.0] * 11 + [2 + 1j], np.ones(12, np.complex64)], ids=str
)
def test_complex_sample_weight_is_an_error(w):
    """np.asarray(w, float64) silently dropped the imaginary part (with a ComplexWarning)."""
    with pytest.raises(ValueError, match="sample_weight must be real"):
        clf().fit(SEQS, LABELS, sample_weight=w)


def test_regressor_text_target_names_its_row():
    """[1.0, "2", ...] became an all-text array, and the error named row 0."""
    y = [1.0, "2", 3.0] + [0.5] * 9
    with pytest.raises(ValueError, match=r"row 1\b") as info:
        RnaFmRegressor(model=MODEL, train="head", progress=False).fit(SEQS, y)
    assert "'2'" in str(info.value) and "row 0" not in str(info.value)


# ----------------------------------------------------------------- B.6 relative model path
def _fit_in(directory, monkeypatch, est):
    monkeypatch.chdir(directory)
    return est.fit(SEQS, LABELS)


@pytest.mark.parametrize("train", ["head", "lora"])
def test_relative_model_path_survives_unpickling_in_another_directory(
    tmp_path, monkeypatch, train
):
    """Fitted with model='model.pth' in one folder, unpickled in another: it failed with
    'Checkpoint not found: model.pth'. The fit resolves the path; get_params keeps the text."""
    import pickle
    import shutil

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(TINY_PTH, tmp_path / "a" / "model.pth")
    est = _fit_in(tmp_path / "a", monkeypatch, clf(model="model.pth", train=train))
    expected = est.predict_proba(SEQS)
    monkeypatch.chdir(tmp_path / "b")
    loaded = pickle.loads(pickle.dumps(est))
    assert loaded.get_params()["model"] == "model.pth"
    np.testing.assert_allclose(loaded.predict_proba(SEQS), expected, rtol=1e-6, atol=1e-7)
    # the checkpoint moved: the error says where it was and how to point model= at it
    shutil.move(tmp_path / "a" / "model.pth", tmp_path / "b" / "moved.pth")
    with pytest.raises(FileNotFoundError, match=r"fitted with model='model.pth'.*set_params\(model="):
        loaded.predict_proba(SEQS)
    loaded.set_params(model="moved.pth")  # weights checked against the fit's fingerprint
    np.testing.assert_allclose(loaded.predict_proba(SEQS), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("make", [clf, lambda **kw: RnaFmEmbedder(**kw)])
def test_a_named_model_is_loaded_by_its_name_after_fit(make):
    """model='rna-fm' is no path: after a fit it must still be loaded by name (it was taken for
    a moved checkpoint at './rna-fm': FileNotFoundError on every predict after a fit)."""
    est = make(model="rna-fm")
    est.__dict__.update(est._resolved_model_attribute())  # what fit records
    assert est._resolved_model == ("rna-fm", "rna-fm")
    assert est._model_source() == "rna-fm"


def test_refit_reads_the_relative_path_anew(tmp_path, monkeypatch):
    """A new fit resolves model= in the current folder, not where the previous fit ran."""
    import shutil

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(TINY_PTH, tmp_path / d / "model.pth")
    est = _fit_in(tmp_path / "a", monkeypatch, clf(model="model.pth"))
    (tmp_path / "a" / "model.pth").unlink()
    _fit_in(tmp_path / "b", monkeypatch, est)
    assert est.predict_proba(SEQS).shape == (12, 2)
    assert est._resolved_model == ("model.pth", str(tmp_path / "b" / "model.pth"))


def test_pipeline_on_embeddings_survives_unpickling_in_another_directory(tmp_path, monkeypatch):
    import pickle
    import shutil

    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from rnafm_sklearn import RnaFmEmbedder

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(TINY_PTH, tmp_path / "a" / "model.pth")
    monkeypatch.chdir(tmp_path / "a")
    pipe = make_pipeline(RnaFmEmbedder(model="model.pth", progress=False), LogisticRegression())
    expected = pipe.fit(SEQS, LABELS).predict_proba(SEQS)
    monkeypatch.chdir(tmp_path / "b")
    loaded = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_allclose(loaded.predict_proba(SEQS), expected, rtol=1e-6, atol=1e-7)
    assert loaded[0].get_params()["model"] == "model.pth"


# ---------------------------------------------------------------------- D.3 one home each
def test_fine_tuning_borrows_nothing_from_other_estimators_or_runner_internals():
    """_finetune imported RnaFmEmbedder for its frozen features and packed its own CPU copy;
    _training reached into runner._pieces/_ids."""
    import ast
    from pathlib import Path

    package = Path(finetune.__file__).parent
    modules = ["_finetune", "_finetune_options", "_finetune_targets", "_classifier", "_regressor"]
    for name in modules:
        text = (package / f"{name}.py").read_text()
        imported = {n.module for n in ast.walk(ast.parse(text)) if isinstance(n, ast.ImportFrom)}
        assert not imported & {"_embedder", "_scoring", "_likelihood", "_variant_scorer"}, name
        assert "pack_for_cpu" not in text, name
    assert "runner._" not in (package / "_training.py").read_text()


def test_cuda_kernel_numerics_version_is_in_the_cache_key(tmp_path, monkeypatch):
    """float32 keys do not name the device: a change of the CUDA kernels' numbers must make
    every entry stale, as one of the CPU kernels does."""
    from rnafm_sklearn import RnaFmEmbedder, _base

    def keys():
        e = RnaFmEmbedder(model=MODEL, cache=tmp_path, progress=False)
        runner, plan, tokens = e._prepare(["ACGUAGG", "GGGAAAC"])
        return e._cache_keys(e._key_settings(runner, plan), runner, plan.window_stride, tokens)

    before = keys()
    assert keys() == before
    monkeypatch.setattr(_base, "CUDA_NUMERICS_VERSION", _base.CUDA_NUMERICS_VERSION + 1)
    assert set(keys()).isdisjoint(before)


@pytest.mark.parametrize("train", ["head", "lora"])
def test_predictions_do_not_depend_on_row_order(train):
    """scikit-learn's sample-order and subset invariance checks, on sequences (they run now
    that the estimators are not tagged non_deterministic on the CPU): other batches, same
    rows within float32 rounding."""
    est = clf(train=train, learning_rate=1e-2, device="cpu").fit(SEQS, LABELS)
    X = SEQS + ["ACGU" * 40, "GGC"]
    whole = est.predict_proba(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(
        est.predict_proba([X[i] for i in order]), whole[order], rtol=1e-5, atol=1e-6
    )
    for part in (slice(0, 3), slice(5, None), [13]):
        rows = np.arange(len(X))[part]
        got = est.predict_proba([X[i] for i in rows])
        np.testing.assert_allclose(got, whole[rows], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(est.predict([X[i] for i in order]), est.predict(X)[order])
    for method in ("decision_function", "predict_log_proba"):
        got = getattr(est, method)([X[i] for i in order])
        np.testing.assert_allclose(got, getattr(est, method)(X)[order], rtol=1e-5, atol=1e-6)
