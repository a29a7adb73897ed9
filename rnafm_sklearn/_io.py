"""Reading sequence files (FASTA, plain or gzip); writing output files all-or-nothing."""

from __future__ import annotations

import contextlib
import gzip
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

import pandas as pd

__all__ = ["read_fasta", "write_atomically"]


def read_fasta(path: str | os.PathLike, descriptions: bool = False) -> pd.Series | pd.DataFrame:
    """Read a FASTA file (plain or gzip, multi-line records) into a Series indexed by id.

    The id is the header up to the first whitespace; the rest of the header, where labels
    usually live (``>RF00001_x 5S_rRNA``), is the description. The file is read as UTF-8; a leading
    byte-order mark is ignored. Sequences are returned as written (no
    normalisation; the embedder normalises and validates). Duplicate ids raise an error rather
    than silently keeping one record.

    Parameters
    ----------
    path : path
        The FASTA file; ``.gz`` files (any case) are decompressed.
    descriptions : bool, default=False
        Also return each header's description (the text after the id, surrounding whitespace
        removed; ``""`` when the header is the id alone).

    Returns
    -------
    pandas.Series of str, or pandas.DataFrame
        By default a Series named ``"sequence"``, indexed by record id, in file order; empty
        when the file holds no record. With ``descriptions=True``, a DataFrame indexed the
        same way with the columns ``sequence`` and ``description``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        An empty header, a duplicate id, sequence lines before the first header, or a file
        that is not readable text (e.g. binary or not UTF-8); the message names the file and
        line.

    Examples
    --------
    >>> from rnafm_sklearn import read_fasta
    >>> s = read_fasta("data/rnafm-rfam3/RF00005.fasta")
    >>> len(s), s.index[0]
    (954, 'AB003409.1/96-167')
    >>> read_fasta("data/rnafm-rfam3/RF00005.fasta", descriptions=True).columns.tolist()
    ['sequence', 'description']
    """
    if not isinstance(descriptions, bool):
        raise TypeError(
            f"read_fasta: descriptions must be True or False; got {type(descriptions).__name__}."
        )
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"FASTA file not found: {path}")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    ids: list[str] = []
    notes: list[str] = []
    seqs: list[str] = []
    chunks: list[str] = []
    first_line: dict[str, int] = {}
    try:
        with opener(path, "rt", encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, start=1):
                line = line.strip()
                if not line or line.startswith(";"):
                    continue
                if line.startswith(">"):
                    if ids:
                        seqs.append("".join(chunks))
                    chunks = []
                    header = line[1:].split(maxsplit=1)
                    rid = header[0] if header else ""
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
                    notes.append(header[1].strip() if len(header) > 1 else "")
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
    index = pd.Index(ids, name="id")
    if descriptions:
        return pd.DataFrame({"sequence": seqs, "description": notes}, index=index, dtype=object)
    return pd.Series(seqs, index=index, name="sequence", dtype=object)


def write_atomically(writers: Mapping[Path, Callable[[BinaryIO], object]]) -> None:
    """Write several files so that either all of them are replaced or none is.

    Each file is written by its callable into a hidden temporary file in the target's own
    folder (created if missing), flushed and synced; only when every write succeeded are the
    temporary files renamed onto their targets with :func:`os.replace` (atomic per file). If a
    rename fails, the targets already renamed get their previous content back (kept as a hard
    link, or a copy where hard links are not supported) or are removed if they did not exist.
    On any error, ``KeyboardInterrupt`` included, the temporary files are removed. A hard kill
    (SIGKILL, power loss) can leave one behind (``.NAME.<random>.tmp``), but never a partial
    target. New files get the usual permissions (0o666 less the umask).

    Parameters
    ----------
    writers : mapping of path to callable
        Target path -> function that writes the whole content into the binary file it gets.

    Raises
    ------
    OSError
        A write or rename failed; no target was changed.
    """
    temps: dict[Path, Path] = {}
    backups: dict[Path, Path | None] = {}
    replaced: list[Path] = []
    try:
        for target, write in writers.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name[:120]}.{secrets.token_hex(4)}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            temps[target] = tmp
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        for target in temps:
            backups[target] = _keep_old(target)
        for target, tmp in temps.items():
            os.replace(tmp, target)
            replaced.append(target)
        for folder in {t.parent for t in temps}:
            _fsync_folder(folder)
    except BaseException:
        for target in reversed(replaced):
            with contextlib.suppress(OSError):
                old = backups[target]
                if old is None:
                    os.unlink(target)
                else:
                    os.replace(old, target)
        raise
    finally:
        for leftover in [*temps.values(), *backups.values()]:
            if leftover is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)


def _keep_old(target: Path) -> Path | None:
    """A second name for the current content of ``target`` (None if it does not exist)."""
    if not target.exists():
        return None
    old = target.with_name(f".{target.name[:120]}.{secrets.token_hex(4)}.old")
    try:
        os.link(target, old)
    except OSError:  # no hard links on this file system: keep a copy instead
        shutil.copy2(target, old)
    return old


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (best effort: not every platform can open a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
