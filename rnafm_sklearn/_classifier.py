"""``RnaFmClassifier``: RNA-FM fine-tuned to classify sequences, as a scikit-learn classifier.

Its parameters, labels and outputs; fitting is ``_finetune._RnaFmFineTuner``'s, the label
checks are ``_finetune_targets``'.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.base import ClassifierMixin

from ._finetune import _RnaFmFineTuner
from ._finetune_options import DEFAULT_BATCH_SIZE
from ._finetune_targets import class_targets

__all__ = ["RnaFmClassifier"]


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
        return class_targets(self, y, n)

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
