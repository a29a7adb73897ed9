"""Reading sequence files (FASTA, plain or gzip)."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pandas as pd

__all__ = ["read_fasta"]


def read_fasta(path: str | os.PathLike) -> pd.Series:
    """Read a FASTA file (plain or gzip, multi-line records) into a Series indexed by id.

    The id is the header up to the first whitespace. Sequences are returned as written (no
    normalisation; the embedder normalises and validates). Duplicate ids raise an error rather
    than silently keeping one record.

    Parameters
    ----------
    path : path
        The FASTA file; ``.gz`` files are decompressed.

    Returns
    -------
    pandas.Series of str
        Named ``"sequence"``, indexed by record id, in file order.

    Examples
    --------
    >>> from rnafm_sklearn import read_fasta
    >>> s = read_fasta("data/rnafm-rfam3/RF00005.fasta")
    >>> len(s), s.index[0]
    (954, 'AB003409.1/96-167')
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    ids: list[str] = []
    seqs: list[str] = []
    chunks: list[str] = []
    first_line: dict[str, int] = {}
    try:
        with opener(path, "rt") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith(">"):
                    if ids:
                        seqs.append("".join(chunks))
                    chunks = []
                    rid = line[1:].split(maxsplit=1)[0] if line[1:].strip() else ""
                    if not rid:
                        raise ValueError(f"{path}, line {lineno}: empty FASTA header.")
                    if rid in first_line:
                        raise ValueError(
                            f"{path}, line {lineno}: duplicate id {rid!r} (first seen on line "
                            f"{first_line[rid]}). Ids must be unique so that no record is lost; "
                            "rename the duplicates."
                        )
                    first_line[rid] = lineno
                    ids.append(rid)
                elif not ids:
                    raise ValueError(
                        f"{path}, line {lineno}: sequence data before the first '>' header; "
                        "is this a FASTA file?"
                    )
                else:
                    chunks.append(line)
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise ValueError(f"{path} is not a readable FASTA file: {exc}") from exc
    if ids:
        seqs.append("".join(chunks))
    return pd.Series(seqs, index=pd.Index(ids, name="id"), name="sequence", dtype=object)
