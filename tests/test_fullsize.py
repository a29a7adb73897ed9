"""Parity at the official depth and length: 12 layers, 32-dim heads, up to 1022 nt.

``test_deep_parity_up_to_1022_nt`` (default suite, seconds): 12 layers of 2 heads of 32
dimensions, the official head size and depth, on real mRNA slices up to the 1024-position
limit. ``test_fullsize_parity_up_to_1022_nt`` (marked ``slow``, not in the default run, about
a minute on 2 CPU cores) adds what only the full width shows: the official 12 x 640 layout
with 20 heads and a 5120-wide FFN loads, and float32 sums over 640 and 5120 terms stay within
the tolerance. Run it with ``python -m pytest -m slow``.
"""

import pandas as pd
import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import DATA

from rnafm_sklearn import load_model


def _models(tmp_path_factory, name, **shape):
    path = make_official_checkpoint(
        tmp_path_factory.mktemp(name) / "RNA-FM.pth", layers=12, seed=11, **shape
    )
    official, alpha = load_official(path)
    return official, alpha, load_model(path)


@torch.no_grad()
def _parity(official, alpha, ours):
    mrna = pd.read_csv(DATA / "mrna233-degradation" / "233x_sequences_degdata_081120.csv")
    long = mrna.RNA_sequence.iloc[0]
    seqs = [long[:1022], long[100:800], long[5:300], long[:40]]  # real mRNA slices
    tokens = official_tokens(alpha, seqs)
    assert tokens.shape[1] == 1024
    ref = official(tokens, repr_layers=[0, 6, 12])["representations"]
    out = ours(tokens, layers=[0, 6, 12])
    real = tokens.ne(alpha.padding_idx)
    return {k: (out[k] - ref[k])[real].abs().max().item() for k in ref}


def test_deep_parity_up_to_1022_nt(tmp_path_factory):
    diffs = _parity(*_models(tmp_path_factory, "deep", embed_dim=64, heads=2, ffn=512))
    assert diffs[12] <= 1e-4, diffs
    assert diffs[0] <= 1e-5, diffs


@pytest.mark.slow
def test_fullsize_parity_up_to_1022_nt(tmp_path_factory):
    diffs = _parity(*_models(tmp_path_factory, "full", embed_dim=640, heads=20, ffn=5120))
    assert diffs[12] <= 1e-4, diffs
    assert diffs[0] <= 1e-5, diffs
