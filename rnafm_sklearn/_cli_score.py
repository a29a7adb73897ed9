"""``rnafm-embed score``: a table of variants in, the same table with their scores out.

A sub-command of its own module, imported by ``_cli``; pandas and the scorer are imported by
:func:`run_score` after its file checks have passed.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from ._choices import METHODS
from ._cli_common import (
    _COMMON,
    PROG,
    _given,
    _model_options,
    _parser,
    _print_warning,
    _progress,
)
from ._cli_files import FASTA, SCORE_OUTPUTS, _check_not_input, _Error, _input_kind, _outputs

__all__ = ["run_score", "score_parser"]

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
OUTPUT (.csv, .tsv or .parquet) is the input table, every column kept in its order, with one
column per method appended: score_masked_marginal, score_wt_marginal, score_mutant_marginal,
score_pseudo_likelihood (an input column of that name is an error). Error messages name a row
by its number from 0 and its id (--id-column, else 'id' if present; ids must be unique).
A score is log p(mutant) - log p(wild type): above 0, the model prefers the mutant. The
checkpoint must carry the masked-LM head. The output is checked before scoring and written
all-or-nothing.
"""


def score_parser() -> argparse.ArgumentParser:
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
        choices=METHODS,
        metavar="METHOD",
        help=f"one or more of: {' '.join(METHODS)} (one output column each; default: "
        "masked-marginal)",
    )
    p.add_argument("--sequence-column", default="sequence", help="wild-type column")
    variant = p.add_mutually_exclusive_group()
    variant.add_argument(
        "--mutation-column", default="mutations", help="column of mutations such as A12G:C30U"
    )
    variant.add_argument("--mutant-column", help="column of mutant sequences (instead)")
    p.add_argument("--id-column", help="id column (default: 'id' if present, else the row)")
    p.add_argument("--long-sequences", choices=("error", "window"), help="default: error")
    _model_options(p)
    return p


def run_score(args: argparse.Namespace) -> int:
    """Score the variants of ``args.input`` into ``args.output``; raise on failure, return 0.

    The output is the input table, every column kept in order, with the scores appended.
    """
    outputs = _outputs(args.output, SCORE_OUTPUTS)
    source = Path(args.input)
    _check_not_input(source, outputs)
    kind = _input_kind(source)
    if kind in FASTA:
        raise _Error(
            f"{source} is FASTA, but scoring needs a table (.csv, .tsv or .parquet) with one row "
            "per variant: the wild type and its mutations (or the mutant sequence)"
        )
    import pandas as pd

    from ._cli_files import _ids, _read_table, _require_column, _write_frame
    from ._variant_scorer import RnaFmVariantScorer

    table = _read_table(source, kind, ".csv, .tsv or .parquet")
    variant_column = args.mutant_column or args.mutation_column
    _require_column(table, args.sequence_column, "--sequence-column", source)
    option = "--mutant-column" if args.mutant_column else "--mutation-column"
    _require_column(table, variant_column, option, source)
    ids = _ids(table, args.id_column, source)
    if len(table) == 0:
        raise _Error(f"no variants in {source}; nothing to score")
    scorer = RnaFmVariantScorer(
        **_given(args, *_COMMON, "method", "long_sequences"),
        sequence_column="wild_type",
        mutation_column="variant",
        mutant_column="variant" if args.mutant_column else None,
        progress=_progress(args),
    )
    names = list(scorer.get_feature_names_out())
    taken = [n for n in names if n in table.columns]
    if taken:
        raise _Error(
            f"{source} already has the column(s) {taken} that the scores are written to; "
            "rename or drop them (e.g. the output of an earlier run)"
        )
    # messages name a row by its number and, when there are ids, by its id
    X = pd.DataFrame(
        {
            "wild_type": table[args.sequence_column].to_numpy(),
            "variant": table[variant_column].to_numpy(),
        },
        index=ids if ids is not None else pd.RangeIndex(len(table)),
    )
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        scores = scorer.transform(X)
    frame = table.reset_index(drop=True)
    for j, name in enumerate(names):
        frame[name] = scores[:, j]
    _write_frame(outputs[0], frame)
    print(
        f"{PROG}: wrote {len(frame)} variant score(s) ({', '.join(names)}) to {args.output}",
        file=sys.stderr,
    )
    return 0
