"""From variant rows to scores: each row checked and parsed, the passes planned and summed.

:func:`parse_variants` turns mutation strings or mutant sequences into substitutions and
reports every bad row in one error; :func:`warn_many_substitutions` and
:func:`check_scored_positions` guard the conventions against mutants they would score wrongly;
:class:`VariantPlan` deduplicates the masked-LM passes a set of variants needs and sums their
log-probabilities into one column per method.
"""

from __future__ import annotations

import numpy as np

from ._alphabet import Alphabet, row_name
from ._errors import warn
from ._family import family
from ._lm import LogProbs
from ._mutations import Variant, mutations_from_mutant, parse_mutations

__all__ = [
    "VariantPlan",
    "check_scored_positions",
    "encode_shared",
    "parse_variants",
    "warn_many_substitutions",
]


_MAX_LISTED = 20  # rows listed in one error or warning
# A mutant sequence with more substitutions than this, or that differs in more than this
# fraction of its positions, is likely an insertion or deletion written as a sequence.
_MANY_SUBSTITUTIONS = 10
_MANY_FRACTION = 0.2


def parse_variants(
    wts: list[str],
    values: list[object],
    alphabet: Alphabet,
    is_mutation: bool,
    index: list[object] | None,
) -> list[Variant]:
    """Every row's substitutions; every bad row reported in one error."""
    variants: list[Variant] = []
    problems: list[Exception] = []
    for i, wt in enumerate(wts):
        try:
            variants.append(_variant(wt, values[i], alphabet, is_mutation, index, i))
        except (ValueError, TypeError) as exc:
            problems.append(exc)
    _raise_all(problems, len(wts), "mutations" if is_mutation else "mutants")
    return variants


def _variant(
    wt: str,
    value: object,
    alphabet: Alphabet,
    is_mutation: bool,
    index: list[object] | None,
    i: int,
) -> Variant:
    label = None if index is None else index[i]
    if is_mutation:
        return parse_mutations(value, wt, alphabet, f"Mutation at {row_name(i, label)}")
    return mutations_from_mutant(wt, value, alphabet, f"Mutant at {row_name(i, label)}")


class VariantPlan:
    """The passes a set of variants needs, deduplicated, and the sums that make the scores."""

    def __init__(self, lp, methods, wt_tokens, mt_tokens, variants, alphabet):
        self.lp, self.methods = lp, methods
        self.wt, self.mt, self.variants = wt_tokens, mt_tokens, variants
        self.col = {tok: j for j, tok in enumerate(lp.tokens)}
        self.sites = [
            (t, s.position) for t, v in zip(self.wt, variants or [], strict=False) for s in v
        ]

    def n_passes(self) -> int:
        lp, n = self.lp, 0
        if "wt-marginal" in self.methods:
            n += lp.n_unmasked_passes(self.wt)
        if "mutant-marginal" in self.methods:
            n += lp.n_unmasked_passes(self.mt)
        if "masked-marginal" in self.methods:
            n += len(set(self.sites))
        if "pseudo-likelihood" in self.methods:
            n += sum(len(lp.scorable(t)) for t in set(self.wt) | set(self.mt))
        return n

    def _marginal(self, log_probs: list[np.ndarray]) -> np.ndarray:
        """Sum over each variant's substitutions of lp[i, alt] - lp[i, ref]."""
        out = np.zeros(len(log_probs), np.float64)
        for k, (lp, variant) in enumerate(zip(log_probs, self.variants, strict=True)):
            for s in variant:
                out[k] += float(lp[s.position, self.col[s.alt]]) - float(
                    lp[s.position, self.col[s.ref]]
                )
        return out

    def _masked_marginal(self) -> np.ndarray:
        """The masked-marginal sums from one ``(C,)`` row per distinct (wild type, position).

        Only the rows that are read are kept: memory grows with the distinct mutated
        positions, not with the number of variants times the wild type's length.
        """
        sites = list(dict.fromkeys(self.sites))
        values = self.lp.masked(sites)
        row = {site: k for k, site in enumerate(sites)}
        out = np.zeros(len(self.wt), np.float64)
        for k, (t, variant) in enumerate(zip(self.wt, self.variants, strict=True)):
            for s in variant:
                lp = values[row[(t, s.position)]]
                out[k] += float(lp[self.col[s.alt]]) - float(lp[self.col[s.ref]])
        return out

    def run(self) -> np.ndarray:
        columns = []
        if not self.wt:
            return np.empty((0, len(self.methods)), np.float64)
        for method in self.methods:
            if method == "wt-marginal":
                columns.append(self._marginal(self.lp.unmasked(self.wt)))
            elif method == "mutant-marginal":
                columns.append(self._marginal(self.lp.unmasked(self.mt)))
            elif method == "masked-marginal":
                columns.append(self._masked_marginal())
            else:
                pll = self.lp.pseudo_log_likelihood(self.mt + self.wt)[:, 0]
                n = len(self.mt)
                columns.append(pll[:n] - pll[n:])
        return np.stack(columns, axis=1)


