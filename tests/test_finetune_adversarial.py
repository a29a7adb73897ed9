"""RnaFmClassifier / RnaFmRegressor under adversarial use (issue 16 review).

Each test here either pins a defect that was found by trying to break the estimators (the
test failed before the fix) or guards a behaviour that an adversarial user relies on
(parallel model selection, pickles in another process, threads, checkpoints without the
masked-LM head, mRNA-FM). Tiny models, few epochs: the file runs in seconds.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import threading
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from _tolerance import assert_close
from conftest import FIXTURES, ROOT, TINY_PTH
from sklearn.model_selection import KFold, cross_val_score

import rnafm_sklearn._finetune as finetune
from rnafm_sklearn import RnaFmClassifier, RnaFmRegressor
from rnafm_sklearn._adapters import TrainSpec, trainable_encoder
from rnafm_sklearn._alphabet import get_alphabet
from rnafm_sklearn._encoder import RnaFmEncoder
from rnafm_sklearn._inference import Plan, Runner
from rnafm_sklearn._models import get_encoder
from rnafm_sklearn._training import (
    Data,
    Head,
    TrainOptions,
    pooled_features,
    r2,
    regression_loss,
    train,
)

MODEL = str(TINY_PTH)
MRNA = str(FIXTURES / "mRNA-FM_tiny.pth")
CPU = torch.device("cpu")
_rng = np.random.default_rng(11)
SEQS = ["".join(_rng.choice(list("ACGU"), int(n))) for n in _rng.integers(10, 30, 12)]
LABELS = np.array(["a", "b"] * 6)
VALUES = np.sin(np.arange(12.0))


def clf(**kw) -> RnaFmClassifier:
    params = {"model": MODEL, "train": "head", "max_epochs": 2, "random_state": 0}
    return RnaFmClassifier(progress=False, **{**params, **kw})


def reg(**kw) -> RnaFmRegressor:
    params = {"model": MODEL, "train": "head", "max_epochs": 2, "random_state": 0}
    return RnaFmRegressor(progress=False, **{**params, **kw})


# ------------------------------------------------------------------ defects (fixed)


@pytest.mark.parametrize("scale", [1e39, 1e-46])
def test_extreme_but_valid_sample_weights_train_as_unit_weights(scale):
    """Weights are relative: 1e39 (over float32's range) or 1e-46 (under it) per row are valid
    float64 weights and must train the same model as weight 1 (they overflowed to inf, giving
    NaN predictions, or underflowed to 0, giving a 'weight 0' error)."""
    ref = reg(learning_rate=0.05).fit(SEQS, VALUES).predict(SEQS)
    got = reg(learning_rate=0.05).fit(SEQS, VALUES, sample_weight=np.full(12, scale))
    np.testing.assert_allclose(got.predict(SEQS), ref, rtol=1e-5, atol=1e-6)
    # mixed magnitudes keep their ratios: 1e39 vs 2e39 is the same as 1 vs 2
    w = np.tile([1.0, 2.0], 6)
    a = reg(learning_rate=0.05).fit(SEQS, VALUES, sample_weight=w).predict(SEQS)
    b = reg(learning_rate=0.05).fit(SEQS, VALUES, sample_weight=w * scale).predict(SEQS)
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "y",
    [
        [str(v) for v in VALUES],
        np.array([str(v) for v in VALUES]),
        [str(v).encode() for v in VALUES],
        pd.Series([str(v) for v in VALUES], dtype="string"),
        pd.date_range("2020-01-01", periods=12),
    ],
    ids=["list-str", "ndarray-str", "bytes", "pandas-string", "datetime"],
)
def test_regressor_rejects_non_numeric_targets(y):
    """Strings such as '0.84' (labels passed to the regressor by mistake) were parsed as
    numbers, and datetimes regressed as nanosecond counts, without a word."""
    with pytest.raises(ValueError, match=r"y must be numeric for RnaFmRegressor, but row 0"):
        reg().fit(SEQS, y)


def test_validation_split_error_names_the_labels():
    """The stratified-split error listed the encoded class indices ([0, 1]), not the labels."""
    y = np.array(["apple"] * 11 + ["pear"])
    with pytest.raises(ValueError, match=r"class 'pear' has 1 row.*at least 2"):
        clf(validation_fraction=0.25).fit(SEQS, y)
    with pytest.raises(ValueError, match=r"'a'.*'b'.*1 row"):
        clf(validation_fraction=0.5).fit(SEQS[:2], LABELS[:2])


def test_head_fit_in_bfloat16_loads_no_float32_copy(monkeypatch):
    """train='head' never runs the float32 weights: fitting in bfloat16 loaded a float32 copy
    next to the bfloat16 one only to fingerprint it (twice the model's memory)."""
    asked = []
    real = finetune.get_encoder

    def spy(model, device, dtype):
        asked.append(dtype)
        return real(model, device, dtype)

    monkeypatch.setattr(finetune, "get_encoder", spy)
    ref = clf(dtype="bfloat16").fit(SEQS, LABELS)
    proba = ref.predict_proba(SEQS)
    assert asked and set(asked) == {torch.bfloat16}, asked
    # the fingerprint is still that of the float32 original: a float32 fit predicts alike
    fp32 = clf().fit(SEQS, LABELS)
    assert ref._fitted.fingerprint == fp32._fitted.fingerprint
    np.testing.assert_allclose(proba, fp32.set_params(dtype="bfloat16").predict_proba(SEQS),
                               atol=0.05)


def test_regression_targets_near_the_float64_limit():
    """y of 1e300 is finite, so it is valid: its standard deviation overflowed to inf and every
    prediction came back inf or NaN."""
    ref = reg(learning_rate=0.05).fit(SEQS, VALUES).predict(SEQS)
    got = reg(learning_rate=0.05).fit(SEQS, 1e300 * VALUES).predict(SEQS)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got / 1e300, ref, rtol=1e-5, atol=1e-6)


def _lora_train_run(autocast, loss_scale: float) -> float:
    """Largest |B| of the LoRA adapters after 2 epochs of :func:`train` on random targets."""
    base = get_encoder(MODEL, CPU, torch.float32)
    alphabet = get_alphabet(base.config.alphabet)
    tokens = [alphabet.encode_body(s) for s in SEQS]
    generator = torch.Generator().manual_seed(0)
    enc, params = trainable_encoder(base, TrainSpec("lora"), up_to_layer=2, generator=generator)
    head = Head(base.config.hidden_size, 1, None, generator)
    data = Data(
        tokens=tokens, features=None, targets=torch.randn(12, 1, generator=generator),
        weights=torch.ones(12), costs=[(len(t) + 2, 1) for t in tokens],
    )
    options = TrainOptions(
        max_epochs=2, learning_rate=1e-3, head_learning_rate=1e-2, weight_decay=0.0,
        warmup_fraction=0.0, batch_tokens=256, n_iter_no_change=None, tol=0.0,
        autocast=autocast, seed=0,
    )
    result = train(
        head=head, encoder=enc, encoder_params=params, runner=Runner(enc, batch_tokens=256),
        plan=Plan((2,), 511, "concat", ("mean",)), data=data, validation=None,
        loss=lambda o, y, w: regression_loss(o, y, w) * loss_scale, score=r2, options=options,
    )
    return max(float(v.abs().max()) for k, v in result.encoder.items() if k.endswith(".lora.B"))


def test_float16_training_scales_the_loss():
    """float16 autocast (CUDA) trained without loss scaling: small gradients flushed to zero in
    float16 and the adapters never moved (B stayed exactly 0), where float32 and bfloat16
    learned. With a gradient scaler float16 moves the adapters as float32 does. (float16
    autocast also runs on the CPU, which is how this is tested here.)"""
    fp32 = _lora_train_run(None, 1e-8)
    fp16 = _lora_train_run(torch.float16, 1e-8)
    assert fp32 > 1e-5  # measured 4.4e-5: tiny gradients, but AdamW's steps are not tiny
    assert fp16 == pytest.approx(fp32, rel=0.2), (fp16, fp32)  # measured 4.8e-5


# ------------------------------------------------------- guards: behaviours users rely on


def test_cross_val_score_in_worker_processes():
    """loky workers receive pickled estimators and load the weights themselves."""
    est = clf(train="lora", max_epochs=1)
    cv = KFold(3, shuffle=True, random_state=0)
    # the log-loss, not the accuracy: a continuous score that a wrong model cannot match
    serial = cross_val_score(est, SEQS, LABELS, cv=cv, scoring="neg_log_loss")
    parallel = cross_val_score(est, SEQS, LABELS, cv=cv, scoring="neg_log_loss", n_jobs=2)
    assert_close(parallel, serial)  # other processes (other thread counts): rounding apart


@pytest.mark.numerics
def test_unpickled_in_a_fresh_process_predicts_the_same(tmp_path):
    est = clf(train="lora", max_epochs=1, learning_rate=1e-2).fit(SEQS, LABELS)
    path = tmp_path / "est.pkl"
    path.write_bytes(pickle.dumps(est))
    code = (
        "import pickle, sys, numpy as np; "
        f"e = pickle.loads(open({str(path)!r}, 'rb').read()); "
        f"np.save(sys.argv[1], e.predict_proba({SEQS!r}))"
    )
    out = tmp_path / "proba.npy"
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, cwd=ROOT, timeout=600)
    assert_close(np.load(out), est.predict_proba(SEQS))  # another process


