"""Training semantics of the fine-tuning estimators (issue 16), on the tiny checkpoint.

What is learned (a motif task frozen features cannot solve linearly), which tensors get
gradients, the differentiable twin of the inference path, LoRA merging, determinism, early
stopping, warm start, mixed precision, gradient checkpointing and the learning-rate schedule.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PTH

from rnafm_sklearn import RnaFmClassifier, RnaFmEmbedder, RnaFmRegressor, _training, get_alphabet
from rnafm_sklearn._adapters import (
    TrainSpec,
    _base_state,
    merged_state,
    parse_train,
    trainable_encoder,
)
from rnafm_sklearn._inference import Plan, Runner
from rnafm_sklearn._models import get_encoder
from rnafm_sklearn._training import Head, pooled_features

TINY = str(TINY_PTH)
CPU = torch.device("cpu")


@pytest.fixture
def one_thread():
    """One torch thread: reproducible sums and no contention on shared cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def base() -> torch.nn.Module:
    return get_encoder(TINY, CPU, torch.float32)


def tokens(seqs: list[str]) -> list[bytes]:
    alphabet = get_alphabet("rna")
    return [alphabet.encode_body(s) for s in seqs]


def random_rna(rng: np.random.Generator, n: int, low: int, high: int) -> list[str]:
    return ["".join(rng.choice(list("ACGU"), int(rng.integers(low, high + 1)))) for _ in range(n)]