def encode_shared(sequences: list[str], alphabet: Alphabet) -> list[bytes]:
    """Token lists, one object per distinct sequence (a wild type repeated on each of its
    thousands of variants is held once)."""
    seen: dict[str, bytes] = {}
    out = []
    for s in sequences:
        tokens = seen.get(s)
        if tokens is None:
            tokens = seen[s] = alphabet.encode_body(s)
        out.append(tokens)
    return out


def _listed(rows: list[int], index: list[object] | None) -> str:
    """The first rows by name, and how many more."""
    shown = ", ".join(row_name(i, None if index is None else index[i]) for i in rows[:_MAX_LISTED])
    more = f" and {len(rows) - _MAX_LISTED} more" if len(rows) > _MAX_LISTED else ""
    return shown + more


def _raise_all(problems: list[Exception], total: int, what: str) -> None:
    """Raise one error for every bad row (each message names its row): the first 20 and a count.

    A single problem is raised as it is (its type kept).
    """
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    shown = "\n".join(f"  {exc}" for exc in problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    kind = TypeError if all(isinstance(p, TypeError) for p in problems) else ValueError
    raise kind(f"{len(problems)} of {total} {what} cannot be scored:\n{shown}{more}")


def warn_many_substitutions(
    variants: list[Variant], wt_tokens: list[bytes], index: list[object] | None
) -> None:
    """Warn once about mutants that look like insertions or deletions written as sequences."""
    rows = [
        i
        for i, (v, t) in enumerate(zip(variants, wt_tokens, strict=True))
        if len(v) > _MANY_SUBSTITUTIONS or (len(v) > 1 and len(v) > _MANY_FRACTION * len(t))
    ]
    if rows:
        warn(
            f"{len(rows)} mutant(s) differ from their wild type in more than "
            f"{_MANY_SUBSTITUTIONS} positions or in over {_MANY_FRACTION:.0%} of them: "
            f"{_listed(rows, index)}. Each is scored as that many substitutions. An insertion "
            "or deletion? use method='pseudo-likelihood', which compares sequences of "
            "different lengths (give the mutant without gaps)."
        )


def check_scored_positions(
    lp: LogProbs,
    alphabet: Alphabet,
    wt_tokens: list[bytes],
    mt_tokens: list[bytes],
    index: list[object] | None,
) -> None:
    """The pseudo-likelihood difference needs the same kind of positions in both sums.

    A PLL sums over the A/C/G/U positions only (codons of them for mRNA-FM): a mutant holding
    ``N`` where its wild type holds a nucleotide would drop terms and score higher. Of equal
    length, wild type and mutant must have their other tokens (IUPAC codes, gaps) at the same
    positions; of different lengths, the same such tokens in the same order.
    """
    unit = family(alphabet.name).unit
    problems: list[Exception] = []
    for i, (w, m) in enumerate(zip(wt_tokens, mt_tokens, strict=True)):
        if w == m:
            continue
        tw, tm = np.frombuffer(w, np.uint8), np.frombuffer(m, np.uint8)
        sw, sm = lp.column[tw] >= 0, lp.column[tm] >= 0
        if len(w) == len(m):
            differ = np.flatnonzero(sw != sm)
            if len(differ) == 0:
                continue
            p = int(differ[0])
            what = (
                f"{unit} {p + 1} (1-based) holds {alphabet.tokens[m[p]]!r} in the mutant but "
                f"{alphabet.tokens[w[p]]!r} in the wild type"
            )
        else:
            if np.array_equal(tw[~sw], tm[~sm]):
                continue
            what = (
                f"the mutant holds {int((~sm).sum())} ambiguity code(s) or gap(s), the wild "
                f"type {int((~sw).sum())} (they must be the same, in the same order)"
            )
        label = None if index is None else index[i]
        problems.append(
            ValueError(
                f"Mutant at {row_name(i, label)}: {what}. A pseudo-likelihood sums over A/C/G/U "
                "positions only, so the two sums would not cover corresponding positions (an N "
                "would drop a term and raise the score). Scored positions must correspond: "
                "resolve ambiguity codes in both, and write a deletion by leaving its letters "
                "out, not as '-'."
            )
        )
    _raise_all(problems, len(wt_tokens), "mutants")
