"""``RnaFmStructurePredictor``: RNA secondary structure (base pairs) the scikit-learn way.

The estimator itself: its parameters and their checks, the scikit-learn protocol, ``fit``
(input checks, then one commit of the fitted state) and ``save``. The family around it:
``_structure_predict`` (probability maps, decoding, ``predict*`` and ``score``, bound in the
class body), ``_structure_fit`` (what a fit does), ``_structure_training`` (the training
loop, no scikit-learn), ``_structure_options`` (training parameters), ``_structure_targets``
(the structures given as ``y``) and ``_structure_heads`` (the pair head as the estimator sees
it). The backbone's layer-12 per-nucleotide states come from the embedder's per-token path
(same input checks, windows, batching and device handling as ``RnaFmEmbedder``); the pair
head (``_pair_head``) turns them into an ``L x L`` map of pair logits; ``_decoding`` turns
probabilities into pairs and ``_pairs`` pairs into dot-brackets. A fitted predictor keeps
only what it trained plus the fingerprint of the base weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import _structure_predict as _predict
from ._alphabet import row_name
from ._base import RnaFmEstimator
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError
from ._models import DTYPES
from ._structure_fit import fit_structure
from ._structure_heads import pretrained_head, save_structure
from ._structure_options import DEFAULT_POS_WEIGHT, is_real, positive_int, train_options
from ._structure_targets import check_structures

__all__ = ["DEFAULT_MAX_MAP_ELEMENTS", "RnaFmStructurePredictor"]

# Largest L x L map the head runs on: 2048 nt. The head keeps a few (channels, L, L) float32
# activations alive at once (64 channels: 256 bytes per map element each); measured peak of
# the default 32 x 64 head in float32 on the CPU: see docs/user_guide/structure.md.
DEFAULT_MAX_MAP_ELEMENTS = 2048 * 2048
DECODINGS = ("greedy", "nested")
TRAIN_MODES = ("head", "lora")


@dataclass
class _Fitted:
    """What a fit learned (pickled with the estimator; the base weights are not)."""

    fingerprint: str
    mode: str
    lora: tuple[int, float, str]
    head_spec: dict[str, int]
    head: dict[str, torch.Tensor]
    encoder: dict[str, torch.Tensor]
    threshold: float


class RnaFmStructurePredictor(RnaFmEstimator):
    """Predict RNA secondary structure with RNA-FM and its pair head; train your own head.

    ``predict_proba`` gives per sequence the ``(L, L)`` map of base-pair probabilities,
    ``predict`` the dot-bracket string, ``score`` the mean per-sequence base-pair F1. With a
    structure head in ``model`` (``"rna-fm-ss"``, an official structure ``.pth``, a folder
    saved by :meth:`save`) it predicts without ``fit``; ``fit`` trains a head on your
    structures (frozen backbone, or LoRA adapters).

    Parameters
    ----------
    model : str or path, default="rna-fm-ss"
        ``"rna-fm-ss"`` (the official head trained on PDB-All, with its backbone), the path of
        an official structure ``.pth`` (``RNA-FM-ResNet_*.pth``), a native folder written by
        :meth:`save`, or any backbone checkpoint accepted by :class:`RnaFmEmbedder` (then
        ``fit`` first).
    threshold : float, optional
        A pair is a candidate when its probability is strictly above ``threshold``. Default:
        the head's calibrated value (``"rna-fm-ss"``: 0.33993712; after a ``fit`` with
        validation rows, the value that maximises validation F1), else 0.5 (an official file
        of unknown origin, or a fit without validation).
    decoding : {"greedy", "nested"}, default="greedy"
        ``"greedy"``: the official post-processing (highest probability first, each base in
        at most one pair, crossing pairs kept). ``"nested"``: the pseudoknot-free set of
        candidates with the largest summed probability (dynamic programming).
    min_loop_length : int, default=1
        Pairs ``(i, j)`` need ``j - i > min_loop_length``: 1 is the official rule (``|i - j|
        >= 2``), 3 the physical minimum hairpin loop. Also the loss mask of ``fit``.
    canonical_only : bool, default=False
        Keep only Watson-Crick and wobble pairs (AU, UA, GC, CG, GU, UG).
    train : {"head", "lora"}, default="head"
        ``fit`` trains the pair head on the frozen backbone (states computed once per fit), or
        the head and LoRA adapters in every layer.
    head_blocks, head_channels : int, default=32, 64
        Size of a fresh head (residual blocks x channels; the official head is 32 x 64). A
        ``model`` with a head starts ``fit`` from that head and its size.
    pos_weight : float, default=8.0
        Loss weight of a paired position pair relative to an unpaired one (about 1 % of the
        candidate pairs are paired); see the user guide for the measurement behind it.
    lora_rank, lora_alpha, lora_targets
        As for :class:`RnaFmClassifier` (``train="lora"``).
    max_epochs : int, default=10
    learning_rate : float, optional
        Peak AdamW rate of the adapters; default 1e-3.
    head_learning_rate : float, optional
        Peak AdamW rate of the head; default 1e-3.
    weight_decay, warmup_fraction, n_iter_no_change, tol, random_state, verbose
        As for :class:`RnaFmClassifier`; the validation score is the mean base-pair F1.
    validation_fraction : float, default=0.0
        Share of the structures held out, scored after each epoch (best epoch kept) and used
        to calibrate the threshold when ``threshold`` is None.
    batch_pairs : int, optional
        Map elements per training step and per head pass (``max(L) * sum(L)``; default
        262144: one 512-nt sequence, or 16 of 128 nt).
    checkpointing : bool, default=False
        Gradient checkpointing of the encoder layers (``train="lora"``).
    max_map_elements : int, default=4194304
        Largest ``L * L`` map (2048 nt) the head may run on; a longer sequence is an error
        before any compute. Peak memory grows with ``L * L`` (see the user guide).
    column, long_sequences, window_stride, device, dtype, batch_tokens, progress, cache
        As for :class:`RnaFmEmbedder` (``long_sequences`` is ``"error"`` or ``"window"``:
        windowed states are stitched, then the head runs over the whole map). ``cache`` is
        not used (per-nucleotide states are not cached); it is accepted for symmetry.

    Attributes
    ----------
    threshold_ : float
        After ``fit``: the threshold predictions use when ``threshold`` is None.
    loss_curve_, validation_scores_, best_validation_score_, best_epoch_, n_iter_
        As for :class:`RnaFmClassifier` (scores are mean base-pair F1).

    Examples
    --------
    >>> from rnafm_sklearn import RnaFmStructurePredictor
    >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
    ...                               head_channels=4, max_epochs=1, random_state=0)
    >>> est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
    RnaFmStructurePredictor(...)
    >>> p = est.predict_proba(["GGGAAACCC"])[0]
    >>> p.shape, bool((p == p.T).all())
    ((9, 9), True)
    >>> len(est.predict(["GGGAAACCC"])[0])
    9
    """

    _length_policies = ("error", "window")
    truncation_side = "right"  # not a parameter: a structure covers the whole sequence

    def __init__(
        self,
        *,
        model: str | os.PathLike = "rna-fm-ss",
        threshold: float | None = None,
        decoding: str = "greedy",
        min_loop_length: int = 1,
        canonical_only: bool = False,
        train: str = "head",
        head_blocks: int = 32,
        head_channels: int = 64,
        pos_weight: float = DEFAULT_POS_WEIGHT,
        lora_rank: int = 8,
        lora_alpha: float = 16.0,
        lora_targets: str = "all",
        max_epochs: int = 10,
        learning_rate: float | None = None,
        head_learning_rate: float | None = None,
        weight_decay: float = 0.0,
        warmup_fraction: float = 0.1,
        batch_pairs: int | None = None,
        validation_fraction: float = 0.0,
        n_iter_no_change: int | None = 3,
        tol: float = 1e-4,
        random_state: int | np.random.RandomState | None = None,
        verbose: bool = False,
        checkpointing: bool = False,
        max_map_elements: int = DEFAULT_MAX_MAP_ELEMENTS,
        column: str | None = None,
        long_sequences: str = "error",
        window_stride: int | None = None,
        device: str = "auto",
        dtype: str = "float32",
        batch_tokens: int | None = None,
        progress: bool | str = "auto",
        cache: str | os.PathLike | None = None,
    ):
        self.model = model
        self.threshold = threshold
        self.decoding = decoding
        self.min_loop_length = min_loop_length
        self.canonical_only = canonical_only
        self.train = train
        self.head_blocks = head_blocks
        self.head_channels = head_channels
        self.pos_weight = pos_weight
        self.lora_rank = lora_rank
        self.lora_alpha = lora_alpha
        self.lora_targets = lora_targets
        self.max_epochs = max_epochs
        self.learning_rate = learning_rate
        self.head_learning_rate = head_learning_rate
        self.weight_decay = weight_decay
        self.warmup_fraction = warmup_fraction
        self.batch_pairs = batch_pairs
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose
        self.checkpointing = checkpointing
        self.max_map_elements = max_map_elements
        self.column = column
        self.long_sequences = long_sequences
        self.window_stride = window_stride
        self.device = device
        self.dtype = dtype
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.cache = cache

    # ------------------------------------------------------------- scikit-learn protocol
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # a model with a head predicts without fit
        tags.target_tags.required = True
        tags.non_deterministic = self.random_state is None
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        if "_fitted" in self.__dict__:
            return True
        try:
            config, device, _ = self._check_common()
            return pretrained_head(self._model_source(), device, DTYPES[self.dtype]) is not None
        except Exception:  # noqa: BLE001 - an unusable model is "not fitted", not a crash
            return False

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_merged", None)  # inference copies of the weights are rebuilt on demand
        return state

    # ------------------------------------------------------------------------ predict
    # written in _structure_predict, bound here: this class's own methods
    predict_proba = _predict.predict_proba
    predict = _predict.predict
    predict_pairs = _predict.predict_pairs
    score = _predict.score

    # ---------------------------------------------------------------------------- fit
    def fit(self, X: Any, y: Any) -> RnaFmStructurePredictor:
        """Train a pair head (and adapters with ``train="lora"``) on known structures.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform`.
        y : sequence of str or of pair lists
            Per sequence a dot-bracket string of the same length (``()[]{}<>`` and letter
            pairs; ``.``, ``-``, ``,``, ``:``, ``_`` unpaired) or an ``(n_pairs, 2)``
            array-like of 0-based positions.

        Returns
        -------
        self
            Fitted; a failed or interrupted fit leaves the estimator as it was.

        Raises
        ------
        ValueError
            ``y`` missing, of another length than ``X``, or a structure that does not fit its
            sequence (unbalanced brackets, a base paired twice, another length: the message
            names the row); a sequence the model cannot read; a map larger than
            ``max_map_elements``. All checked before any training step.
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> len(est.loss_curve_), est.n_iter_
        (1, 1)
        """
        config, device, stride = self._settings(fit=True)
        options = train_options(self, device)
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None."
            )
        tokens, index = self._tokens(X, config)
        if not tokens:
            raise ValueError(f"X is empty: {type(self).__name__}.fit needs at least one sequence.")
        pairs = check_structures(y, tokens, index)
        self._check_map_sizes(tokens, index)
        fit = fit_structure(self, tokens, pairs, config, device, stride, options)
        # Nothing above changed the estimator. Every fitted attribute is built first, then
        # committed in one step: an interrupt leaves the estimator wholly as it was, or fitted.
        self.__dict__.update(
            {
                "_fitted": _Fitted(
                    fingerprint=fit.fingerprint,
                    mode=self.train,
                    lora=(int(self.lora_rank), float(self.lora_alpha), self.lora_targets),
                    head_spec=fit.head_spec,
                    head=fit.result.head,
                    encoder=fit.result.encoder,
                    threshold=fit.threshold,
                ),
                "_merged": {},  # the inference copy of a previous fit is stale
                "_resolved_model": (self.model, fit.source),
                "threshold_": fit.threshold,
                **fit.result.fitted_curves(validated=fit.validated),
            }
        )
        return self

    def save(self, folder: str | os.PathLike) -> Path:
        """Write backbone and head in the native format; ``model=folder`` reloads them.

        Adapters are folded into the backbone's weights; the threshold predictions use
        (``threshold``, else the calibrated one) is stored with the head, in float32.

        Parameters
        ----------
        folder : str or os.PathLike
            The folder to write (created; written atomically).

        Returns
        -------
        Path
            The folder.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Nothing to save: ``model`` has no structure head and the estimator is not fitted.

        Examples
        --------
        >>> import tempfile
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> folder = est.save(tempfile.mkdtemp() + "/my-structure-model")
        >>> again = RnaFmStructurePredictor(model=folder)
        >>> bool((again.predict(["GGGAAACCC"]) == est.predict(["GGGAAACCC"])).all())
        True
        """
        self._settings()
        dtype = self.dtype
        try:  # the float32 weights whatever the prediction dtype; no parameter is changed
            self.__dict__["dtype"] = "float32"
            encoder, head, threshold = _predict.predictor(self, torch.device("cpu"))
        finally:
            self.__dict__["dtype"] = dtype
        if self.threshold is not None:
            threshold = float(self.threshold)
        return save_structure(encoder, head, folder, threshold=threshold)

    # ------------------------------------------------------------------------ helpers
    def _settings(self, *, fit: bool = False) -> tuple[RnaFmConfig, torch.device, int]:
        """Check every parameter against the checkpoint's config (no weights loaded)."""
        config, device, stride = self._check_common(fit=fit)
        if config.alphabet != "rna":
            raise InvalidParameterError(
                f"model={self.model!r} is an mRNA-FM (codon) checkpoint; structure prediction "
                "needs a single-nucleotide RNA-FM backbone ('rna-fm-ss', 'rna-fm')."
            )
        self._check_choice("decoding", self.decoding, DECODINGS)
        self._check_choice("train", self.train, TRAIN_MODES)
        if self.threshold is not None and not (
            is_real(self.threshold) and 0.0 <= float(self.threshold) < 1.0
        ):
            raise self._fail("threshold", "a float in [0, 1) or None", self.threshold)
        positive_int(self, "min_loop_length", self.min_loop_length, zero=True)
        if not isinstance(self.canonical_only, bool | np.bool_):
            raise self._fail("canonical_only", "a bool", self.canonical_only)
        positive_int(self, "max_map_elements", self.max_map_elements)
        return config, device, stride

    def _check_map_sizes(
        self, tokens: Sequence[bytes], index: Sequence[object] | None = None
    ) -> None:
        """A map over ``max_map_elements`` is an error before any compute."""
        limit = int(self.max_map_elements)
        for i, t in enumerate(tokens):
            if len(t) * len(t) > limit:
                side = int(limit**0.5)
                raise ValueError(
                    f"{row_name(i, None if index is None else index[i])} has {len(t)} nt: its "
                    f"{len(t)} x {len(t)} pair map "
                    f"({len(t) * len(t):,} elements) exceeds max_map_elements={limit:,} "
                    f"(sequences up to {side} nt). Raise max_map_elements (the head's memory "
                    "grows with L^2, see the user guide) or split the sequence."
                )
