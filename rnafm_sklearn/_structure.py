"""``RnaFmStructurePredictor``: RNA secondary structure (base pairs) the scikit-learn way.

The backbone's layer-12 per-nucleotide states come from the embedder's per-token path (same
input checks, windows, batching and device handling as ``RnaFmEmbedder``); the pair head
(``_pair_head``) turns them into an ``L x L`` map of pair logits; ``_decoding`` turns
probabilities into pairs and ``_structure_files`` pairs into dot-brackets. ``fit`` trains a
head (and optionally LoRA adapters, ``_adapters``) with ``_structure_training``. A fitted
predictor keeps only what it trained plus the fingerprint of the base weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from torch import nn

from ._adapters import TrainSpec, trainable_encoder
from ._alphabet import get_alphabet, row_name
from ._base import RnaFmEstimator
from ._decoding import decode_greedy, decode_nested
from ._encoder import RnaFmConfig, RnaFmEncoder
from ._errors import InvalidParameterError
from ._inference import Plan, Runner, n_windows, pack_batches
from ._input import _deduplicate, _expand
from ._models import DTYPES, absolute_source, get_encoder, weights_fingerprint
from ._pairs import base_pair_f1, pairs_to_dot_bracket
from ._structure_heads import (
    build_head,
    head_forward,
    head_spec,
    pretrained_head,
    save_structure,
)
from ._structure_options import (
    DEFAULT_BATCH_PAIRS,
    DEFAULT_POS_WEIGHT,
    count_steps,
    is_real,
    positive_int,
    train_options,
)
from ._structure_targets import check_structures
from ._structure_training import (
    PairData,
    PairTrainOptions,
    train_pair_head,
)

__all__ = ["DEFAULT_MAX_MAP_ELEMENTS", "RnaFmStructurePredictor"]

# Largest L x L map the head runs on: 2048 nt. The head keeps a few (channels, L, L) float32
# activations alive at once (64 channels: 256 bytes per map element each); measured peak of
# the default 32 x 64 head in float32 on the CPU: see docs/user_guide/structure.md.
DEFAULT_MAX_MAP_ELEMENTS = 2048 * 2048
DECODINGS = ("greedy", "nested")
TRAIN_MODES = ("head", "lora")
UNKNOWN_ORIGIN_THRESHOLD = 0.5  # the official Python functions' default


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
    def predict_proba(self, X: Any) -> list[np.ndarray]:
        """Base-pair probabilities: per sequence a symmetric ``(L, L)`` float32 matrix.

        Rows and columns are the nucleotides (no special tokens), in input order. Decoding
        ignores the diagonal and ``|i - j| <= min_loop_length``; a 1- or 2-nt sequence decodes
        to all-unpaired.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform` (normalised the same way).

        Returns
        -------
        list of ndarray of shape (L, L), float32
            One symmetric probability map per sequence, in input order.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            ``model`` has no structure head (a backbone-only checkpoint) and the estimator
            was not fitted.
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            a map larger than ``max_map_elements`` (named before any compute), or a sequence
            longer than the model's window under ``long_sequences="error"``.
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> p = est.predict_proba(["GGGAAACCC"])[0]
        >>> p.shape, p.dtype, bool((p == p.T).all())
        ((9, 9), dtype('float32'), True)
        """
        config, device, stride = self._settings()
        tokens, index = self._tokens(X, config)
        return self._maps(tokens, device, stride, index)[0]

    def predict(self, X: Any) -> np.ndarray:
        """Dot-bracket strings (object array): ``()`` then ``[]``, ``{}``, ``<>``, letters.

        The pairs are decoded from :meth:`predict_proba` with ``threshold`` (strict,
        ``p > threshold``), ``min_loop_length``, ``canonical_only`` and ``decoding``.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform` (normalised the same way).

        Returns
        -------
        ndarray of shape (n_samples,), dtype object
            One dot-bracket string per sequence, of the sequence's length.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            ``model`` has no structure head (a backbone-only checkpoint) and the estimator
            was not fitted.
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            a map larger than ``max_map_elements`` (named before any compute), or a sequence
            longer than the model's window under ``long_sequences="error"``.
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> s = est.predict(["GGGAAACCC"])[0]
        >>> len(s), set(s) <= set("().")
        (9, True)
        """
        config, device, stride = self._settings()
        tokens, index = self._tokens(X, config)
        pairs = self._predicted_pairs(tokens, device, stride, index)
        return np.asarray(
            [pairs_to_dot_bracket(p, len(t)) for p, t in zip(pairs, tokens, strict=True)],
            dtype=object,
        )

    def predict_pairs(self, X: Any) -> list[np.ndarray]:
        """Per sequence the predicted pairs: ``(n_pairs, 2)`` int64 arrays, ``i < j``, 0-based.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform` (normalised the same way).

        Returns
        -------
        list of ndarray of shape (n_pairs, 2), int64
            The pairs :meth:`predict` writes as dot-brackets, sorted by ``i``.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            ``model`` has no structure head (a backbone-only checkpoint) and the estimator
            was not fitted.
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            a map larger than ``max_map_elements`` (named before any compute), or a sequence
            longer than the model's window under ``long_sequences="error"``.
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> pairs = est.predict_pairs(["GGGAAACCC"])[0]
        >>> pairs.ndim, pairs.shape[1], bool((pairs[:, 0] < pairs[:, 1]).all())
        (2, 2, True)
        """
        config, device, stride = self._settings()
        tokens, index = self._tokens(X, config)
        return self._predicted_pairs(tokens, device, stride, index)

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Mean per-sequence base-pair F1 of :meth:`predict` against the structures ``y``.

        ``y`` as for :meth:`fit`; ``sample_weight`` weighs the per-sequence F1 values.

        Parameters
        ----------
        X : list, ndarray, pandas Series of str, or DataFrame
            The sequences, as for :meth:`RnaFmEmbedder.transform` (normalised the same way).
        y : sequence of str or of pair lists
            The known structures, as for :meth:`fit`.
        sample_weight : array-like of shape (n_samples,), optional
            Weights of the per-sequence F1 values.

        Returns
        -------
        float
            The (weighted) mean base-pair F1 (see :func:`base_pair_f1`); NaN for no sequence.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            ``model`` has no structure head (a backbone-only checkpoint) and the estimator
            was not fitted.
        ValueError
            A sequence the model cannot read (the message names the row and the characters),
            a map larger than ``max_map_elements`` (named before any compute), or a sequence
            longer than the model's window under ``long_sequences="error"``.
        rnafm_sklearn.InvalidParameterError
            A parameter out of its range (checked before any compute).

        Examples
        --------
        >>> from rnafm_sklearn import RnaFmStructurePredictor
        >>> est = RnaFmStructurePredictor(model="tests/fixtures/RNA-FM_tiny.pth", head_blocks=1,
        ...                               head_channels=4, max_epochs=1, random_state=0)
        >>> est = est.fit(["GGGAAACCC", "GGAAACC"], ["(((...)))", "((...))"])
        >>> 0.0 <= est.score(["GGGAAACCC"], ["(((...)))"]) <= 1.0
        True
        """
        config, device, stride = self._settings()
        tokens, index = self._tokens(X, config)
        truth = check_structures(y, tokens, index)  # before any compute
        pred = self._predicted_pairs(tokens, device, stride, index)
        if not tokens:
            return float("nan")
        f1 = base_pair_f1(truth, pred, average=False)
        if sample_weight is None:
            return float(np.mean(f1))
        return float(np.average(f1, weights=np.asarray(sample_weight, dtype=np.float64)))

    def _predicted_pairs(
        self, tokens: list[bytes], device: torch.device, stride: int, index: Any = None
    ) -> list[np.ndarray]:
        probs, threshold = self._maps(tokens, device, stride, index)
        return [self._decode(p, t, threshold) for p, t in zip(probs, tokens, strict=True)]

    def _maps(
        self, tokens: list[bytes], device: torch.device, stride: int, index: Any = None
    ) -> tuple[list[np.ndarray], float]:
        """Probability maps of validated token lists, and the threshold to decode them at."""
        self._check_map_sizes(tokens, index)
        encoder, head, threshold = self._predictor(device)
        if self.threshold is not None:
            threshold = float(self.threshold)
        unique, inverse = _deduplicate(tokens)
        return _expand(self._probabilities(encoder, head, unique, stride), inverse), threshold

    def _probabilities(
        self, encoder: RnaFmEncoder, head: nn.Module, unique: list[bytes], stride: int
    ) -> list[np.ndarray]:
        """Sigmoid of the head over the layer-12 states of every (unique) sequence.

        States come from ``Runner.per_token`` in chunks (so a large input never holds all its
        states at once), then the head runs on length-sorted batches of at most
        ``batch_pairs`` map elements.
        """
        runner = self._runner(encoder)
        plan = Plan(layers=(encoder.config.num_layers,), window_stride=stride)
        budget = int(self.batch_pairs or DEFAULT_BATCH_PAIRS)
        out: list[np.ndarray | None] = [None] * len(unique)
        order = sorted(range(len(unique)), key=lambda i: len(unique[i]))
        chunks, current, size = [], [], 0
        for i in order:
            if current and size + len(unique[i]) > 32 * runner.batch_tokens:
                chunks.append(current)
                current, size = [], 0
            current.append(i)
            size += len(unique[i])
        if current:
            chunks.append(current)
        pieces = sum(n_windows(len(t), runner.window, stride) for t in unique)
        head_dtype = next(head.parameters()).dtype
        device = next(head.parameters()).device

        def work() -> None:
            for chunk in chunks:
                states = runner.per_token([unique[i] for i in chunk], plan)
                lengths = [len(unique[i]) for i in chunk]
                for batch in pack_batches([n * n for n in lengths], budget):
                    width = max(lengths[b] for b in batch)
                    x = torch.zeros(
                        (len(batch), width, states[batch[0]].shape[1]), dtype=head_dtype
                    )
                    for row, b in enumerate(batch):
                        x[row, : lengths[b]] = torch.from_numpy(states[b])
                    n = torch.tensor([lengths[b] for b in batch])
                    with torch.inference_mode():
                        logits = head_forward(head, x.to(device), n.to(device))
                        probs = torch.sigmoid(logits.float()).cpu().numpy()
                    for row, b in enumerate(batch):
                        out[chunk[b]] = np.ascontiguousarray(probs[row, : lengths[b], : lengths[b]])

        self._run(runner, pieces, "seq", work)
        return out  # type: ignore[return-value]

    def _predictor(self, device: torch.device) -> tuple[RnaFmEncoder, nn.Module, float]:
        """Encoder, head (eval mode) and default threshold that predictions run on."""
        dtype = DTYPES[self.dtype]
        fitted: _Fitted | None = self.__dict__.get("_fitted")
        if fitted is None:
            found = pretrained_head(self._model_source(), device, dtype)
            if found is None:
                raise NotFittedError(
                    f"model={self.model!r} has no structure head: this "
                    f"{type(self).__name__} instance is not fitted yet. Call 'fit' with "
                    "structures first, or use model='rna-fm-ss' (the official head) or an "
                    "official structure checkpoint (RNA-FM-ResNet_*.pth)."
                )
            head, threshold = found
            encoder = get_encoder(self._model_source(), device, dtype)
            return encoder, head, UNKNOWN_ORIGIN_THRESHOLD if threshold is None else threshold
        encoder = self._inference_encoder(fitted, device)
        cache = self.__dict__.setdefault("_merged", {})
        key = ("head", str(device), dtype)
        head = cache.get(key)
        if head is None:
            head = build_head(fitted.head_spec, generator=None)
            head.load_state_dict(fitted.head)
            head = head.to(device=device, dtype=dtype).eval()
            cache[key] = head
        return encoder, head, fitted.threshold

    def _inference_encoder(self, fitted: _Fitted, device: torch.device) -> RnaFmEncoder:
        """The encoder that predictions run on (see :meth:`RnaFmEstimator._fitted_encoder`)."""
        return self._fitted_encoder(fitted.fingerprint, fitted.encoder, fitted.lora, device)

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
        mode = self.train
        source = absolute_source(self.model)  # a local path stays valid after unpickling
        base = get_encoder(
            source, device, DTYPES[self.dtype] if mode == "head" else torch.float32
        )
        fingerprint = weights_fingerprint(base)
        plan = Plan(layers=(config.num_layers,), window_stride=stride)
        train_rows, val_rows = self._split(len(tokens), options.seed)

        generator = torch.Generator().manual_seed(options.seed)
        start = pretrained_head(source, torch.device("cpu"), torch.float32)
        spec = (
            head_spec(start[0])
            if start is not None
            else {
                "embed_dim": config.hidden_size,
                "channels": int(self.head_channels),
                "blocks": int(self.head_blocks),
            }
        )
        head = build_head(spec, generator=generator)
        if start is not None:  # a copy: the registry's head is never trained in place
            head.load_state_dict(start[0].state_dict())
        head = head.to(device)
        runner = Runner(base, batch_tokens=options.batch_tokens_encoder)
        encoder, params, states = None, {}, None
        if mode == "head":
            unique, inverse = _deduplicate(tokens)
            frozen = self._runner(base)
            per_unique = self._run(
                frozen, len(unique), "seq", lambda: frozen.per_token(unique, plan)
            )
            states = [torch.from_numpy(per_unique[j]).to(device) for j in inverse.tolist()]
        else:
            encoder, params = trainable_encoder(
                base,
                TrainSpec("lora"),
                up_to_layer=config.num_layers,
                lora_rank=int(self.lora_rank),
                lora_alpha=float(self.lora_alpha),
                lora_targets=self.lora_targets,
                generator=generator,
            )
            encoder.checkpointing = bool(self.checkpointing)
            runner = Runner(encoder, batch_tokens=options.batch_tokens_encoder)

        def rows(idx: np.ndarray) -> PairData:
            return PairData(
                lengths=[len(tokens[i]) for i in idx],
                pairs=[pairs[i] for i in idx],
                states=None if states is None else [states[i] for i in idx],
                tokens=None if states is not None else [tokens[i] for i in idx],
            )

        data = rows(train_rows)
        validation = rows(val_rows) if val_rows is not None else None
        threshold = self._start_threshold(start)
        decode_threshold = threshold if self.threshold is None else float(self.threshold)

        def score(probs: list[np.ndarray], d: PairData) -> float:
            return _mean_f1(probs, d, [tokens[i] for i in val_rows], decode_threshold, self)

        progress = SimpleNamespace(progress=None)
        steps = count_steps(data, options.train)
        devices = [device] if device.type == "cuda" else []
        # dropout draws from the global generator: seeded here, restored afterwards
        with self._progress(progress, steps, "step"), torch.random.fork_rng(devices=devices):
            torch.manual_seed(options.seed)
            train_opts = options.train
            if progress.progress is not None:
                train_opts = PairTrainOptions(
                    **{**train_opts.__dict__, "progress": progress.progress}
                )
            result = train_pair_head(
                head=head,
                forward=head_forward,
                encoder=encoder,
                encoder_params=params,
                runner=runner,
                plan=plan,
                data=data,
                validation=validation,
                score=score,
                options=train_opts,
            )
        if validation is not None and self.threshold is None and result.validation_probabilities:
            threshold = _calibrate(
                result.validation_probabilities, validation, [tokens[i] for i in val_rows], self
            )
        # Nothing above changed the estimator. Every fitted attribute is built first, then
        # committed in one step: an interrupt leaves the estimator wholly as it was, or fitted.
        self.__dict__.update(
            {
                "_fitted": _Fitted(
                    fingerprint=fingerprint,
                    mode=mode,
                    lora=(int(self.lora_rank), float(self.lora_alpha), self.lora_targets),
                    head_spec=dict(spec),
                    head=result.head,
                    encoder=result.encoder,
                    threshold=float(threshold),
                ),
                "_merged": {},  # the inference copy of a previous fit is stale
                "_resolved_model": (self.model, source),
                "threshold_": float(threshold),
                **result.fitted_curves(validated=validation is not None),
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
            encoder, head, threshold = self._predictor(torch.device("cpu"))
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

    def _split(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
        rows = np.arange(n)
        if not self.validation_fraction:
            return rows, None
        try:
            a, b = train_test_split(rows, test_size=self.validation_fraction, random_state=seed)
        except ValueError as exc:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} cannot split {n} structures "
                f"({exc}). Use more rows, a larger validation_fraction or 0 (no validation)."
            ) from None
        return np.sort(a), np.sort(b)

    def _start_threshold(self, start: tuple[nn.Module, float | None] | None) -> float:
        if start is not None and start[1] is not None:
            return float(start[1])
        return UNKNOWN_ORIGIN_THRESHOLD

    def _decode(self, probs: np.ndarray, token_list: bytes, threshold: float) -> np.ndarray:
        letters = get_alphabet("rna").tokens
        decode = decode_greedy if self.decoding == "greedy" else decode_nested
        pairs = decode(
            probs,
            "".join(letters[b] for b in token_list),
            threshold=threshold,
            min_loop_length=int(self.min_loop_length),
            canonical_only=bool(self.canonical_only),
        )
        return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


# ---------------------------------------------------------------------------- helpers
def _mean_f1(
    probs: list[np.ndarray],
    data: PairData,
    tokens: list[bytes],
    threshold: float,
    est: RnaFmStructurePredictor,
) -> float:
    pred = [est._decode(p, t, threshold) for p, t in zip(probs, tokens, strict=True)]
    return float(np.mean(base_pair_f1(data.pairs, pred, average=False))) if pred else 0.0


def _calibrate(
    probs: list[np.ndarray], data: PairData, tokens: list[bytes], est: RnaFmStructurePredictor
) -> float:
    """The threshold (on a grid of 0.02 .. 0.98) with the highest mean validation F1."""
    grid = np.round(np.arange(0.02, 0.99, 0.02), 2)
    scores = [_mean_f1(probs, data, tokens, float(t), est) for t in grid]
    return float(grid[int(np.argmax(scores))])
