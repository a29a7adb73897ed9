"""``rnafm-embed``: sequence files in, feature files out (also ``python -m rnafm_sklearn``)."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from . import __version__
from ._cache import EmbeddingCache
from ._checkpoint import convert_checkpoint
from ._embedder import (
    AGGREGATIONS,
    DEFAULT_BATCH_TOKENS,
    POLICIES,
    POOLING_CHOICES,
    TRUNCATION_SIDES,
    RnaFmEmbedder,
)
from ._errors import CheckpointError, WeightsUnavailableError
from ._io import read_fasta, write_atomically
from ._models import DTYPES

PROG = "rnafm-embed"
FASTA = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".frn")
TABLES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
OUTPUTS = (".npy", ".csv", ".parquet")
DEFAULTS = RnaFmEmbedder().get_params()  # the constructor only stores its arguments
# RnaFmEmbedder parameter -> the option that sets it: library messages are put in these words.
OPTIONS = {
    "model": "--model",
    "pooling": "--pooling",
    "layers": "--layers",
    "layer_aggregation": "--layer-aggregation",
    "long_sequences": "--long-sequences",
    "truncation_side": "--truncation-side",
    "window_stride": "--window-stride",
    "device": "--device",
    "dtype": "--dtype",
    "batch_tokens": "--batch-tokens",
    "progress": "--progress",
    "cache": "--cache",
}

EXAMPLES = f"""\
examples:
  {PROG} rfam.fasta -o features.parquet
  {PROG} utrs.csv --column utr -o utrs.npy --pooling mean cls --layers -1 6
  {PROG} mrnas.fa.gz -o x.csv --long-sequences window --cache ~/.cache/rnafm-emb
  {PROG} seqs.fa -o x.npy --model ./RNA-FM_pretrained.pth --dtype bfloat16
  {PROG} convert RNA-FM_pretrained.pth ./rna-fm-native
  {PROG} cache info ~/.cache/rnafm-emb
  {PROG} cache clear ~/.cache/rnafm-emb

outputs: .npy (matrix; ids in OUTPUT.ids.txt, one per line), .csv and .parquet (first
column: id). The output is checked before any embedding and written all-or-nothing: an
existing output is replaced only when the run succeeds; the input is never overwritten.
Ids must be unique (duplicates are an error, never silently dropped); an input without
sequences is an error.
"""


class _Error(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def create_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Embed RNA sequences with RNA-FM (FASTA/CSV/TSV/Parquet in, "
        "NPY/CSV/Parquet out). Sub-commands: 'convert', 'cache'.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="FASTA (plain or .gz), CSV, TSV or Parquet file")
    p.add_argument("-o", "--output", required=True, help="output file: .npy, .csv or .parquet")
    p.add_argument("--model", default=DEFAULTS["model"], help="'rna-fm' or a checkpoint path")
    p.add_argument("--column", default="sequence", help="sequence column of a table")
    p.add_argument("--id-column", help="id column of a table (default: 'id' if present)")
    p.add_argument(
        "--pooling",
        nargs="+",
        default=_as_list(DEFAULTS["pooling"]),
        choices=POOLING_CHOICES,
        metavar="POOLING",
        help=f"one or more of: {' '.join(POOLING_CHOICES)} (several are concatenated)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=_as_list(DEFAULTS["layers"]),
        help="e.g. -1 or 0 6 12",
    )
    p.add_argument(
        "--layer-aggregation", choices=AGGREGATIONS, default=DEFAULTS["layer_aggregation"]
    )
    p.add_argument("--long-sequences", choices=POLICIES, default=DEFAULTS["long_sequences"])
    p.add_argument(
        "--truncation-side",
        choices=TRUNCATION_SIDES,
        default=DEFAULTS["truncation_side"],
        help="side that '--long-sequences truncate' cuts (right keeps the start)",
    )
    p.add_argument("--window-stride", type=int)
    p.add_argument("--device", default=DEFAULTS["device"])
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DEFAULTS["dtype"])
    p.add_argument(
        "--batch-tokens", type=int, help=f"tokens per batch (CPU: {DEFAULT_BATCH_TOKENS['cpu']})"
    )
    p.add_argument("--cache", help="persistent embedding cache folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


# ------------------------------------------------------------------------------- input


def _read_input(path: Path, column: str, id_column: str | None) -> pd.Series:
    if not path.exists():
        raise _Error(f"input file not found: {path}")
    suffixes = [s.lower() for s in path.suffixes]
    kind = (
        suffixes[-2]
        if suffixes and suffixes[-1] == ".gz" and len(suffixes) > 1
        else (suffixes[-1] if suffixes else "")
    )
    if kind in FASTA:
        return _nonempty(read_fasta(path), path)
    if kind in TABLES:
        try:
            table = pd.read_csv(path, sep=TABLES[kind], dtype=str, keep_default_na=False)
        except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
            raise _Error(f"cannot read {path} as {kind[1:].upper()}: {exc}") from exc
    elif kind == ".parquet":
        _require_pyarrow("read Parquet")
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises its own error types
            raise _Error(f"cannot read {path} as Parquet: {exc}") from exc
    else:
        raise _Error(
            f"unknown input type {path.name!r}: expected FASTA ({', '.join(FASTA)}, optionally "
            ".gz), .csv, .tsv or .parquet"
        )
    if column not in table.columns:
        raise _Error(
            f"column {column!r} not found in {path}; columns: {list(table.columns)} "
            "(choose one with --column)"
        )
    ids_from = id_column or ("id" if "id" in table.columns else None)
    if ids_from is not None and ids_from not in table.columns:
        raise _Error(f"id column {ids_from!r} not found in {path}; columns: {list(table.columns)}")
    index = table[ids_from].astype(str) if ids_from else pd.RangeIndex(len(table)).astype(str)
    seqs = pd.Series(table[column].to_numpy(), index=pd.Index(index, name="id"), name="sequence")
    if seqs.index.has_duplicates:
        dup = seqs.index[seqs.index.duplicated()][0]
        raise _Error(f"duplicate id {dup!r} in {path}; ids must be unique")
    return _nonempty(seqs, path)


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


def _outputs(output: str) -> list[Path]:
    """The files a run writes (the data, then for .npy its id list), checked before computing.

    A symlink is written through: its target gets the new content, as with a plain ``open``.
    """
    path = Path(output)
    if output.endswith(("/", os.sep)) or path.is_dir():
        raise _Error(
            f"output {output} is a folder; give a file name such as {path / 'features.parquet'}"
        )
    suffix = path.suffix.lower()
    if suffix not in OUTPUTS:
        raise _Error(f"unknown output type {path.name!r}: use {', '.join(OUTPUTS)}")
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
    suffix = files[0].suffix.lower()
    if suffix == ".npy":
        text = ("\n".join(map(str, ids)) + "\n").encode("utf-8")
        write_atomically({files[1]: lambda fh: fh.write(text), files[0]: lambda fh: np.save(fh, X)})
        return
    frame = pd.DataFrame(X, columns=list(names))
    frame.insert(0, "id", list(ids))

    def table(fh: BinaryIO) -> None:
        if suffix == ".csv":
            frame.to_csv(fh, index=False, float_format="%.8g")
        else:
            frame.to_parquet(fh, index=False)

    write_atomically({files[0]: table})


# ---------------------------------------------------------------------------- messages


def _in_cli_words(text: str) -> str:
    """A library message in the command line's words, on one line.

    ``The 'layers' parameter of RnaFmEmbedder`` becomes ``The option --layers``;
    ``RnaFmEmbedder(model='x')`` and ``model='x'`` become ``--model x``.
    """

    def parameter(m: re.Match) -> str:
        return f"The option {OPTIONS[m[1]]}" if m[1] in OPTIONS else m[0]

    def keyword(m: re.Match) -> str:
        if m[1] not in OPTIONS:
            return m[0]
        value = m[2]
        if value.startswith("'") and not any(c.isspace() for c in value):
            value = value[1:-1]
        return f"{OPTIONS[m[1]]} {value}" if value else OPTIONS[m[1]]

    text = " ".join(text.splitlines())
    text = re.sub(r"The '(\w+)' parameter of RnaFmEmbedder", parameter, text)
    text = re.sub(r"RnaFmEmbedder\((\w+)=('[^']*'|[\w.+-]*)\)", keyword, text)
    return re.sub(r"(?<![\w.-])(\w+)=('[^']*'|[\w+-](?:[\w.+-]*[\w+-])?|)", keyword, text)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` during a run: one line, in the command line's words."""
    print(f"{PROG}: warning: {_in_cli_words(str(message))}", file=sys.stderr)


