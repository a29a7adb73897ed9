"""Files of the command line: reading sequence tables and FASTA, checking and writing outputs.

Every failure is a :class:`_Error` with a one-line message that ``_cli.main`` prints; outputs
are checked before any computing and written all-or-nothing (``_io.write_atomically``).
NumPy and pandas are imported by the functions that read or write tables, so that the checks
of the file names run before any heavy import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

FASTA = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".frn")
TABLES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
OUTPUTS = (".npy", ".csv", ".parquet")
SCORE_OUTPUTS = (".csv", ".tsv", ".parquet")


class _Error(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# ------------------------------------------------------------------------------- input


def _input_kind(path: Path) -> str:
    if not path.exists():
        raise _Error(f"input file not found: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    return (
        suffixes[-2]
        if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1
        else (suffixes[-1] if suffixes else "")
    )


def _read_input(path: Path, column: str, id_column: str | None) -> pd.Series:
    import pandas as pd

    from ._io import read_fasta

    kind = _input_kind(path)
    if kind in FASTA:
        return _nonempty(read_fasta(path), path)
    table = _read_table(
        path, kind, f"FASTA ({', '.join(FASTA)}, optionally .gz), .csv, .tsv or .parquet"
    )
    _require_column(table, column, "--column", path)
    ids = _ids(table, id_column, path)
    index = ids if ids is not None else pd.Index(pd.RangeIndex(len(table)).astype(str), name="id")
    seqs = pd.Series(table[column].to_numpy(), index=index, name="sequence")
    return _nonempty(seqs, path)


def _read_table(path: Path, kind: str, expected: str) -> pd.DataFrame:
    import pandas as pd

    if kind in TABLES:
        try:
            table = pd.read_csv(path, sep=TABLES[kind], dtype=str, keep_default_na=False)
            # pandas renames a repeated header ('x', 'x.1'): read the names as written
            header = pd.read_csv(
                path, sep=TABLES[kind], dtype=str, keep_default_na=False, header=None, nrows=1
            )
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
            raise _Error(f"cannot read {path} as {kind[1:].upper()}: {exc}") from exc
        names = header.iloc[0].tolist() if len(header) else list(table.columns)
    elif kind == ".parquet":
        _require_pyarrow("read Parquet")
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own error types
            raise _Error(f"cannot read {path} as Parquet: {exc}") from exc
        names = list(table.columns)
    else:
        raise _Error(f"unknown input type {path.name!r}: expected {expected}")
    repeated = sorted({str(n) for n in names if names.count(n) > 1})
    if repeated:
        raise _Error(
            f"{path} has more than one column named {', '.join(map(repr, repeated))}; column "
            "names must be unique (which one would be read is ambiguous): rename the duplicates"
        )
    return table


def _require_column(table: pd.DataFrame, column: str, option: str, path: Path) -> None:
    if column not in table.columns:
        raise _Error(
            f"column {column!r} not found in {path}; columns: {list(table.columns)} "
            f"(choose one with {option})"
        )


def _ids(table: pd.DataFrame, id_column: str | None, path: Path) -> pd.Index | None:
    """The ids from ``--id-column`` or an 'id' column, as text; None when there are none."""
    ids_from = id_column or ("id" if "id" in table.columns else None)
    if ids_from is None:
        return None
    if ids_from not in table.columns:
        raise _Error(f"id column {ids_from!r} not found in {path}; columns: {list(table.columns)}")
    import pandas as pd

    ids = pd.Index(table[ids_from].astype(str), name="id")
    if ids.has_duplicates:
        dup = ids[ids.duplicated()][0]
        raise _Error(f"duplicate id {dup!r} in {path}; ids must be unique")
    return ids


def _nonempty(seqs: pd.Series, path: Path) -> pd.Series:
    if len(seqs) == 0:
        raise _Error(f"no sequences in {path}; nothing to embed")
    return seqs


def _require_pyarrow(what: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        raise _Error(f"pyarrow is needed to {what}: pip install 'rnafm_sklearn[parquet]'") from None


# ------------------------------------------------------------------------------ output


def _outputs(output: str, allowed: Sequence[str] = OUTPUTS) -> list[Path]:
    """The files a run writes (the data, then for .npy its id list), checked before computing.

    A symlink is written through: its target gets the new content, as with a plain ``open``.
    """
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        raise _Error(
            f"output {output} is a folder; give a file name such as {path / 'features.parquet'}"
        )
    suffix = path.suffix.lower()
    if suffix not in allowed:
        raise _Error(f"unknown output type {path.name!r}: use {', '.join(allowed)}")
    if suffix == ".parquet":
        _require_pyarrow("write Parquet")
    files = [path]
    if suffix == ".npy":
        ids = path.with_name(path.stem + ".ids.txt")
        if ids.is_dir():
            raise _Error(f"cannot write the ids of {output} to {ids}: it is a folder")
        files.append(ids)
    files = [Path(os.path.realpath(f)) if f.is_symlink() else f for f in files]
    for f in files:
        folder = f.parent
        while not folder.exists():  # created when writing; its first existing ancestor must be
            folder = folder.parent  # a folder we may write in
        if not folder.is_dir():
            raise _Error(f"cannot write {f}: {folder} is not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _Error(f"cannot write {f}: no permission to write in {folder}")
    return files


def _check_not_input(source: Path, outputs: Sequence[Path]) -> None:
    """Refuse an output that is the input file under any name (symlink, hard link)."""
    if not source.exists():
        return  # _read_input reports it
    for out in outputs:
        if out.exists() and os.path.samefile(source, out):
            what = "the output" if out is outputs[0] else "the id list of the output"
            raise _Error(
                f"refusing to overwrite the input {source}: it is also {what} ({out}); "
                "choose another output name"
            )


_LINE_BREAK = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits


def _check_ids_fit_lines(ids: pd.Index, ids_file: Path) -> None:
    for i, rid in enumerate(ids):
        if _LINE_BREAK.search(str(rid)):
            raise _Error(
                f"id {rid!r} (record {i + 1}) contains a line break, but {ids_file} holds one "
                "id per line; change the id, or write .csv or .parquet (they quote ids)"
            )


def _write_output(
    files: Sequence[Path], ids: pd.Index, X: np.ndarray, names: Sequence[str]
) -> None:
    """Write the data (and for .npy the id list) all-or-nothing, to exactly these paths."""
    import numpy as np
    import pandas as pd

    from ._io import write_atomically

    suffix = files[0].suffix.lower()
    if suffix == ".npy":
        text = ("\n".join(map(str, ids)) + "\n").encode("utf-8")
        write_atomically({files[1]: lambda fh: fh.write(text), files[0]: lambda fh: np.save(fh, X)})
        return
    frame = pd.DataFrame(X, columns=list(names))
    frame.insert(0, "id", list(ids))
    _write_frame(files[0], frame)


def _write_frame(path: Path, frame: pd.DataFrame) -> None:
    """Write a table (.csv, .tsv or .parquet, by the suffix) all-or-nothing."""
    from ._io import write_atomically

    suffix = path.suffix.lower()

    def table(fh: BinaryIO) -> None:
        if suffix == ".parquet":
            frame.to_parquet(fh, index=False)
        else:
            sep = "\t" if suffix == ".tsv" else ","
            frame.to_csv(fh, sep=sep, index=False, float_format="%.8g")

    write_atomically({path: table})
