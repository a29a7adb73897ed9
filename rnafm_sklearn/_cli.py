"""``rnafm-embed``: sequence files in, feature files out (also ``python -m rnafm_sklearn``).

Arguments are parsed and files checked before torch is imported: ``--help`` and usage errors
answer at once. Each sub-command is one entry of :data:`COMMANDS`: a parser factory (which
must not import torch, pandas or the estimators) and a run function (which imports what it
needs, after its file checks). This module holds :func:`main`, the embedding command (the
default) and the likelihood, convert and cache commands; ``score`` and ``structure`` have
modules of their own (``_cli_score``, ``_cli_structure``), and what every command shares is in
``_cli_common``.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from ._choices import AGGREGATIONS, KINDS, POLICIES, POOLING_CHOICES, TRUNCATION_SIDES
from ._cli_common import (
    _COMMON,
    PROG,
    _given,
    _in_cli_words,
    _model_options,
    _parser,
    _print_warning,
    _progress,
)
from ._cli_files import _check_not_input, _Error, _input_kind, _outputs
from ._cli_score import run_score, score_parser
from ._cli_structure import run_structure, structure_parser

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

LIKELIHOOD_EXAMPLES = f"""\
examples:
  {PROG} likelihood rfam.fasta -o pll.csv
  {PROG} likelihood rfam.fasta -o ll.csv --kind unmasked      # fast: one pass per sequence
  {PROG} likelihood utrs.csv --column utr -o ll.parquet --kind both --cache ~/.cache/rnafm-emb

Columns: pll and pll_per_nt (--kind pseudo, the default: one masked forward pass per
nucleotide, slow), ll_unmasked and ll_unmasked_per_nt (--kind unmasked: one pass per
sequence, hundreds of times faster), all four with --kind both. The estimated number of
passes is printed before the work starts. Input and output work as for embedding
('{PROG} --help').
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
        choices=POOLING_CHOICES,
        metavar="POOLING",
        help=f"one or more of: {' '.join(POOLING_CHOICES)} (several are concatenated; "
        "default: mean)",
    )
    p.add_argument("--layers", nargs="+", type=int, help="e.g. -1 (the default) or 0 6 12")
    p.add_argument("--layer-aggregation", choices=AGGREGATIONS)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def _sequence_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The options of every command that reads sequences (FASTA or a table) into features."""
    p = _parser(prog, description, epilog)
    p.add_argument("input", help="FASTA (plain or .gz), CSV, TSV or Parquet file")
    p.add_argument("-o", "--output", required=True, help="output file: .npy, .csv or .parquet")
    p.add_argument("--column", default="sequence", help="sequence column of a table")
    p.add_argument("--id-column", help="id column of a table (default: 'id' if present)")
    p.add_argument("--long-sequences", choices=POLICIES, help="default: error")
    p.add_argument(
        "--truncation-side",
        choices=TRUNCATION_SIDES,
        help="side that '--long-sequences truncate' cuts (right, the default, keeps the start)",
    )
    _model_options(p)
    p.add_argument("--cache", help="persistent embedding cache folder")
    return p


def _likelihood_parser() -> argparse.ArgumentParser:
    p = _sequence_parser(
        f"{PROG} likelihood",
        "Sequence likelihoods from RNA-FM's masked-LM head: pseudo-log-likelihood and/or\n"
        "unmasked log-likelihood, in total and per nucleotide. The pseudo-log-likelihood\n"
        "(the default) costs one forward pass per nucleotide; --kind unmasked costs one per\n"
        "sequence.",
        LIKELIHOOD_EXAMPLES,
    )
    p.add_argument(
        "--kind",
        choices=KINDS,
        help="pseudo (the default; one pass per nucleotide, slow), unmasked (one pass per "
        "sequence, fast) or both",
    )
    return p


def _convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{PROG} convert",
        description="Convert an official .pth or a multimolecule folder to the native "
        "safetensors layout; every tensor is verified after writing.",
    )
    p.add_argument("source")
    p.add_argument("destination")
    return p


def _cache_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} cache", description="Inspect or clear a cache.")
    p.add_argument("action", choices=("info", "clear"))
    p.add_argument("path", help="the cache folder (or .sqlite file) given as --cache")
    return p


# --------------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Embed ``args.input`` into ``args.output``; raise on failure, return 0."""
    outputs, source = _check_files(args)
    from ._embedder import RnaFmEmbedder

    emb = RnaFmEmbedder(
        **_given(args, *_COMMON, "pooling", "layers", "layer_aggregation"),
        **_given(args, "long_sequences", "truncation_side", "cache"),
        progress=_progress(args),
    )
    return _features_to_file(args, emb, outputs, source)


