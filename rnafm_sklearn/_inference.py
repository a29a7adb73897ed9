"""Running an encoder over many sequences: the :class:`Runner` (batches, pooling, log-probs).

Knows nothing of scikit-learn. Input is token ids as ``bytes`` (one byte
per token, without ``<cls>``/``<eos>``: compact enough for millions of sequences), output numpy
arrays. Work is streamed: sequences are cut into *pieces* (one per sequence, or
several overlapping windows for a long one), pieces are sorted by length and packed into
batches under a token budget (padding counted), and each sequence is pooled and released as
soon as its last piece has been computed. Memory is bounded by the batch plus the output.
How pieces are cut, batched and stitched back is in :mod:`._windows`; this module holds what
to compute (:class:`Plan`), the runner that streams batches through the encoder (with the
out-of-memory back-off) and the pooling.

Pooling runs on the encoder's device, in float32: only the pooled vectors of a batch cross to
the host (one copy per batch), never its hidden states, except for per-token output. From a
GPU that copy is asynchronous and read one batch later, so the host prepares the next batch
while the GPU finishes the current one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ._alphabet import get_alphabet
from ._encoder import RnaFmEncoder
from ._encoder_attention import is_out_of_memory
from ._windows import _Piece, _window_mean, pack_batches, window_ownership

logger = logging.getLogger("rnafm_sklearn")


@dataclass(frozen=True)
class Plan:
    """What to compute for every sequence.

    layers : normalised layer indices (0..num_layers)
    aggregate : "concat" keeps each layer, "mean" averages the layers' hidden states
    poolings : subset of _choices.POOLINGS, in output order
    window_stride : distance between window starts for sequences longer than the model's
        window (resolved by the caller: the estimator's default is half a window)
    """

    layers: tuple[int, ...]
    window_stride: int
    aggregate: str = "concat"
    poolings: tuple[str, ...] = ("mean",)


def feature_width(plan: Plan, hidden: int) -> int:
    """Number of pooled features per sequence."""
    n_groups = len(plan.layers) if plan.aggregate == "concat" else 1
    return n_groups * len(plan.poolings) * hidden


@dataclass
class _Pending:
    """States of a windowed sequence collected piece by piece."""

    n_pieces: int
    states: torch.Tensor  # (n_layers, n_tokens, hidden)
    cls: list[torch.Tensor] = field(default_factory=list)
    eos: list[torch.Tensor] = field(default_factory=list)


class Runner:
    """Streams token lists through an encoder on one device.

    Parameters
    ----------
    encoder : RnaFmEncoder
        Already on ``device`` and in ``dtype``.
    batch_tokens : int
        Token budget per forward pass, padding included.
    progress : callable, optional
        Called after each batch with the number of pieces it computed (a piece is a whole
        sequence, or one window of a long one).
    """

    def __init__(
        self,
        encoder: RnaFmEncoder,
        *,
        batch_tokens: int,
        progress: Callable[[int], None] | None = None,
    ):
        self.encoder = encoder
        self.batch_tokens = batch_tokens
        self.progress = progress
        self.device = next(encoder.parameters()).device
        alphabet = get_alphabet(encoder.config.alphabet)
        self.pad, self.cls, self.eos = alphabet.padding_idx, alphabet.cls_idx, alphabet.eos_idx
        self.mask = alphabet.mask_idx
        self.window = encoder.config.max_sequence_tokens

    # ------------------------------------------------------------------ pieces and batches
    def _pieces(self, token_lists: Sequence[bytes], stride: int) -> list[_Piece]:
        pieces = []
        for i, body in enumerate(token_lists):
            for s, a, b in window_ownership(len(body), self.window, stride):
                pieces.append(_Piece(i, s, min(self.window, len(body) - s), (a, b)))
        return pieces

    def _ids(self, batch: list[_Piece], token_lists: Sequence[bytes]) -> torch.Tensor:
        """The padded ``(B, T)`` token ids of a batch: ``<cls>`` piece ``<eos>`` ``<pad>``...

        A piece with a ``masked`` position has that token replaced by ``<mask>``: masked copies
        exist only here, one batch at a time, never as whole sequences in memory.
        """
        width = max(p.n for p in batch) + 2
        ids = torch.full((len(batch), width), self.pad, dtype=torch.long)
        ids[:, 0] = self.cls
        for row, p in enumerate(batch):
            chunk = token_lists[p.seq][p.start : p.start + p.n]
            ids[row, 1 : 1 + p.n] = torch.frombuffer(bytearray(chunk), dtype=torch.uint8)
            ids[row, 1 + p.n] = self.eos
            if p.masked >= 0:
                ids[row, 1 + p.masked - p.start] = self.mask
        return ids.to(self.device)

    def padded_pieces(
        self, token_lists: Sequence[bytes], stride: int
    ) -> tuple[list[_Piece], torch.Tensor]:
        """All pieces of ``token_lists`` (windows of a long one) and their padded ids as one
        ``(n_pieces, T)`` batch on the runner's device, in sequence order.

        For computations outside the runner's batching (training, with autograd): piece ``r``
        belongs to sequence ``pieces[r].seq`` and its positions ``pieces[r].keep`` are taken
        from it (see :func:`window_ownership`).
        """
        pieces = self._pieces(token_lists, stride)
        return pieces, self._ids(pieces, token_lists)

    def _states(
        self, layers: Sequence[int], *, host: bool
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Batch computation: hidden states ``(n_layers, B, T, E)`` in float32.

        Converted on the encoder's device (one float32 buffer, whatever the forward pass's
        precision) and left there for pooling; ``host=True`` copies them to the CPU.
        """

        def compute(ids: torch.Tensor) -> torch.Tensor:
            out = self.encoder(ids, layers=layers)
            first = out[layers[0]]
            states = first.new_empty((len(layers), *first.shape), dtype=torch.float32)
            for g, k in enumerate(layers):
                states[g].copy_(out[k])
            return states.cpu() if host else states

        return compute

    def _batches(
        self,
        pieces: list[_Piece],
        token_lists: Sequence[bytes],
        compute: Callable[[torch.Tensor], torch.Tensor],
        budget: int | None = None,
    ) -> Iterator[tuple[list[_Piece], torch.Tensor]]:
        """Yield ``(batch, compute(ids))`` for length-sorted batches under the token budget
        (``budget``, default the runner's ``batch_tokens``).

        On out-of-memory the batch is halved and retried (down to single pieces).
        """
        queue = [
            [pieces[i] for i in idx]
            for idx in pack_batches([p.n + 2 for p in pieces], budget or self.batch_tokens)
        ]
        queue.reverse()  # pop() from the end: longest batches first
        while queue:
            batch = queue.pop()
            try:
                with torch.inference_mode():
                    out = compute(self._ids(batch, token_lists))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not is_out_of_memory(exc) or len(batch) == 1:
                    raise
                half = len(batch) // 2
                logger.warning(
                    "Out of memory on a batch of %d sequences; retrying in halves.", len(batch)
                )
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                queue += [batch[half:], batch[:half]]
                continue
            yield batch, out

    # ------------------------------------------------------------------------- public API
    def pooled(
        self,
        token_lists: Sequence[bytes],
        plan: Plan,
        sink: Callable[[list[int], np.ndarray], None] | None = None,
    ) -> np.ndarray:
        """Pooled features, ``(n_sequences, n_layer_groups * len(poolings) * hidden)``.

        ``sink(indices, rows)`` is called after every batch with the sequences it completed
        (e.g. to commit them to a cache): before the next batch runs, except from a GPU,
        whose rows are copied asynchronously and handed over once the next batch has been
        launched (the last batch also on an interrupt).
        """
        width = feature_width(plan, self.encoder.config.hidden_size)
        out = np.empty((len(token_lists), width), np.float32)
        pending: list[tuple[list[int], torch.Tensor | None, Callable[[], None]]] = []

        def deliver() -> None:
            idx, rows, wait = pending.pop()
            wait()
            if rows is not None:
                out[idx] = rows.numpy()
            if sink is not None:
                sink(idx, out[idx])

        try:
            for finished in self._sequence_states(token_lists, plan, host=False):
                idx = [i for i, _ in finished]
                rows = None
                if finished:
                    # pooled on the device; one copy of the batch's rows to the host
                    states = [_pool(*states, plan.poolings) for _, states in finished]
                    rows = torch.stack(states).reshape(len(idx), width)
                rows, wait = _to_host(rows)
                if pending:  # the previous batch: its copy overlapped this batch's launch
                    deliver()
                pending.append((idx, rows, wait))
                if wait is _no_wait:  # already on the host (CPU, MPS): no reason to wait
                    deliver()
        finally:
            if pending:  # the last batch, also on an interrupt (the cache keeps it)
                deliver()
        return out

    def per_token(self, token_lists: Sequence[bytes], plan: Plan) -> list[np.ndarray]:
        """Per-token states, one ``(n_tokens, n_layer_groups * hidden)`` array per sequence."""
        result: list[np.ndarray | None] = [None] * len(token_lists)
        for finished in self._sequence_states(token_lists, plan, host=True):
            for i, (states, _, _) in finished:
                # (G, L, E) => (L, G * E)
                result[i] = states.permute(1, 0, 2).reshape(states.shape[1], -1).numpy()
        return result  # type: ignore[return-value]

    def _sequence_states(
        self, token_lists: Sequence[bytes], plan: Plan, *, host: bool
    ) -> Iterator[list[tuple[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]]]:
        """Per batch, the sequences it completed: ``(i, (states (G, L, E), cls, eos))``.

        float32 tensors on the encoder's device (``host=False``: a windowed sequence is
        stitched there too) or on the CPU (``host=True``).
        """
        pieces = self._pieces(token_lists, plan.window_stride)
        n_pieces = [0] * len(token_lists)
        for p in pieces:
            n_pieces[p.seq] += 1
        pending: dict[int, _Pending] = {}
        compute = self._states(plan.layers, host=host)
        for batch, states in self._batches(pieces, token_lists, compute):
            if plan.aggregate == "mean":
                states = states.mean(0, keepdim=True)
            finished = []
            for row, p in enumerate(batch):
                n = p.n
                h = states[:, row]  # (G, T, E)
                if n_pieces[p.seq] == 1:
                    finished.append((p.seq, (h[:, 1 : 1 + n], h[:, 0], h[:, 1 + n])))
                    continue
                acc = pending.get(p.seq)
                if acc is None:
                    total = len(token_lists[p.seq])
                    acc = pending[p.seq] = _Pending(
                        n_pieces[p.seq], h.new_empty((h.shape[0], total, h.shape[2]))
                    )
                a, b = p.keep
                acc.states[:, a:b] = h[:, p.kept]
                acc.cls.append(h[:, 0])
                acc.eos.append(h[:, 1 + n])
                if len(acc.cls) == acc.n_pieces:
                    del pending[p.seq]
                    cls, eos = _window_mean(acc.cls), _window_mean(acc.eos)
                    finished.append((p.seq, (acc.states, cls, eos)))
            if self.progress is not None:
                self.progress(len(batch))  # pieces: sequences, or windows of long ones
            yield finished

    def per_sequence(
        self, token_lists: Sequence[bytes], compute: Callable[[torch.Tensor], list]
    ) -> list:
        """Per sequence, its item of ``compute(ids)`` (a list with one item per batch row).

        Each sequence is one forward pass, so none may exceed the window: for outputs that
        exist only within a pass, such as attention maps, which ``compute`` reduces before
        they leave the batch.
        """
        if too_long := [i for i, t in enumerate(token_lists) if len(t) > self.window]:
            raise ValueError(
                f"sequence {too_long[0]} has {len(token_lists[too_long[0]])} tokens; a single "
                f"forward pass takes at most {self.window}."
            )
        pieces = [_Piece(i, 0, len(t), (0, len(t))) for i, t in enumerate(token_lists)]
        result: list = [None] * len(token_lists)
        for batch, items in self._batches(pieces, token_lists, compute):
            for p, item in zip(batch, items, strict=True):
                result[p.seq] = item
            if self.progress is not None:
                self.progress(len(batch))
        return result

    # ------------------------------------------------------------- masked-LM log-probs
    def _log_probs(
        self, columns: Sequence[int], *, masked: bool = False
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Batch computation: ``log_softmax`` of the logits over ``columns`` only, ``(B, T, C)``.

        Renormalising over the nucleotide (or codon) tokens: ``log p_i = logit_i - logsumexp``
        of the ``columns`` logits, in float32 whatever the forward pass's precision. With
        ``masked``, each row of the batch holds one ``<mask>`` and only its position is read
        out, ``(B, C)``: the last layer and the head run for those ``B`` rows alone
        (``RnaFmEncoder.logits(ids, at=...)``).
        """
        index = torch.tensor(list(columns), dtype=torch.long, device=self.device)

        def compute(ids: torch.Tensor) -> torch.Tensor:
            if masked:
                rows = torch.arange(ids.shape[0], device=ids.device)
                at = torch.stack([rows, ids.eq(self.mask).int().argmax(1)], 1)
                logits = self.encoder.logits(ids, at)
            else:
                logits = self.encoder.logits(ids)
            logits = logits.index_select(-1, index).float()
            return torch.log_softmax(logits, dim=-1).cpu()

        return compute

    def unmasked_log_probs(
        self, token_lists: Sequence[bytes], columns: Sequence[int], stride: int
    ) -> list[np.ndarray]:
        """Per sequence, ``(L, C)`` log-probabilities from one unmasked pass (per window).

        A windowed sequence takes each position from the window in which it is farthest from
        an edge, as the embeddings do.
        """
        pieces = self._pieces(token_lists, stride)
        result: list[np.ndarray | None] = [None] * len(token_lists)
        for batch, lp in self._batches(pieces, token_lists, self._log_probs(columns)):
            for row, p in enumerate(batch):
                out = result[p.seq]
                if out is None:
                    out = result[p.seq] = np.empty(
                        (len(token_lists[p.seq]), len(columns)), np.float32
                    )
                a, b = p.keep
                out[a:b] = lp[row, p.kept].numpy()
            if self.progress is not None:
                self.progress(len(batch))
        return result  # type: ignore[return-value]

    def masked_log_probs(
        self,
        token_lists: Sequence[bytes],
        sites: Sequence[tuple[int, int]],
        columns: Sequence[int],
        stride: int,
        batch_tokens: int | None = None,
    ) -> np.ndarray:
        """``(n_sites, C)``: log-probabilities at each site with that position masked.

        A site ``(i, pos)`` is one forward pass over sequence ``i`` (the window that owns
        ``pos`` for a long one) with token ``pos`` replaced by ``<mask>``. Masked copies are
        packed into token-budget batches (``batch_tokens``, default the runner's) like any
        other piece, and built one batch at a time; only the masked position's row goes
        through the last layer and the head. The caller deduplicates sites: every site given
        here costs one pass.
        """
        owners: dict[int, list[tuple[int, int, int]]] = {}
        pieces, slot = [], {}
        for k, (i, pos) in enumerate(sites):
            n = len(token_lists[i])
            if not 0 <= pos < n:
                raise IndexError(f"site {k}: position {pos} outside 0..{n - 1}")
            windows = owners.get(i)
            if windows is None:
                windows = owners[i] = window_ownership(n, self.window, stride)
            start = next(s for s, a, b in windows if a <= pos < b)
            piece = _Piece(i, start, min(self.window, n - start), (pos, pos + 1), masked=pos)
            slot[id(piece)] = k
            pieces.append(piece)
        out = np.empty((len(sites), len(columns)), np.float32)
        compute = self._log_probs(columns, masked=True)
        for batch, lp in self._batches(pieces, token_lists, compute, batch_tokens):
            for row, p in enumerate(batch):
                out[slot[id(p)]] = lp[row].numpy()  # the row of its <mask>
            if self.progress is not None:
                self.progress(len(batch))
        return out


def _no_wait() -> None:
    return None


def _to_host(rows: torch.Tensor | None) -> tuple[torch.Tensor | None, Callable[[], None]]:
    """``rows`` on the host, and a function that returns once they have arrived.

    From a CUDA device the copy goes to pinned memory without blocking, so that the host can
    build and launch the next batch while the GPU finishes this one (the caller waits before
    reading the rows); elsewhere it is an ordinary copy, complete on return.
    """
    if rows is None or rows.device.type != "cuda":
        return (None if rows is None else rows.cpu()), _no_wait
    host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
    host.copy_(rows, non_blocking=True)  # queued on the current stream of rows' device
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(rows.device))  # that stream, not the current device's
    return host, done.synchronize


def _pool(
    states: torch.Tensor, cls: torch.Tensor, eos: torch.Tensor, poolings: Sequence[str]
) -> torch.Tensor:
    """``(G, len(poolings), E)`` from per-token states ``(G, L, E)``, on their device."""
    parts = []
    for name in poolings:
        if name == "mean":
            parts.append(states.mean(1))
        elif name == "max":
            parts.append(states.amax(1))
        elif name == "cls":
            parts.append(cls)
        elif name == "eos":
            parts.append(eos)
        else:  # pragma: no cover - validated by the caller
            raise ValueError(name)
    return torch.stack(parts, 1)
