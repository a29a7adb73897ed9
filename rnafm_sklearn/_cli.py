"""``rnafm-embed``: sequence files in, feature files out (also ``python -m rnafm_sklearn``)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import __version__
from ._cache import EmbeddingCache
from ._checkpoint import convert_checkpoint
from ._cli_files import (
    FASTA,
    SCORE_OUTPUTS,
    _check_ids_fit_lines,
    _check_not_input,
    _Error,
    _ids,
    _input_kind,
    _outputs,
    _read_input,
    _read_table,
    _require_column,
    _write_frame,
    _write_output,
)
from ._cli_structure import run_structure, structure_parser
from ._embedder import (
    AGGREGATIONS,
    DEFAULT_BATCH_TOKENS,
    POLICIES,
    POOLING_CHOICES,
    TRUNCATION_SIDES,
    RnaFmEmbedder,
)
from ._errors import CheckpointError, WeightsUnavailableError
from ._models import DTYPES
from ._scoring import KINDS, METHODS, RnaFmLikelihood
from ._scoring import RnaFmVariantScorer as _Scorer

PROG = "rnafm-embed"
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
    "method": "--method",
    "kind": "--kind",
}

EXAMPLES = f"""\
examples:
  {PROG} rfam.fasta -o features.parquet
  {PROG} utrs.csv --column utr -o utrs.npy --pooling mean cls --layers -1 6
  {PROG} mrnas.fa.gz -o x.csv --long-sequences window --cache ~/.cache/rnafm-emb
  {PROG} seqs.fa -o x.npy --model ./RNA-FM_pretrained.pth --dtype bfloat16
  {PROG} likelihood rfam.fasta -o pll.csv --kind both
  {PROG} score variants.csv -o scores.csv --method masked-marginal wt-marginal
  {PROG} convert RNA-FM_pretrained.pth ./rna-fm-native
  {PROG} cache info ~/.cache/rnafm-emb
  {PROG} cache clear ~/.cache/rnafm-emb

outputs: .npy (matrix; ids in OUTPUT.ids.txt, one per line), .csv and .parquet (first
column: id). The output is checked before any embedding and written all-or-nothing: an
existing output is replaced only when the run succeeds; the input is never overwritten.
Ids must be unique (duplicates are an error, never silently dropped); an input without
sequences is an error. '{PROG} score --help' and '{PROG} likelihood --help' describe the
masked-LM sub-commands.
"""

SCORE_EXAMPLES = f"""\
examples:
  {PROG} score variants.csv -o scores.csv
  {PROG} score dms.parquet -o scores.parquet --id-column variant \\
      --method masked-marginal wt-marginal
  {PROG} score pairs.tsv --mutant-column mutant -o scores.csv --method pseudo-likelihood
  {PROG} score long.csv -o scores.csv --long-sequences window --model ./RNA-FM_pretrained.pth

INPUT has one row per variant: the wild type (--sequence-column) and either its mutations
(--mutation-column: "A12G", several as "A12G:C30U", 1-based positions, the reference letter
checked, T read as U, "WT" for the wild type itself) or the mutant sequence (--mutant-column).
Repeat a wild type on each of its variants: its passes are shared.
OUTPUT (.csv, .tsv or .parquet) has the id (--id-column, else 'id' if present, else the row
number from 0), the mutation column (not in --mutant-column mode), then one column per method:
score_masked_marginal, score_wt_marginal, score_mutant_marginal, score_pseudo_likelihood.
A score is log p(mutant) - log p(wild type): above 0, the model prefers the mutant. The
checkpoint must carry the masked-LM head. The output is checked before scoring and written
all-or-nothing; ids must be unique.
"""

LIKELIHOOD_EXAMPLES = f"""\
examples:
  {PROG} likelihood rfam.fasta -o pll.csv
  {PROG} likelihood utrs.csv --column utr -o ll.parquet --kind both --cache ~/.cache/rnafm-emb

