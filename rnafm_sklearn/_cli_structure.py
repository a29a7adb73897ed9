"""``rnafm-embed structure``: sequences in, secondary structures (and probability maps) out.

A sub-command of its own module, imported by ``_cli`` (what every command shares comes from
``_cli_common``); nothing heavy (torch, pandas) is imported before its own file checks have
passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from ._cli_common import PROG, _given, _model_options, _parser, _print_warning
from ._cli_files import _Error

__all__ = ["run_structure", "structure_parser"]

STRUCTURE_EXAMPLES = """\
examples:
  {PROG} structure rnas.fasta -o structures.fa
  {PROG} structure rnas.csv -o structures.csv --threshold 0.3 --decoding nested
  {PROG} structure rnas.fasta -o ct_files --format ct --probabilities probs
  {PROG} structure rnas.fasta -o one.ct --model ./RNA-FM-ResNet_bpRNA.pth

OUTPUT: a dot-bracket FASTA (.fa, .fasta, .db, .dbn: '>id', sequence, structure), a table
(.csv, .tsv, .parquet: id, sequence, structure), a .ct or .bpseq file, or with --format ct or
bpseq and no such suffix a folder of one file per sequence (<id>.ct / <id>.bpseq; ids must then
be safe file names). --probabilities DIR writes <id>.npy per sequence: the (L, L) float32
base-pair probabilities. Everything is checked before any compute and written all-or-nothing.
--threshold defaults to the head's calibrated value (rna-fm-ss: 0.33993712; 0.5 for a file of
unknown origin).
"""
STRUCTURE_TABLES = (".csv", ".tsv", ".parquet")


def structure_parser() -> argparse.ArgumentParser:
    p = _parser(
        f"{PROG} structure",
        "Predict RNA secondary structure with RNA-FM's structure head\n"
        "(FASTA/CSV/TSV/Parquet in; dot-bracket FASTA, a table, CT or BPSEQ out).",
        STRUCTURE_EXAMPLES.replace("{PROG}", PROG),
    )
    p.add_argument("input", help="FASTA (plain or .gz), CSV, TSV or Parquet file")
    p.add_argument("-o", "--output", required=True, help="output file or folder (see below)")
    p.add_argument(
        "--format",
        choices=("dot-bracket", "ct", "bpseq"),
        help="output format (default: from the suffix of OUTPUT)",
    )
    p.add_argument("--column", default="sequence", help="sequence column of a table")
    p.add_argument("--id-column", help="id column of a table (default: 'id' if present)")
    p.add_argument("--long-sequences", choices=("error", "window"), default="error")
    p.add_argument("--threshold", type=float, help="pair probability threshold (strict: p > t)")
    p.add_argument("--decoding", choices=("greedy", "nested"), default="greedy")
    p.add_argument(
        "--canonical-only", action="store_true", help="only AU, GC and GU pairs (either order)"
    )
    p.add_argument(
        "--min-loop-length", type=int, default=1, help="pairs need j - i > this (official: 1)"
    )
    p.add_argument("--max-map-elements", type=int, help="largest L*L map (default 2048*2048)")
    p.add_argument("--probabilities", metavar="DIR", help="write <id>.npy probability maps here")
    _model_options(p)
    p.set_defaults(model="rna-fm-ss")
    return p


def _structure_target(output: str, fmt: str | None) -> tuple[str, Path, bool]:
    """``(kind, path, one file per record)``; kind is "table" or a structure format."""
    from ._cli_files import _require_pyarrow
    from ._structure_files import SUFFIXES as STRUCTURE_SUFFIXES

    path = Path(output)
    suffix = path.suffix.lower()
    if suffix in STRUCTURE_TABLES and fmt is None:
        if suffix == ".parquet":
            _require_pyarrow("write Parquet")
        kind, per_file = "table", False
    elif suffix in STRUCTURE_SUFFIXES:
        kind, per_file = fmt or STRUCTURE_SUFFIXES[suffix], False
        if kind == "bpseq":  # BPSEQ holds one record per file
            raise _Error(
                "BPSEQ holds one sequence per file: give a folder as OUTPUT "
                f"({path.with_suffix('')}) with --format bpseq"
            )
    elif fmt in ("ct", "bpseq") and not suffix:
        kind, per_file = fmt, True
    else:
        raise _Error(
            f"unknown output type {path.name!r}: use .fa/.fasta/.db/.dbn (dot-bracket), "
            f".csv/.tsv/.parquet (table), .ct, or a folder with --format ct or bpseq"
        )
    if per_file and path.exists() and not path.is_dir():
        raise _Error(f"output {path} is a file, but --format {fmt} writes a folder of files")
    if not per_file and path.is_dir():
        raise _Error(f"output {output} is a folder; give a file name or --format ct/bpseq")
    folder = path if per_file else path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise _Error(f"cannot write {path}: no permission to write in {folder}")
    return kind, path, per_file


def _probability_files(folder: str | None, ids: list[str]) -> dict[str, Path] | None:
    if folder is None:
        return None
    from ._structure_files import _SAFE_NAME as SAFE_FILE_NAME

    out = Path(folder)
    if out.exists() and not out.is_dir():
        raise _Error(f"--probabilities {folder} is a file; give a folder")
    files = {}
    for k, rid in enumerate(ids):
        if not SAFE_FILE_NAME.fullmatch(rid):
            raise _Error(
                f"id {rid!r} (record {k + 1}) is not safe as a file name for --probabilities; "
                "use letters, digits and '_.+-' only"
            )
        files[rid] = out / f"{rid}.npy"
    return files


def run_structure(args: argparse.Namespace) -> int:
    """Predict the structures of ``args.input`` into ``args.output``; raise on failure."""
    import numpy as np
    import pandas as pd

    from ._alphabet import get_alphabet, normalize_sequences
    from ._cli_files import _check_not_input, _read_input, _write_frame
    from ._io import write_atomically
    from ._structure import RnaFmStructurePredictor
    from ._structure_files import write_structures
    from ._structure_predict import structures_and_maps

    source = Path(args.input)
    kind, target, per_file = _structure_target(args.output, args.format)
    if not per_file:
        _check_not_input(source, [target])
    seqs = _read_input(source, args.column, args.id_column)
    ids = [str(i) for i in seqs.index]
    prob_files = _probability_files(args.probabilities, ids)
    params = dict(
        model=args.model,
        decoding=args.decoding,
        canonical_only=args.canonical_only,
        min_loop_length=args.min_loop_length,
        long_sequences=args.long_sequences,
        progress="auto" if args.progress is None else args.progress,
        # options left out on the command line take the estimator's own defaults
        **_given(
            args, "window_stride", "device", "dtype", "batch_tokens", "threshold",
            "max_map_elements",
        ),
    )
    est = RnaFmStructurePredictor(**params)
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        if prob_files is None:
            structures, probs = est.predict(seqs), None
        else:  # one pass of the model for both
            structures, probs = structures_and_maps(est, seqs)
    rna = get_alphabet("rna")
    frame = pd.DataFrame(
        {
            "id": ids,
            "sequence": normalize_sequences(seqs.tolist(), rna),
            "structure": list(structures),
        }
    )
    if probs is not None:  # the maps first: the structures are the run's main output
        write_atomically(
            {
                prob_files[rid]: (lambda fh, p=p: np.save(fh, p))
                for rid, p in zip(ids, probs, strict=True)
            }
        )
    if kind == "table":
        _write_frame(target, frame)
    else:
        write_structures(frame, target, format=kind, one_file_per_record=per_file)
    print(f"{PROG}: wrote {len(frame)} structure(s) to {args.output}", file=sys.stderr)
    return 0