def test_threads_predicting_alongside():
    """Two fitted estimators (and one of them twice, from a fresh unpickled copy whose merged
    inference copy is built by the racing threads) predict from threads as they do alone."""
    a = clf(train="lora", max_epochs=1, learning_rate=1e-2).fit(SEQS, LABELS)
    b = clf(train="all", max_epochs=1, learning_rate=1e-2, random_state=1).fit(SEQS, LABELS)
    expected = {id(a): a.predict_proba(SEQS), id(b): b.predict_proba(SEQS)}
    fresh = pickle.loads(pickle.dumps(a))
    expected[id(fresh)] = expected[id(a)]
    errors: list[object] = []

    def work(est):
        try:
            for _ in range(3):
                # a race gives other numbers; a thread's own thread pool, rounding apart
                assert_close(est.predict_proba(SEQS), expected[id(est)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(e,)) for e in (a, b, fresh, fresh)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def test_checkpoint_without_the_masked_lm_head(tmp_path):
    """Fine-tuning never needs lm_head.*: a checkpoint without it trains the same model, and
    (same fingerprint) each estimator predicts on the other checkpoint."""
    blob = torch.load(TINY_PTH, map_location="cpu", weights_only=False)
    blob["model"] = {k: v for k, v in blob["model"].items() if ".lm_head." not in k}
    path = tmp_path / "no_head.pth"
    torch.save(blob, path)
    for mode in ("head", "lora"):
        with_head = clf(train=mode, learning_rate=1e-2).fit(SEQS, LABELS)
        without = clf(train=mode, learning_rate=1e-2, model=str(path)).fit(SEQS, LABELS)
        expected = with_head.predict_proba(SEQS)
        # exact: the same weights, data and batches in this process
        np.testing.assert_array_equal(without.predict_proba(SEQS), expected)
        np.testing.assert_array_equal(
            with_head.set_params(model=str(path)).predict_proba(SEQS), expected
        )


def test_mrna_fm_fine_tuning():
    """Codon model: training path and merged inference path agree (windows included), and a
    sequence out of frame is the codon error naming its row."""
    rng = np.random.default_rng(4)
    cds = ["".join(rng.choice(list("ACGU"), 3 * int(n))) for n in rng.integers(4, 20, 7)]
    cds.append("".join(rng.choice(list("ACGU"), 3 * 1100)))  # two windows of 1022 codons
    y = np.linspace(-1, 1, len(cds))
    est = reg(model=MRNA, train="lora", lora_targets="all", learning_rate=2e-2,
              long_sequences="window").fit(cds, y)
    fitted = est._fitted
    base = get_encoder(MRNA, CPU, torch.float32)
    rank, alpha, targets = fitted.lora
    enc, _ = trainable_encoder(base, fitted.spec, up_to_layer=max(fitted.plan.layers),
                               lora_rank=rank, lora_alpha=alpha, lora_targets=targets,
                               trained=fitted.encoder)
    head = Head(base.config.hidden_size, 1, None, torch.Generator())
    head.load_state_dict(fitted.head)
    tokens, _ = est._tokens(cds, base.config)
    with torch.no_grad():
        out = head(pooled_features(enc, Runner(enc, batch_tokens=4096), tokens, fitted.plan))
    expected = out.numpy()[:, 0] * est._y_scale_[0] + est._y_mean_[0]
    np.testing.assert_allclose(est.predict(cds), expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"row 2 .*not a multiple of 3"):
        reg(model=MRNA).fit([*cds[:2], cds[2] + "A"], y[:3])


def test_parameters_changed_after_fit_do_not_change_the_fitted_model():
    """pooling/layers/window_stride changed by set_params after fit: predictions use the
    fitted representation (the head's width would not match another)."""
    est = clf(train="lora", max_epochs=1, learning_rate=1e-2).fit(SEQS, LABELS)
    expected = est.predict_proba(SEQS)
    est.set_params(pooling=["cls", "max"], layers=[0, 1], window_stride=7)
    np.testing.assert_array_equal(est.predict_proba(SEQS), expected)


def test_head_features_through_the_cache_once_across_folds(tmp_path, monkeypatch):
    """train='head' with cache=: each sequence runs through the encoder once in all folds."""
    rows = []
    forward = RnaFmEncoder.forward

    def counting(self, tokens, *args, **kwargs):
        rows.append(tokens.shape[0])
        return forward(self, tokens, *args, **kwargs)

    monkeypatch.setattr(RnaFmEncoder, "forward", counting)
    est = clf(cache=str(tmp_path / "cache.sqlite"))
    cross_val_score(est, SEQS, LABELS, cv=KFold(4))
    assert sum(rows) == len(SEQS)
    rows.clear()
    cross_val_score(clf(), SEQS, LABELS, cv=KFold(4))  # without: every fold computes its rows
    assert sum(rows) == 4 * len(SEQS)


def test_deleting_the_estimator_frees_its_inference_copy():
    est = clf(train="lora", max_epochs=1).fit(SEQS, LABELS)
    est.predict(SEQS[:1])
    ref = weakref.ref(next(iter(est._merged.values())))
    fitted = vars(est)["_fitted"]
    assert all(isinstance(v, torch.Tensor) for v in fitted.encoder.values())
    assert all(not v.requires_grad for v in [*fitted.encoder.values(), *fitted.head.values()])
    del est
    assert ref() is None  # freed by reference counting: no cycle keeps the weights alive


def test_interrupt_during_the_frozen_feature_pass(monkeypatch):
    """A KeyboardInterrupt while the frozen features are computed (before any training step)
    leaves a fitted estimator's model as it was."""
    est = clf(learning_rate=1e-2).fit(SEQS, LABELS)
    expected = est.predict_proba(SEQS)

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Runner, "pooled", interrupted)
    with pytest.raises(KeyboardInterrupt):
        est.set_params(warm_start=True).fit(SEQS[::-1], LABELS)
    monkeypatch.undo()
    np.testing.assert_array_equal(est.predict_proba(SEQS), expected)
    assert est.n_iter_ == 2


