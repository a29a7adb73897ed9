"""FASTA reading and the all-or-nothing file writer used by the command line."""

import gzip
import os

import pytest

from rnafm_sklearn import read_fasta
from rnafm_sklearn._io import write_atomically

RECORDS = ">a desc\nACGU\nAC\n>b\nGG\n"


@pytest.mark.parametrize("name", ["bom.fa", "bom.fa.gz", "BOM.FA.GZ"])
def test_read_fasta_with_byte_order_mark(tmp_path, name):
    data = b"\xef\xbb\xbf" + RECORDS.encode()
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.lower().endswith(".gz") else data)
    s = read_fasta(path)
    assert s.to_dict() == {"a": "ACGUAC", "b": "GG"}


def test_read_fasta_empty_file_gives_no_records(tmp_path):
    path = tmp_path / "empty.fa"
    path.write_text("")
    assert len(read_fasta(path)) == 0


def _writer(data):
    return lambda fh: fh.write(data)


def _fails(fh):
    fh.write(b"partial")
    raise OSError("No space left on device")


def test_write_atomically_writes_exact_paths(tmp_path):
    a, b = tmp_path / "sub" / "x.NPY", tmp_path / "sub" / "x.ids.txt"
    write_atomically({a: _writer(b"A"), b: _writer(b"B")})
    assert a.read_bytes() == b"A" and b.read_bytes() == b"B"
    assert sorted(os.listdir(tmp_path / "sub")) == ["x.NPY", "x.ids.txt"]
    umask = os.umask(0)
    os.umask(umask)
    assert a.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


@pytest.mark.parametrize("existing", [True, False])
def test_write_atomically_second_write_fails(tmp_path, existing):
    a, b = tmp_path / "x.npy", tmp_path / "x.ids.txt"
    if existing:
        a.write_bytes(b"old A")
        b.write_bytes(b"old B")
    with pytest.raises(OSError, match="No space left"):
        write_atomically({a: _writer(b"new A"), b: _fails})
    if existing:
        assert a.read_bytes() == b"old A" and b.read_bytes() == b"old B"
        assert sorted(os.listdir(tmp_path)) == ["x.ids.txt", "x.npy"]
    else:
        assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("existing", [True, False])
def test_write_atomically_rolls_back_when_a_rename_fails(tmp_path, monkeypatch, existing):
    a, b = tmp_path / "x.npy", tmp_path / "x.ids.txt"
    if existing:
        a.write_bytes(b"old A")
        b.write_bytes(b"old B")
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if os.fspath(dst) == os.fspath(b):
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        write_atomically({a: _writer(b"new A"), b: _writer(b"new B")})
    assert os.fspath(a) in map(os.fspath, calls)  # a was already in place, then undone
    if existing:
        assert a.read_bytes() == b"old A" and b.read_bytes() == b"old B"
        assert sorted(os.listdir(tmp_path)) == ["x.ids.txt", "x.npy"]
    else:
        assert os.listdir(tmp_path) == []


def test_write_atomically_interrupted(tmp_path):
    a = tmp_path / "x.csv"
    a.write_bytes(b"old")

    def interrupted(fh):
        fh.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically({a: interrupted})
    assert a.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.csv"]


@pytest.mark.parametrize("name", ["labels.fa", "labels.fa.gz"])
def test_read_fasta_descriptions(tmp_path, name):
    text = ">RF00001_x 5S_rRNA  family 1 \nACGU\nGG\n>bare\nUUU\n>tab\tsplit\tlabel\nC\n"
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    frame = read_fasta(path, descriptions=True)
    assert list(frame.columns) == ["sequence", "description"] and frame.index.name == "id"
    assert frame.index.tolist() == ["RF00001_x", "bare", "tab"]
    assert frame["sequence"].tolist() == ["ACGUGG", "UUU", "C"]
    assert frame["description"].tolist() == ["5S_rRNA  family 1", "", "split\tlabel"]
    # the default is unchanged: the Series of sequences
    series = read_fasta(path)
    assert series.name == "sequence" and series.tolist() == frame["sequence"].tolist()
    empty = tmp_path / "empty.fa"
    empty.write_text("")
    assert read_fasta(empty, descriptions=True).shape == (0, 2)
    with pytest.raises(TypeError, match="read_fasta: descriptions must be True or False; got str"):
        read_fasta(path, descriptions="yes")
