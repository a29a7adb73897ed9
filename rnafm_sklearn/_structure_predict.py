"""How ``RnaFmStructurePredictor`` predicts: probability maps, decoded pairs, F1 score.

``predict_proba``, ``predict``, ``predict_pairs`` and ``score`` are methods of
``RnaFmStructurePredictor``, written here and bound in its class body (its own methods, as the
API reference lists them). Behind them: the encoder and head a prediction runs on (the fit's,
else the head stored with ``model``), the head run over layer-12 states in chunks and
length-sorted batches of at most ``batch_pairs`` map elements, and :func:`decode` (the
``decoding``, ``threshold``, ``min_loop_length`` and ``canonical_only`` rules; ``fit`` scores
validation rows with it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from ._alphabet import get_alphabet
from ._decoding import decode_greedy, decode_nested
from ._encoder import RnaFmEncoder
from ._inference import Plan
from ._input import _deduplicate, _expand
from ._models import DTYPES, get_encoder
from ._pairs import base_pair_f1, pairs_to_dot_bracket
from ._structure_heads import (
    UNKNOWN_ORIGIN_THRESHOLD,
    build_head,
    head_forward,
    pretrained_head,
)
from ._structure_options import DEFAULT_BATCH_PAIRS
from ._structure_targets import check_structures
from ._windows import n_windows, pack_batches

if TYPE_CHECKING:
    from ._structure import RnaFmStructurePredictor, _Fitted

__all__ = [
    "decode",
    "predict",
    "predict_pairs",
    "predict_proba",
    "predicted_pairs",
    "predictor",
    "score",
]


def predict_proba(self: RnaFmStructurePredictor, X: Any) -> list[np.ndarray]:
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
    return _maps(self, tokens, device, stride, index)[0]


def predict(self: RnaFmStructurePredictor, X: Any) -> np.ndarray:
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
    return structures_and_maps(self, X)[0]


def predict_pairs(self: RnaFmStructurePredictor, X: Any) -> list[np.ndarray]:
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
    return predicted_pairs(self, tokens, device, stride, index)


def score(self: RnaFmStructurePredictor, X: Any, y: Any, sample_weight: Any = None) -> float:
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
    pred = predicted_pairs(self, tokens, device, stride, index)
    if not tokens:
        return float("nan")
    f1 = base_pair_f1(truth, pred, average=False)
    if sample_weight is None:
        return float(np.mean(f1))
    return float(np.average(f1, weights=np.asarray(sample_weight, dtype=np.float64)))


def structures_and_maps(
    est: RnaFmStructurePredictor, X: Any
) -> tuple[np.ndarray, list[np.ndarray]]:
    """``predict(X)`` and ``predict_proba(X)`` from one pass of the model (``predict`` keeps
    the first; the command line writes both)."""
    config, device, stride = est._settings()
    tokens, index = est._tokens(X, config)
    probs, threshold = _maps(est, tokens, device, stride, index)
    structures = [
        pairs_to_dot_bracket(decode(est, p, t, threshold), len(t))
        for p, t in zip(probs, tokens, strict=True)
    ]
    return np.asarray(structures, dtype=object), probs


def predicted_pairs(
    est: RnaFmStructurePredictor,
    tokens: list[bytes],
    device: torch.device,
    stride: int,
    index: Any = None,
) -> list[np.ndarray]:
    """The decoded pairs of validated token lists (what ``predict`` writes)."""
    probs, threshold = _maps(est, tokens, device, stride, index)
    return [decode(est, p, t, threshold) for p, t in zip(probs, tokens, strict=True)]


def decode(
    est: RnaFmStructurePredictor, probs: np.ndarray, token_list: bytes, threshold: float
) -> np.ndarray:
    """The ``(n_pairs, 2)`` int64 pairs of one probability map, by ``est``'s decoding rules."""
    letters = get_alphabet("rna").tokens
    decoder = decode_greedy if est.decoding == "greedy" else decode_nested
    pairs = decoder(
        probs,
        "".join(letters[b] for b in token_list),
        threshold=threshold,
        min_loop_length=int(est.min_loop_length),
        canonical_only=bool(est.canonical_only),
    )
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def predictor(
    est: RnaFmStructurePredictor, device: torch.device
) -> tuple[RnaFmEncoder, nn.Module, float]:
    """Encoder, head (eval mode) and default threshold that predictions run on."""
    dtype = DTYPES[est.dtype]
    fitted: _Fitted | None = est.__dict__.get("_fitted")
    if fitted is None:
        found = pretrained_head(est._model_source(), device, dtype)
        if found is None:
            raise NotFittedError(
                f"model={est.model!r} has no structure head: this "
                f"{type(est).__name__} instance is not fitted yet. Call 'fit' with "
                "structures first, or use model='rna-fm-ss' (the official head) or an "
                "official structure checkpoint (RNA-FM-ResNet_*.pth)."
            )
        head, threshold = found
        encoder = get_encoder(est._model_source(), device, dtype)
        return encoder, head, UNKNOWN_ORIGIN_THRESHOLD if threshold is None else threshold
    # the encoder of the fit (see RnaFmEstimator._fitted_encoder)
    encoder = est._fitted_encoder(fitted.fingerprint, fitted.encoder, fitted.lora, device)
    cache = est.__dict__.setdefault("_merged", {})
    key = ("head", str(device), dtype)
    head = cache.get(key)
    if head is None:
        head = build_head(fitted.head_spec, generator=None)
        head.load_state_dict(fitted.head)
        head = head.to(device=device, dtype=dtype).eval()
        cache[key] = head
    return encoder, head, fitted.threshold


def _maps(
    est: RnaFmStructurePredictor,
    tokens: list[bytes],
    device: torch.device,
    stride: int,
    index: Any = None,
) -> tuple[list[np.ndarray], float]:
    """Probability maps of validated token lists, and the threshold to decode them at."""
    est._check_map_sizes(tokens, index)
    encoder, head, threshold = predictor(est, device)
    if est.threshold is not None:
        threshold = float(est.threshold)
    unique, inverse = _deduplicate(tokens)
    return _expand(_probabilities(est, encoder, head, unique, stride), inverse), threshold


def _probabilities(
    est: RnaFmStructurePredictor,
    encoder: RnaFmEncoder,
    head: nn.Module,
    unique: list[bytes],
    stride: int,
) -> list[np.ndarray]:
    """Sigmoid of the head over the layer-12 states of every (unique) sequence.

    States come from ``Runner.per_token`` in chunks (so a large input never holds all its
    states at once), then the head runs on length-sorted batches of at most
    ``batch_pairs`` map elements.
    """
    runner = est._runner(encoder)
    plan = Plan(layers=(encoder.config.num_layers,), window_stride=stride)
    budget = int(est.batch_pairs or DEFAULT_BATCH_PAIRS)
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
                x = torch.zeros((len(batch), width, states[batch[0]].shape[1]), dtype=head_dtype)
                for row, b in enumerate(batch):
                    x[row, : lengths[b]] = torch.from_numpy(states[b])
                n = torch.tensor([lengths[b] for b in batch])
                with torch.inference_mode():
                    logits = head_forward(head, x.to(device), n.to(device))
                    probs = torch.sigmoid(logits.float()).cpu().numpy()
                for row, b in enumerate(batch):
                    out[chunk[b]] = np.ascontiguousarray(probs[row, : lengths[b], : lengths[b]])

    est._run(runner, pieces, "seq", work)
    return out  # type: ignore[return-value]
