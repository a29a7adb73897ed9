"""Secondary-structure files: dot-bracket FASTA, CT and BPSEQ, read into and written from a
DataFrame (``id``, ``sequence``, ``structure`` as dot-bracket). No torch here.

The pair conversions and the F1 metric live in ``_pairs`` and are re-exported from here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from ._io import write_atomically
from ._pairs import base_pair_f1, check_pairs, dot_bracket_to_pairs, pairs_to_dot_bracket

__all__ = [
    "base_pair_f1",
    "dot_bracket_to_pairs",
    "pairs_to_dot_bracket",
    "read_structures",
    "write_structures",
]

FORMATS = ("dot-bracket", "ct", "bpseq")
SUFFIXES = {".ct": "ct", ".bpseq": "bpseq", ".fa": "dot-bracket", ".fasta": "dot-bracket",
            ".db": "dot-bracket", ".dbn": "dot-bracket"}  # fmt: skip
_SAFE_NAME = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_.+\-]{0,199}")
_INT = re.compile(r"[+-]?\d{1,18}")
Record = tuple[str, str, np.ndarray, str]  # id, sequence, pairs, where (for messages)


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}.")
        return fmt
    try:
        return SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use one of "
            f"{sorted(SUFFIXES)} or pass format= (one of {FORMATS})."
        ) from None


def _pair_table(partner: list[int], lines: list[int], where: str) -> np.ndarray:
    """1-based partner column (0 = unpaired) -> pairs; every partner must point back."""
    n = len(partner)
    for i, p in enumerate(partner, start=1):
        if p == 0:
            continue
        if p == i:
            raise ValueError(f"{where}, line {lines[i - 1]}: base {i} is paired with itself.")
        if not 1 <= p <= n:
            raise ValueError(
                f"{where}, line {lines[i - 1]}: partner {p} of base {i} is outside 1..{n}."
            )
        if partner[p - 1] != i:
            raise ValueError(
                f"{where}, line {lines[i - 1]}: base {i} pairs with {p}, but base {p} pairs "
                f"with {partner[p - 1] or 'nothing'} (line {lines[p - 1]}); a base can be in "
                "only one pair."
            )
    pairs = [(i - 1, p - 1) for i, p in enumerate(partner, start=1) if p > i]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _ints(fields: list[str], where: str, lineno: int, what: str) -> list[int]:
    bad = [f for f in fields if not _INT.fullmatch(f)]
    if bad:
        raise ValueError(f"{where}, line {lineno}: {what} must be integers, got {bad[0]!r}.")
    return [int(f) for f in fields]


def _looks_like_row(line: str) -> bool:
    parts = line.split()
    return len(parts) == 6 and all(_INT.fullmatch(f) for f in parts[:1] + parts[2:])


def _read_ct(text: str, path: Path) -> list[Record]:
    lines = [(k, line.strip()) for k, line in enumerate(text.splitlines(), start=1)]
    data = [(k, line) for k, line in lines if line and not line.startswith("#")]
    records: list[tuple[str, str, np.ndarray, int]] = []
    pos = 0
    while pos < len(data):
        lineno, header = data[pos]
        where = f"{path}, record {len(records) + 1}"
        fields = header.split(maxsplit=1)
        if len(records) and _looks_like_row(header):
            raise ValueError(
                f"{where}, line {lineno}: a base row where a header 'N title' was expected; "
                f"the previous record has more rows than its header says."
            )
        (n,) = _ints(fields[:1], where, lineno, "the header's base count")
        if n < 1:
            raise ValueError(f"{where}, line {lineno}: the header gives {n} bases; need >= 1.")
        title = fields[1].strip() if len(fields) > 1 else ""
        rows = data[pos + 1 : pos + 1 + n]
        if len(rows) < n:
            raise ValueError(
                f"{where}, line {lineno}: the header says {n} bases but the file ends after "
                f"{len(rows)} rows."
            )
        bases, partner, linenos = [], [], []
        for r, (k, row) in enumerate(rows, start=1):
            parts = row.split()
            if len(parts) != 6:
                raise ValueError(
                    f"{where}, line {k}: a CT row has 6 columns (index base prev next "
                    f"partner index), got {len(parts)}."
                )
            idx, _, _, pair, _ = _ints([parts[0], *parts[2:]], where, k, "CT row indices")
            if idx != r:
                raise ValueError(f"{where}, line {k}: base index {idx}, expected {r}.")
            if len(parts[1]) != 1:
                raise ValueError(
                    f"{where}, line {k}: the base must be one letter, got {parts[1]!r}."
                )
            bases.append(parts[1])
            partner.append(pair)
            linenos.append(k)
        records.append((title, "".join(bases), _pair_table(partner, linenos, where), lineno))
        pos += 1 + n
    single = len(records) == 1
    return [
        (t or (path.stem if single else f"{path.stem}_{r}"), s, p, f"{path}, record {r}")
        for r, (t, s, p, _) in enumerate(records, start=1)
    ]


def _read_bpseq(text: str, path: Path) -> list[Record]:
    where = f"{path}, record 1"
    bases, partner, linenos = [], [], []
    for k, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        parts = line.split()
        if not line or line.startswith("#") or (not bases and not _INT.fullmatch(parts[0])):
            continue  # comments anywhere; free-text header lines before the first base
        if len(parts) != 3:
            raise ValueError(
                f"{where}, line {k}: a BPSEQ row has 3 columns (index base partner), "
                f"got {len(parts)}."
            )
        idx, pair = _ints([parts[0], parts[2]], where, k, "the index and partner")
        if idx != len(bases) + 1:
            raise ValueError(f"{where}, line {k}: base index {idx}, expected {len(bases) + 1}.")
        if len(parts[1]) != 1:
            raise ValueError(f"{where}, line {k}: the base must be one letter, got {parts[1]!r}.")
        bases.append(parts[1])
        partner.append(pair)
        linenos.append(k)
    if not bases:
        raise ValueError(f"{where}: no base rows ('index base partner') found.")
    return [(path.stem, "".join(bases), _pair_table(partner, linenos, where), where)]


def _read_dot_bracket(text: str, path: Path) -> list[Record]:
    """``>id`` then one sequence line and one structure line per record.

    A trailing field on the structure line (ViennaRNA's energy) is ignored. A file without any
    ``>`` header (bpRNA's ``.dbn``) holds one record named by its ``#Name:`` line or the file
    name.
    """
    groups: list[tuple[str, int, list[tuple[int, str]]]] = []
    preamble: list[tuple[int, str]] = []
    name = path.stem
    for k, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line.startswith("#Name:") and line[6:].strip():
            name = line[6:].split()[0]
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith(">"):
            rid = line[1:].split(maxsplit=1)[0] if line[1:].strip() else ""
            if not rid:
                raise ValueError(f"{path}, record {len(groups) + 1}, line {k}: empty header.")
            groups.append((rid, k, []))
        else:
            (groups[-1][2] if groups else preamble).append((k, line))
    if preamble:
        if groups:
            raise ValueError(f"{path}, line {preamble[0][0]}: data before the first '>' header.")
        groups = [(name, preamble[0][0], preamble)]
    records = []
    for r, (rid, k, body) in enumerate(groups, start=1):
        where = f"{path}, record {r} ({rid!r})"
        if len(body) != 2:
            raise ValueError(
                f"{where}, line {k}: expected one sequence line and one structure line, got "
                f"{len(body)} lines."
            )
        (k1, seq), (k2, struct) = body
        if not (seq.isascii() and seq.isalpha()):
            raise ValueError(f"{where}, line {k1}: the sequence line must hold letters only.")
        struct = struct.split()[0]
        if len(struct) != len(seq):
            raise ValueError(
                f"{where}, line {k2}: the structure has {len(struct)} characters but the "
                f"sequence {len(seq)}."
            )
        try:
            pairs = dot_bracket_to_pairs(struct)
        except ValueError as exc:
            raise ValueError(f"{where}, line {k2}: {exc}") from None
        records.append((rid, seq, pairs, where))
    return records


_READERS: dict[str, Callable[[str, Path], list[Record]]] = {
    "ct": _read_ct, "bpseq": _read_bpseq, "dot-bracket": _read_dot_bracket,
}  # fmt: skip


def _read_file(path: Path, fmt: str) -> list[Record]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a UTF-8 text file: {exc}") from None
    return _READERS[fmt](text, path)


def read_structures(path: str | os.PathLike, format: str | None = None) -> pd.DataFrame:
    """Read secondary structures from a dot-bracket FASTA, CT or BPSEQ file, or a folder.

    Formats (from the suffix unless ``format`` is given):

    - ``dot-bracket`` (``.fa``, ``.fasta``, ``.db``, ``.dbn``): per record a ``>id`` line (the
      id is the first word), then exactly one sequence line and one structure line; a
      trailing field on the structure line (e.g. ViennaRNA's energy) is ignored. Lines
      starting with ``#`` or ``;`` are comments. A file without ``>`` holds one record named
      by its ``#Name:`` line (bpRNA) or the file name stem.
    - ``ct``: one or several records, each a header ``N title`` and ``N`` rows ``index base
      prev next partner index`` (partner 0 = unpaired). The id is the title (the whole rest
      of the header line), or the file name stem when the title is empty. The ``prev`` and
      ``next`` columns must be integers but are not otherwise checked.
    - ``bpseq``: rows ``index base partner``; lines starting with ``#`` and free-text lines
      before the first row are ignored; one record, named by the file name stem.

    A folder is read file by file (sorted by name; hidden files and, without ``format``, files
    with other suffixes are skipped).

    Parameters
    ----------
    path : path
        A file or a folder of files.
    format : {"dot-bracket", "ct", "bpseq"}, optional
        Overrides the suffix.

    Returns
    -------
    pandas.DataFrame
        Columns ``id``, ``sequence`` (as written) and ``structure`` (dot-bracket; pseudoknots
        in ``[]``, ``{}``, ... tiers, see ``pairs_to_dot_bracket``), in file order.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        A damaged file (naming the file, record and line) or duplicate ids.

    Examples
    --------
    >>> from rnafm_sklearn import read_structures
    >>> df = read_structures("tests/fixtures/structures/bprna_ts0_sample.dbn")
    >>> df.shape, list(df.columns)
    ((20, 3), ['id', 'sequence', 'structure'])
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"structure file or folder not found: {path}")
    if path.is_dir():
        files = sorted(
            f for f in path.iterdir()
            if f.is_file() and not f.name.startswith(".")
            and (format is not None or f.suffix.lower() in SUFFIXES)
        )  # fmt: skip
        if not files:
            raise ValueError(f"{path}: no structure files ({', '.join(sorted(SUFFIXES))}).")
        records = [rec for f in files for rec in _read_file(f, _format_of(f, format))]
    else:
        records = _read_file(path, _format_of(path, format))
    seen: dict[str, str] = {}
    rows = []
    for rid, seq, pairs, where in records:
        if rid in seen:
            raise ValueError(
                f"{where}: duplicate id {rid!r} (first in {seen[rid]}); rename one so that no "
                "record is lost."
            )
        seen[rid] = where
        try:
            rows.append((rid, seq, pairs_to_dot_bracket(pairs, len(seq))))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return pd.DataFrame(rows, columns=["id", "sequence", "structure"])


def _rows(df: pd.DataFrame, fmt: str, per_file: bool) -> list[tuple[str, str, np.ndarray]]:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    ids = df["id"] if "id" in df.columns else (df.index if df.index.name == "id" else None)
    missing = [c for c in ("sequence", "structure") if c not in df.columns]
    if ids is None or missing:
        raise ValueError(
            "df needs the columns 'id', 'sequence' and 'structure' (as read_structures returns)"
            f"; missing: {missing if ids is not None else ['id', *missing]}."
        )
    out, seen = [], {}
    for k, (rid, seq, structure) in enumerate(
        zip(list(ids), df["sequence"].tolist(), df["structure"].tolist(), strict=True)
    ):
        if not isinstance(rid, str) or not rid or rid != rid.strip() or "\n" in rid or "\r" in rid:
            raise ValueError(f"row {k}: id {rid!r} must be a non-empty single-line string "
                             "without leading or trailing spaces.")  # fmt: skip
        if fmt == "dot-bracket" and len(rid.split()) != 1:
            raise ValueError(f"row {k}: id {rid!r} holds whitespace; a FASTA id cannot.")
        if per_file and not _SAFE_NAME.fullmatch(rid):
            raise ValueError(
                f"row {k}: id {rid!r} is not safe as a file name; use letters, digits and "
                "'_.+-' only (not starting with '.'), at most 200 characters."
            )
        key = rid.lower() if per_file else rid  # file names clash case-insensitively on macOS
        if key in seen:
            raise ValueError(f"row {k}: duplicate id {rid!r} (first on row {seen[key]}).")
        seen[key] = k
        if not isinstance(seq, str) or not seq or not (seq.isascii() and seq.isalpha()):
            raise ValueError(f"row {k} ({rid!r}): the sequence must be a non-empty str of letters.")
        try:
            if isinstance(structure, str):
                if len(structure) != len(seq):
                    raise ValueError(
                        f"the structure has {len(structure)} characters but the sequence "
                        f"{len(seq)}."
                    )
                pairs = dot_bracket_to_pairs(structure)
            else:
                pairs = check_pairs(structure, len(seq))
        except ValueError as exc:
            raise ValueError(f"row {k} ({rid!r}): {exc}") from None
        out.append((rid, seq, pairs))
    return out


def _partner(pairs: np.ndarray, n: int) -> np.ndarray:
    partner = np.zeros(n, dtype=np.int64)
    partner[pairs[:, 0]], partner[pairs[:, 1]] = pairs[:, 1] + 1, pairs[:, 0] + 1
    return partner


def _ct_text(rid: str, seq: str, pairs: np.ndarray) -> str:
    n, partner = len(seq), _partner(pairs, len(seq))
    rows = [f"{i}\t{seq[i - 1]}\t{i - 1}\t{i + 1 if i < n else 0}\t{partner[i - 1]}\t{i}"
            for i in range(1, n + 1)]  # fmt: skip
    return f"{n}\t{rid}\n" + "\n".join(rows) + "\n"


def _bpseq_text(seq: str, pairs: np.ndarray) -> str:
    partner = _partner(pairs, len(seq))
    return "".join(f"{i}\t{seq[i - 1]}\t{partner[i - 1]}\n" for i in range(1, len(seq) + 1))


def _text_writer(text: str) -> Callable[[BinaryIO], object]:
    return lambda fh: fh.write(text.encode("utf-8"))


def write_structures(
    df: pd.DataFrame,
    path: str | os.PathLike,
    format: str = "dot-bracket",
    *,
    one_file_per_record: bool | None = None,
) -> None:
    """Write secondary structures as dot-bracket FASTA, CT or BPSEQ, all files or none.

    ``dot-bracket`` writes ``>id``, the sequence and the structure, one line each. ``ct``
    writes the standard layout: header ``N<TAB>id``, rows ``index base prev next partner
    index`` with ``next`` = 0 on the last row (the official RNA-FM writer puts ``N + 1``
    there). ``bpseq`` writes rows ``index base partner``, one file per record. Pseudoknots are
    kept in every format, and :func:`read_structures` gives the same ids and pairs back.

    Parameters
    ----------
    df : pandas.DataFrame
        Columns ``id`` (or an index named ``id``), ``sequence`` and ``structure``
        (dot-bracket strings or ``(n, 2)`` arrays of 0-based pairs).
    path : path
        The file, or with one file per record the folder (created if missing); files with
        the same names are replaced, other files in the folder are left alone.
    format : {"dot-bracket", "ct", "bpseq"}, default="dot-bracket"
    one_file_per_record : bool, optional
        Write ``<path>/<id>.ct`` (or ``.bpseq``, ``.db``) files. Default: True for ``bpseq``
        (which holds one record per file), False otherwise. Ids must then be safe file names.

    Returns
    -------
    None
        Nothing: the files are in place (all of them, or none after an error).

    Raises
    ------
    ValueError
        A bad row (named, 0-based): invalid id, duplicate id, structure that does not match
        its sequence.

    Examples
    --------
    >>> import pandas as pd, tempfile, pathlib
    >>> from rnafm_sklearn import read_structures, write_structures
    >>> df = pd.DataFrame({"id": ["hp"], "sequence": ["GGGAAACCC"], "structure": ["(((...)))"]})
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> write_structures(df, folder / "hp.ct", format="ct")
    >>> print((folder / "hp.ct").read_text().splitlines()[-1])
    9	C	8	0	1	9
    >>> read_structures(folder / "hp.ct").values.tolist()
    [['hp', 'GGGAAACCC', '(((...)))']]
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    per_file = format == "bpseq" if one_file_per_record is None else bool(one_file_per_record)
    if format == "bpseq" and not per_file:
        raise ValueError("BPSEQ holds one record per file: leave one_file_per_record as None.")
    rows = _rows(df, format, per_file)
    path = Path(path)

    def text(rid: str, seq: str, pairs: np.ndarray) -> str:
        if format == "ct":
            return _ct_text(rid, seq, pairs)
        if format == "bpseq":
            return _bpseq_text(seq, pairs)
        return f">{rid}\n{seq}\n{pairs_to_dot_bracket(pairs, len(seq))}\n"

    if per_file:
        suffix = {"ct": ".ct", "bpseq": ".bpseq", "dot-bracket": ".db"}[format]
        writers = {path / f"{r[0]}{suffix}": _text_writer(text(*r)) for r in rows}
    else:
        writers = {path: _text_writer("".join(text(*r) for r in rows))}
    write_atomically(writers)
