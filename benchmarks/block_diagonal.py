"""Packing several sequences into one row with a block-diagonal mask, vs our batches (fp32).

An idea from the throughput issue, measured and not shipped. Sequences are packed first-fit
(longest first) into rows of 256 / 512 / 1024 tokens, positions restart at every sequence, and
attention gets a block-diagonal mask so that no sequence sees another. Our shipped path instead
sorts by length into batches under a 1024-token budget and skips padding in every linear layer
(padding is only seen by attention). Both run the same packed full-size encoder. The script
first checks that block-diagonal packing is exact (each sequence against a forward pass of its
own), then times both, interleaved, on (a) the 70 mixed real sequences of ``throughput.py`` and
(b) 120 short Rfam sequences, where packing has the most to gain.

    python benchmarks/block_diagonal.py     # ~10 min on 2 cores
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from _common import full_size_checkpoint, rfam
from throughput import real_sequences

from rnafm_sklearn import _encoder_layers, get_alphabet, load_model
from rnafm_sklearn._encoder_attention import _attention_padded, _Layout
from rnafm_sklearn._windows import pack_batches

PAD = get_alphabet("rna").padding_idx


def first_fit(lengths: list[int], row: int) -> list[list[int]]:
    rows: list[tuple[list[int], list[int]]] = []  # ([used], members)
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for used, members in rows:
            if used[0] + lengths[i] <= row:
                used[0] += lengths[i]
                members.append(i)
                break
        else:
            rows.append(([lengths[i]], [i]))
    return [members for _, members in rows]


def packed_batches(ids: list[torch.Tensor], row: int) -> list[tuple[torch.Tensor, ...]]:
    """``(tokens, positions, segment)`` per forward pass of about 1024 tokens."""
    rows = first_fit([len(t) for t in ids], row)
    per_pass = max(1, 1024 // row)
    out = []
    for k in range(0, len(rows), per_pass):
        group = rows[k : k + per_pass]
        width = max(sum(len(ids[i]) for i in members) for members in group)
        tokens = torch.full((len(group), width), PAD)
        positions = torch.full((len(group), width), PAD)
        segment = torch.full((len(group), width), -1)
        for g, members in enumerate(group):
            c = 0
            for j, i in enumerate(members):
                n = len(ids[i])
                tokens[g, c : c + n] = ids[i]
                positions[g, c : c + n] = torch.arange(n) + PAD + 1
                segment[g, c : c + n] = j
                c += n
        out.append((tokens, positions, segment))
    return out


def forward_block_diagonal(enc, tokens, positions, segment) -> torch.Tensor:
    """Last-layer states of the real tokens, row by row, ``(n_real, E)``."""
    pad = tokens.eq(PAD)
    B, T = tokens.shape
    x = enc.emb_layer_norm_before(enc.embed_tokens(tokens) + enc.embed_positions(positions))
    layout = _Layout(pad)
    same = segment[:, None, :, None] == segment[:, None, None, :]
    layout.keep = (same & ~pad[:, None, None, :]) | torch.eye(T, dtype=torch.bool)
    x = layout.unpad(x.reshape(B * T, -1))
    # The CPU path attends sequence by sequence and ignores layout.keep; the block-diagonal
    # mask needs the padded, masked attention (what other devices use).
    cpu_dispatch = _encoder_layers.attention
    _encoder_layers.attention = _attention_padded
    try:
        for layer in enc.layers:
            x = layer(x, layout)
    finally:
        _encoder_layers.attention = cpu_dispatch
    return enc.emb_layer_norm_after(x)[: layout.n]


def check_exact(enc, batch) -> float:
    tokens, positions, segment = batch
    got = forward_block_diagonal(enc, tokens, positions, segment)
    worst, c = 0.0, 0
    for g in range(tokens.shape[0]):
        n_row = int(tokens[g].ne(PAD).sum())
        states, c = got[c : c + n_row], c + n_row
        for j in range(int(segment[g].max()) + 1):
            alone = enc(tokens[g][segment[g] == j][None])[enc.num_layers][0]
            worst = max(worst, (states[(segment[g] == j)[:n_row]] - alone).abs().max().item())
    return worst


def main() -> int:
    torch.manual_seed(0)
    enc = load_model(full_size_checkpoint())
    assert enc.pack_for_cpu()
    alphabet = get_alphabet("rna")
    sets = {
        "70 mixed real sequences": real_sequences(70),
        "120 short Rfam sequences": rfam(120).sequence.tolist(),
    }
    for name, seqs in sets.items():
        ids = [torch.tensor(alphabet.encode(s)) for s in seqs]
        lengths = [len(t) for t in ids]
        ours = [
            torch.nn.utils.rnn.pad_sequence([ids[i] for i in b], True, PAD)
            for b in pack_batches(lengths, 1024)
        ]
        runs = {
            "ours: sorted, 1024-token batches, padding skipped": lambda ours=ours: [
                enc(t) for t in ours
            ]
        }
        with torch.inference_mode():
            for row in (256, 512, 1024):
                batches = packed_batches(ids, row)
                print(
                    f"block-diagonal rows of {row}: max |diff| vs one by one "
                    f"{check_exact(enc, batches[0]):.1e}"
                )
                runs[f"block-diagonal rows of {row}"] = lambda b=batches: [
                    forward_block_diagonal(enc, *x) for x in b
                ]
            times: dict[str, list[float]] = {k: [] for k in runs}
            for f in runs.values():
                f()
            for _ in range(3):
                for k, f in runs.items():
                    t = time.perf_counter()
                    f()
                    times[k].append(time.perf_counter() - t)
        print(f"\n## {name}: {sum(lengths)} tokens, median of 3")
        for k, v in times.items():
            print(f"| {k} | {sum(lengths) / statistics.median(v):.0f} tok/s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
