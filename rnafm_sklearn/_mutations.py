"""Substitutions for zero-shot variant-effect scoring: parsing, validation and planning.

Pure Python: this module knows nothing of torch or scikit-learn. It turns mutation strings
(``"A12G"``, ``"A12G:C30U"``) or mutant sequences into :class:`Substitution` tuples in the
model's tokens (nucleotides for RNA-FM, codons for mRNA-FM), applies them, and plans the
masked passes that the masked-marginal convention needs.

Conventions of this module:

- Mutation strings use 1-based *nucleotide* positions, also for mRNA-FM (they are mapped to
  codons). :class:`Substitution` positions are 0-based *token* indices.
- ``"WT"`` (any case) is the wild type itself: an empty variant, whose score is 0. An empty
  string is an error (a missing mutation is not silently read as "no mutation").
- Reference and alternative letters must be ``A``, ``C``, ``G`` or ``U`` (``T`` is read as
  ``U``): substitution scores compare the masked-LM probabilities of two nucleotides, and the
  probability of an ambiguity code (``N``, ``R``, ...) or a gap is not a nucleotide's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from ._alphabet import Alphabet, get_alphabet, is_missing, normalize_sequence, strip_ascii
from ._family import family

__all__ = [
    "Substitution",
    "Variant",
    "all_single_mutants",
    "apply",
    "mutations_from_mutant",
    "parse_mutations",
]

NUCLEOTIDES = "ACGU"
_WILD_TYPE_WORDS = frozenset({"WT"})
# A gap '-' is accepted by the syntax so that its error can say what a gap means.
_TOKEN = re.compile(r"([A-Za-z-])([0-9]+)([A-Za-z-])")
_SEPARATORS = re.compile(r"[\s,;]")
# Digits beyond this are out of range for any sequence (and int() on thousands of digits fails).
_MAX_DIGITS = 12
_MAX_SHOWN = 40


@dataclass(frozen=True, order=True)
class Substitution:
    """One token replaced by another.

    Parameters
    ----------
    position : int
        0-based token index: a nucleotide for RNA-FM, a codon for mRNA-FM (codon ``i`` covers
        nucleotides ``3*i + 1`` to ``3*i + 3``, 1-based).
    ref : str
        The wild-type token (``"A"``; a codon such as ``"GAG"`` for mRNA-FM).
    alt : str
        The mutant token.

    Examples
    --------
    >>> from rnafm_sklearn._mutations import Substitution
    >>> Substitution(11, "A", "G")
    Substitution(position=11, ref='A', alt='G')
    """

    position: int
    ref: str
    alt: str


Variant = tuple[Substitution, ...]
"""Substitutions of one variant, sorted by position, at most one per token."""


def _as_alphabet(alphabet: Alphabet | str) -> Alphabet:
    return get_alphabet(alphabet) if isinstance(alphabet, str) else alphabet


def _shown(token: object) -> str:
    """``repr`` of a piece of user input, cut to a readable length."""
    if isinstance(token, str):
        return repr(token if len(token) <= _MAX_SHOWN else token[: _MAX_SHOWN - 3] + "...")
    text = repr(token)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _scored_letters(alphabet: Alphabet) -> str:
    model = family(alphabet.name).display_name
    if alphabet.k > 1:
        return f"{model} has codons of A, C, G and U only"
    return f"{model}'s substitution scores compare the four nucleotides A, C, G and U only"


def _check_letters(
    where: str, token: str, position: int, ref: str, alt: str, alphabet: Alphabet
) -> None:
    """Validate one nucleotide substitution whose reference already matches the wild type."""
    if ref not in NUCLEOTIDES:
        raise ValueError(
            f"{where}: {_shown(token)} mutates position {position}, which holds {ref!r} in the "
            f"wild type, an ambiguity code or gap: {_scored_letters(alphabet)}. Resolve the "
            "wild type's letter first (e.g. replace it with the observed base)."
        )
    if alt not in NUCLEOTIDES:
        gap = (
            " A gap is a deletion: only method='pseudo-likelihood' scores the ungapped mutant."
            if alt == "-"
            else ""
        )
        raise ValueError(
            f"{where}: {_shown(token)} substitutes {alt!r}: {_scored_letters(alphabet)}. Use "
            f"one of A, C, G, U (T is read as U).{gap}"
        )
    if alt == ref:
        raise ValueError(
            f"{where}: {_shown(token)} replaces {ref!r} by itself (a no-op). Remove it, or "
            "write 'WT' to score the wild type itself."
        )


def _to_tokens(wild_type: str, changes: dict[int, str], alphabet: Alphabet) -> Variant:
    """Group 0-based nucleotide changes into token substitutions, sorted by position."""
    k = alphabet.k
    by_token: dict[int, list[tuple[int, str]]] = {}
    for nt, alt in changes.items():
        by_token.setdefault(nt // k, []).append((nt, alt))
    variant = []
    for token in sorted(by_token):
        ref = wild_type[token * k : (token + 1) * k]
        alt = list(ref)
        for nt, letter in by_token[token]:
            alt[nt - token * k] = letter
        variant.append(Substitution(token, ref, "".join(alt)))
    return tuple(variant)


def _syntax_help(alphabet: Alphabet) -> str:
    codon = (
        " For mRNA-FM too, positions are nucleotide positions; they are mapped to codons."
        if alphabet.k > 1
        else ""
    )
    return (
        "Write <ref><position><alt> with a 1-based nucleotide position, e.g. 'A12G'; join "
        f"several with ':' (e.g. 'A12G:C30U'), or write 'WT' for the wild type itself.{codon}"
    )


def _malformed(token: str) -> str:
    if not token:
        return "An empty mutation (two ':' in a row, or one at an end)."
    if token.upper() in _WILD_TYPE_WORDS:
        return "'WT' cannot be combined with mutations."
    what = f"{_shown(token)} is not a substitution."
    if _SEPARATORS.search(token):
        what += " Mutations are separated by ':' and contain no spaces, ',' or ';'."
    elif len(token) >= 4 and token.isalpha():
        what += " It looks like a sequence: give a mutant as a sequence, not as a mutation."
    return what


def parse_mutations(
    text: object,
    wild_type: str,
    alphabet: Alphabet | str = "rna",
    where: str = "Mutation",
) -> Variant:
    """Parse ``"A12G:C30U"`` into the substitutions it makes to ``wild_type``.

    Parameters
    ----------
    text : str
        ``<ref><position><alt>`` tokens joined by ``':'``. Positions are 1-based nucleotide
        positions (for mRNA-FM too); letters are case-insensitive and ``T`` is read as ``U``;
        whitespace around tokens is ignored. ``"WT"`` (any case) is the wild type itself and
        gives an empty variant (score 0).
    wild_type : str
        The wild-type sequence; normalised here as :func:`~rnafm_sklearn.normalize_sequences`
        does (case, ``T``, gaps).
    alphabet : Alphabet or str, default="rna"
        ``"rna"`` (RNA-FM: one substitution per nucleotide) or ``"codon"`` (mRNA-FM: the
        nucleotide changes are grouped by codon; several in one codon make one substitution).
    where : str, default="Mutation"
        Names the row in error messages, e.g. ``"Mutation at row 3 (0-based; index 'x')"``.

    Returns
    -------
    Variant
        The substitutions, sorted by token position.

    Raises
    ------
    TypeError
        ``text`` is not a string.
    ValueError
        ``text`` is missing or empty, a token is malformed, a position is outside
        ``1..len(wild_type)``, a reference letter does not match the wild type, a letter is
        not A/C/G/U, a substitution is a no-op, a position is mutated twice, or (mRNA-FM) the
        wild type is not a whole number of codons. Each message names ``where`` and the token.

    Examples
    --------
    >>> from rnafm_sklearn._mutations import parse_mutations
    >>> parse_mutations("c3u : a1G", "ACCU")
    (Substitution(position=0, ref='A', alt='G'), Substitution(position=2, ref='C', alt='U'))
    >>> parse_mutations("wt", "ACCU")
    ()

    For mRNA-FM a synonymous change is a codon change, and changes in one codon merge:

    >>> parse_mutations("G3A", "GAGAAA", "codon")
    (Substitution(position=0, ref='GAG', alt='GAA'),)
    >>> parse_mutations("A4C:A6G", "GAGAAA", "codon")
    (Substitution(position=1, ref='AAA', alt='CAG'),)
    """
    alphabet = _as_alphabet(alphabet)
    if not isinstance(text, str):
        if is_missing(text):
            raise ValueError(
                f"{where} is missing ({_shown(text)}). Write 'WT' for the wild type itself, or "
                "drop the row; rnafm_sklearn never reads a missing mutation as 'no mutation'."
            )
        raise TypeError(
            f"{where} is of type {type(text).__name__} ({_shown(text)}); expected a string such as "
            "'A12G' or 'A12G:C30U'."
        )
    wild_type = normalize_sequence(wild_type, alphabet, f"{where}: the wild type")
    stripped = strip_ascii(text)
    if not stripped:
        raise ValueError(
            f"{where} is empty. {_syntax_help(alphabet)} An empty string is not read as the "
            "wild type, so that a missing value is never scored as 0."
        )
    if stripped.upper() in _WILD_TYPE_WORDS:
        return ()
    length = len(wild_type)
    changes: dict[int, str] = {}
    first_token: dict[int, str] = {}
    for raw in stripped.split(":"):
        token = strip_ascii(raw)
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(f"{where}: {_malformed(token)} {_syntax_help(alphabet)}")
        ref, digits, alt = match.groups()
        significant = digits.lstrip("0") or "0"
        position = int(significant) if len(significant) <= _MAX_DIGITS else length + 1
        if not 1 <= position <= length:
            shown = (
                significant
                if len(significant) <= _MAX_DIGITS
                else f"{significant[:_MAX_DIGITS]}... ({len(significant)} digits)"
            )
            raise ValueError(
                f"{where}: {_shown(token)} is at position {shown}, outside the wild type "
                f"(positions 1..{length}, 1-based)."
            )
        ref, alt = ref.upper().replace("T", "U"), alt.upper().replace("T", "U")
        actual = wild_type[position - 1]
        if ref != actual:
            raise ValueError(
                f"{where}: {_shown(token)} does not match the wild type: position {position} "
                f"is {actual!r} in the wild type, not {ref!r}. Positions are 1-based; check "
                "that the mutation belongs to this wild type."
            )
        _check_letters(where, token, position, ref, alt, alphabet)
        if position - 1 in changes:
            raise ValueError(
                f"{where}: position {position} is mutated twice "
                f"({_shown(first_token[position - 1])} and {_shown(token)}); a variant changes "
                "each position at most once. Score the alternatives as separate rows."
            )
        changes[position - 1] = alt
        first_token[position - 1] = token
    return _to_tokens(wild_type, changes, alphabet)


def mutations_from_mutant(
    wild_type: str,
    mutant: str,
    alphabet: Alphabet | str = "rna",
    where: str = "Mutant",
) -> Variant:
    """The substitutions that turn ``wild_type`` into ``mutant``.

    Parameters
    ----------
    wild_type, mutant : str
        Sequences of the same length, normalised here (case, ``T``, gaps).
    alphabet : Alphabet or str, default="rna"
        ``"rna"`` (per nucleotide) or ``"codon"`` (per codon; both sequences whole codons).
    where : str, default="Mutant"
        Names the row in error messages.

    Returns
    -------
    Variant
        Sorted by position; empty when the sequences are equal.

    Raises
    ------
    ValueError
        The lengths differ (substitution scores compare position by position; only
        ``method="pseudo-likelihood"`` compares sequences of different lengths), or a changed
        position holds a letter other than A/C/G/U in either sequence.

    Examples
    --------
    >>> from rnafm_sklearn._mutations import mutations_from_mutant
    >>> mutations_from_mutant("ACGU", "acgg")
    (Substitution(position=3, ref='U', alt='G'),)
    >>> mutations_from_mutant("GAGAAA", "GAAAAA", "codon")
    (Substitution(position=0, ref='GAG', alt='GAA'),)
    """
    alphabet = _as_alphabet(alphabet)
    wild_type = normalize_sequence(wild_type, alphabet, f"{where}: the wild type")
    mutant = normalize_sequence(mutant, alphabet, f"{where}: the mutant")
    if len(mutant) != len(wild_type):
        raise ValueError(
            f"{where} has {len(mutant)} nt but its wild type has {len(wild_type)} nt. The "
            "wt-marginal, masked-marginal and mutant-marginal scores compare the two sequences "
            "position by position (log p(mutant letter) - log p(wild-type letter) at each "
            "changed position), so an insertion or deletion has no such score. Only "
            "method='pseudo-likelihood' (PLL(mutant) - PLL(wild type)) compares sequences of "
            "different lengths; use it, or give a substitution-only mutant."
        )
    changes: dict[int, str] = {}
    for i, (ref, alt) in enumerate(zip(wild_type, mutant, strict=True)):
        if ref != alt:
            _check_letters(where, f"{ref}{i + 1}{alt}", i + 1, ref, alt, alphabet)
            changes[i] = alt
    return _to_tokens(wild_type, changes, alphabet)


def apply(
    wild_type: str,
    variant: Iterable[Substitution],
    alphabet: Alphabet | str = "rna",
    where: str = "Variant",
) -> str:
    """The mutant sequence: ``wild_type`` (normalised) with ``variant`` applied.

    Parameters
    ----------
    wild_type : str
        The wild-type sequence.
    variant : iterable of Substitution
        Token substitutions, as returned by :func:`parse_mutations`.
    alphabet : Alphabet or str, default="rna"
        The alphabet the substitutions' positions and tokens refer to.
    where : str, default="Variant"
        Names the row in error messages.

    Returns
    -------
    str
        The mutant, normalised.

    Raises
    ------
    ValueError
        A substitution is outside the wild type, its ``ref`` is not the wild type's token, or
        two substitutions share a position.

    Examples
    --------
    >>> from rnafm_sklearn._mutations import apply, parse_mutations
    >>> apply("acgu", parse_mutations("A1G:U4C", "ACGU"))
    'GCGC'
    """
    alphabet = _as_alphabet(alphabet)
    wild_type = normalize_sequence(wild_type, alphabet, f"{where}: the wild type")
    k = alphabet.k
    n_tokens = alphabet.n_tokens(wild_type)
    tokens = [wild_type[i : i + k] for i in range(0, len(wild_type), k)]
    seen: set[int] = set()
    for sub in variant:
        if not 0 <= sub.position < n_tokens:
            raise ValueError(
                f"{where}: {sub} is outside the wild type (token positions 0..{n_tokens - 1}, "
                "0-based)."
            )
        if sub.position in seen:
            raise ValueError(f"{where}: token position {sub.position} is substituted twice.")
        if tokens[sub.position] != sub.ref:
            raise ValueError(
                f"{where}: {sub} does not match the wild type, which has "
                f"{tokens[sub.position]!r} at token position {sub.position} (0-based)."
            )
        if len(sub.alt) != k or not set(sub.alt) <= set(NUCLEOTIDES):
            raise ValueError(
                f"{where}: {sub} has an alternative token that is not "
                f"{k} letter(s) of A, C, G, U."
            )
        seen.add(sub.position)
        tokens[sub.position] = sub.alt
    return "".join(tokens)


def all_single_mutants(
    wild_type: str, alphabet: Alphabet | str = "rna", where: str = "Wild type"
) -> list[str]:
    """Every single-nucleotide substitution of ``wild_type`` as a mutation string.

    Each position holding A, C, G or U gets the three other bases, in the order A, C, G, U;
    positions holding an ambiguity code or a gap are skipped. For mRNA-FM the strings are
    still nucleotide changes (each maps to one codon change in :func:`parse_mutations`).

    Parameters
    ----------
    wild_type : str
        The wild-type sequence (normalised here).
    alphabet : Alphabet or str, default="rna"
        ``"rna"`` or ``"codon"`` (the wild type must then be whole codons).
    where : str, default="Wild type"
        Names the row in error messages.

    Returns
    -------
    list of str
        ``3 * (number of A/C/G/U positions)`` strings, 1-based, by position.

    Examples
    --------
    >>> from rnafm_sklearn._mutations import all_single_mutants
    >>> all_single_mutants("AN")
    ['A1C', 'A1G', 'A1U']
    >>> len(all_single_mutants("ACGUAC", "codon"))
    18
    """
    wild_type = normalize_sequence(wild_type, _as_alphabet(alphabet), where)
    return [
        f"{ref}{i + 1}{alt}"
        for i, ref in enumerate(wild_type)
        if ref in NUCLEOTIDES
        for alt in NUCLEOTIDES
        if alt != ref
    ]