# --------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Embed ``args.input`` into ``args.output``; raise on failure, return 0."""
    outputs = _outputs(args.output)
    source = Path(args.input)
    _check_not_input(source, outputs)
    seqs = _read_input(source, args.column, args.id_column)
    if len(outputs) == 2:
        _check_ids_fit_lines(seqs.index, outputs[1])
    emb = RnaFmEmbedder(
        model=args.model,
        pooling=args.pooling if len(args.pooling) > 1 else args.pooling[0],
        layers=args.layers if len(args.layers) > 1 else args.layers[0],
        layer_aggregation=args.layer_aggregation,
        long_sequences=args.long_sequences,
        truncation_side=args.truncation_side,
        window_stride=args.window_stride,
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        progress="auto" if args.progress is None else args.progress,
        cache=args.cache,
    )
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        X = emb.transform(seqs)
        names = emb.get_feature_names_out()
    _write_output(outputs, seqs.index, X, names)
    print(f"{PROG}: wrote {X.shape[0]} x {X.shape[1]} features to {args.output}", file=sys.stderr)
    return 0


def _cache_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} cache", description="Inspect or clear a cache.")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("path", help="the cache folder (or .sqlite file) given as --cache")
    args = p.parse_args(argv)
    cache = EmbeddingCache(args.path)
    if args.action == "clear" or cache.path.exists():
        if args.action == "clear":
            cache.clear()
        print(json.dumps(cache.info()))
        return 0
    raise _Error(f"no embedding cache at {cache.path}")


def _convert_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(
        prog=f"{PROG} convert",
        description="Convert an official .pth or a multimolecule folder to the native "
        "safetensors layout; every tensor is verified after writing.",
    )
    p.add_argument("source")
    p.add_argument("destination")
    args = p.parse_args(argv)
    out = convert_checkpoint(args.source, args.destination)
    print(f"{PROG}: converted {args.source} to {out} (verified)", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rnafm-embed``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cache = None
    try:
        if argv and argv[0] == "cache":
            return _cache_main(argv[1:])
        if argv and argv[0] == "convert":
            return _convert_main(argv[1:])
        args = create_parser().parse_args(argv)
        cache = args.cache
        return run(args)
    except _Error as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except (
        ValueError,
        TypeError,
        KeyError,
        OSError,
        CheckpointError,
        WeightsUnavailableError,
    ) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{PROG}: error: {_in_cli_words(str(message))}", file=sys.stderr)
    except KeyboardInterrupt:
        kept = f" (cached batches are kept in {cache})" if cache else ""
        print(f"{PROG}: interrupted{kept}", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
