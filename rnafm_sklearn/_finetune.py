"""``RnaFmClassifier`` and ``RnaFmRegressor``: RNA-FM fine-tuned as scikit-learn estimators.

The estimators validate input and parameters (as ``RnaFmEmbedder`` does), encode labels, and
hand token lists and target tensors to ``_training.train``; what to train inside the encoder
comes from ``_adapters``. A fitted estimator keeps only what it trained (the head, and the
adapters or unfrozen layers) plus the fingerprint of the base weights, which are re-resolved
from ``model=`` through the process-wide registry and never modified.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Number, Real
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._adapters import LORA_TARGETS, TrainSpec, parse_train, trainable_encoder
from ._alphabet import row_name
from ._base import RnaFmEstimator
from ._choices import default_batch_tokens
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError, WeightsChangedError, warn
from ._inference import Plan, Runner, feature_width
from ._models import (
    DTYPES,
    absolute_source,
    get_encoder,
    weights_fingerprint,
)
from ._training import (
    Data,
    Head,
    TrainOptions,
    accuracy,
    classification_loss,
    r2,
    regression_loss,
    total_steps,
    train,
)
from ._windows import n_windows

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_HEAD_LEARNING_RATE",
    "DEFAULT_LEARNING_RATES",
    "RnaFmClassifier",
    "RnaFmRegressor",
]

# learning_rate=None: a rate per training mode (AdamW) for what it trains in the encoder. The
# adapters start from scratch (as a zero update) and take larger steps than unfrozen
# pretrained layers, as usual for fine-tuning transformers. The head (standardised input,
# trained from scratch) takes 1e-2: on frozen features it then matches a converged
# LogisticRegression within 10-20 epochs (examples/finetune_riboswitch.py, tiny model).
DEFAULT_LEARNING_RATES = {"lora": 1e-3, "top": 1e-4, "all": 3e-5}
DEFAULT_HEAD_LEARNING_RATE = 1e-2
# Rows per optimisation step, the same on every device. 16 is the small end of the batch sizes
# usual for fine-tuning transformers (16 or 32) and about what the CPU default token budget
# (1024) held before the two were separated, for sequences of ~60 nt: the default learning
# rates above were chosen under it.
DEFAULT_BATCH_SIZE = 16

@dataclass(frozen=True)
class _Settings:
    source: str | os.PathLike  # ``model``, a local path made absolute
    config: RnaFmConfig
    device: torch.device
    plan: Plan
    spec: TrainSpec
    options: TrainOptions


@dataclass
class _Fitted:
    """What a fit learned (pickled with the estimator; the base weights are not)."""

    fingerprint: str  # of the base weights (float32, without the masked-LM head)
    spec: TrainSpec
    plan: Plan
    lora: tuple[int, float, str]  # rank, alpha, targets
    head_hidden: int | None
    n_outputs: int
    head: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor]  # trained encoder tensors and adapters, by name


class _RnaFmFineTuner(RnaFmEstimator):
    """Shared by the classifier and the regressor (see :class:`RnaFmClassifier`)."""

    _classifier = False

    # ------------------------------------------------------------- scikit-learn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # scikit-learn's meaning: results vary even with a fixed random_state. On the CPU the
        # same seed gives the same model; GPU kernels (autograd's scatter-adds, cuBLAS and
        # attention reductions) may sum in another order from one run to the next.
        tags.non_deterministic = _may_run_off_cpu(self.device)
        return tags

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_merged", None)  # inference copies of the weights are rebuilt on demand
        return state

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> _RnaFmFineTuner:
        """Fine-tune on sequences ``X`` and targets ``y``.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            Class labels (classifier) or values (regressor).
        sample_weight : array-like of shape (n_samples,), optional
            Per-row weights of the loss (and of the validation score). Only their ratios
            count: any finite weights >= 0 with a positive sum.

        Returns
        -------
        self
            Fitted. An interrupted fit (``KeyboardInterrupt``) or a failed one leaves the
            estimator as it was before the call.

        Raises
        ------
        rnafm_sklearn.InvalidParameterError
            An unknown ``train`` or a parameter out of its range, or ``layers`` that no
            trained tensor can change (checked before any training step).
        ValueError
            ``y`` missing or of another length, NaN, inf or complex targets, missing or
            mixed-type labels, a continuous target for the classifier, a single class,
            non-numeric regression targets, an empty ``X``, negative or all-zero
            ``sample_weight``, a class with fewer than 2 rows under
            ``validation_fraction``, or a sequence the model cannot read: the message names
            the row.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).
        rnafm_sklearn.WeightsUnavailableError
            ``model="rna-fm"`` offline and not downloaded yet.

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmRegressor
        >>> reg = RnaFmRegressor(model="tests/fixtures/RNA-FM_tiny.pth", train="lora",
        ...                      max_epochs=1, random_state=0, progress=False)
        >>> reg.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA"], [0.5, 1.0, 0.2]).n_iter_
        1
        """
        s = self._settings()
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        tokens, index = self._tokens(X, s.config)
        if not tokens:
            raise ValueError(
                f"X is empty: {type(self).__name__}.fit needs at least "
                f"{'two sequences' if self._classifier else 'one sequence'}."
            )
        targets, extra = self._encode_targets(y, len(tokens))
        weights = _sample_weights(sample_weight, len(tokens))
        previous = self.__dict__.get("_fitted") if self.warm_start else None
        # train="head" only runs the inference copy (in ``dtype``); the others train float32
        dtype = DTYPES[self.dtype] if s.spec.mode == "head" else torch.float32
        base = get_encoder(s.source, s.device, dtype)
        fingerprint = weights_fingerprint(base)  # of the float32 weights, whatever ``dtype``
        if previous is not None:
            self._check_warm_start(previous, fingerprint, s, extra)
        train_rows, val_rows = self._split(targets, extra.get("classes_"), s.options.seed)
        if not float(weights[train_rows].sum()) > 0:
            raise ValueError(
                "Every training row has sample_weight 0 (the rows with weight > 0 all fell in "
                "the validation split): nothing would be learned. Give more rows weight > 0 "
                "or lower validation_fraction."
            )
        targets, extra = self._training_targets(targets, extra, train_rows, weights)

        generator = torch.Generator().manual_seed(s.options.seed)
        width = feature_width(s.plan, s.config.hidden_size)
        n_out = extra["n_outputs"]
        head = Head(width, n_out, self.head_hidden, generator).to(s.device)
        if previous is not None:
            head.load_state_dict(previous.head)
        runner = Runner(base, batch_tokens=s.options.batch_tokens)
        encoder, params = None, {}
        features = None
        if s.spec.mode == "head":
            features = self._frozen_features(s, tokens)
            initial = features.index_select(0, torch.as_tensor(train_rows, device=s.device))
        elif previous is None:
            initial = self._frozen_features(s, [tokens[i] for i in train_rows], base=base)
        # the loss weighs each row by its sample weight times its class weight
        loss_weights = weights
        if extra.get("class_weight") is not None:
            loss_weights = weights * extra["class_weight"].index_select(0, targets)
        if previous is None:  # statistics weighted as in the loss
            head.standardize(initial, loss_weights[train_rows])
        if s.spec.mode != "head":
            encoder, params = trainable_encoder(
                base,
                s.spec,
                up_to_layer=max(s.plan.layers),
                lora_rank=self.lora_rank,
                lora_alpha=float(self.lora_alpha),
                lora_targets=self.lora_targets,
                generator=generator,
                trained=None if previous is None else previous.encoder,
            )
            encoder.checkpointing = bool(self.checkpointing)
            runner = Runner(encoder, batch_tokens=s.options.batch_tokens)

        def rows(idx: np.ndarray) -> Data:
            t = torch.as_tensor(idx, device=s.device)
            return Data(
                tokens=None if features is not None else [tokens[i] for i in idx],
                features=None if features is None else features.index_select(0, t),
                targets=targets.to(s.device).index_select(0, t),
                weights=loss_weights.to(s.device).index_select(0, t),
                score_weights=weights.to(s.device).index_select(0, t),
                costs=[_cost(len(tokens[i]), runner.window, s.plan.window_stride) for i in idx],
            )

        data = rows(train_rows)
        validation = rows(val_rows) if val_rows is not None else None
        if self._classifier:
            loss, score = classification_loss, accuracy
        else:
            loss, score = regression_loss, r2
        steps = total_steps(len(data), s.options.batch_size, s.options.max_epochs)
        progress = SimpleNamespace(progress=None)
        with self._progress(progress, steps, "step"):
            options = s.options
            if progress.progress is not None:
                options = TrainOptions(**{**options.__dict__, "progress": progress.progress})
            result = train(
                head=head,
                encoder=encoder,
                encoder_params=params,
                runner=runner,
                plan=s.plan,
                data=data,
                validation=validation,
                loss=loss,
                score=score,
                options=options,
            )
        # Nothing above changed the estimator. Every fitted attribute is built first, then
        # committed in one step: an interrupt leaves the estimator wholly as it was, or fitted.
        fitted: dict[str, Any] = {
            "_fitted": _Fitted(
                fingerprint=fingerprint,
                spec=s.spec,
                plan=s.plan,
                lora=(int(self.lora_rank), float(self.lora_alpha), self.lora_targets),
                head_hidden=self.head_hidden,
                n_outputs=n_out,
                head=result.head,
                encoder=result.encoder,
            ),
            "_merged": {},  # the inference copy of a previous fit is stale
            "_resolved_model": (self.model, s.source),
            **{name: value for name, value in extra.items() if name.endswith("_")},
            **result.fitted_curves(validated=validation is not None),
        }
        self.__dict__.update(fitted)
        return self

    # --------------------------------------------------------------------------- predict
    def _outputs(self, X: Any) -> np.ndarray:
        """Head outputs (logits or standardised values), ``(n_samples, n_outputs)``."""
        check_is_fitted(self, "_fitted")
        fitted: _Fitted = self._fitted
        config, device, _ = self._check_common()
        tokens, _ = self._tokens(X, config)
        if not tokens:
            return np.empty((0, fitted.n_outputs), np.float32)
        encoder = self._inference_encoder(fitted, device)
        runner = self._runner(encoder)
        features = self._features(runner, fitted.plan, tokens, cached=fitted.spec.mode == "head")
        head = Head(features.shape[1], fitted.n_outputs, fitted.head_hidden, torch.Generator())
        head.load_state_dict(fitted.head)
        with torch.no_grad():
            return head(torch.from_numpy(features)).numpy()

    def _inference_encoder(self, fitted: _Fitted, device: torch.device) -> RnaFmEncoder:
        """The encoder that predictions run on (see :meth:`RnaFmEstimator._fitted_encoder`)."""
        return self._fitted_encoder(fitted.fingerprint, fitted.encoder, fitted.lora, device)

    # ------------------------------------------------------------------------- helpers
    def _frozen_features(
        self, s: _Settings, tokens: list[bytes], base: RnaFmEncoder | None = None
    ) -> torch.Tensor:
        """Features of the frozen encoder, by the inference path and through the cache.

        All of them with ``train="head"``; otherwise (``base``, the float32 training base)
        the training rows' initial features that set the head's input statistics. Below
        float32 these come from ``base`` itself, uncached: no second copy of the weights in
        the estimator's ``dtype`` is loaded for them.
        """
        if base is not None and self.dtype != "float32":
            runner, cache = self._runner(base), False
        else:
            encoder = get_encoder(s.source, s.device, DTYPES[self.dtype])
            runner, cache = self._runner(encoder), True
        features = self._features(runner, s.plan, tokens, cached=cache)
        return torch.from_numpy(features).to(s.device)

    def _settings(self) -> _Settings:
        """Check every parameter (no weights loaded) and resolve the training options."""
        self._check_pooling(self.pooling)
        config, device, stride = self._check_common(fit=True)
        source = absolute_source(self.model)
        plan = self._plan(stride, config.num_layers)
        try:
            spec = parse_train(self.train, config.num_layers)
        except ValueError as exc:
            raise InvalidParameterError(f"The 'train' parameter: {exc}") from None
        self._check_training_params()
        top_state = max(plan.layers)
        first_trained = {"lora": 1, "top": config.num_layers - spec.top + 1}.get(spec.mode, 0)
        if top_state < first_trained:
            raise InvalidParameterError(
                f"train={self.train!r} trains layer {first_trained} and above, but "
                f"layers={self.layers!r} pools hidden state {top_state}, which does not depend "
                "on them: nothing would be learned in the encoder. Pool a later layer or use "
                "train='head'."
            )
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        if spec.mode == "head":  # only the head is trained: learning_rate is its rate
            lr = head_lr = (
                self.head_learning_rate or self.learning_rate or DEFAULT_HEAD_LEARNING_RATE
            )
        else:
            lr = self.learning_rate or DEFAULT_LEARNING_RATES[spec.mode]
            head_lr = self.head_learning_rate or DEFAULT_HEAD_LEARNING_RATE
        budget = default_batch_tokens(self.batch_tokens, device.type)
        autocast = None if self.dtype == "float32" else DTYPES[self.dtype]
        options = TrainOptions(
            max_epochs=int(self.max_epochs),
            learning_rate=float(lr),
            head_learning_rate=float(head_lr),
            weight_decay=float(self.weight_decay),
            warmup_fraction=float(self.warmup_fraction),
            batch_size=int(self.batch_size),
            batch_tokens=int(budget),
            n_iter_no_change=self.n_iter_no_change,
            tol=float(self.tol),
            autocast=autocast,
            seed=seed,
            verbose=bool(self.verbose),
        )
        return _Settings(source, config, device, plan, spec, options)

    def _training_targets(
        self,
        targets: torch.Tensor,
        extra: dict[str, Any],
        train_rows: np.ndarray,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The targets the loss sees, from the training rows (the regressor standardises)."""
        return targets, extra

    def _check_training_params(self) -> None:
        def positive_int(name: str, value: object, none: bool = False) -> None:
            ok = (none and value is None) or (
                isinstance(value, Integral) and not isinstance(value, bool) and value > 0
            )
            if not ok:
                raise self._fail(name, "a positive int" + (" or None" if none else ""), value)

        def real(name: str, value: object, low: float, high: float, what: str) -> None:
            ok = isinstance(value, Real) and not isinstance(value, bool)
            if not ok or not low <= float(value) < high:
                raise self._fail(name, what, value)

        positive_int("head_hidden", self.head_hidden, none=True)
        positive_int("lora_rank", self.lora_rank)
        real("lora_alpha", self.lora_alpha, 1e-12, float("inf"), "a positive float")
        self._check_choice("lora_targets", self.lora_targets, tuple(LORA_TARGETS))
        positive_int("max_epochs", self.max_epochs)
        positive_int("batch_size", self.batch_size)
        for name in ("learning_rate", "head_learning_rate"):
            if getattr(self, name) is not None:
                real(name, getattr(self, name), 1e-30, float("inf"), "a positive float or None")
        real("weight_decay", self.weight_decay, 0.0, float("inf"), "a float >= 0")
        real("warmup_fraction", self.warmup_fraction, 0.0, 1.0, "a float in [0, 1)")
        real("validation_fraction", self.validation_fraction, 0.0, 1.0, "a float in [0, 1)")
        positive_int("n_iter_no_change", self.n_iter_no_change, none=True)
        real("tol", self.tol, 0.0, float("inf"), "a float >= 0")
        for name in ("verbose", "warm_start", "checkpointing"):
            if not isinstance(getattr(self, name), bool | np.bool_ | Integral):
                raise self._fail(name, "a bool", getattr(self, name))

    def _split(
        self, targets: torch.Tensor, classes: np.ndarray | None, seed: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Training and validation rows (``validation_fraction``; stratified for classes).

        ``targets`` are class indices into ``classes`` (classifier) or values (regressor).
        """
        n = len(targets)
        rows = np.arange(n)
        if not self.validation_fraction:
            return rows, None
        stratify = targets.numpy() if self._classifier else None
        if stratify is not None:
            counts = np.bincount(stratify, minlength=len(classes))
            rare = np.flatnonzero(counts < 2)
            if rare.size:
                shown = ", ".join(
                    f"class {classes[k].tolist()!r} has {counts[k]} row" for k in rare[:10]
                )
                raise ValueError(
                    f"validation_fraction={self.validation_fraction} holds out rows of every "
                    f"class (a stratified split), but {shown}{' ...' if rare.size > 10 else ''};"
                    " each class needs at least 2 rows. Add rows of those classes or set "
                    "validation_fraction=0 (no validation)."
                )
        try:
            train_rows, val_rows = train_test_split(
                rows, test_size=self.validation_fraction, stratify=stratify, random_state=seed
            )
        except ValueError as exc:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} cannot split {n} rows "
                f"({exc}). Use more rows, a larger validation_fraction or 0 (no validation)."
            ) from None
        return np.sort(train_rows), np.sort(val_rows)

    def _check_warm_start(
        self, previous: _Fitted, fingerprint: str, s: _Settings, extra: dict[str, Any]
    ) -> None:
        if previous.fingerprint != fingerprint:
            raise WeightsChangedError(
                f"warm_start=True, but model={self.model!r} now holds other weights than the "
                f"previous fit (fingerprint {previous.fingerprint[:12]} then, "
                f"{fingerprint[:12]} now). Set warm_start=False to fit from scratch."
            )
        now = (s.spec, s.plan, (int(self.lora_rank), float(self.lora_alpha), self.lora_targets))
        then = (previous.spec, previous.plan, previous.lora)
        if now != then or previous.head_hidden != self.head_hidden:
            raise ValueError(
                "warm_start=True continues the previous fit, but train, pooling, layers, "
                "layer_aggregation, window_stride, head_hidden or the LoRA settings changed "
                "since. Set warm_start=False to fit from scratch."
            )
        if self._classifier:
            then, now = self.classes_, extra["classes_"]
            if then.shape != now.shape or not (then == now).all():
                raise ValueError(
                    f"warm_start=True continues the previous fit, but y has the classes "
                    f"{now.tolist()} and the previous fit had {then.tolist()}. Set "
                    "warm_start=False to fit from scratch."
                )
        elif extra["n_outputs"] != previous.n_outputs:
            raise ValueError(
                f"warm_start=True continues the previous fit, but y has {extra['n_outputs']} "
                f"outputs and the previous fit had {previous.n_outputs}. Set warm_start=False "
                "to fit from scratch."
            )


def _cost(n_tokens: int, window: int, stride: int) -> tuple[int, int]:
    """``(width, pieces)`` of a sequence in the token budget (``<cls>``/``<eos>`` included)."""
    return min(n_tokens, window) + 2, n_windows(n_tokens, window, stride)


def _sample_weights(sample_weight: Any, n: int) -> torch.Tensor:
    if sample_weight is None:
        return torch.ones(n, dtype=torch.float32)
    try:
        raw = np.asarray(sample_weight)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight must be numeric ({exc}).") from None
    if np.iscomplexobj(raw) or (
        raw.dtype == object
        and any(isinstance(v, complex | np.complexfloating) for v in raw.ravel().tolist())
    ):
        raise ValueError(
            "sample_weight must be real: complex values are not supported (the imaginary part "
            "would be dropped). Pass sample_weight.real or abs(sample_weight) explicitly."
        )
    try:
        w = raw.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample_weight must be numeric ({exc}).") from None
    if w.shape != (n,):
        raise ValueError(
            f"sample_weight has shape {w.shape}, but X has {n} sequences: give one weight per row."
        )
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if bad.size:
        raise ValueError(
            f"sample_weight must be finite and >= 0; row {int(bad[0])} (0-based) is {w[bad[0]]}."
        )
    if not w.sum() > 0:
        raise ValueError("sample_weight sums to zero: at least one row must have weight > 0.")
    # Only ratios count (the loss and the scores are weighted means): relative to the largest,
    # weights beyond float32's range (1e39, 1e-46) neither overflow nor vanish.
    return torch.from_numpy((w / w.max()).astype(np.float32))


def _may_run_off_cpu(device: object) -> bool:
    """Whether ``device`` may resolve to a GPU (``"auto"`` where one is visible)."""
    if not isinstance(device, str):
        return False
    if device == "auto":
        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps and mps.is_available())
    return device.split(":")[0] in ("cuda", "mps")


def _first_non_numeric(y: np.ndarray) -> int | None:
    """Flat index of the first value of ``y`` that is not a number (nor missing), or None.

    ``astype(float)`` would parse ``"0.5"`` and count datetimes in nanoseconds: neither is a
    regression target a user meant.
    """
    if y.dtype.kind in "biuf":
        return None
    if y.dtype.kind != "O":  # str, bytes, datetime, timedelta, void
        return 0 if y.size else None
    for i, v in enumerate(y.ravel().tolist()):
        if isinstance(v, bool | Number) or v is None or v is pd.NA:
            continue
        return i
    return None


def _check_length(y: np.ndarray, n: int) -> None:
    if y.ndim == 0 or y.shape[0] != n:
        got = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows"
        raise ValueError(f"y has {got}, but X has {n} sequences: give one target per sequence.")


def _labels(y: Any, n: int) -> np.ndarray:
    """Class labels as a 1-D array: no missing value, no silent conversion between types."""
    if isinstance(y, np.ndarray) and y.dtype != object:
        values = y
    else:
        # object dtype keeps each label as given (numpy would turn ["a", 1, nan] into strings)
        values = np.asarray(y, dtype=object)
    _check_length(values, n)
    if values.ndim != 1:
        if values.ndim == 2 and values.shape[1] == 1:
            warn(
                "A column-vector y was passed when a 1d array was expected. Please change the "
                "shape of y to (n_samples,), for example using ravel().",
                DataConversionWarning,
            )
            values = values[:, 0]
        else:
            raise ValueError(
                f"y has shape {values.shape}: RnaFmClassifier takes one label per sequence "
                "(multi-output classification is not supported)."
            )
    missing = np.flatnonzero(pd.isna(values))
    if missing.size:
        raise ValueError(
            f"y holds a missing label (None or NaN) at {row_name(int(missing[0]), None)}; "
            "drop those rows or give them a label."
        )
    if values.dtype == object:
        text = [isinstance(v, str | bytes) for v in values]
        if any(text) and not all(text):
            a, b = text.index(True), text.index(False)
            raise TypeError(
                f"y mixes label types: {row_name(a, None)} is {values[a]!r} "
                f"({type(values[a]).__name__}), {row_name(b, None)} is {values[b]!r} "
                f"({type(values[b]).__name__}). Use one type for all labels."
            )
        values = np.asarray(values.tolist())  # str, int, float or bool labels
    check_classification_targets(values)
    return values


class RnaFmClassifier(ClassifierMixin, _RnaFmFineTuner):
    """Fine-tune RNA-FM to classify RNA sequences (binary or multiclass).

    A pooled RNA-FM representation feeds a head trained with cross-entropy; what else is
    trained is ``train``. Labels may be strings, ints or bools; ``classes_`` keeps them
    sorted. After ``fit``, predictions run on the fast inference path (adapters folded into
    the weights). Pickles hold the trained tensors only: the base weights are re-read from
    ``model`` and checked against their fingerprint.

    Parameters
    ----------
    model : str or path, default="rna-fm"
        As for :class:`RnaFmEmbedder`: ``"rna-fm"``, ``"mrna-fm"`` or a checkpoint path.
    train : str, default="lora"
        What is trained: ``"head"`` (frozen encoder: features computed once per fit, through
        the cache if given), ``"lora"`` (low-rank adapters, see ``lora_*``), ``"top:K"`` (the
        last K transformer layers and the final LayerNorm) or ``"all"`` (every encoder
        weight). The head is always trained.
    pooling, layers, layer_aggregation
        The pooled representation that feeds the head, as for :class:`RnaFmEmbedder`.
    head_hidden : int, optional
        Hidden units of a one-hidden-layer MLP head (GELU); default: a linear head.
    lora_rank : int, default=8
        Rank ``r`` of each adapter.
    lora_alpha : float, default=16
        Adapter scale numerator: the update is ``(lora_alpha / lora_rank) B A``.
    lora_targets : {"attention", "ffn", "all"}, default="all"
        Layers that get an adapter: the fused q/k/v and the output projection, the two
        feed-forward layers, or all four, in every layer up to the deepest pooled one.
        ``"all"`` learned a motif that attention-only adapters did not fully learn
        (benchmarks/lora_targets.py: test accuracy 0.98 vs 0.94 on the tiny model) and was
        as good on the riboswitch families; on RNA-FM it trains about 1.5 % of the weights
        (attention only: 0.4 %).
    max_epochs : int, default=10
        Passes over the training rows.
    learning_rate : float, optional
        Peak AdamW learning rate of what ``train`` names in the encoder; default by ``train``:
        lora 1e-3, top:K 1e-4, all 3e-5. With ``train="head"`` it is the head's rate (unless
        ``head_learning_rate`` is given).
    head_learning_rate : float, optional
        Peak AdamW learning rate of the head; default: ``learning_rate`` with
        ``train="head"``, else 1e-2 (the head starts from scratch, on standardised input:
        each pooled feature is shifted and scaled by its mean and standard deviation over the
        training rows before training, as a ``StandardScaler``, and the statistics are kept).
    weight_decay : float, default=0.0
        AdamW weight decay.
    warmup_fraction : float, default=0.1
        Share of all steps over which the learning rate rises linearly; it then falls
        linearly to zero at the end of ``max_epochs``.
    batch_size : int, default=16
        Rows per optimisation step, on every device: with the same ``random_state`` the
        same rows make up each step, and an epoch has ``ceil(n_training_rows / batch_size)``
        steps, on a CPU as on a GPU. The last step of an epoch may hold fewer rows.
    batch_tokens : int, optional
        A memory cap, not a training setting: the token budget (padding included) of one
        forward/backward pass and of one inference pass; default 1024 on the CPU, 32768 on
        CUDA. A step whose rows exceed it runs as several passes whose gradients are
        accumulated, the same gradient as one pass (up to float rounding).
    validation_fraction : float, default=0.0
        Share of the rows held out (stratified for a classifier) and scored after each epoch
        (accuracy or R^2); the best epoch's weights are kept. 0: no validation.
    n_iter_no_change : int or None, default=3
        With validation: stop after this many epochs without an improvement of more than
        ``tol``. None: run every epoch (and still keep the best).
    tol : float, default=1e-4
        Smallest validation-score gain that counts as an improvement.
    random_state : int, RandomState or None, default=None
        Seeds the head and adapter initialisation, the batch order and the validation split:
        the same seed gives the same model on the same CPU.
    verbose : bool, default=False
        Write the loss (and validation score) of each epoch to stderr.
    warm_start : bool, default=False
        Continue from the previous fit's head and trained weights (same settings required).
    checkpointing : bool, default=False
        Gradient checkpointing: recompute each layer in the backward pass instead of storing
        its activations (less memory for long sequences, about a third more compute).
    column, long_sequences, truncation_side, window_stride, device, progress
        As for :class:`RnaFmEmbedder`; long sequences under ``"window"`` are trained on
        their stitched windows.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        ``"bfloat16"``/``"float16"``: mixed-precision training (autocast, float32 weights;
        ``"float16"``, GPU only, with dynamic loss scaling) and predictions in that precision.
    cache : path, optional
        Embedding cache of the frozen features: all of them with ``train="head"`` (so folds
        and grid candidates reuse them), otherwise those of the training rows that set the
        head's input statistics. Predictions after ``train="head"`` read it too.
    class_weight : dict, "balanced" or None, default=None
        Loss weight per class (multiplies ``sample_weight``); ``"balanced"``: inversely
        proportional to class frequencies.

    Attributes
    ----------
    classes_ : ndarray
        The class labels.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    validation_scores_ : list of float or None
        Validation accuracy after each epoch (with ``validation_fraction``).
    best_validation_score_ : float or None
    best_epoch_ : int or None
        0-based epoch whose weights were kept (with validation).
    n_iter_ : int
        Epochs run.

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmClassifier
    >>> clf = RnaFmClassifier(model="tests/fixtures/RNA-FM_tiny.pth", train="lora",
    ...                       max_epochs=2, random_state=0)
    >>> clf.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA", "GGCCGGCC"], ["a", "b", "a", "b"])
    RnaFmClassifier(...)
    >>> clf.predict_proba(["ACGU"]).shape
    (1, 2)
    """

    _classifier = True

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm",
        train: str = "lora",
        pooling: str | Sequence[str] = "mean",
        layers: int | Sequence[int] = -1,
        layer_aggregation: str = "concat",
        head_hidden: int | None = None,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: str = "all",
        max_epochs: int = 10,
        learning_rate: float | None = None,
        head_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int | None = None,
        validation_fraction: float = 0.0,
        n_iter_no_change: int | None = 3,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        warm_start: bool = False,
        checkpointing: bool = False,
        class_weight: dict | str | None = None,
        column: str | None = None,
        long_sequences: str = "error",
        truncation_side: str = "right",
        window_stride: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        progress: bool | str = "auto",
        cache: str | os.PathLike | None = None,
    ):
        self.model = model
        self.train = train
        self.pooling = pooling
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.head_hidden = head_hidden
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_targets = lora_targets
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpointing = checkpointing
        self.class_weight = class_weight
        self.column = column
        self.long_sequences = long_sequences
        self.truncation_side = truncation_side
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.cache = cache

    def _encode_targets(self, y: Any, n: int) -> tuple[torch.Tensor, dict[str, Any]]:
        y = _labels(y, n)
        try:
            classes, encoded = np.unique(y, return_inverse=True)
        except TypeError as exc:
            raise TypeError(f"y mixes label types that cannot be sorted ({exc}).") from None
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({classes.tolist()[0]!r}): a classifier needs at least two."
            )
        class_weight = None
        if self.class_weight is not None:
            if not (isinstance(self.class_weight, dict) or self.class_weight == "balanced"):
                raise self._fail("class_weight", "a dict, 'balanced' or None", self.class_weight)
            weights = compute_class_weight(self.class_weight, classes=classes, y=y)
            class_weight = torch.as_tensor(weights, dtype=torch.float32)
        targets = torch.as_tensor(encoded.reshape(-1), dtype=torch.long)
        return targets, {
            "classes_": classes,
            "n_outputs": len(classes),
            "class_weight": class_weight,
        }

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits: ``(n_samples,)`` (class 1 minus class 0) if binary, else ``(n, n_classes)``.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes), float32
            The head's outputs; above 0 favours ``classes_[1]`` in the binary case.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        rnafm_sklearn.WeightsChangedError
            ``model`` now holds other base weights than those of the fit (fingerprints
            differ): point ``model`` at the checkpoint of the fit, or fit again.
        ValueError
            A sequence the model cannot read (the message names the row and characters), or
            one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmClassifier
        >>> clf = RnaFmClassifier(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
        ...                       max_epochs=2, random_state=0, progress=False)
        >>> clf = clf.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA", "GGCCGGCC"], ["a", "b", "a", "b"])
        >>> clf.decision_function(["ACGU", "GGCC"]).shape
        (2,)
        """
        out = self._outputs(X)
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, ``(n_samples, n_classes)`` in the order of ``classes_``.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            Softmax of the head's outputs; rows sum to 1.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        rnafm_sklearn.WeightsChangedError
            ``model`` now holds other base weights than those of the fit (fingerprints
            differ): point ``model`` at the checkpoint of the fit, or fit again.
        ValueError
            A sequence the model cannot read (the message names the row and characters), or
            one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmClassifier
        >>> clf = RnaFmClassifier(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
        ...                       max_epochs=2, random_state=0, progress=False)
        >>> clf = clf.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA", "GGCCGGCC"], ["a", "b", "a", "b"])
        >>> p = clf.predict_proba(["ACGU"])
        >>> p.shape, bool(abs(p.sum() - 1) < 1e-9)
        ((1, 2), True)
        """
        return torch.softmax(torch.from_numpy(self._outputs(X)).double(), dim=1).numpy()

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """Log of :meth:`predict_proba`.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_classes), float64
            Log-softmax of the head's outputs (computed directly, not as ``log(proba)``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        rnafm_sklearn.WeightsChangedError
            ``model`` now holds other base weights than those of the fit (fingerprints
            differ): point ``model`` at the checkpoint of the fit, or fit again.
        ValueError
            A sequence the model cannot read (the message names the row and characters), or
            one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmClassifier
        >>> clf = RnaFmClassifier(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
        ...                       max_epochs=2, random_state=0, progress=False)
        >>> clf = clf.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA", "GGCCGGCC"], ["a", "b", "a", "b"])
        >>> bool((clf.predict_log_proba(["ACGU"]) < 0).all())
        True
        """
        return torch.log_softmax(torch.from_numpy(self._outputs(X)).double(), dim=1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each sequence.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        rnafm_sklearn.WeightsChangedError
            ``model`` now holds other base weights than those of the fit (fingerprints
            differ): point ``model`` at the checkpoint of the fit, or fit again.
        ValueError
            A sequence the model cannot read (the message names the row and characters), or
            one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmClassifier
        >>> clf = RnaFmClassifier(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
        ...                       max_epochs=2, random_state=0, progress=False)
        >>> clf = clf.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA", "GGCCGGCC"], ["a", "b", "a", "b"])
        >>> clf.predict(["ACGU", "GGCC"]).shape
        (2,)
        """
        outputs = self._outputs(X)  # NotFittedError before classes_ is looked up
        return self.classes_[outputs.argmax(1)]


