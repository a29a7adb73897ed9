"""``rnafm-embed``: through main(argv) and through the installed console script."""

import errno
import gzip
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from _tolerance import assert_close
from conftest import DATA, TINY_PTH

from rnafm_sklearn import (
    RnaFmEmbedder,
    RnaFmLikelihood,
    RnaFmVariantScorer,
    _cli,
    _cli_common,
    read_fasta,
    score_variants,
)
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
    assert_close(X, expected)  # CSV keeps 8 digits; the CLI batches on its own


def test_options_reach_the_estimator(tmp_path, trna, fasta30):
    s, _ = trna
    out = tmp_path / "x.npy"
    argv = [str(fasta30), "-o", str(out), "--model", MODEL, "--pooling", "mean", "cls"]
    argv += ["--layers", "0", "-1", "--batch-tokens", "300", "--cache", str(tmp_path / "c")]
    assert main(argv) == 0
    expected = RnaFmEmbedder(model=MODEL, pooling=["mean", "cls"], layers=[0, -1]).transform(s)
    assert_close(np.load(out), expected)
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
    assert re.search(r"Sequence at row 1\b[^)]*'broken/1-9'\) contains characters", msg)
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


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_without_cuda_is_one_line(tmp_path, capsys, fasta30):
    msg = _error(capsys, [str(fasta30), "-o", str(tmp_path / "x.npy"), "--model", MODEL, "--device", "cuda"])
    assert "CUDA is not available here" in msg and "use --device cpu or --device auto" in msg
    assert not (tmp_path / "x.npy").exists()


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
    assert_close(_read(out)[1], trna[1])
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


