"""Shared fixtures: tiny checkpoints, real sequences, a clean environment, the test device.

``RNAFM_TEST_DEVICE`` (default ``"cpu"``) is the device of the numerical tests: those that take
the ``device`` fixture build their estimators and encoders on it and compare on the CPU
against the official ``fm`` forward pass. On another device (``RNAFM_TEST_DEVICE=cuda``) only
those tests run; the others do not depend on the device and run in CI.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# One intra-op thread unless the caller chose: the tests' models are tiny, so a second thread
# costs more in synchronisation than it computes (suite on 2 idle cores: 4 min 14 s with one
# thread, about 5 min 55 s with two). Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
DATA = ROOT / "data"
TINY_PTH = FIXTURES / "RNA-FM_tiny.pth"
TINY_HF = FIXTURES / "multimolecule-rnafm-tiny"

sys.path.insert(0, str(ROOT / "tests"))

# Not an RNAFM_SKLEARN_* name: _clean_env below leaves it in place.
TEST_DEVICE = os.environ.get("RNAFM_TEST_DEVICE", "cpu")


def pytest_report_header(config):
    return f"RNAFM_TEST_DEVICE: {TEST_DEVICE}"


def pytest_collection_modifyitems(config, items):
    # the tests on the device fixture compare with the official model: their numbers depend on
    # the kernels, as those marked numerics by hand (.ci/run reruns them on AVX2 kernels)
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.numerics)
    if TEST_DEVICE != "cpu":
        # Off the CPU only the tests that take the device are worth the device's time.
        uses = ["device" in getattr(item, "fixturenames", ()) for item in items]
        kept = [item for item, use in zip(items, uses, strict=True) if use]
        dropped = [item for item, use in zip(items, uses, strict=True) if not use]
        if dropped:
            config.hook.pytest_deselected(items=dropped)
            items[:] = kept
    if os.environ.get("RNAFM_SKLEARN_NETWORK_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="needs internet; set RNAFM_SKLEARN_NETWORK_TESTS=1")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> str:
    """The device of the numerical tests: ``RNAFM_TEST_DEVICE``, default ``"cpu"``.

    A device that this machine lacks fails the test (never a silent skip): asking for CUDA
    on a machine without it must not pass.
    """
    try:
        dev = torch.device(TEST_DEVICE)
    except RuntimeError as exc:
        pytest.fail(f"RNAFM_TEST_DEVICE={TEST_DEVICE!r} is not a torch device: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.fail(f"RNAFM_TEST_DEVICE={TEST_DEVICE!r} but torch.cuda.is_available() is False")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        pytest.fail(f"RNAFM_TEST_DEVICE={TEST_DEVICE!r} but torch.backends.mps is not available")
    return TEST_DEVICE


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No test sees the user's cache, offline flags or thread settings."""
    for var in list(os.environ):
        if var.startswith("RNAFM_SKLEARN_") and var != "RNAFM_SKLEARN_NETWORK_TESTS":
            monkeypatch.delenv(var)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("RNAFM_SKLEARN_HOME", str(tmp_path / "home"))


def rfam() -> pd.DataFrame:
    """The three Rfam families of the official tutorial: id, sequence, family."""
    from rnafm_sklearn import read_fasta

    frames = []
    for fam in ("RF00001", "RF00005", "RF00010"):
        s = read_fasta(DATA / "rnafm-rfam3" / f"{fam}.fasta")
        frames.append(pd.DataFrame({"sequence": s, "family": fam}))
    return pd.concat(frames)


def mixed_real_sequences(n: int = 24) -> list[str]:
    """``n`` real sequences of mixed length (62..520 nt, some with IUPAC codes)."""
    df = rfam()
    iupac = df[df.sequence.str.contains("[^ACGU]", regex=True)].sequence.tolist()[:4]
    per_family = [g.sequence.tolist()[: (n - len(iupac)) // 3 + 1] for _, g in df.groupby("family")]
    seqs = iupac + [s for group in per_family for s in group]
    return seqs[:n]


@pytest.fixture(scope="session")
def real_sequences() -> list[str]:
    return mixed_real_sequences()
