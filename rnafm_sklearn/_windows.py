"""Sequences as pieces: windows over long sequences, token-budget batches, stitching back.

A sequence longer than the model's window is cut into overlapping windows
(:func:`window_starts`, :func:`n_windows`); each position takes its state from the window in
which it is farthest from an edge (:func:`window_ownership`). A piece (:class:`_Piece`) is a
whole sequence or one window, possibly with one position masked. Pieces are packed longest
first into batches under a token budget, padding counted (:func:`pack_batches`, the one
batching helper), and per-piece states are put back together per sequence (:func:`stitch`).
Knows nothing of the encoder; the runner (:mod:`._inference`) and training use these rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class _Piece:
    seq: int  # index of the sequence this piece belongs to
    start: int  # first sequence token covered by the piece
    n: int  # number of sequence tokens in the piece (without <cls>/<eos>)
    keep: tuple[int, int]  # sequence positions [a, b) whose states are taken from this piece
    masked: int = -1  # sequence position replaced by <mask> in this piece (-1: none)

    @property
    def kept(self) -> slice:
        """Columns of the piece's padded row (``<cls>`` first) holding positions ``keep``."""
        a, b = self.keep
        return slice(1 + a - self.start, 1 + b - self.start)


def _window_mean(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """``<cls>``/``<eos>`` of a windowed sequence: the average over its windows."""
    return torch.stack(list(parts)).mean(0)


def stitch(
    pieces: Sequence[_Piece], states: torch.Tensor, n_sequences: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per sequence ``(states (..., L, E), cls (..., E), eos (..., E))`` from per-piece rows.

    ``states`` is ``(..., n_pieces, T, E)``, row ``r`` computed from ``pieces[r]`` (as from
    :meth:`Runner.padded_pieces`); every operation keeps autograd. The rule of the runner's
    streamed outputs: each position from the window that owns it (see
    :func:`window_ownership`), ``<cls>``/``<eos>`` averaged over a sequence's windows.
    """
    by_seq: list[list[int]] = [[] for _ in range(n_sequences)]
    for row, p in enumerate(pieces):
        by_seq[p.seq].append(row)
    out = []
    for rows in by_seq:
        if len(rows) == 1:
            row = rows[0]
            n = pieces[row].n
            out.append(
                (states[..., row, 1 : 1 + n, :], states[..., row, 0, :], states[..., row, 1 + n, :])
            )
            continue
        h = torch.cat([states[..., r, pieces[r].kept, :] for r in rows], dim=-2)
        cls = _window_mean([states[..., r, 0, :] for r in rows])
        eos = _window_mean([states[..., r, 1 + pieces[r].n, :] for r in rows])
        out.append((h, cls, eos))
    return out


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Start of each window over ``n`` tokens; the last window ends exactly at ``n``."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window, stride))
    return starts + [n - window]


def window_ownership(n: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(start, a, b)`` per window: positions ``[a, b)`` are taken from that window.

    Each position takes its state from the window in which it is farthest from an edge (the
    overlap is split at its midpoint), so every nucleotide has context on both sides whenever
    the sequence allows it.
    """
    starts = window_starts(n, window, stride)
    out = []
    for j, s in enumerate(starts):
        a = 0 if j == 0 else (s + starts[j - 1] + window + 1) // 2
        b = n if j == len(starts) - 1 else (starts[j + 1] + s + window + 1) // 2
        out.append((s, a, b))
    return out


def pack_batches(
    lengths: Sequence[int],
    budget: int,
    counts: Sequence[int] | None = None,
    order: Sequence[int] | None = None,
) -> list[list[int]]:
    """Group items (sorted longest first) so that ``max_len * n_rows <= budget``.

    ``counts[i]`` is the number of padded rows item ``i`` occupies (default 1: one piece;
    a windowed sequence in training occupies one row per window; a pair map, its length).
    ``order`` cuts the items in that order instead (e.g. a random one). An item over the
    budget gets a batch of its own.
    """
    if order is None:
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    width = rows = 0
    for i in order:
        k = 1 if counts is None else counts[i]
        new_width = max(width, lengths[i])
        if current and new_width * (rows + k) > budget:
            batches.append(current)
            current, width, rows = [], 0, 0
            new_width = lengths[i]
        current.append(i)
        width, rows = new_width, rows + k
    if current:
        batches.append(current)
    return batches


def n_windows(n_tokens: int, window: int, stride: int) -> int:
    """Number of forward-pass pieces for a sequence of ``n_tokens`` tokens."""
    return 1 if n_tokens <= window else math.ceil((n_tokens - window) / stride) + 1
