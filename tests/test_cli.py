"""``rnafm-embed``: through main(argv) and through the installed console script."""

import gzip
import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import DATA, TINY_PTH

from rnafm_sklearn import RnaFmEmbedder, read_fasta
from rnafm_sklearn._cli import main

FASTA = DATA / "rnafm-rfam3" / "RF00005.fasta"
MODEL = str(TINY_PTH)


@pytest.fixture(scope="module")
def trna():
    s = read_fasta(FASTA).iloc[:30]
    return s, RnaFmEmbedder(model=MODEL, progress=False).transform(s)


@pytest.fixture
def fasta30(tmp_path, trna):
    s, _ = trna
    path = tmp_path / "trna.fa"
    path.write_text("".join(f">{i} some description\n{q[:40]}\n{q[40:]}\n" for i, q in s.items()))
    return path


def _read(path):
    if path.suffix == ".npy":
        ids = path.with_name(path.stem + ".ids.txt").read_text().split()
        return ids, np.load(path)
    frame = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    return frame["id"].astype(str).tolist(), frame.drop(columns="id").to_numpy(np.float32)


@pytest.mark.parametrize("out_name", ["x.npy", "x.csv", "x.parquet"])
@pytest.mark.parametrize("in_kind", ["fasta", "fasta.gz", "csv", "tsv", "parquet"])
def test_every_input_and_output_format(tmp_path, trna, fasta30, in_kind, out_name):
    s, expected = trna
    if in_kind == "fasta":
        src = fasta30
    elif in_kind == "fasta.gz":
        src = tmp_path / "trna.fa.gz"
        src.write_bytes(gzip.compress(fasta30.read_bytes()))
    else:
        frame = pd.DataFrame({"name": s.index, "seq": s.values, "other": 1})
        src = tmp_path / f"trna.{in_kind}"
        if in_kind == "parquet":
            frame.to_parquet(src)
        else:
            frame.to_csv(src, sep="," if in_kind == "csv" else "\t", index=False)
    out = tmp_path / out_name
    argv = [str(src), "-o", str(out), "--model", MODEL, "--no-progress"]
    if in_kind in ("csv", "tsv", "parquet"):
        argv += ["--column", "seq", "--id-column", "name"]
    assert main(argv) == 0
    ids, X = _read(out)
    assert ids == list(s.index)
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-7)  # CSV keeps 8 digits


def test_options_reach_the_estimator(tmp_path, trna, fasta30):
    s, _ = trna
    out = tmp_path / "x.npy"
    argv = [str(fasta30), "-o", str(out), "--model", MODEL, "--pooling", "mean", "cls"]
    argv += ["--layers", "0", "-1", "--batch-tokens", "300", "--cache", str(tmp_path / "c")]
    assert main(argv) == 0
    expected = RnaFmEmbedder(model=MODEL, pooling=["mean", "cls"], layers=[0, -1]).transform(s)
    np.testing.assert_allclose(np.load(out), expected, atol=1e-6)
    assert (tmp_path / "c" / "rnafm-embeddings.sqlite3").exists()


def test_long_sequence_options(tmp_path):
    src = tmp_path / "long.fa"
    src.write_text(">long\n" + "ACGU" * 400 + "\n>short\nACGU\n")
    out = tmp_path / "x.npy"
    assert main([str(src), "-o", str(out), "--model", MODEL]) == 1
    assert main([str(src), "-o", str(out), "--model", MODEL, "--long-sequences", "window"]) == 0
    assert np.load(out).shape == (2, 32)


def _error(capsys, argv):
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


def test_error_unreadable_file(tmp_path, capsys):
    msg = _error(capsys, [str(tmp_path / "nope.fa"), "-o", str(tmp_path / "x.npy")])
    assert msg == f"rnafm-embed: error: input file not found: {tmp_path / 'nope.fa'}"
    binary = tmp_path / "bin.fa.gz"
    binary.write_bytes(b"\x00\x01 not gzip")
    msg = _error(capsys, [str(binary), "-o", str(tmp_path / "x.npy"), "--model", MODEL])
    assert msg.startswith(f"rnafm-embed: error: {binary} is not a readable FASTA file")


