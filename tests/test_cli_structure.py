"""``rnafm-embed structure``: files in, dot-brackets / tables / CT / BPSEQ / maps out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PTH

from rnafm_sklearn import RnaFmStructurePredictor, _structure_predict, read_structures
from rnafm_sklearn._cli import main

SEQS = {"hp1": "GGGAAACCCAUG", "hp2": "ACGUAGCUAGCUAGGCUAGCU", "short": "AU"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A native folder with a small fitted head (the estimator saved by ``save``)."""
    est = RnaFmStructurePredictor(
        model=TINY_PTH, head_blocks=1, head_channels=4, max_epochs=1, random_state=0,
        progress=False,
    )  # fmt: skip
    est.fit(
        ["GGGAAACCC", "GGAAACCAU"],
        [
            "(((...)))",
            "((...))..",
        ],
    )
    return est.save(tmp_path_factory.mktemp("m") / "ss")


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "in.fasta"
    path.write_text("".join(f">{k}\n{v}\n" for k, v in SEQS.items()))
    return path


def expected(model, threshold=None):
    est = RnaFmStructurePredictor(model=model, threshold=threshold, progress=False)
    return est.predict(list(SEQS.values())).tolist(), est.predict_proba(list(SEQS.values()))


def test_dot_bracket_fasta_and_probabilities(model, fasta, tmp_path, capsys, monkeypatch):
    out, probs = tmp_path / "out.fa", tmp_path / "maps"
    passes = []  # the model runs once for the structures and the maps together
    real = _structure_predict._probabilities
    monkeypatch.setattr(
        _structure_predict, "_probabilities", lambda *a: passes.append(1) or real(*a)
    )
    assert main(["structure", str(fasta), "-o", str(out), "--model", str(model),
                 "--probabilities", str(probs)]) == 0  # fmt: skip
    assert len(passes) == 1
    monkeypatch.undo()
    got = read_structures(out)
    structures, maps = expected(model)
    assert got.id.tolist() == list(SEQS) and got.structure.tolist() == structures
    for k, m in zip(SEQS, maps, strict=True):
        np.testing.assert_allclose(np.load(probs / f"{k}.npy"), m, atol=1e-6)
    assert "wrote 3 structure(s)" in capsys.readouterr().err


def test_table_in_table_out_with_threshold(model, tmp_path):
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": list(SEQS), "seq": list(SEQS.values())}).to_csv(src, index=False)
    out = tmp_path / "out.csv"
    assert main(["structure", str(src), "-o", str(out), "--model", str(model),
                 "--column", "seq", "--threshold", "0.3"]) == 0  # fmt: skip
    table = pd.read_csv(out, dtype=str)
    assert table.columns.tolist() == ["id", "sequence", "structure"]
    assert table.structure.tolist() == expected(model, 0.3)[0]


@pytest.mark.parametrize("fmt", ["ct", "bpseq"])
def test_folder_of_ct_or_bpseq(model, fasta, tmp_path, fmt):
    out = tmp_path / "structures"
    assert main(["structure", str(fasta), "-o", str(out), "--format", fmt,
                 "--model", str(model)]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}.{fmt}" for k in SEQS)
    back = read_structures(out).set_index("id").loc[list(SEQS)]
    assert back.structure.tolist() == expected(model)[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "{tmp}/x.npy"], "unknown output type 'x.npy'"),
        (["-o", "{tmp}/x.bpseq"], "BPSEQ holds one sequence per file"),
        (["-o", "{tmp}/x.fa", "--model", str(TINY_PTH)], "has no structure head"),
        (["-o", "{tmp}/x.fa", "--threshold", "2"], "The 'threshold' parameter"),
        (["-o", "{tmp}/x.fa", "--max-map-elements", "100"], "exceeds max_map_elements=100"),
    ],
)
def test_errors_leave_no_output(model, fasta, tmp_path, capsys, extra, message):
    args = ["structure", str(fasta), "--model", str(model)]
    args += [a.format(tmp=tmp_path) for a in extra]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "error:" in err and message in err, err
    assert not (tmp_path / "x.fa").exists() and not (tmp_path / "x.npy").exists()


def test_failed_run_keeps_previous_output(model, tmp_path, capsys):
    src = tmp_path / "bad.fasta"
    src.write_text(">a\nGGGAAACCC\n>b\nACGXZ\n")
    out = tmp_path / "out.fa"
    out.write_text("previous\n")
    assert main(["structure", str(src), "-o", str(out), "--model", str(model)]) == 1
    assert "'b'" in capsys.readouterr().err
    assert out.read_text() == "previous\n"


def test_unsafe_id_for_probabilities(model, tmp_path, capsys):
    src = tmp_path / "in.fasta"
    src.write_text(">../evil\nGGGAAACCC\n")
    args = ["structure", str(src), "-o", str(tmp_path / "o.fa"), "--model", str(model),
            "--probabilities", str(tmp_path / "maps")]  # fmt: skip
    assert main(args) == 1
    assert "not safe as a file name" in capsys.readouterr().err
    assert not (tmp_path / "maps").exists()
