"""Shared set-up of the benchmarks: a full-size random RNA-FM and the real data."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _official import make_official_checkpoint  # noqa: E402

from rnafm_sklearn import read_fasta  # noqa: E402

FULL = {"layers": 12, "embed_dim": 640, "heads": 20, "ffn": 5120}
FAMILIES = ("RF00001", "RF00005", "RF00010")


def full_size_checkpoint(seed: int = 1) -> Path:
    """A full-size RNA-FM with random weights, in the official layout, in a temporary folder."""
    folder = Path(tempfile.mkdtemp())
    return make_official_checkpoint(folder / "RNA-FM_full.pth", **FULL, seed=seed)


def rfam(n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The three Rfam families (columns ``sequence``, ``y``), optionally ``n`` sampled rows."""
    df = pd.concat(
        pd.DataFrame({"sequence": read_fasta(ROOT / "data" / "rnafm-rfam3" / f"{f}.fasta"), "y": f})
        for f in FAMILIES
    )
    return df if n is None else df.sample(n, random_state=seed)


def mrna233() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data" / "mrna233-degradation" / "233x_sequences_degdata_081120.csv")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two embedding matrices."""
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