def test_error_invalid_sequence_names_its_id(tmp_path, capsys):
    src = tmp_path / "bad.fa"
    src.write_text(">ok\nACGU\n>broken/1-9\nACGUXACGU\n")
    msg = _error(capsys, [str(src), "-o", str(tmp_path / "x.npy"), "--model", MODEL])
    assert "Sequence at row 1 (index 'broken/1-9') contains characters" in msg
    assert "'X' at 5" in msg


def test_error_unknown_column(tmp_path, capsys):
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": ["a"], "seq": ["ACGU"]}).to_csv(src, index=False)
    msg = _error(capsys, [str(src), "-o", str(tmp_path / "x.npy"), "--model", MODEL])
    assert msg == (
        f"rnafm-embed: error: column 'sequence' not found in {src}; columns: ['id', 'seq'] "
        "(choose one with --column)"
    )


def test_error_duplicate_fasta_ids(tmp_path, capsys):
    src = tmp_path / "dup.fa"
    src.write_text(">a\nACGU\n>b\nGG\n>a\nCC\n")
    msg = _error(capsys, [str(src), "-o", str(tmp_path / "x.npy"), "--model", MODEL])
    assert "line 5: duplicate id 'a' (first seen on line 1)" in msg


def test_error_missing_model_and_bad_output(tmp_path, capsys, fasta30):
    msg = _error(capsys, [str(fasta30), "-o", str(tmp_path / "x.npy"), "--model", "/no/such.pth"])
    assert msg == "rnafm-embed: error: Checkpoint not found: /no/such.pth."
    msg = _error(capsys, [str(fasta30), "-o", str(tmp_path / "x.xlsx")])
    assert msg == "rnafm-embed: error: unknown output type 'x.xlsx': use .npy, .csv, .parquet"


def test_error_offline_pretrained(tmp_path, capsys, fasta30, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _error(capsys, [str(fasta30), "-o", str(tmp_path / "x.npy")])
    assert "'rna-fm' weights are not in the cache" in msg


def test_usage_error_exit_status(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["only-input.fa"])
    assert exc.value.code == 2
    assert "the following arguments are required: -o/--output" in capsys.readouterr().err


def test_convert_and_cache_subcommands(tmp_path, capsys, fasta30):
    assert main(["convert", MODEL, str(tmp_path / "native")]) == 0
    assert (tmp_path / "native" / "model.safetensors").exists()
    cache = tmp_path / "c"
    argv = [str(fasta30), "-o", str(tmp_path / "x.npy"), "--model", str(tmp_path / "native")]
    assert main([*argv, "--cache", str(cache)]) == 0
    capsys.readouterr()
    assert main(["cache", "info", str(cache)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["entries"] == 30 and info["bytes"] > 0
    assert main(["cache", "clear", str(cache)]) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0
    assert _error(capsys, ["cache", "info", str(tmp_path / "none")]).startswith(
        "rnafm-embed: error: no embedding cache at"
    )


def test_console_script_and_module(tmp_path, trna, fasta30):
    exe = shutil.which("rnafm-embed")
    assert exe, "the console script is not installed (pip install -e .)"
    out = tmp_path / "x.csv"
    done = subprocess.run(
        [exe, str(fasta30), "-o", str(out), "--model", MODEL], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 30 x 32 features" in done.stderr
    np.testing.assert_allclose(_read(out)[1], trna[1], rtol=1e-6, atol=1e-7)
    bad = subprocess.run(
        [sys.executable, "-m", "rnafm_sklearn", str(tmp_path / "missing.fa"), "-o", str(out)],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert (
        bad.stderr.strip() == f"rnafm-embed: error: input file not found: {tmp_path / 'missing.fa'}"
    )
    helped = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "examples:" in helped.stdout