def run_likelihood(args: argparse.Namespace) -> int:
    """Likelihood features of ``args.input`` into ``args.output``; raise on failure."""
    outputs, source = _check_files(args)
    from ._likelihood import RnaFmLikelihood

    lik = RnaFmLikelihood(
        **_given(args, *_COMMON, "kind", "long_sequences", "truncation_side", "cache"),
        progress=_progress(args),
    )
    return _features_to_file(args, lik, outputs, source)


def _check_files(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The outputs and the input, checked before anything is imported or read."""
    outputs = _outputs(args.output)
    source = Path(args.input)
    _check_not_input(source, outputs)
    _input_kind(source)  # exists
    return outputs, source


def _likelihood_cost(estimator: Any, seqs: Any) -> None:
    """Say up front what a pseudo-log-likelihood costs: one forward pass per position."""
    if estimator.kind not in ("pseudo", "both"):
        return
    from ._family import family

    config, _, _ = estimator._settings()
    fam = family(config.alphabet)
    positions = int(sum(len(str(s)) for s in seqs)) // (3 if fam.unit == "codon" else 1)
    print(
        f"{PROG}: the pseudo-log-likelihood masks each {fam.unit} in turn: about {positions} "
        f"forward passes for {len(seqs)} sequence(s) ({PROG} likelihood --kind unmasked: "
        f"{len(seqs)} passes, one per sequence)",
        file=sys.stderr,
    )


def _features_to_file(
    args: argparse.Namespace, estimator: Any, outputs: list[Path], source: Path
) -> int:
    """Read, transform, write: the body of the embed and likelihood commands."""
    from ._cli_files import _check_ids_fit_lines, _read_input, _write_output

    seqs = _read_input(source, args.column, args.id_column)
    if len(outputs) == 2:
        _check_ids_fit_lines(seqs.index, outputs[1])
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        if hasattr(estimator, "kind"):
            _likelihood_cost(estimator, seqs)
        X = estimator.transform(seqs)
        names = estimator.get_feature_names_out()
    _write_output(outputs, seqs.index, X, names)
    print(f"{PROG}: wrote {X.shape[0]} x {X.shape[1]} features to {args.output}", file=sys.stderr)
    return 0


def run_cache(args: argparse.Namespace) -> int:
    from ._cache import EmbeddingCache

    cache = EmbeddingCache(args.path)
    if args.action == "clear" or cache.path.exists():
        if args.action == "clear":
            cache.clear()
        print(json.dumps(cache.info()))
        return 0
    raise _Error(f"no embedding cache at {cache.path}")


def run_convert(args: argparse.Namespace) -> int:
    from ._checkpoint import convert_checkpoint

    out = convert_checkpoint(args.source, args.destination)
    print(f"{PROG}: converted {args.source} to {out} (verified)", file=sys.stderr)
    return 0


# sub-command -> (parser factory, run function). The factory only builds an argparse parser
# (no torch, pandas or estimator import); the run function imports what it needs after its
# own file checks. Without a sub-command, rnafm-embed embeds (create_parser, run).
COMMANDS: dict[
    str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]
] = {
    "score": (score_parser, run_score),
    "likelihood": (_likelihood_parser, run_likelihood),
    "convert": (_convert_parser, run_convert),
    "cache": (_cache_parser, run_cache),
    "structure": (structure_parser, run_structure),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rnafm-embed``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cache = None
    try:
        if argv and argv[0] in COMMANDS:
            make_parser, command = COMMANDS[argv[0]]
            args = make_parser().parse_args(argv[1:])
        else:
            args, command = create_parser().parse_args(argv), run
        cache = getattr(args, "cache", None)
        return command(args)
    except _Error as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        kept = f" (cached batches are kept in {cache})" if cache else ""
        print(f"{PROG}: interrupted{kept}", file=sys.stderr)
        return 130
    except (ValueError, TypeError, KeyError, OSError, RuntimeError) as exc:
        if not _is_ours(exc):
            raise
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"{PROG}: error: {_in_cli_words(str(message))}", file=sys.stderr)
    return 1


def _is_ours(exc: BaseException) -> bool:
    """A user-facing failure: any ValueError, TypeError, KeyError or OSError, and the
    library's own errors (WeightsUnavailableError is a RuntimeError)."""
    if isinstance(exc, ValueError | TypeError | KeyError | OSError):
        return True
    errors = sys.modules.get("rnafm_sklearn._errors")
    return errors is not None and isinstance(exc, errors.WeightsUnavailableError)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