def motif_task(n: int, length: int = 10, motif: str = "GA", seed: int = 0):
    """``n // 2`` pairs: a positive (``motif`` somewhere) then a shuffle of it without the motif.

    Each negative is a permutation of the positive before it, so both classes have exactly
    the same nucleotide compositions: only the motif's presence separates them.
    """
    rng = np.random.default_rng(seed)
    X: list[str] = []
    while len(X) < n:
        s = "".join(rng.choice(list("ACGU"), length))
        if motif not in s:
            p = int(rng.integers(0, length - len(motif) + 1))
            s = s[:p] + motif + s[p + len(motif) :]
        chars = list(s)
        for _ in range(100):
            rng.shuffle(chars)
            if motif not in "".join(chars):
                X += [s, "".join(chars)]
                break
    return X[:n], np.array([1, 0] * (n // 2) + [1] * (n % 2))


# --------------------------------------------------------------------------------- 1. motif
@pytest.fixture(scope="module")
def motif():
    X, y = motif_task(800)
    return X[:600], y[:600], X[600:], y[600:]


def _motif_clf(**kw) -> RnaFmClassifier:
    return RnaFmClassifier(
        model=TINY, pooling="max", batch_tokens=256, random_state=0, progress=False, **kw
    )


def test_motif_task_composition_is_useless(motif):
    X_tr, y_tr, _, _ = motif
    assert y_tr.mean() == 0.5
    # each negative has the composition of the positive before it
    assert all(sorted(X_tr[i]) == sorted(X_tr[i + 1]) for i in range(0, len(X_tr), 2))
    assert all(("GA" in s) == bool(t) for s, t in zip(X_tr, y_tr, strict=True))


def test_motif_learned_by_lora_and_all_not_by_head(motif, one_thread):
    X_tr, y_tr, X_te, y_te = motif
    # measured (1 thread, seed 0, batch_size 16, standardised head input): lora 0.955 (lr 5e-3,
    # 30 epochs; 3e-3 x 60 gave 0.99 at twice the cost), all 0.935 (20 epochs; 15 gave 0.885,
    # 30 gave 1.0), head 0.57;
    # frozen features + logistic regression 0.56. LoRA on attention only reached 0.85 here.
    # Fewer rows (400 of 8 nt) made LoRA unstable (0.61): the task is kept, the epochs cut.
    lora = _motif_clf(train="lora", lora_targets="all", learning_rate=5e-3, max_epochs=30)
    assert lora.fit(X_tr, y_tr).score(X_te, y_te) >= 0.9
    full = _motif_clf(train="all", learning_rate=1e-2, max_epochs=20)
    assert full.fit(X_tr, y_tr).score(X_te, y_te) >= 0.9
    head = _motif_clf(train="head", learning_rate=3e-2, max_epochs=30)
    assert head.fit(X_tr, y_tr).score(X_te, y_te) <= 0.7


def test_motif_not_linear_in_frozen_features(motif):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X_tr, y_tr, X_te, y_te = motif
    emb = RnaFmEmbedder(model=TINY, pooling="max", batch_tokens=8192, progress=False)
    model = make_pipeline(emb, StandardScaler(), LogisticRegression(max_iter=5000))
    assert model.fit(X_tr, y_tr).score(X_te, y_te) <= 0.7


# ------------------------------------------------------------------------------ 2. gradients
def _expected_trainable(spec: str, targets: str, up_to: int) -> set[str]:
    names = set(_base_state(base()))
    if spec == "head":
        return set()
    if spec == "lora":
        mods = {
            "attention": ["self_attn.qkv_proj", "self_attn.out_proj"],
            "ffn": ["fc1", "fc2"],
            "all": ["self_attn.qkv_proj", "self_attn.out_proj", "fc1", "fc2"],
        }[targets]
        return {f"layers.{i}.{m}.lora.{p}" for i in range(up_to) for m in mods for p in "AB"}
    first = {"top:1": 1, "top:2": 0, "all": -1}[spec]
    out = set()
    for n in names:
        layer = int(n.split(".")[1]) if n.startswith("layers.") else None
        if layer is not None:
            if first <= layer < up_to:
                out.add(n)
        elif n.startswith("emb_layer_norm_after."):
            if up_to == 2:
                out.add(n)
        elif spec == "all":
            out.add(n)
    return out


CASES = [
    ("lora", "attention", 2),
    ("lora", "ffn", 2),
    ("lora", "all", 2),
    ("lora", "all", 1),
    ("top:1", "attention", 2),
    ("top:2", "attention", 2),
    ("top:2", "attention", 1),
    ("all", "attention", 2),
    ("all", "attention", 1),
]


@pytest.mark.parametrize(("spec", "targets", "up_to"), CASES)
def test_gradients_reach_exactly_what_train_names(spec, targets, up_to):
    rng = np.random.default_rng(1)
    toks = tokens(random_rna(rng, 6, 8, 40))
    plan = Plan(layers=(up_to,), window_stride=511, poolings=("mean", "max", "cls", "eos"))
    enc, params = trainable_encoder(
        base(),
        parse_train(spec, 2),
        up_to_layer=up_to,
        lora_targets=targets,
        generator=torch.Generator().manual_seed(0),
    )
    assert set(params) == _expected_trainable(spec, targets, up_to)
    head = Head(4 * 32, 3, None, torch.Generator().manual_seed(0))
    runner = Runner(enc, batch_tokens=1024)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    optimizer = torch.optim.SGD([*params.values()], lr=1.0)
    for step in range(2):  # LoRA's B starts at zero: A gets gradients from the 2nd step on
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(pooled_features(enc, runner, toks, plan)), y)
        loss.backward()
        named = dict(enc.named_parameters())
        assert {n for n, p in named.items() if p.requires_grad} == set(params)
        for name, p in named.items():
            if name not in params:
                assert p.grad is None, name
            elif step == 0 and name.endswith(".lora.A"):
                assert p.grad is not None and not p.grad.any(), name
            else:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
        optimizer.step()


@pytest.mark.parametrize("train", ["lora", "all", "top:1", "head"])
def test_fit_leaves_shared_base_bit_identical(train):
    X, y = motif_task(16)
    enc = base()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    emb = RnaFmEmbedder(model=TINY, progress=False)
    features = emb.transform(X)
    clf = RnaFmClassifier(
        model=TINY, train=train, max_epochs=2, learning_rate=1e-2, random_state=0, progress=False
    )
    clf.fit(X, y)
    assert base() is enc
    after = enc.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any(p.requires_grad is False and p.grad is not None for p in enc.parameters())
    np.testing.assert_array_equal(emb.transform(X), features)


# ------------------------------------------------------------ 3. training twin of inference
LONG = 2100  # three windows of the tiny model's 1022 tokens at the default stride 511


def _plans():
    for layers in [(2,), (0, 1, 2), (1,)]:
        for aggregate in ("concat", "mean"):
            yield Plan(layers, 511, aggregate, ("mean", "max", "cls", "eos"))
    yield Plan((2,), 300, "concat", ("max",))  # another stride: four windows


@pytest.fixture(scope="module")
def mixed_tokens():
    rng = np.random.default_rng(3)
    return tokens([*random_rna(rng, 5, 5, 60), *random_rna(rng, 1, 1100, 1100)] + [
        "".join(rng.choice(list("ACGU"), LONG))
    ])


@pytest.mark.parametrize("plan", list(_plans()), ids=str)
def test_pooled_features_equal_inference_path(plan, mixed_tokens):
    enc, _ = trainable_encoder(base(), TrainSpec("lora"), up_to_layer=2)  # B = 0: same function
    runner = Runner(base(), batch_tokens=4096)
    expected = runner.pooled(mixed_tokens, plan)
    got = pooled_features(enc, Runner(enc, batch_tokens=4096), mixed_tokens, plan)
    assert got.requires_grad and got.dtype == torch.float32
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=0, atol=1e-5)


