"""Full-size (12 x 640, 20 heads) parity with random weights, up to 1022 nt.

Takes about a minute on 2 CPU cores: part of the default suite, marked ``slow``.
"""

import pandas as pd
import pytest
import torch
from _official import load_official, make_official_checkpoint, official_tokens
from conftest import DATA

from rnafm_sklearn import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fullsize(tmp_path_factory):
    path = make_official_checkpoint(
        tmp_path_factory.mktemp("full") / "RNA-FM_full.pth",
        layers=12, embed_dim=640, heads=20, ffn=5120, seed=11,
    )  # fmt: skip
    official, alpha = load_official(path)
    return official, alpha, load_model(path)


@torch.no_grad()
def test_fullsize_parity_up_to_1022_nt(fullsize):
    official, alpha, ours = fullsize
    mrna = pd.read_csv(DATA / "mrna233-degradation" / "233x_sequences_degdata_081120.csv")
    long = mrna.RNA_sequence.iloc[0]
    seqs = [long[:1022], long[100:800], long[5:300], long[:40]]  # real mRNA slices
    tokens = official_tokens(alpha, seqs)
    assert tokens.shape[1] == 1024
    ref = official(tokens, repr_layers=[0, 6, 12])["representations"]
    out = ours(tokens, layers=[0, 6, 12])
    real = tokens.ne(alpha.padding_idx)
    diffs = {k: (out[k] - ref[k])[real].abs().max().item() for k in ref}
    assert diffs[12] <= 1e-4, diffs
    assert diffs[0] <= 1e-5, diffs