Columns: pll and pll_per_nt (--kind pseudo: one masked pass per nucleotide), ll_unmasked and
ll_unmasked_per_nt (--kind unmasked: one pass per sequence), all four with --kind both.
Input and output work as for embedding ('{PROG} --help').
"""


def create_parser() -> argparse.ArgumentParser:
    p = _sequence_parser(
        PROG,
        "Embed RNA sequences with RNA-FM (FASTA/CSV/TSV/Parquet in, NPY/CSV/Parquet out). "
        "Sub-commands: 'score' (variant effects), 'likelihood', 'structure', 'convert', 'cache'.",
        EXAMPLES,
    )
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
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _sequence_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The options of every command that reads sequences (FASTA or a table) into features."""
    p = _parser(prog, description, epilog)
    p.add_argument("input", help="FASTA (plain or .gz), CSV, TSV or Parquet file")
    p.add_argument("-o", "--output", required=True, help="output file: .npy, .csv or .parquet")
    p.add_argument("--column", default="sequence", help="sequence column of a table")
    p.add_argument("--id-column", help="id column of a table (default: 'id' if present)")
    p.add_argument("--long-sequences", choices=POLICIES, default=DEFAULTS["long_sequences"])
    p.add_argument(
        "--truncation-side",
        choices=TRUNCATION_SIDES,
        default=DEFAULTS["truncation_side"],
        help="side that '--long-sequences truncate' cuts (right keeps the start)",
    )
    _model_options(p)
    p.add_argument("--cache", help="persistent embedding cache folder")
    return p


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULTS["model"], help="'rna-fm' or a checkpoint path")
    p.add_argument("--window-stride", type=int)
    p.add_argument("--device", default=DEFAULTS["device"])
    p.add_argument("--dtype", choices=tuple(DTYPES), default=DEFAULTS["dtype"])
    p.add_argument(
        "--batch-tokens", type=int, help=f"tokens per batch (CPU: {DEFAULT_BATCH_TOKENS['cpu']})"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


def _score_parser() -> argparse.ArgumentParser:
    p = _parser(
        f"{PROG} score",
        "Score variants zero-shot with RNA-FM's masked-LM head\n"
        "(CSV/TSV/Parquet in, CSV/TSV/Parquet out).",
        SCORE_EXAMPLES,
    )
    p.add_argument("input", help="CSV, TSV or Parquet table, one row per variant")
    p.add_argument("-o", "--output", required=True, help="output file: .csv, .tsv or .parquet")
    p.add_argument(
        "--method",
        nargs="+",
        default=["masked-marginal"],
        choices=METHODS,
        metavar="METHOD",
        help=f"one or more of: {' '.join(METHODS)} (one output column each)",
    )
    p.add_argument("--sequence-column", default="sequence", help="wild-type column")
    variant = p.add_mutually_exclusive_group()
    variant.add_argument(
        "--mutation-column", default="mutations", help="column of mutations such as A12G:C30U"
    )
    variant.add_argument("--mutant-column", help="column of mutant sequences (instead)")
    p.add_argument("--id-column", help="id column (default: 'id' if present, else the row)")
    p.add_argument("--long-sequences", choices=("error", "window"), default="error")
    _model_options(p)
    return p


def _likelihood_parser() -> argparse.ArgumentParser:
    p = _sequence_parser(
        f"{PROG} likelihood",
        "Sequence likelihoods from RNA-FM's masked-LM head: pseudo-log-likelihood and/or\n"
        "unmasked log-likelihood, in total and per nucleotide.",
        LIKELIHOOD_EXAMPLES,
    )
    p.add_argument("--kind", choices=KINDS, default="pseudo")
    return p


def _as_list(value: object) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


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
    text = re.sub(r"The '(\w+)' parameter of RnaFm\w+", parameter, text)
    text = re.sub(r"RnaFm\w+\((\w+)=('[^']*'|[\w.+-]*)\)", keyword, text)
    return re.sub(r"(?<![\w.-])(\w+)=('[^']*'|[\w+-](?:[\w.+-]*[\w+-])?|)", keyword, text)


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` during a run: one line, in the command line's words."""
    print(f"{PROG}: warning: {_in_cli_words(str(message))}", file=sys.stderr)


# --------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Embed ``args.input`` into ``args.output``; raise on failure, return 0."""
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
    return _features_to_file(args, emb)


def run_likelihood(args: argparse.Namespace) -> int:
    """Likelihood features of ``args.input`` into ``args.output``; raise on failure."""
    lik = RnaFmLikelihood(
        model=args.model,
        kind=args.kind,
        long_sequences=args.long_sequences,
        truncation_side=args.truncation_side,
        window_stride=args.window_stride,
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        progress="auto" if args.progress is None else args.progress,
        cache=args.cache,
    )
    return _features_to_file(args, lik)


def _features_to_file(args: argparse.Namespace, estimator: RnaFmEmbedder | RnaFmLikelihood) -> int:
    """Read, transform, write: the body of the embed and likelihood commands."""
    outputs = _outputs(args.output)
    source = Path(args.input)
    _check_not_input(source, outputs)
    seqs = _read_input(source, args.column, args.id_column)
    if len(outputs) == 2:
        _check_ids_fit_lines(seqs.index, outputs[1])
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        X = estimator.transform(seqs)
        names = estimator.get_feature_names_out()
    _write_output(outputs, seqs.index, X, names)
    print(f"{PROG}: wrote {X.shape[0]} x {X.shape[1]} features to {args.output}", file=sys.stderr)
    return 0


def run_score(args: argparse.Namespace) -> int:
    """Score the variants of ``args.input`` into ``args.output``; raise on failure, return 0."""
    outputs = _outputs(args.output, SCORE_OUTPUTS)
    source = Path(args.input)
    _check_not_input(source, outputs)
    kind = _input_kind(source)
    if kind in FASTA:
        raise _Error(
            f"{source} is FASTA, but scoring needs a table (.csv, .tsv or .parquet) with one row "
            "per variant: the wild type and its mutations (or the mutant sequence)"
        )
    table = _read_table(source, kind, ".csv, .tsv or .parquet")
    variant_column = args.mutant_column or args.mutation_column
    _require_column(table, args.sequence_column, "--sequence-column", source)
    option = "--mutant-column" if args.mutant_column else "--mutation-column"
    _require_column(table, variant_column, option, source)
    ids = _ids(table, args.id_column, source)
    if len(table) == 0:
        raise _Error(f"no variants in {source}; nothing to score")
    # messages name a row by its number and, when there are ids, by its id
    X = pd.DataFrame(
        {
            "wild_type": table[args.sequence_column].to_numpy(),
            "variant": table[variant_column].to_numpy(),
        },
        index=ids if ids is not None else pd.RangeIndex(len(table)),
    )
    scorer = _Scorer(
        model=args.model,
        method=list(args.method),
        sequence_column="wild_type",
        mutation_column="variant",
        mutant_column="variant" if args.mutant_column else None,
        long_sequences=args.long_sequences,
        window_stride=args.window_stride,
        device=args.device,
        dtype=args.dtype,
        batch_tokens=args.batch_tokens,
        progress="auto" if args.progress is None else args.progress,
    )
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        scores = scorer.transform(X)
        names = list(scorer.get_feature_names_out())
    frame = pd.DataFrame(scores, columns=names)
    frame.insert(0, "id", list(X.index.astype(str)))
    if not args.mutant_column and args.mutation_column not in frame.columns:
        frame.insert(1, args.mutation_column, table[args.mutation_column].to_numpy())
    _write_frame(outputs[0], frame)
    print(
        f"{PROG}: wrote {len(frame)} variant score(s) ({', '.join(names)}) to {args.output}",
        file=sys.stderr,
    )
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
        if argv and argv[0] == "score":
            return run_score(_score_parser().parse_args(argv[1:]))
        if argv and argv[0] == "structure":
            return run_structure(structure_parser().parse_args(argv[1:]))
        if argv and argv[0] == "likelihood":
            args = _likelihood_parser().parse_args(argv[1:])
            cache = args.cache
            return run_likelihood(args)
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