def test_pooled_features_check_catches_broken_stitching(mixed_tokens, monkeypatch):
    """The comparison above fails when each position is taken from another window."""
    plan = Plan((2,), 511, "concat", ("mean", "max"))
    enc, _ = trainable_encoder(base(), TrainSpec("lora"), up_to_layer=2)
    expected = Runner(base(), batch_tokens=4096).pooled(mixed_tokens, plan)
    runner = Runner(enc, batch_tokens=4096)
    pieces = runner._pieces

    def shifted(token_lists, stride):  # overlap split 100 positions early: wrong owners
        out = pieces(token_lists, stride)
        for p in out:
            a, b = p.keep
            if (a, b) != (0, len(token_lists[p.seq])):
                p.keep = (a if a == 0 else a - 100, b if b == len(token_lists[p.seq]) else b - 100)
        return out

    monkeypatch.setattr(runner, "_pieces", shifted)
    got = pooled_features(enc, runner, mixed_tokens, plan).detach().numpy()
    long_rows = [i for i, t in enumerate(mixed_tokens) if len(t) > 1022]
    short_rows = [i for i, t in enumerate(mixed_tokens) if len(t) <= 1022]
    np.testing.assert_allclose(got[short_rows], expected[short_rows], rtol=0, atol=1e-5)
    assert np.abs(got[long_rows] - expected[long_rows]).max() > 1e-4


# ---------------------------------------------------------------------------- 4. LoRA merge
def test_merged_state_of_zero_adapters_is_the_base():
    enc, params = trainable_encoder(
        base(), TrainSpec("lora"), up_to_layer=2, lora_targets="all", lora_rank=4, lora_alpha=8
    )
    assert all(not p.any() for n, p in params.items() if n.endswith(".lora.B"))
    merged = merged_state(base(), params, lora_alpha=8, lora_rank=4)
    dense = _base_state(base())
    assert merged.keys() == dense.keys()
    assert all(torch.equal(merged[k], dense[k]) for k in dense)  # W + 0 is W, bit for bit