def test_lora_fit_in_bfloat16_loads_only_the_float32_training_base(monkeypatch):
    """The head's input statistics come from the float32 training base: a bfloat16 LoRA fit
    loaded a bfloat16 copy of the weights only to compute them (the model's memory again)."""
    import rnafm_sklearn._base as base

    asked = []

    def spy(real):
        def get(model, device, dtype):
            asked.append(dtype)
            return real(model, device, dtype)

        return get

    monkeypatch.setattr(finetune, "get_encoder", spy(finetune.get_encoder))
    monkeypatch.setattr(base, "get_encoder", spy(base.get_encoder))
    est = clf(train="lora", dtype="bfloat16").fit(SEQS, LABELS)
    assert asked and set(asked) == {torch.float32}, asked
    assert np.isfinite(est._fitted.head["shift"].numpy()).all()


def test_nan_validation_scores_count_as_no_improvement(monkeypatch):
    """Early stopping stops after n_iter_no_change epochs that score NaN (a NaN compared
    with the best score is neither better nor worse, and used to reset the patience)."""
    import rnafm_sklearn._training as training

    scores = iter([0.5] + [float("nan")] * 20)
    monkeypatch.setattr(training, "_validate", lambda *a, **k: next(scores))
    est = clf(max_epochs=10, validation_fraction=0.25, n_iter_no_change=2).fit(SEQS, LABELS)
    assert est.n_iter_ == 3 and est.best_epoch_ == 0


def test_epoch_loss_counts_class_weights_like_sample_weights():
    """loss_curve_ is the epoch's weighted mean loss: class_weight='balanced' and the same
    weights given per row report the same curve (batch means were summed by sample weight,
    ignoring class weights)."""
    from sklearn.utils.class_weight import compute_sample_weight

    y = np.array(["a"] * 3 + ["b"] * 9)
    kw = {"max_epochs": 3, "batch_size": 4}  # several batches per epoch
    balanced = clf(class_weight="balanced", **kw).fit(SEQS, y)
    per_row = clf(**kw).fit(SEQS, y, sample_weight=compute_sample_weight("balanced", y))
    np.testing.assert_allclose(balanced.loss_curve_, per_row.loss_curve_, rtol=1e-5)
    np.testing.assert_allclose(
        balanced.predict_proba(SEQS), per_row.predict_proba(SEQS), atol=1e-5
    )
