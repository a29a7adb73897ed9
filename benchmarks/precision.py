"""bf16 vs fp32: cosine similarity of embeddings and the effect on a downstream CV score.

Full-size RNA-FM (random weights, official layout) on N real Rfam sequences (default 300,
three families): mean-pooled and per-token embeddings in fp32 and bf16, their cosine
similarity (min and median), and 5-fold logistic-regression accuracy on each.

Random BERT-scale weights give flat attention (scores of a few tenths), where rounding the
scores matters least. ``--sharpen 1,8,32`` repeats the comparison with every query projection
multiplied by each factor, which spreads the attention scores (their standard deviation in
layer 1 is printed) the way trained heads that focus on a few positions do.

    python benchmarks/precision.py                      # ~2 min on 2 cores
    python benchmarks/precision.py --n 150 --sharpen 1,8,32
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from _common import cosine, full_size_checkpoint, rfam
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from rnafm_sklearn import RnaFmEmbedder, get_alphabet, load_model


def sharpened(ckpt: Path, factor: float) -> Path:
    """A copy of the official checkpoint with every query projection scaled by ``factor``."""
    if factor == 1:
        return ckpt
    with torch.serialization.safe_globals([argparse.Namespace]):
        data = torch.load(ckpt, weights_only=True)
    for key in data["model"]:
        if ".self_attn.q_proj." in key:
            data["model"][key] = data["model"][key] * factor
    path = ckpt.with_name(f"{ckpt.stem}_q{factor:g}.pth")
    torch.save(data, path)
    return path


@torch.no_grad()
def score_spread(ckpt: Path, sequences: list[str]) -> float:
    """Standard deviation of the attention scores of layer 1 (fp32) over the sequences."""
    enc = load_model(ckpt)
    alphabet, layer = get_alphabet("rna"), enc.layers[0]
    heads = enc.config.num_heads
    spread = []
    for s in sequences[:20]:
        x = enc(torch.tensor([alphabet.encode(s)]), layers=0)[0][0]
        q, k, _ = layer.self_attn.qkv_proj(layer.self_attn_layer_norm(x)).chunk(3, dim=-1)
        q, k = (t.view(len(x), heads, -1).transpose(0, 1) for t in (q, k))
        spread.append((q @ k.transpose(1, 2) * q.shape[-1] ** -0.5).std().item())
    return float(np.mean(spread))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--sharpen", default="1", help="query scale factors, comma-separated")
    args = p.parse_args(argv)
    base = full_size_checkpoint()
    df = rfam(args.n)
    seqs = df.sequence.tolist()
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    print(f"# {args.n} Rfam sequences, full-size random-weight RNA-FM, last layer")
    print(
        "| query scale | score std (layer 1) | pooled cosine min / median | per-token cosine "
        "min / median | max abs diff (pooled) | 5-fold accuracy fp32 / bf16 |"
    )
    print("|---|---|---|---|---|---|")
    for factor in (float(f) for f in args.sharpen.split(",")):
        ckpt = sharpened(base, factor)
        pooled, tokens = {}, {}
        for dt in ("float32", "bfloat16"):
            emb = RnaFmEmbedder(model=str(ckpt), dtype=dt, device="cpu", progress=False)
            pooled[dt] = emb.transform(seqs)
            tokens[dt] = np.concatenate(emb.transform_tokens(seqs[:50]))
        a, b = pooled["float32"], pooled["bfloat16"]
        cos, tok = cosine(a, b), cosine(tokens["float32"], tokens["bfloat16"])
        acc = {dt: cross_val_score(clf, x, df.y, cv=cv).mean() for dt, x in pooled.items()}
        print(
            f"| {factor:g} | {score_spread(ckpt, seqs):.2f} | {cos.min():.6f} / "
            f"{np.median(cos):.6f} | {tok.min():.5f} / {np.median(tok):.6f} | "
            f"{np.abs(a - b).max():.3g} | {acc['float32']:.4f} / {acc['bfloat16']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