def _training_path_outputs(clf, X) -> np.ndarray:
    """Head outputs through the training encoder with the fitted tensors (adapters live)."""
    fitted = clf._fitted
    rank, alpha, targets = fitted.lora
    enc, _ = trainable_encoder(
        base(),
        fitted.spec,
        up_to_layer=max(fitted.plan.layers),
        lora_rank=rank,
        lora_alpha=alpha,
        lora_targets=targets,
        trained=fitted.encoder,
    )
    head = Head(
        fitted.head["net.0.weight"].shape[1], fitted.n_outputs, None, torch.Generator()
    )
    head.load_state_dict(fitted.head)
    with torch.no_grad():
        feats = pooled_features(enc, Runner(enc, batch_tokens=1024), tokens(X), fitted.plan)
        return head(feats).numpy()


@pytest.mark.parametrize(
    ("train", "kw"),
    [("lora", {"lora_targets": "all", "lora_rank": 4, "lora_alpha": 4.0}), ("top:1", {}),
     ("all", {"pooling": ["mean", "cls"], "layers": [1, 2]})],
)
def test_inference_path_equals_training_path_after_fit(train, kw):
    X, y = motif_task(40, length=30, seed=5)
    reg = RnaFmRegressor(
        model=TINY, train=train, max_epochs=3, learning_rate=2e-2, random_state=0,
        progress=False, **kw,
    )
    reg.fit(X, np.linspace(-1, 1, len(X)))
    trained = reg._fitted.encoder
    if train == "lora":
        assert all(v.abs().sum() > 0 for v in trained.values())  # B moved off zero
    expected = _training_path_outputs(reg, X)[:, 0] * reg._y_scale_[0] + reg._y_mean_[0]
    np.testing.assert_allclose(reg.predict(X), expected, rtol=0, atol=1e-5)
    # what was trained matters: the base encoder's features give other outputs
    fitted = reg._fitted
    head = Head(fitted.head["net.0.weight"].shape[1], 1, None, torch.Generator())
    head.load_state_dict(fitted.head)
    frozen = Runner(base(), batch_tokens=1024).pooled(tokens(X), fitted.plan)
    with torch.no_grad():
        untrained = head(torch.from_numpy(frozen)).numpy()[:, 0] * reg._y_scale_[0]
    assert np.abs(untrained + reg._y_mean_[0] - expected).max() > 1e-3


# ----------------------------------------------------------------------------- 5. determinism
def _small_fit(**kw):
    X, y = motif_task(48, length=12, seed=2)
    params = {
        "model": TINY, "train": "lora", "max_epochs": 3, "learning_rate": 1e-2,
        "batch_tokens": 128, "random_state": 0, "progress": False,
    }
    return RnaFmClassifier(**{**params, **kw}).fit(X, y), X, y


def test_same_seed_same_model_other_seed_other_model(one_thread):
    a, X, _ = _small_fit()
    b, _, _ = _small_fit()
    c, _, _ = _small_fit(random_state=1)
    assert a.loss_curve_ == b.loss_curve_
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert all(torch.equal(v, b._fitted.encoder[k]) for k, v in a._fitted.encoder.items())
    assert a.loss_curve_ != c.loss_curve_
    assert np.abs(a.predict_proba(X) - c.predict_proba(X)).max() > 1e-4


# --------------------------------------------------------------------------- 6. early stopping
def _best_by_rule(scores: list[float], tol: float) -> tuple[int, int]:
    """scikit-learn's MLP rule: keep the first maximum; patience counts epochs that do not
    beat the best score so far by more than ``tol``. Returns (best epoch, epochs run)."""
    best, best_epoch, since = -np.inf, -1, 0
    for i, s in enumerate(scores):
        since = since + 1 if s < best + tol else 0
        if s > best:
            best, best_epoch = s, i
    return best_epoch, since


