"""What every RNA-FM estimator shares: parameter checks, input handling, runners, progress.

``RnaFmEmbedder`` and ``RnaFmLikelihood`` (and later estimators) derive from
:class:`RnaFmEstimator`; they only add what they compute. Nothing here knows about pooling or
scoring.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from numbers import Integral
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ._adapters import merged_state
from ._alphabet import get_alphabet, normalize_sequences, row_name
from ._cache import EmbeddingCache
from ._choices import (
    AGGREGATIONS,
    POLICIES,
    POOLING_CHOICES,
    TRUNCATION_SIDES,
    default_batch_tokens,
)
from ._encoder import RnaFmEncoder
from ._encoder_config import RnaFmConfig
from ._errors import InvalidParameterError, WeightsChangedError, warn
from ._family import family
from ._inference import Plan, Runner, feature_width
from ._input import _as_sequences, _deduplicate
from ._kernels_cpu import NUMERICS_VERSION
from ._kernels_cuda import NUMERICS_VERSION as CUDA_NUMERICS_VERSION
from ._models import (
    DTYPES,
    absolute_source,
    get_config,
    get_encoder,
    inference_copy,
    resolve_device,
    weights_fingerprint,
)
from ._windows import n_windows

__all__ = ["RnaFmEstimator"]


class RnaFmEstimator(BaseEstimator):
    """Base class: the parameters every RNA-FM estimator shares and how they are checked.

    Subclasses store ``model``, ``column``, ``long_sequences``, ``truncation_side``,
    ``window_stride``, ``device``, ``dtype``, ``batch_tokens``, ``progress`` and ``cache`` in
    ``__init__`` (scikit-learn reads parameters from the subclass's signature).
    """

    _length_policies: tuple[str, ...] = POLICIES  # what ``long_sequences`` may be

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags

    def _fail(self, name: str, requirement: str, value: object) -> InvalidParameterError:
        return InvalidParameterError(
            f"The {name!r} parameter of {type(self).__name__} must be {requirement}. "
            f"Got {value!r} instead."
        )

    def _check_choice(self, name: str, value: object, choices: Sequence[str]) -> None:
        if not isinstance(value, str) or value not in choices:
            raise self._fail(name, _among(choices), value)

    def _model_source(self) -> str | os.PathLike:
        """Where the weights come from: ``model``, or the absolute path a fit resolved it to.

        A fit records a local ``model`` path as absolute (``_resolved_model``, see
        :meth:`_resolved_model_attribute`), so that an estimator unpickled in another working
        directory reads the checkpoint of the fit; a ``model`` set since takes precedence.
        """
        given, resolved = self.__dict__.get("_resolved_model", (None, None))
        if (
            resolved is None
            or resolved == given  # a named model ("rna-fm") or a path that was absolute
            or type(given) is not type(self.model)
            or given != self.model
        ):
            return self.model
        if not os.path.exists(resolved):
            raise FileNotFoundError(
                f"{type(self).__name__} was fitted with model={given!r}, the checkpoint at "
                f"{resolved}, which does not exist here (moved, or another machine?). Point "
                "model= at that checkpoint where it is now: "
                "estimator.set_params(model='/path/to/checkpoint')."
            )
        return resolved

    def _resolved_model_attribute(self) -> dict[str, object]:
        """The fitted attribute that records ``model`` with a local path made absolute."""
        return {"_resolved_model": (self.model, absolute_source(self.model))}

    def _check_common(self, *, fit: bool = False) -> tuple[RnaFmConfig, torch.device, int]:
        """Check the shared parameters against the checkpoint's config (no weights loaded).

        The checkpoint is :meth:`_model_source`, or with ``fit`` (a new fit) ``model`` as it
        reads now. Returns the config, the device and the resolved window stride.
        """
        if not isinstance(self.model, str | os.PathLike):
            raise self._fail("model", "a str ('rna-fm') or a path to a checkpoint", self.model)
        self._check_choice("long_sequences", self.long_sequences, self._length_policies)
        self._check_choice("truncation_side", self.truncation_side, TRUNCATION_SIDES)
        if self.column is not None and not isinstance(self.column, str | Integral):
            raise self._fail("column", "a str (a DataFrame column name) or None", self.column)
        if self.dtype not in DTYPES:
            raise self._fail("dtype", _among(DTYPES), self.dtype)
        if not isinstance(self.device, str):
            raise self._fail("device", "a str such as 'auto', 'cpu' or 'cuda'", self.device)
        if self.cache is not None and not isinstance(self.cache, str | os.PathLike):
            raise self._fail("cache", "a path (str or os.PathLike) or None", self.cache)
        if self.progress not in (True, False, "auto"):
            raise self._fail("progress", "a bool or 'auto'", self.progress)
        if self.batch_tokens is not None and not (
            isinstance(self.batch_tokens, Integral)
            and not isinstance(self.batch_tokens, bool)
            and self.batch_tokens > 0
        ):
            raise self._fail("batch_tokens", "a positive int or None", self.batch_tokens)
        try:
            device = resolve_device(self.device)
        except RuntimeError as exc:
            raise self._fail(
                "device", "a torch device string ('auto', 'cpu', 'cuda')", self.device
            ) from exc
        if self.dtype == "float16" and device.type == "cpu":
            raise InvalidParameterError(
                f"The 'dtype' parameter of {type(self).__name__} is 'float16', which needs a "
                "GPU; on the CPU use 'bfloat16' (fast on CPUs with AVX-512 BF16) or 'float32'."
            )
        config = get_config(absolute_source(self.model) if fit else self._model_source())
        window = config.max_sequence_tokens
        if self.window_stride is not None and not (
            isinstance(self.window_stride, Integral)
            and not isinstance(self.window_stride, bool)
            and 1 <= self.window_stride <= window
        ):
            raise self._fail("window_stride", f"an int in 1..{window} or None", self.window_stride)
        return config, device, self.window_stride or window // 2

    def _check_layers(self, layers: object, n: int) -> list[int]:
        """Layer indices (negative from the end) as ``0..n``; distinct, at least one."""
        requirement = f"an int or a non-empty list of distinct ints in -{n + 1}..{n} for this model"
        items = [layers] if isinstance(layers, Integral) else layers
        if (
            not isinstance(items, list | tuple | np.ndarray)
            or len(items) == 0
            or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in items)
            or not all(-(n + 1) <= i <= n for i in items)
        ):
            raise self._fail("layers", requirement, layers)
        out = [int(i) % (n + 1) for i in items]
        if len(set(out)) != len(out):
            raise self._fail("layers", requirement, layers)
        return out

    def _check_pooling(self, pooling: object) -> tuple[str, ...]:
        requirement = _among(POOLING_CHOICES) + " or a non-empty list of them"
        items = [pooling] if isinstance(pooling, str) else pooling
        if not isinstance(items, list | tuple) or not items:
            raise self._fail("pooling", requirement, pooling)
        out: list[str] = []
        for item in items:
            if not isinstance(item, str) or item not in POOLING_CHOICES:
                raise self._fail("pooling", requirement, pooling)
            out += ["mean", "max"] if item == "mean+max" else [item]
        if len(set(out)) != len(out):
            raise self._fail("pooling", requirement + " without repeats", pooling)
        return tuple(out)

    def _plan(self, stride: int, num_layers: int) -> Plan:
        """The pooling plan of the ``pooling``/``layers``/``layer_aggregation`` parameters."""
        poolings = self._check_pooling(self.pooling)
        self._check_choice("layer_aggregation", self.layer_aggregation, AGGREGATIONS)
        return Plan(
            layers=tuple(self._check_layers(self.layers, num_layers)),
            aggregate=self.layer_aggregation,
            poolings=poolings,
            window_stride=stride,
        )

    def _encoder(self, device: torch.device) -> RnaFmEncoder:
        """The shared encoder (loaded at most once per process, see ``_models``)."""
        return get_encoder(self._model_source(), device, DTYPES[self.dtype])

    def _fitted_encoder(
        self,
        fingerprint: str,
        trained: dict[str, torch.Tensor],
        lora: tuple[int, float, str],
        device: torch.device,
    ) -> RnaFmEncoder:
        """The encoder a fit's predictions run on: the shared one when the fit trained no
        encoder tensor, else one inference copy per estimator with the trained tensors (LoRA
        adapters folded in) in place. Checks that ``model`` still holds the fit's weights."""
        dtype = DTYPES[self.dtype]
        base = get_encoder(self._model_source(), device, torch.float32 if trained else dtype)
        found = weights_fingerprint(base)
        if found != fingerprint:
            raise WeightsChangedError(
                f"{type(self).__name__} was fitted on other weights than model={self.model!r} "
                f"holds now (fingerprint {fingerprint[:12]} at fit, {found[:12]} now). "
                "Point model= at the checkpoint it was fitted with, or fit again."
            )
        if not trained:
            return base
        cache = self.__dict__.setdefault("_merged", {})
        key = ("encoder", str(device), dtype)
        # one lookup, then only the local name: a thread predicting alongside may change ``cache``
        encoder = cache.get(key)
        if encoder is None:
            rank, alpha, _ = lora
            state = merged_state(base, trained, lora_alpha=alpha, lora_rank=rank)
            encoder = inference_copy(base.config, state, device, dtype)
            for old in [k for k in list(cache) if k[0] == "encoder"]:  # one copy per estimator
                cache.pop(old, None)
            cache[key] = encoder
        return encoder

    def _runner(self, encoder: RnaFmEncoder) -> Runner:
        budget = default_batch_tokens(self.batch_tokens, next(encoder.parameters()).device.type)
        return Runner(encoder, batch_tokens=budget)

    def _tokens(self, X: Any, config: RnaFmConfig) -> tuple[list[bytes], list[object] | None]:
        """Validated, normalised token lists of ``X`` (length policy applied) and row labels."""
        raw, index = _as_sequences(X, self.column, type(self).__name__)
        alphabet = get_alphabet(config.alphabet)
        sequences = normalize_sequences(raw, alphabet, index=index)
        tokens = [alphabet.encode_body(s) for s in sequences]
        del sequences
        return self._apply_length_policy(tokens, index, config), index

    def _apply_length_policy(
        self, tokens: list[bytes], index: Sequence[object] | None, config: RnaFmConfig
    ) -> list[bytes]:
        limit = config.max_sequence_tokens
        long_rows = [i for i, t in enumerate(tokens) if len(t) > limit]
        if not long_rows or self.long_sequences == "window":
            return tokens
        fam = family(config.alphabet)
        if self.long_sequences == "error":
            shown = ", ".join(
                f"{row_name(i, None if index is None else index[i])} ({fam.count(len(tokens[i]))})"
                for i in long_rows[:10]
            )
            more = f" and {len(long_rows) - 10} more" if len(long_rows) > 10 else ""
            fixes = "long_sequences='window' embeds overlapping windows and stitches them"
            if "truncate" in self._length_policies:
                fixes = (
                    f"Choose a policy: {fixes} (every nucleotide kept), "
                    f"long_sequences='truncate' keeps the first {limit} "
                    "(truncation_side='left' keeps the last)"
                )
            else:
                fixes = f"Use {fixes} (every nucleotide kept)"
            raise ValueError(
                f"{len(long_rows)} sequence(s) exceed {fam.display_name}'s limit of "
                f"{fam.count(limit)}: {shown}{more}. {fixes}."
            )
        keep = slice(None, limit) if self.truncation_side == "right" else slice(-limit, None)
        warn(
            f"Truncated {len(long_rows)} of {len(tokens)} sequence(s) longer than "
            f"{fam.count(limit)} to their {'first' if self.truncation_side == 'right' else 'last'}"
            f" {fam.count(limit)} (longest: {fam.count(max(len(tokens[i]) for i in long_rows))})."
            " Use long_sequences='window' to keep every nucleotide."
        )
        return [t[keep] if len(t) > limit else t for t in tokens]

    # ------------------------------------------------------------------ pooled features
    def _features(
        self, runner: Runner, plan: Plan, tokens: list[bytes], *, cached: bool = True
    ) -> np.ndarray:
        """Pooled features of validated token lists: duplicates once, through ``cache``.

        ``cached=False`` bypasses the cache (features of weights no other fit shares). The
        embedder's output and the fine-tuning estimators' frozen features both come from here.
        """
        unique, inverse = _deduplicate(tokens)
        if self.cache is None or not cached:
            features = self._passes(runner, unique, plan, lambda: runner.pooled(unique, plan))
        else:
            features = self._pooled_through_cache(runner, plan, unique)
        return features[inverse]

    def _pooled_through_cache(
        self, runner: Runner, plan: Plan, unique: list[bytes]
    ) -> np.ndarray:
        """Look up every sequence in the cache; compute and commit the misses batch by batch."""
        cache = EmbeddingCache(self.cache)
        settings = self._key_settings(runner, plan)
        keys = self._cache_keys(settings, runner, plan.window_stride, unique)
        width = feature_width(plan, runner.encoder.config.hidden_size)
        out, missing = self._cache_lookup(cache, keys, width, np.float32)
        if missing:

            def commit(idx: list[int], rows: np.ndarray) -> None:
                cache.put([keys[missing[j]] for j in idx], rows)

            todo = [unique[i] for i in missing]
            out[missing] = self._passes(
                runner, todo, plan, lambda: runner.pooled(todo, plan, sink=commit)
            )
        cache.close()
        return out

    @staticmethod
    def _key_settings(runner: Runner, plan: Plan) -> dict[str, object]:
        """What the embedding cache keys hold besides the shared ones (see ``_cache_keys``)."""
        return {
            "weights": weights_fingerprint(runner.encoder),
            "alphabet": runner.encoder.config.alphabet,
            "layers": plan.layers,
            "aggregate": plan.aggregate,
            "poolings": plan.poolings,
        }

    def _passes(self, runner: Runner, tokens: list[bytes], plan: Plan, work):
        """Run ``work()`` with a progress bar counting forward passes (sequences or windows)."""
        pieces = sum(n_windows(len(t), runner.window, plan.window_stride) for t in tokens)
        unit = "seq" if pieces == len(tokens) else "window"
        return self._run(runner, pieces, unit, work)

    def _cache_keys(
        self, settings: dict[str, object], runner: Runner, stride: int, tokens: list[bytes]
    ) -> list[bytes]:
        """One key per token list: a hash of everything that changes the numbers.

        ``settings`` (the weights by value and what the estimator computes) plus ``dtype``,
        the numerics versions of the CPU and the CUDA kernels (each bumped whenever a kernel
        change alters results: float32 keys do not name the device, so an entry computed on
        a GPU must become stale when the GPU kernels change) and,
        below float32, the device class and the torch release (reduced-precision kernels
        differ between CPUs and GPUs and across releases). Only windowed sequences depend on
        the window stride.
        """
        settings = {
            **settings,
            "dtype": self.dtype,
            "numerics": NUMERICS_VERSION,
            "numerics_cuda": CUDA_NUMERICS_VERSION,
        }
        if self.dtype != "float32":
            settings["device"] = runner.device.type
            settings["torch"] = ".".join(torch.__version__.split("+")[0].split(".")[:2])
        head = json.dumps(settings, sort_keys=True).encode()
        window = json.dumps({"window_stride": stride}).encode()
        keys = []
        for t in tokens:
            h = hashlib.sha256(head)
            if len(t) > runner.window:
                h.update(window)
            h.update(b"\0")
            h.update(t)
            keys.append(h.digest())
        return keys

    @staticmethod
    def _cache_lookup(
        cache: EmbeddingCache, keys: list[bytes], width: int, dtype: type
    ) -> tuple[np.ndarray, list[int]]:
        """Rows found in ``cache`` (``(len(keys), width)``) and the indices still missing."""
        found = cache.get(keys)
        out = np.empty((len(keys), width), dtype)
        missing = []
        for i, key in enumerate(keys):
            vec = found.get(key)
            if vec is None or vec.shape[0] != width:
                missing.append(i)
            else:
                out[i] = vec
        return out, missing

    @contextmanager
    def _progress(self, runner: Runner, total: int, unit: str) -> Iterator[None]:
        """A tqdm bar on stderr counting forward passes, when ``progress`` asks for one."""
        show = self.progress is True or (self.progress == "auto" and sys.stderr.isatty())
        if not show or total == 0:
            yield
            return
        from tqdm.auto import tqdm

        with tqdm(total=total, desc="RNA-FM", unit=unit, file=sys.stderr) as bar:
            runner.progress = bar.update
            try:
                yield
            finally:
                runner.progress = None

    def _run(self, runner: Runner, total: int, unit: str, work: Callable[[], Any]) -> Any:
        with self._progress(runner, total, unit):
            return work()


# -------------------------------------------------------------------------- validation


def _among(choices: Sequence[str]) -> str:
    return "a str among {" + ", ".join(repr(c) for c in sorted(choices)) + "}"
