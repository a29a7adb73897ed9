"""The fit and predict machinery shared by ``RnaFmClassifier`` and ``RnaFmRegressor``.

``_RnaFmFineTuner.fit`` takes the checked parameters (``_finetune_options``) and encoded
targets (``_finetune_targets``, through each estimator's ``_encode_targets``), splits off the
validation rows, builds the head and what to train inside the encoder (``_adapters``), and
hands token lists and target tensors to ``_training.train``. A fitted estimator keeps only
what it trained (the head, and the adapters or unfrozen layers) plus the fingerprint of the
base weights, which are re-resolved from ``model=`` through the process-wide registry and
never modified; predictions run on the inference path with the trained tensors folded in.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from sklearn.utils.validation import check_is_fitted

from ._adapters import TrainSpec, trainable_encoder
from ._base import RnaFmEstimator
from ._encoder import RnaFmEncoder
from ._errors import WeightsChangedError
from ._finetune_options import Settings, fit_settings
from ._finetune_targets import sample_weights
from ._inference import Plan, Runner, feature_width
from ._models import DTYPES, get_encoder, weights_fingerprint
from ._schedule import total_steps
from ._training import (
    Data,
    Head,
    TrainOptions,
    accuracy,
    classification_loss,
    r2,
    regression_loss,
    train,
)
from ._windows import n_windows

__all__ = ["_Fitted", "_RnaFmFineTuner"]


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
        s = fit_settings(self)
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
        weights = sample_weights(sample_weight, len(tokens))
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
        self, s: Settings, tokens: list[bytes], base: RnaFmEncoder | None = None
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

    def _training_targets(
        self,
        targets: torch.Tensor,
        extra: dict[str, Any],
        train_rows: np.ndarray,
        weights: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """The targets the loss sees, from the training rows (the regressor standardises)."""
        return targets, extra

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
        self, previous: _Fitted, fingerprint: str, s: Settings, extra: dict[str, Any]
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


def _may_run_off_cpu(device: object) -> bool:
    """Whether ``device`` may resolve to a GPU (``"auto"`` where one is visible)."""
    if not isinstance(device, str):
        return False
    if device == "auto":
        mps = getattr(torch.backends, "mps", None)
        return torch.cuda.is_available() or bool(mps and mps.is_available())
    return device.split(":")[0] in ("cuda", "mps")


def __getattr__(name: str):
    """Estimators pickled by rnafm_sklearn 0.1.0 name this module as their class's home."""
    if name == "RnaFmClassifier":
        from ._classifier import RnaFmClassifier

        return RnaFmClassifier
    if name == "RnaFmRegressor":
        from ._regressor import RnaFmRegressor

        return RnaFmRegressor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