# ------------------------------------------------------------------ atomic, validated outputs


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_failed_write_replaces_nothing(tmp_path, capsys, fasta30, monkeypatch):
    """A write that fails half-way (disk full) leaves both old outputs as they were."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out, ids = out_dir / "x.npy", out_dir / "x.ids.txt"
    np.save(out, np.arange(3.0))
    ids.write_text("old\n")
    old = out.read_bytes()
    real_save = np.save

    def disk_full(file, arr, *args, **kwargs):
        real_save(file, arr[:1], *args, **kwargs)  # part of the data reaches the disk
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    msg = _error(capsys, [str(fasta30), "-o", str(out), "--model", MODEL, "--no-progress"])
    assert "No space left on device" in msg
    assert out.read_bytes() == old and ids.read_text() == "old\n"
    assert _listing(out_dir) == ["x.ids.txt", "x.npy"]  # no temporary file left behind


def test_failed_write_creates_nothing(tmp_path, capsys, fasta30, monkeypatch):
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", disk_full)
    _error(capsys, [str(fasta30), "-o", str(out_dir / "x.npy"), "--model", MODEL])
    assert _listing(out_dir) == []


_STALLED_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
from rnafm_sklearn import _cli
from rnafm_sklearn._cli import main

method = sys.argv[1]
marker = Path(sys.argv[2])
real = getattr(pd.DataFrame, method)

def stalled(self, target, *args, **kwargs):
    real(self.iloc[:2], target, *args, **kwargs)  # a well-formed but partial table ...
    if hasattr(target, "flush"):
        target.flush()
    marker.write_text("half written")
    time.sleep(300)  # ... and the run is killed while it writes

setattr(pd.DataFrame, method, stalled)
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize(
    ("suffix", "sig", "existing"),
    [
        (".csv", signal.SIGKILL, True),
        (".csv", signal.SIGINT, True),
        (".csv", signal.SIGINT, False),
        (".parquet", signal.SIGKILL, True),
    ],
)
def test_killed_mid_write_leaves_old_file_or_nothing(tmp_path, fasta30, suffix, sig, existing):
    script, marker = tmp_path / "stalled.py", tmp_path / "marker"
    script.write_text(_STALLED_WRITER)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / f"x{suffix}"
    if existing:
        out.write_bytes(b"the previous run's complete output\n")
    method = "to_csv" if suffix == ".csv" else "to_parquet"
    argv = [str(fasta30), "-o", str(out), "--model", MODEL, "--no-progress"]
    proc = subprocess.Popen(
        [sys.executable, str(script), method, str(marker), *argv],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # a guard against a hang, not a timing
        while not marker.exists():
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the writer never started"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    if existing:
        assert out.read_bytes() == b"the previous run's complete output\n"
    else:
        assert not out.exists()
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert err.strip().splitlines()[-1] == "rnafm-embed: interrupted"
        assert _listing(out_dir) == (["x.csv"] if existing else [])  # temp file removed
    else:
        assert proc.returncode == -signal.SIGKILL


def test_refuses_to_overwrite_the_input(tmp_path, capsys, monkeypatch):
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedding started before the output was validated")

    monkeypatch.setattr(RnaFmEmbedder, "transform", no_embedding)
    src = tmp_path / "t.csv"
    content = "id,sequence\na,ACGU\nb,GGCC\n"
    src.write_text(content)
    (tmp_path / "link.csv").symlink_to(src)
    (tmp_path / "hard.csv").hardlink_to(src)
    ids_src = tmp_path / "x.ids.txt"  # a TSV input that is also the .npy output's id file
    ids_src.write_text("id\tsequence\na\tACGU\n")
    for inp, out in [
        (src, src),
        (src, tmp_path / "link.csv"),
        (tmp_path / "link.csv", src),
        (src, tmp_path / "hard.csv"),
        (ids_src, tmp_path / "x.npy"),
    ]:
        msg = _error(capsys, [str(inp), "-o", str(out), "--model", MODEL])
        assert msg.startswith("rnafm-embed: error: refusing to overwrite the input"), msg
        assert str(inp) in msg
    assert src.read_text() == content and ids_src.read_text() == "id\tsequence\na\tACGU\n"
    assert not (tmp_path / "x.npy").exists()


def test_npy_ids_with_line_break_are_rejected(tmp_path, capsys):
    src = tmp_path / "t.csv"
    pd.DataFrame({"id": ["ok", "two\nlines"], "sequence": ["ACGU", "GGCC"]}).to_csv(
        src, index=False
    )
    out = tmp_path / "x.npy"
    msg = _error(capsys, [str(src), "-o", str(out), "--model", MODEL])
    assert "id 'two\\nlines' (record 2)" in msg and "line break" in msg
    assert not out.exists() and not (tmp_path / "x.ids.txt").exists()
    # CSV output quotes such an id and keeps it exactly
    assert main([str(src), "-o", str(tmp_path / "x.csv"), "--model", MODEL]) == 0
    assert pd.read_csv(tmp_path / "x.csv")["id"].tolist() == ["ok", "two\nlines"]


def test_output_is_validated_before_embedding(tmp_path, capsys, fasta30, monkeypatch):
    def no_embedding(*args, **kwargs):
        raise AssertionError("embedding started before the output was validated")

    monkeypatch.setattr(RnaFmEmbedder, "transform", no_embedding)
    folder = tmp_path / "feat.npy"
    folder.mkdir()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    (tmp_path / "y.ids.txt").mkdir()
    cases = {
        str(folder): "is a folder",
        str(tmp_path) + "/": "is a folder",
        str(tmp_path / "new") + "/": "is a folder",
        str(a_file / "x.npy"): "is not a folder",
        str(a_file / "sub" / "x.npy"): "is not a folder",
        str(tmp_path / "y.npy"): "is a folder",
        str(tmp_path / "x.xlsx"): "unknown output type 'x.xlsx'",
    }
    for out, expected in cases.items():
        msg = _error(capsys, [str(fasta30), "-o", out, "--model", MODEL])
        assert expected in msg, (out, msg)


def test_output_folder_is_created(tmp_path, fasta30, trna):
    out = tmp_path / "new" / "deeper" / "x.csv"
    assert main([str(fasta30), "-o", str(out), "--model", MODEL, "--no-progress"]) == 0
    assert_close(_read(out)[1], trna[1])


def test_empty_input_is_an_error(tmp_path, capsys):
    empty_fa = tmp_path / "empty.fa"
    empty_fa.write_text("")
    comments = tmp_path / "comments.fasta"
    comments.write_text("; nothing here\n\n")
    header_only = tmp_path / "h.csv"
    header_only.write_text("id,sequence\n")
    for src in (empty_fa, comments, header_only):
        out = tmp_path / "x.npy"
        msg = _error(capsys, [str(src), "-o", str(out), "--model", MODEL])
        assert msg == f"rnafm-embed: error: no sequences in {src}; nothing to embed"
        assert not out.exists()


def test_uppercase_npy_suffix_is_written_exactly(tmp_path, capsys, fasta30, trna):
    out = tmp_path / "out.NPY"
    assert main([str(fasta30), "-o", str(out), "--model", MODEL, "--no-progress"]) == 0
    assert str(out) in capsys.readouterr().err
    assert _listing(tmp_path) == ["out.NPY", "out.ids.txt", "trna.fa"]
    assert_close(np.load(out), trna[1])
    assert (tmp_path / "out.ids.txt").read_text().split() == list(trna[0].index)


def test_fasta_with_byte_order_mark(tmp_path, fasta30, trna):
    src = tmp_path / "bom.fa"
    src.write_bytes(b"\xef\xbb\xbf" + fasta30.read_bytes())
    out = tmp_path / "x.npy"
    assert main([str(src), "-o", str(out), "--model", MODEL, "--no-progress"]) == 0
    assert_close(np.load(out), trna[1])


# ------------------------------------------------------- messages in the command line's words


def test_errors_use_option_names(tmp_path, capsys):
    src = tmp_path / "long.fa"
    src.write_text(">long/1-1600\n" + "ACGU" * 400 + "\n>short\nACGU\n")
    out = str(tmp_path / "x.npy")
    msg = _error(capsys, [str(src), "-o", out, "--model", MODEL])
    assert "'long/1-1600'" in msg and "(1600 nt)" in msg  # names the record id
    assert "--long-sequences window embeds overlapping windows" in msg
    assert "--truncation-side left keeps the last" in msg
    assert "long_sequences" not in msg and "truncation_side" not in msg
    msg = _error(capsys, [str(src), "-o", out, "--model", MODEL, "--layers", "0", "99"])
    assert "The option --layers must be an int" in msg and "parameter" not in msg
    msg = _error(capsys, [str(src), "-o", out, "--model", MODEL, "--batch-tokens", "0"])
    assert msg.startswith("rnafm-embed: error: The option --batch-tokens must be a positive int")


def test_offline_message_names_the_option(tmp_path, capsys, fasta30, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _error(capsys, [str(fasta30), "-o", str(tmp_path / "x.npy")])
    assert "RnaFmEmbedder(" not in msg and "model=" not in msg


def test_truncation_warning_is_one_cli_line(tmp_path, capsys):
    src = tmp_path / "long.fa"
    src.write_text(">long\n" + "ACGU" * 400 + "\n>short\nACGU\n")
    argv = [str(src), "-o", str(tmp_path / "x.npy"), "--model", MODEL, "--no-progress"]
    assert main([*argv, "--long-sequences", "truncate"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("rnafm-embed: warning: Truncated 1 of 2 sequence(s) longer than 1022")
    assert err[0].endswith("Use --long-sequences window to keep every nucleotide.")
    assert len(err) == 2 and err[1].startswith("rnafm-embed: wrote 2 x 32 features")


@pytest.mark.parametrize("with_cache", [False, True])
def test_interrupt_mentions_the_cache_only_when_given(
    tmp_path, capsys, fasta30, monkeypatch, with_cache
):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RnaFmEmbedder, "transform", interrupted)
    argv = [str(fasta30), "-o", str(tmp_path / "x.npy"), "--model", MODEL]
    if with_cache:
        argv += ["--cache", str(tmp_path / "c")]
    assert main(argv) == 130
    expected = f" (cached batches are kept in {tmp_path / 'c'})" if with_cache else ""
    assert capsys.readouterr().err.strip() == f"rnafm-embed: interrupted{expected}"


@pytest.mark.parametrize(
    ("library", "cli"),
    [
        ("e.g. RnaFmEmbedder(model='/path/to/x.pth'), or", "e.g. --model /path/to/x.pth, or"),
        ("also works as model=. Set", "also works as --model. Set"),
        ("Use long_sequences='window' to keep", "Use --long-sequences window to keep"),
        ("try batch_tokens=512.", "try --batch-tokens 512."),
        ("The 'dtype' parameter of RnaFmEmbedder is", "The option --dtype is"),
        ("set column='<name>' or", "set column='<name>' or"),  # not a command-line option
        ("two\nlines", "two lines"),
    ],
)
def test_library_messages_in_option_words(library, cli):
    assert _cli_common._in_cli_words(library) == cli


def test_symlinked_output_is_written_through(tmp_path, fasta30, trna):
    real = tmp_path / "store" / "real.csv"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "x.csv"
    link.symlink_to(real)
    assert main([str(fasta30), "-o", str(link), "--model", MODEL, "--no-progress"]) == 0
    assert link.is_symlink()  # the user's link is kept, its target gets the features
    assert_close(_read(real)[1], trna[1])


# ------------------------------------------------------------- score and likelihood commands

WT_A = "GGGCUAUAGCUCAGUGGUAGAGCGCUUGCCUUGCAAGCAAGAGGUCGGAGGUUCGAAUCCUCUUAGCCCA"
WT_B = "ACGUAGCUAGGCUAACGAUCGAUCGGAUC"
VARIANTS = pd.DataFrame(
    {
        "name": ["v1", "v2", "v3", "v4", "v5"],
        "wt": [WT_A, WT_A, WT_A, WT_B, WT_B],
        "mutations": ["G1A", "C4G:U5A", "WT", "a1g", "C2U:G3A:U4C"],
    }
)


def _scores(**kwargs):
    s = VARIANTS.set_index("name")
    kwargs.setdefault("mutations", s["mutations"])
    return score_variants(s["wt"], model=MODEL, progress=False, **kwargs)


def _read_table(path):
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype={"id": str})


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_score_writes_one_column_per_method(tmp_path, capsys, suffix):
    src = tmp_path / "variants.csv"
    VARIANTS.to_csv(src, index=False)
    out = tmp_path / f"scores{suffix}"
    argv = ["score", str(src), "-o", str(out), "--model", MODEL, "--no-progress"]
    argv += ["--sequence-column", "wt", "--id-column", "name"]
    assert main([*argv, "--method", "masked-marginal", "wt-marginal"]) == 0
    assert capsys.readouterr().err.startswith("rnafm-embed: wrote 5 variant score(s)")
    got = _read_table(out)
    # the input table, every column in its order, with the scores appended
    assert list(got.columns) == ["name", "wt", "mutations", "score_masked_marginal", "score_wt_marginal"]
    pd.testing.assert_frame_equal(got[list(VARIANTS.columns)], VARIANTS)
    expected = _scores(method=["masked-marginal", "wt-marginal"])
    assert not np.allclose(expected["score_masked_marginal"], expected["score_wt_marginal"])  # told apart
    assert_close(got["score_masked_marginal"], expected["score_masked_marginal"])
    assert_close(got["score_wt_marginal"], expected["score_wt_marginal"])
    assert got.loc[2, "score_masked_marginal"] == 0.0  # the "WT" row


@pytest.mark.numerics
def test_score_mutant_column_without_ids_to_parquet(tmp_path):
    mutants = ["A" + WT_A[1:], "G" + WT_B[1:], WT_A]  # v1 (G1A), v4 (A1G), v3 (WT)
    frame = pd.DataFrame({"sequence": [WT_A, WT_B, WT_A], "mt": mutants})
    src = tmp_path / "pairs.parquet"
    frame.to_parquet(src)
    out = tmp_path / "scores.parquet"
    argv = ["score", str(src), "-o", str(out), "--model", MODEL, "--mutant-column", "mt"]
    assert main([*argv, "--method", "pseudo-likelihood", "masked-marginal", "--no-progress"]) == 0
    got = pd.read_parquet(out)
    assert list(got.columns) == ["sequence", "mt", "score_pseudo_likelihood", "score_masked_marginal"]
    pd.testing.assert_frame_equal(got[["sequence", "mt"]], frame)
    expected = score_variants(
        frame["sequence"],
        mutants=frame["mt"],
        method=["pseudo-likelihood", "masked-marginal"],
        model=MODEL,
        progress=False,
    )
    assert_close(got.iloc[:, 2:].to_numpy(), expected.to_numpy())
    # the same variants written as mutation strings score the same
    by_mutation = _scores(method="masked-marginal")["score_masked_marginal"]
    assert_close(got["score_masked_marginal"], by_mutation[["v1", "v4", "v3"]])


def test_score_bad_mutation_is_one_line_naming_the_id(tmp_path, capsys):
    bad = VARIANTS.assign(mutations=["G1A", "C4G:U5A", "WT", "C1G", "U4C"])  # v4: 1 holds A
    src = tmp_path / "variants.tsv"
    bad.to_csv(src, sep="\t", index=False)
    out = tmp_path / "scores.csv"
    argv = ["score", str(src), "-o", str(out), "--model", MODEL, "--sequence-column", "wt"]
    msg = _error(capsys, [*argv, "--id-column", "name"])
    assert msg.startswith("rnafm-embed: error: Mutation at row 3 (0-based; index 'v4')"), msg
    assert "'C1G'" in msg and "'A'" in msg
    assert not out.exists()


def test_score_refuses_output_equal_to_input(tmp_path, capsys, monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started before the output was validated")

    monkeypatch.setattr(RnaFmVariantScorer, "transform", no_scoring)
    src = tmp_path / "variants.csv"
    VARIANTS.to_csv(src, index=False)
    content = src.read_text()
    (tmp_path / "link.csv").symlink_to(src)
    for out in (src, tmp_path / "link.csv"):
        msg = _error(capsys, ["score", str(src), "-o", str(out), "--model", MODEL])
        assert msg.startswith(f"rnafm-embed: error: refusing to overwrite the input {src}"), msg
    msg = _error(capsys, ["score", str(src), "-o", str(tmp_path / "s.npy"), "--model", MODEL])
    assert msg == "rnafm-embed: error: unknown output type 's.npy': use .csv, .tsv, .parquet"
    msg = _error(capsys, ["score", str(src), "-o", str(tmp_path / "s.csv"), "--model", MODEL])
    assert msg == (
        f"rnafm-embed: error: column 'sequence' not found in {src}; columns: "
        "['name', 'wt', 'mutations'] (choose one with --sequence-column)"
    )
    assert src.read_text() == content


def test_score_usage_errors_exit_2(tmp_path, capsys):
    src = str(tmp_path / "variants.csv")
    for extra, expected in [
        (["--method", "best"], "argument --method: invalid choice: 'best'"),
        (["--mutant-column", "m", "--mutation-column", "x"], "not allowed with argument"),
        (["--long-sequences", "truncate"], "argument --long-sequences: invalid choice"),
    ]:
        argv = ["score", src, "-o", str(tmp_path / "s.csv"), *extra]
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert expected in capsys.readouterr().err


def test_score_library_errors_in_option_words(tmp_path, capsys):
    src = tmp_path / "variants.csv"
    VARIANTS.rename(columns={"name": "id", "wt": "sequence"}).to_csv(src, index=False)
    argv = ["score", str(src), "-o", str(tmp_path / "s.csv"), "--model", MODEL]
    msg = _error(capsys, [*argv, "--method", "wt-marginal", "wt-marginal"])
    assert msg.startswith("rnafm-embed: error: The option --method must be a str among"), msg
    assert "without repeats" in msg and "RnaFmVariantScorer" not in msg
    assert main([*argv, "--no-progress"]) == 0  # 'id' and 'sequence' are found by default
    assert _read_table(tmp_path / "s.csv")["id"].tolist() == VARIANTS["name"].tolist()
    capsys.readouterr()
    fasta = tmp_path / "wt.fa"
    fasta.write_text(f">a\n{WT_B}\n")
    msg = _error(capsys, ["score", str(fasta), "-o", str(tmp_path / "s.csv"), "--model", MODEL])
    assert msg.startswith(f"rnafm-embed: error: {fasta} is FASTA, but scoring needs a table")


def test_score_checkpoint_without_head_is_one_line(tmp_path, capsys):
    import argparse

    import torch

    data = torch.load(TINY_PTH, weights_only=False)
    data["model"] = {k: v for k, v in data["model"].items() if ".lm_head." not in k}
    data["args"] = argparse.Namespace(**vars(data["args"]))
    headless = tmp_path / "headless.pth"
    torch.save(data, headless)
    src = tmp_path / "variants.csv"
    VARIANTS.to_csv(src, index=False)
    argv = ["score", str(src), "-o", str(tmp_path / "s.csv"), "--model", str(headless)]
    msg = _error(capsys, [*argv, "--sequence-column", "wt"])
    assert msg.startswith(f"rnafm-embed: error: The checkpoint {headless} has no masked-LM head")
    assert not (tmp_path / "s.csv").exists()


def test_score_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RnaFmVariantScorer, "transform", interrupted)
    src = tmp_path / "variants.csv"
    VARIANTS.to_csv(src, index=False)
    argv = ["score", str(src), "-o", str(tmp_path / "s.csv"), "--model", MODEL]
    assert main([*argv, "--sequence-column", "wt"]) == 130
    assert capsys.readouterr().err.strip() == "rnafm-embed: interrupted"


@pytest.mark.numerics
def test_likelihood_command(tmp_path, capsys):
    src = tmp_path / "seqs.fa"
    src.write_text(f">a\n{WT_A}\n>b\n{WT_B}\n")
    out = tmp_path / "ll.csv"
    argv = ["likelihood", str(src), "-o", str(out), "--model", MODEL, "--no-progress"]
    assert main([*argv, "--kind", "both"]) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith("rnafm-embed: wrote 2 x 4 features")
    got = pd.read_csv(out)
    assert list(got.columns) == ["id", "pll", "pll_per_nt", "ll_unmasked", "ll_unmasked_per_nt"]
    assert got["id"].tolist() == ["a", "b"]
    expected = RnaFmLikelihood(model=MODEL, kind="both", progress=False).transform([WT_A, WT_B])
    assert_close(got.iloc[:, 1:].to_numpy(), expected)
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--kind", "pll"])
    assert exc.value.code == 2
    assert "argument --kind: invalid choice: 'pll'" in capsys.readouterr().err


# ------------------------------------------------------------------------ issue 23 (B, E.7)


def test_score_output_keeps_every_input_column_in_order(tmp_path, capsys):
    table = VARIANTS.assign(activity=[0.5, 1.25, -3.0, 7.0, 2.0], note=["x", "", "y", "z", "w"])
    table = table[["activity", "wt", "note", "mutations", "name"]]
    src = tmp_path / "dms.parquet"
    table.to_parquet(src, index=False)
    out = tmp_path / "scores.parquet"
    argv = ["score", str(src), "-o", str(out), "--model", MODEL, "--no-progress", "--sequence-column", "wt"]
    assert main(argv) == 0
    got = pd.read_parquet(out)
    assert list(got.columns) == [*table.columns, "score_masked_marginal"]
    pd.testing.assert_frame_equal(got[list(table.columns)], table)  # values and dtypes kept
    expected = _scores(method="masked-marginal")["score_masked_marginal"].to_numpy()
    np.testing.assert_allclose(got["score_masked_marginal"], expected, rtol=1e-5, atol=1e-6)


def test_score_refuses_repeated_column_names(tmp_path, capsys, monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr(RnaFmVariantScorer, "transform", no_scoring)
    src = tmp_path / "two.csv"
    src.write_text(f"sequence,mutations,sequence\n{WT_A},G1A,{WT_B}\n")
    out = tmp_path / "s.csv"
    msg = _error(capsys, ["score", str(src), "-o", str(out), "--model", MODEL])
    assert msg == (
        f"rnafm-embed: error: {src} has more than one column named 'sequence'; column names must "
        "be unique (which one would be read is ambiguous): rename the duplicates"
    )
    assert not out.exists()
    # the same for the sequence table of embedding and likelihood
    msg = _error(capsys, ["likelihood", str(src), "-o", str(out), "--model", MODEL])
    assert msg.startswith(f"rnafm-embed: error: {src} has more than one column named 'sequence'")


def test_score_refuses_an_input_column_named_like_a_score(tmp_path, capsys, monkeypatch):
    def no_scoring(*args, **kwargs):
        raise AssertionError("scoring started")

    monkeypatch.setattr(RnaFmVariantScorer, "transform", no_scoring)
    src = tmp_path / "again.csv"
    VARIANTS.assign(score_wt_marginal=1.0).to_csv(src, index=False)
    out = tmp_path / "s.csv"
    argv = ["score", str(src), "-o", str(out), "--model", MODEL, "--sequence-column", "wt"]
    msg = _error(capsys, [*argv, "--method", "masked-marginal", "wt-marginal"])
    assert msg == (
        f"rnafm-embed: error: {src} already has the column(s) ['score_wt_marginal'] that the "
        "scores are written to; rename or drop them (e.g. the output of an earlier run)"
    )
    # a mutation column that has the name of nothing we write is kept as it is
    src2 = tmp_path / "renamed.csv"
    VARIANTS.rename(columns={"mutations": "id"}).to_csv(src2, index=False)
    monkeypatch.undo()
    argv2 = ["score", str(src2), "-o", str(out), "--model", MODEL, "--sequence-column", "wt"]
    assert main([*argv2, "--mutation-column", "id", "--id-column", "name", "--no-progress"]) == 0
    assert _read_table(out)["id"].tolist() == VARIANTS["mutations"].tolist()


_IMPORTS = """
import sys
from rnafm_sklearn._cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "pandas", "numpy", "sklearn") if m in sys.modules)
print("HEAVY", heavy, "CODE", code)
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["score", "--help"],
        ["likelihood", "--help"],
        ["score", "in.csv"],  # usage error: no -o
        ["--pooling", "median", "in.fa", "-o", "x.npy"],  # usage error: bad choice
        ["missing.fa", "-o", "x.npy"],  # file checks come first
        ["likelihood", "missing.fa", "-o", "x.csv"],
        ["score", "missing.csv", "-o", "x.txt"],
    ],
)
def test_help_and_usage_errors_do_not_import_torch(tmp_path, argv):
    run = subprocess.run(
        [sys.executable, "-c", _IMPORTS, *argv], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert "HEAVY [] CODE" in run.stdout, (run.stdout, run.stderr)
    assert "Traceback" not in run.stderr


def test_likelihood_help_offers_the_cheap_kind():
    help_text = _cli._likelihood_parser().format_help()
    assert "--kind unmasked" in help_text and "one pass per nucleotide" in help_text


def test_likelihood_says_its_cost_up_front(tmp_path, capsys):
    src = tmp_path / "seqs.fa"
    src.write_text(f">a\n{WT_A}\n>b\n{WT_B}\n")
    out = tmp_path / "ll.csv"
    argv = ["likelihood", str(src), "-o", str(out), "--model", MODEL, "--no-progress"]
    assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    n = len(WT_A) + len(WT_B)
    assert err[0] == (
        f"rnafm-embed: the pseudo-log-likelihood masks each nt in turn: about {n} forward passes "
        "for 2 sequence(s) (rnafm-embed likelihood --kind unmasked: 2 passes, one per sequence)"
    )
    assert main([*argv, "--kind", "unmasked"]) == 0
    assert "forward passes" not in capsys.readouterr().err


_INTERRUPT_AT_IMPORT = """
import sys

class Interrupt:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt  # Ctrl-C while the program is still starting

sys.meta_path.insert(0, Interrupt())
from rnafm_sklearn._cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_interrupt_while_starting_is_one_line(tmp_path):
    src = tmp_path / "seqs.fa"
    src.write_text(f">a\n{WT_A}\n")
    run = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_AT_IMPORT, str(src), "-o", str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 130, run.stderr
    assert run.stderr.strip() == "rnafm-embed: interrupted"