def test_early_stopping_keeps_the_best_epoch(monkeypatch, one_thread):
    snapshots = []
    validate = _training._validate

    def recording(head, encoder, *args, **kwargs):
        trained = {n: p.detach().clone() for n, p in encoder.named_parameters() if p.requires_grad}
        snapshots.append(({k: v.clone() for k, v in head.state_dict().items()}, trained))
        return validate(head, encoder, *args, **kwargs)

    monkeypatch.setattr(_training, "_validate", recording)
    rng = np.random.default_rng(4)
    X = random_rna(rng, 64, 10, 30)
    y = rng.integers(0, 2, 64)  # random labels: validation accuracy stalls at once
    clf = RnaFmClassifier(
        model=TINY, train="lora", max_epochs=40, learning_rate=1e-2, batch_tokens=256,
        validation_fraction=0.25, n_iter_no_change=3, tol=1e-4, random_state=0, progress=False,
    ).fit(X, y)
    scores = clf.validation_scores_
    assert clf.n_iter_ == len(scores) == len(clf.loss_curve_) == len(snapshots) < 40
    best, since = _best_by_rule(scores, 1e-4)
    assert since == 3  # stopped by patience
    assert clf.best_epoch_ == best == int(np.argmax(scores))
    assert clf.best_validation_score_ == scores[best]
    head, encoder = snapshots[best]
    assert all(torch.equal(clf._fitted.head[k], v) for k, v in head.items())
    assert clf._fitted.encoder.keys() == encoder.keys()
    assert all(torch.equal(clf._fitted.encoder[k], v) for k, v in encoder.items())
    last_head = snapshots[-1][0]
    assert not all(torch.equal(clf._fitted.head[k], v) for k, v in last_head.items())


def test_best_epoch_is_the_first_maximum_even_within_tol(monkeypatch):
    """An improvement smaller than ``tol`` does not reset patience but is still the best."""
    scores = iter([0.5, 0.52, 0.51, 0.515, 0.5, 0.49])
    monkeypatch.setattr(_training, "_validate", lambda *a, **k: next(scores))
    X, y = motif_task(24, seed=6)
    clf = RnaFmClassifier(
        model=TINY, train="head", max_epochs=6, validation_fraction=0.25, n_iter_no_change=2,
        tol=0.05, random_state=0, progress=False,
    ).fit(X, y)
    assert clf.validation_scores_ == [0.5, 0.52, 0.51]  # 0.52 < 0.5 + tol: patience 2 spent
    assert clf.best_epoch_ == 1
    assert clf.best_validation_score_ == 0.52


def _gc_task(n: int, seed: int):
    rng = np.random.default_rng(seed)
    X = random_rna(rng, n, 10, 30)
    return X, np.array([(s.count("G") + s.count("C")) / len(s) for s in X])


def test_warm_start_continues_and_checks_settings(one_thread):
    X, y = _gc_task(64, seed=7)
    params = {
        "model": TINY, "train": "all", "max_epochs": 5, "learning_rate": 1e-2,
        "batch_tokens": 256, "warmup_fraction": 0.0, "random_state": 0, "progress": False,
    }
    clf = RnaFmRegressor(**params, warm_start=True)
    first = clf.fit(X, y).loss_curve_
    assert first[-1] < 0.5 * first[0]
    # a tiny rate shows where the second fit starts: where the first ended (a fresh AdamW at
    # the full rate with no warm-up would first jump away from it)
    second = clf.set_params(learning_rate=1e-7).fit(X, y).loss_curve_
    assert second[0] < 1.5 * first[-1]
    assert RnaFmRegressor(**params).fit(X, y).loss_curve_ == first  # no warm start: anew
    with pytest.raises(ValueError, match="warm_start=True continues the previous fit"):
        clf.set_params(train="lora").fit(X, y)


def test_warm_start_with_other_classes_is_a_named_error():
    X, y = motif_task(24, seed=8)
    clf = RnaFmClassifier(
        model=TINY, train="head", max_epochs=1, random_state=0, warm_start=True, progress=False
    ).fit(X, y)
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X, np.array(["a", "b", "c"] * 8))