class RnaFmRegressor(RegressorMixin, _RnaFmFineTuner):
    """Fine-tune RNA-FM to predict one or several real values per RNA sequence.

    Targets are standardised for training (mean 0, variance 1 per output, over the training
    rows weighted by ``sample_weight``; validation rows do not count) and predictions mapped
    back; the loss is the (weighted) mean squared error.

    Parameters
    ----------
    model : str or path, default="rna-fm"
        As for :class:`RnaFmEmbedder`: ``"rna-fm"``, ``"mrna-fm"`` or a checkpoint path.
    train : str, default="lora"
        What is trained: ``"head"`` (frozen encoder: features computed once per fit, through
        the cache if given), ``"lora"`` (low-rank adapters, see ``lora_*``), ``"top:K"`` (the
        last K transformer layers and the final LayerNorm) or ``"all"`` (every encoder
        weight). The head is always trained.
    pooling, layers, layer_aggregation
        The pooled representation that feeds the head, as for :class:`RnaFmEmbedder`.
    head_hidden : int, optional
        Hidden units of a one-hidden-layer MLP head (GELU); default: a linear head.
    lora_rank : int, default=8
        Rank ``r`` of each adapter.
    lora_alpha : float, default=16
        Adapter scale numerator: the update is ``(lora_alpha / lora_rank) B A``.
    lora_targets : {"attention", "ffn", "all"}, default="all"
        Layers that get an adapter: the fused q/k/v and the output projection, the two
        feed-forward layers, or all four, in every layer up to the deepest pooled one.
        ``"all"`` learned a motif that attention-only adapters did not fully learn
        (benchmarks/lora_targets.py: test accuracy 0.98 vs 0.94 on the tiny model) and was
        as good on the riboswitch families; on RNA-FM it trains about 1.5 % of the weights
        (attention only: 0.4 %).
    max_epochs : int, default=10
        Passes over the training rows.
    learning_rate : float, optional
        Peak AdamW learning rate of what ``train`` names in the encoder; default by ``train``:
        lora 1e-3, top:K 1e-4, all 3e-5. With ``train="head"`` it is the head's rate (unless
        ``head_learning_rate`` is given).
    head_learning_rate : float, optional
        Peak AdamW learning rate of the head; default: ``learning_rate`` with
        ``train="head"``, else 1e-2 (the head starts from scratch, on standardised input:
        each pooled feature is shifted and scaled by its mean and standard deviation over the
        training rows before training, as a ``StandardScaler``, and the statistics are kept).
    weight_decay : float, default=0.0
        AdamW weight decay.
    warmup_fraction : float, default=0.1
        Share of all steps over which the learning rate rises linearly; it then falls
        linearly to zero at the end of ``max_epochs``.
    batch_size : int, default=16
        Rows per optimisation step, on every device: with the same ``random_state`` the
        same rows make up each step, and an epoch has ``ceil(n_training_rows / batch_size)``
        steps, on a CPU as on a GPU. The last step of an epoch may hold fewer rows.
    batch_tokens : int, optional
        A memory cap, not a training setting: the token budget (padding included) of one
        forward/backward pass and of one inference pass; default 1024 on the CPU, 32768 on
        CUDA. A step whose rows exceed it runs as several passes whose gradients are
        accumulated, the same gradient as one pass (up to float rounding).
    validation_fraction : float, default=0.0
        Share of the rows held out (stratified for a classifier) and scored after each epoch
        (accuracy or R^2); the best epoch's weights are kept. 0: no validation.
    n_iter_no_change : int or None, default=3
        With validation: stop after this many epochs without an improvement of more than
        ``tol``. None: run every epoch (and still keep the best).
    tol : float, default=1e-4
        Smallest validation-score gain that counts as an improvement.
    random_state : int, RandomState or None, default=None
        Seeds the head and adapter initialisation, the batch order and the validation split:
        the same seed gives the same model on the same CPU.
    verbose : bool, default=False
        Write the loss (and validation score) of each epoch to stderr.
    warm_start : bool, default=False
        Continue from the previous fit's head and trained weights (same settings required).
    checkpointing : bool, default=False
        Gradient checkpointing: recompute each layer in the backward pass instead of storing
        its activations (less memory for long sequences, about a third more compute).
    column, long_sequences, truncation_side, window_stride, device, progress
        As for :class:`RnaFmEmbedder`; long sequences under ``"window"`` are trained on
        their stitched windows.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
        ``"bfloat16"``/``"float16"``: mixed-precision training (autocast, float32 weights;
        ``"float16"``, GPU only, with dynamic loss scaling) and predictions in that precision.
    cache : path, optional
        Embedding cache of the frozen features: all of them with ``train="head"`` (so folds
        and grid candidates reuse them), otherwise those of the training rows that set the
        head's input statistics. Predictions after ``train="head"`` read it too.

    Attributes
    ----------
    n_outputs_ : int
        Number of targets (``y`` columns).
    loss_curve_ : list of float
        Mean training loss (standardised scale) of each epoch.
    validation_scores_ : list of float or None
        Validation R^2 after each epoch (with ``validation_fraction``).
    best_validation_score_ : float or None
    best_epoch_ : int or None
    n_iter_ : int

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmRegressor
    >>> reg = RnaFmRegressor(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
    ...                      max_epochs=2, random_state=0)
    >>> reg.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA"], [0.5, 1.0, 0.2]).predict(["ACGU"]).shape
    (1,)
    """

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm",
        train: str = "lora",
        pooling: str | Sequence[str] = "mean",
        layers: int | Sequence[int] = -1,
        layer_aggregation: str = "concat",
        head_hidden: int | None = None,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: str = "all",
        max_epochs: int = 10,
        learning_rate: float | None = None,
        head_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_tokens: int | None = None,
        validation_fraction: float = 0.0,
        n_iter_no_change: int | None = 3,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        warm_start: bool = False,
        checkpointing: bool = False,
        column: str | None = None,
        long_sequences: str = "error",
        truncation_side: str = "right",
        window_stride: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        progress: bool | str = "auto",
        cache: str | os.PathLike | None = None,
    ):
        self.model = model
        self.train = train
        self.pooling = pooling
        self.layers = layers
        self.layer_aggregation = layer_aggregation
        self.head_hidden = head_hidden
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_targets = lora_targets
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.checkpointing = checkpointing
        self.column = column
        self.long_sequences = long_sequences
        self.truncation_side = truncation_side
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.cache = cache

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _encode_targets(self, y: Any, n: int) -> tuple[torch.Tensor, dict[str, Any]]:
        try:
            raw = np.asarray(y)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y must be numeric for RnaFmRegressor ({exc}).") from None
        if np.iscomplexobj(raw) or (
            raw.dtype == object and any(isinstance(v, complex) for v in raw.ravel())
        ):
            raise ValueError(
                "y must be real: complex values are not supported (the imaginary part would "
                "be dropped). Pass y.real or abs(y) explicitly."
            )
        # a list mixing numbers and text becomes an all-text array: find the row as given
        mixed = np.asarray(y, dtype=object) if raw.dtype.kind in "USV" else raw
        bad = _first_non_numeric(mixed)
        if bad is not None:
            row = bad // max(1, int(np.prod(mixed.shape[1:])))
            value = mixed.ravel()[bad]
            raise ValueError(
                f"y must be numeric for RnaFmRegressor, but {row_name(row, None)} is "
                f"{str(value)!r} ({type(value).__name__}). Convert numbers stored as text with "
                "y.astype(float); for class labels use RnaFmClassifier."
            )
        try:  # bools, ints, floats; None and pd.NA become NaN (named below)
            values = np.where(pd.isna(raw), np.nan, raw) if raw.dtype == object else raw
            values = values.astype(np.float64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"y must be numeric for RnaFmRegressor ({exc}).") from None
        _check_length(values, n)
        if values.ndim > 2:
            raise ValueError(f"y has shape {values.shape}: give (n_samples,) or (n, n_outputs).")
        if values.ndim == 2 and values.shape[1] == 0:
            raise ValueError(f"y has shape {values.shape}: no target to learn; give one column.")
        bad = np.argwhere(~np.isfinite(values))
        if bad.size:
            row = int(bad[0][0])
            raise ValueError(
                f"y holds NaN or inf at {row_name(row, None)}; drop or impute those rows."
            )
        two_d = values.reshape(n, -1)
        return torch.from_numpy(np.ascontiguousarray(two_d)), {
            "n_outputs_": two_d.shape[1],
            "n_outputs": two_d.shape[1],
            "_y_1d_": values.ndim == 1,
        }

    def _training_targets(
        self,
        targets: torch.Tensor,
        extra: dict[str, Any],
        train_rows: np.ndarray,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """Standardised targets: weighted mean and standard deviation of the training rows.

        Weighted by ``sample_weight`` as the loss is (a row of weight 0 changes nothing);
        validation rows do not count. An output that does not vary gets scale 1.
        """
        two_d = targets.numpy()
        y, w = two_d[train_rows], weights.numpy().astype(np.float64)[train_rows]
        # mean and std of y / max|y|, scaled back: no overflow for finite y up to 1.8e308
        peak = np.abs(y).max(0)
        peak[peak == 0] = 1.0
        mean = np.average(y / peak, axis=0, weights=w)
        scale = np.sqrt(np.average((y / peak - mean) ** 2, axis=0, weights=w)) * peak
        mean *= peak
        scale[scale == 0] = 1.0
        standardised = torch.as_tensor((two_d - mean) / scale, dtype=torch.float32)
        return standardised, {**extra, "_y_mean_": mean, "_y_scale_": scale}

    def predict(self, X: Any) -> np.ndarray:
        """Predicted values: ``(n_samples,)``, or ``(n_samples, n_outputs)`` for 2-D ``y``.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_outputs), float64
            On the scale of the training targets.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        rnafm_sklearn.WeightsChangedError
            ``model`` now holds other base weights than those of the fit (fingerprints
            differ): point ``model`` at the checkpoint of the fit, or fit again.
        ValueError
            A sequence the model cannot read (the message names the row and characters), or
            one longer than the model's window under ``long_sequences="error"``.
        TypeError
            ``X`` of an unsupported type (a bare string, a dict, a set).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmRegressor
        >>> reg = RnaFmRegressor(model="tests/fixtures/RNA-FM_tiny.pth", train="head",
        ...                      max_epochs=2, random_state=0, progress=False)
        >>> reg = reg.fit(["ACGUACGU", "GGGCCC", "ACGUAAAA"], [[0.5, 1], [1.0, 2], [0.2, 3]])
        >>> reg.predict(["ACGU"]).shape
        (1, 2)
        """
        out = self._outputs(X).astype(np.float64) * self._y_scale_ + self._y_mean_
        return out[:, 0] if self._y_1d_ else out


