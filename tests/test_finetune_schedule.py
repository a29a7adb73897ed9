"""The training schedule of the fine-tuning estimators (issue 23 C.1).

``batch_size`` (rows per optimisation step) is the schedule; ``batch_tokens`` only caps the
memory of one forward/backward pass. A step split into micro-batches under a small token
budget must give the gradient of the whole step, and the rows of every step (and so the model,
up to float rounding) must not depend on the token budget or on the device's default budget.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_PTH

import rnafm_sklearn._training as training
from rnafm_sklearn import RnaFmClassifier, RnaFmRegressor
from rnafm_sklearn._adapters import TrainSpec, trainable_encoder
from rnafm_sklearn._alphabet import get_alphabet
from rnafm_sklearn._choices import DEFAULT_BATCH_TOKENS
from rnafm_sklearn._inference import Plan, Runner
from rnafm_sklearn._models import get_encoder
from rnafm_sklearn._schedule import micro_batches
from rnafm_sklearn._training import Data, Head, TrainOptions

MODEL = str(TINY_PTH)
CPU = torch.device("cpu")
_rng = np.random.default_rng(23)
SEQS = ["".join(_rng.choice(list("ACGU"), int(n))) for n in _rng.integers(8, 60, 22)]
VALUES = np.cos(np.arange(22.0))


def _recorded_steps(monkeypatch) -> list[list[int]]:
    """The rows of every optimisation step of the next fits (``_training._accumulate`` calls)."""
    steps: list[list[int]] = []
    accumulate = training._accumulate

    def recording(head, encoder, runner, plan, data, batch, *args, **kwargs):
        steps.append(list(batch))
        return accumulate(head, encoder, runner, plan, data, batch, *args, **kwargs)

    monkeypatch.setattr(training, "_accumulate", recording)
    return steps


def _reg(**kw) -> RnaFmRegressor:
    params = {
        "model": MODEL, "train": "lora", "max_epochs": 2, "batch_size": 8,
        "learning_rate": 1e-2, "random_state": 0, "progress": False,
    }  # fmt: skip
    return RnaFmRegressor(**{**params, **kw})


def test_token_budget_changes_neither_the_schedule_nor_the_model(monkeypatch):
    """batch_tokens=48 splits each 8-row step into many passes, 100000 runs it as one: the
    same steps, and the same model within float32 rounding of the accumulated sums."""
    steps = _recorded_steps(monkeypatch)
    weights = np.linspace(0.2, 3.0, len(SEQS))  # row weighting must survive the split
    small = _reg(batch_tokens=48).fit(SEQS, VALUES, sample_weight=weights)
    small_steps, steps[:] = list(steps), []
    large = _reg(batch_tokens=100_000).fit(SEQS, VALUES, sample_weight=weights)
    assert small_steps == steps
    assert len(steps) == 2 * 3  # ceil(22 / 8) steps per epoch, whatever the budget
    assert sorted(i for s in steps[:3] for i in s) == list(range(22))
    np.testing.assert_allclose(small.loss_curve_, large.loss_curve_, rtol=1e-5)
    np.testing.assert_allclose(small.predict(SEQS), large.predict(SEQS), rtol=1e-4, atol=1e-5)


def test_device_default_budget_does_not_change_the_schedule(monkeypatch):
    """batch_tokens=None takes the device's default budget (1024 on the CPU, 32768 on CUDA):
    the steps must be those of the same random_state on any device."""
    steps = _recorded_steps(monkeypatch)
    clf = RnaFmClassifier(
        model=MODEL, train="head", max_epochs=3, random_state=0, progress=False
    )
    y = np.array(["a", "b"] * 11)
    clf.fit(SEQS, y)
    on_cpu, steps[:] = list(steps), []
    monkeypatch.setitem(DEFAULT_BATCH_TOKENS, "cpu", DEFAULT_BATCH_TOKENS["cuda"])
    clf.fit(SEQS, y)
    assert on_cpu == steps
    assert [len(s) for s in steps] == [16, 6] * 3  # default batch_size 16: 2 steps per epoch


def _step_gradients(budget: int, weights: torch.Tensor) -> dict[str, torch.Tensor]:
    base = get_encoder(MODEL, CPU, torch.float32)
    alphabet = get_alphabet(base.config.alphabet)
    tokens = [alphabet.encode_body(s) for s in SEQS]
    generator = torch.Generator().manual_seed(0)
    enc, params = trainable_encoder(base, TrainSpec("all"), up_to_layer=2, generator=generator)
    head = Head(base.config.hidden_size, 1, None, generator)
    data = Data(
        tokens=tokens, features=None, targets=torch.as_tensor(VALUES, dtype=torch.float32)[:, None],
        weights=weights, costs=[(len(t) + 2, 1) for t in tokens],
    )  # fmt: skip
    options = TrainOptions(
        max_epochs=1, learning_rate=1e-3, head_learning_rate=1e-2, weight_decay=0.0,
        warmup_fraction=0.0, batch_tokens=budget, n_iter_no_change=None, tol=0.0,
        autocast=None, seed=0, batch_size=len(SEQS),
    )  # fmt: skip
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    batch = list(range(len(SEQS)))[::-1]
    loss, weight = training._accumulate(
        head, enc, Runner(enc, batch_tokens=budget), Plan((2,), 511, "concat", ("mean",)),
        data, batch, training.regression_loss, scaler, options, CPU,
    )  # fmt: skip
    grads = {f"head.{k}": p.grad.clone() for k, p in head.named_parameters()}
    grads.update({k: p.grad.clone() for k, p in params.items()})
    grads["loss"] = torch.tensor(loss)
    return grads


@pytest.mark.parametrize("budget", [1, 62, 200])
def test_micro_batched_step_has_the_gradient_of_one_pass(budget):
    """Gradient accumulation over micro-batches (one row each at budget 1) equals the
    gradient of the whole step in one pass, with unequal row weights."""
    weights = torch.linspace(0.1, 2.0, len(SEQS))
    assert len(micro_batches([(len(s) + 2, 1) for s in SEQS], budget)) > 1
    one = _step_gradients(100_000, weights)
    split = _step_gradients(budget, weights)
    assert one.keys() == split.keys()
    for k in one:
        torch.testing.assert_close(split[k], one[k], rtol=1e-5, atol=1e-6 * one[k].abs().max())


def test_micro_batches_respect_the_budget_and_keep_every_row():
    costs = [(12, 1), (40, 1), (30, 3), (5, 1), (1030, 2)]
    groups = micro_batches(costs, 100)
    assert sorted(i for g in groups for i in g) == list(range(5))
    for g in groups:
        if len(g) > 1:
            assert max(costs[i][0] for i in g) * sum(costs[i][1] for i in g) <= 100
    assert [4] in groups  # over the budget alone: a group of its own


@pytest.mark.parametrize("value", [0, -1, 2.5, True, None])
def test_batch_size_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match=r"'batch_size' parameter .* positive int"):
        _reg(batch_size=value).fit(SEQS, VALUES)