# --------------------------------------------------- 7. mixed precision, gradient checkpointing
def test_bfloat16_autocast_trains(one_thread):
    X, y = _gc_task(64, seed=11)
    reg = RnaFmRegressor(
        model=TINY, train="lora", dtype="bfloat16", max_epochs=5, learning_rate=1e-2,
        batch_tokens=256, random_state=0, progress=False,
    ).fit(X, y)
    assert all(np.isfinite(reg.loss_curve_))
    assert reg.loss_curve_[-1] < 0.5 * reg.loss_curve_[0]
    assert reg.score(X, y) > 0.5


def test_checkpointing_same_gradients_and_same_model(one_thread):
    rng = np.random.default_rng(9)
    toks = tokens(random_rna(rng, 6, 20, 80))
    plan = Plan((1, 2), 511, "concat", ("mean", "cls"))
    grads = []
    for checkpointing in (False, True):
        enc, params = trainable_encoder(
            base(), TrainSpec("all"), up_to_layer=2, generator=torch.Generator().manual_seed(0)
        )
        enc.checkpointing = checkpointing
        out = pooled_features(enc, Runner(enc, batch_tokens=4096), toks, plan)
        (out.square().sum() + out[:, :5].sum()).backward()
        grads.append({k: p.grad for k, p in params.items()})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=0, atol=1e-6)
    plain, X, _ = _small_fit()
    ckpt, _, _ = _small_fit(checkpointing=True)
    np.testing.assert_allclose(ckpt.loss_curve_, plain.loss_curve_, rtol=1e-6)
    np.testing.assert_allclose(ckpt.predict_proba(X), plain.predict_proba(X), atol=1e-6)


# -------------------------------------------------------------------------------- 8. schedule
def test_warmup_then_linear_decay_to_zero(monkeypatch):
    rates: list[float] = []

    class Recording(torch.optim.AdamW):
        def step(self, *args, **kwargs):
            rates.append(self.param_groups[0]["lr"])
            return super().step(*args, **kwargs)

    monkeypatch.setattr(_training.torch.optim, "AdamW", Recording)
    rng = np.random.default_rng(10)
    X = random_rna(rng, 60, 3, 60)  # mixed lengths: the number of batches varies by epoch
    y = rng.normal(size=60)
    reg = RnaFmRegressor(
        model=TINY, train="head", max_epochs=7, learning_rate=0.1, warmup_fraction=0.2,
        batch_tokens=200, random_state=0, progress=False,
    ).fit(X, y)
    total = len(rates)
    warmup = round(0.2 * total)
    expected = [0.1 * (k + 1) / (warmup + 1) for k in range(warmup)]
    expected += [0.1 * (total - k) / (total - warmup) for k in range(warmup, total)]
    np.testing.assert_allclose(rates, expected, rtol=1e-12)
    assert max(rates) == pytest.approx(0.1) and rates[warmup] == pytest.approx(0.1)
    assert min(rates) > 0  # no step wasted at rate 0
    assert reg.n_iter_ == 7


@pytest.mark.parametrize("train", ["head", "lora"])
def test_fit_on_the_test_device_predicts_the_same_on_the_cpu(device, train):
    """Fit on ``RNAFM_TEST_DEVICE`` (the GPU in benchmarks/device_check.sh), predict on both.

    The training path (unpadded attention with autograd, on-device pooling twin) and the
    inference path must agree across devices: the same fitted tensors give the same
    probabilities on the device and on the CPU (fp32; device kernels sum in another order).
    """
    rng = np.random.default_rng(3)
    X = random_rna(rng, 24, 12, 40) + ["ACGU" * 300]  # one windowed sequence (1200 nt)
    y = [s.count("G") > s.count("C") for s in X]
    clf = RnaFmClassifier(
        model=TINY, train=train, device=device, max_epochs=3, long_sequences="window",
        random_state=0, progress=False, learning_rate=1e-2,
    ).fit(X, y)  # fmt: skip
    on_device = clf.predict_proba(X)
    on_cpu = clf.set_params(device="cpu").predict_proba(X)
    assert np.isfinite(on_device).all() and len(clf.loss_curve_) == 3
    np.testing.assert_allclose(on_device, on_cpu, atol=1e-5)
