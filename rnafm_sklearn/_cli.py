"""``rnafm-embed``: sequence files in, feature files out (also ``python -m rnafm_sklearn``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from ._cache import EmbeddingCache
from ._checkpoint import convert_checkpoint
from ._embedder import DEFAULT_BATCH_TOKENS, POLICIES, RnaFmEmbedder
from ._errors import CheckpointError, WeightsUnavailableError
from ._io import read_fasta

PROG = "rnafm-embed"
FASTA = (".fa", ".fasta", ".fna", ".fas", ".ffn", ".frn")
TABLES = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
OUTPUTS = (".npy", ".csv", ".parquet")

EXAMPLES = f"""\
examples:
  {PROG} rfam.fasta -o features.parquet
  {PROG} utrs.csv --column utr -o utrs.npy --pooling mean cls --layers -1 6
  {PROG} mrnas.fa.gz -o x.csv --long-sequences window --cache ~/.cache/rnafm-emb
  {PROG} seqs.fa -o x.npy --model ./RNA-FM_pretrained.pth --dtype bfloat16
  {PROG} convert RNA-FM_pretrained.pth ./rna-fm-native
  {PROG} cache info ~/.cache/rnafm-emb
  {PROG} cache clear ~/.cache/rnafm-emb

outputs: .npy (matrix; ids in OUTPUT.ids.txt), .csv and .parquet (first column: id).
FASTA ids must be unique (duplicates are an error, never silently dropped).
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
    p.add_argument("--model", default="rna-fm", help="'rna-fm' or a checkpoint path")
    p.add_argument("--column", default="sequence", help="sequence column of a table")
    p.add_argument("--id-column", help="id column of a table (default: 'id' if present)")
    p.add_argument("--pooling", nargs="+", default=["mean"], help="mean max cls eos mean+max")
    p.add_argument("--layers", nargs="+", type=int, default=[-1], help="e.g. -1 or 0 6 12")
    p.add_argument("--layer-aggregation", choices=("concat", "mean"), default="concat")
    p.add_argument("--long-sequences", choices=POLICIES, default="error")
    p.add_argument("--truncation-side", choices=("right", "left"), default="right")
    p.add_argument("--window-stride", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    p.add_argument(
        "--batch-tokens", type=int, help=f"tokens per batch (CPU: {DEFAULT_BATCH_TOKENS['cpu']})"
    )
    p.add_argument("--cache", help="persistent embedding cache folder")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


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
        return read_fasta(path)
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
    return seqs


def _require_pyarrow(what: str) -> None:
    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        raise _Error(f"pyarrow is needed to {what}: pip install 'rnafm_sklearn[parquet]'") from None


def _write_output(path: Path, ids: pd.Index, X: np.ndarray, names: Sequence[str]) -> None:
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, X)
        path.with_name(path.stem + ".ids.txt").write_text("\n".join(map(str, ids)) + "\n")
        return
    frame = pd.DataFrame(X, columns=list(names))
    frame.insert(0, "id", list(ids))
    if suffix == ".csv":
        frame.to_csv(path, index=False, float_format="%.8g")
    else:
        _require_pyarrow("write Parquet")
        frame.to_parquet(path, index=False)


def run(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.suffix.lower() not in OUTPUTS:
        raise _Error(f"unknown output type {output.name!r}: use {', '.join(OUTPUTS)}")
    seqs = _read_input(Path(args.input), args.column, args.id_column)
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
    X = emb.transform(seqs)
    _write_output(output, seqs.index, X, emb.get_feature_names_out())
    print(f"{PROG}: wrote {X.shape[0]} x {X.shape[1]} features to {output}", file=sys.stderr)
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
    try:
        if argv and argv[0] == "cache":
            return _cache_main(argv[1:])
        if argv and argv[0] == "convert":
            return _convert_main(argv[1:])
        return run(create_parser().parse_args(argv))
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
        print(f"{PROG}: error: {message}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (cached batches are kept)", file=sys.stderr)
        return 130
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
