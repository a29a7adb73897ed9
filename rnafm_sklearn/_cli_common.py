"""What every ``rnafm-embed`` sub-command shares: names, parser pieces, messages.

The program name, the estimator parameter behind each option (:data:`OPTIONS`), the options
every command that loads a model takes, how given options become estimator parameters, and
library messages put in the command line's words. Nothing heavy is imported (no torch,
pandas or estimator): every parser is built from here before ``--help`` answers. ``_cli``
(``main`` and the embed, likelihood, convert and cache commands), ``_cli_score`` and
``_cli_structure`` import it.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from ._choices import DEFAULT_BATCH_TOKENS, DTYPE_NAMES

__all__ = [
    "OPTIONS",
    "PROG",
    "_COMMON",
    "_given",
    "_in_cli_words",
    "_model_options",
    "_parser",
    "_print_warning",
    "_progress",
]

PROG = "rnafm-embed"
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


def _parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="'rna-fm' (the default) or a checkpoint path")
    p.add_argument("--window-stride", type=int)
    p.add_argument("--device", help="auto (the default), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="default: float32")
    p.add_argument(
        "--batch-tokens", type=int, help=f"tokens per batch (CPU: {DEFAULT_BATCH_TOKENS['cpu']})"
    )
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)


# ----------------------------------------------------------------------------- options


_COMMON = ("model", "window_stride", "device", "dtype", "batch_tokens")


def _progress(args: argparse.Namespace) -> bool | str:
    return "auto" if args.progress is None else args.progress


def _given(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """The options given on the command line: the estimator's own defaults fill the rest."""
    out = {}
    for name in names:
        value = getattr(args, name)
        if value is None:
            continue
        if isinstance(value, list):  # nargs="+": one value is the value itself
            value = value if len(value) > 1 else value[0]
        out[name] = value
    return out


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
