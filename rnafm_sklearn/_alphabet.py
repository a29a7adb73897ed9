"""Token vocabularies of the RNA-FM family and sequence normalisation.

Pure Python: this module knows nothing of torch or scikit-learn.

The order of tokens reproduces ``fm.Alphabet.from_architecture("roberta_large", theme)``
of the official implementation exactly: four specials, the standard tokens, ``<null_i>``
padding to a multiple of 8, then ``<mask>``.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral

from ._family import family

__all__ = ["Alphabet", "get_alphabet", "normalize_sequences", "row_name"]

_SPECIALS_BEFORE = ("<cls>", "<pad>", "<eos>", "<unk>")
_SPECIALS_AFTER = ("<mask>",)

# Single-nucleotide vocabulary of RNA-FM: the four bases, the IUPAC ambiguity codes and a gap.
_RNA_TOKENS = tuple("ACGURYKMSWBDHVN-")

# The 64 codons of mRNA-FM in the order of the official ``rnaseq_3mer_toks``.
_CODON_TOKENS = (
    "GAG AAG GAA CUG CAG GAU AAA GUG GAC AUG GCC AAC GCU AAU AUC UUC "
    "GGA AUU GGC UUU CCA AGC GCA UCU CUC ACC CAA CCU UCC ACA UUG GUU "
    "CUU UAC ACU CCC UCA GUC GGU CAC AGU UAU AGA CAU GGG UGG UGC AGG "
    "UGU AUA CGC UUA GCG CGG CCG GUA CUA ACG UCG CGA CGU UGA UAA UAG"
).split()

# Normalisation applied to every sequence after stripping surrounding ASCII whitespace:
# ASCII lowercase is upper-cased, DNA is read as RNA, and the alignment gaps '.' and '~' become
# '-'. Only ASCII is touched: str.upper() would turn 'ß' into 'SS' or 'ﬅ' into 'ST' (changing
# content and length), so every other character is left as it is and reported as invalid.
_RENAME = str.maketrans(
    {
        **dict(zip(string.ascii_lowercase, string.ascii_uppercase, strict=True)),
        "T": "U",
        "t": "U",
        ".": "-",
        "~": "-",
    }
)
_ASCII_WHITESPACE = string.whitespace
_MAX_REPORTED = 5
# Token ids are stored one byte per token (Alphabet.encode_body) until their batch runs.
_MAX_VOCABULARY = 256


def _padded_vocabulary(standard: Sequence[str]) -> tuple[str, ...]:
    tokens = list(_SPECIALS_BEFORE) + list(standard)
    tokens += [f"<null_{i + 1}>" for i in range((8 - len(tokens) % 8) % 8)]
    return tuple(tokens) + _SPECIALS_AFTER


@dataclass(frozen=True)
class Alphabet:
    """Vocabulary of one RNA-FM model.

    Parameters
    ----------
    name : str
        ``"rna"`` (single nucleotides, RNA-FM) or ``"codon"`` (mRNA-FM).
    standard_tokens : tuple of str
        The sequence tokens, in the official order.
    k : int
        Nucleotides per token: 1 for RNA-FM, 3 for mRNA-FM codons.

    Examples
    --------
    >>> from rnafm_sklearn import get_alphabet
    >>> rna = get_alphabet("rna")
    >>> len(rna), rna.tokens[4], rna.padding_idx
    (25, 'A', 1)
    >>> rna.encode("ACGU")
    [0, 4, 5, 6, 7, 2]
    """

    name: str
    standard_tokens: tuple[str, ...]
    k: int = 1
    tokens: tuple[str, ...] = field(init=False)
    letters: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        tokens = _padded_vocabulary(self.standard_tokens)
        if len(tokens) > _MAX_VOCABULARY:
            raise ValueError(
                f"Alphabet {self.name!r} has {len(tokens)} tokens; token ids are stored in one "
                f"byte, so at most {_MAX_VOCABULARY} are supported."
            )
        if any(len(t) != self.k for t in self.standard_tokens):
            raise ValueError(f"Alphabet {self.name!r}: every standard token must be {self.k} nt.")
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "letters", frozenset("".join(self.standard_tokens)))

    def __len__(self) -> int:
        return len(self.tokens)

    def index(self, token: str) -> int:
        """Id of ``token``.

        Parameters
        ----------
        token : str
            A token of the vocabulary: a nucleotide or IUPAC letter, a codon (mRNA-FM) or a
            special token such as ``"<cls>"``.

        Returns
        -------
        int
            Its row in the model's embedding matrix.

        Raises
        ------
        KeyError
            ``token`` is not in the vocabulary.

        Examples
        --------
        >>> from rnafm_sklearn import get_alphabet
        >>> rna = get_alphabet("rna")
        >>> rna.index("<cls>") == rna.cls_idx
        True
        """
        return self._ids[token]

    @property
    def _ids(self) -> dict[str, int]:
        ids = self.__dict__.get("_ids_cache")
        if ids is None:
            ids = {tok: i for i, tok in enumerate(self.tokens)}
            object.__setattr__(self, "_ids_cache", ids)
        return ids

    cls_idx = property(lambda self: self.index("<cls>"), doc="Id of ``<cls>``.")
    padding_idx = property(lambda self: self.index("<pad>"), doc="Id of ``<pad>``.")
    eos_idx = property(lambda self: self.index("<eos>"), doc="Id of ``<eos>``.")
    unk_idx = property(lambda self: self.index("<unk>"), doc="Id of ``<unk>``.")
    mask_idx = property(lambda self: self.index("<mask>"), doc="Id of ``<mask>``.")

    def n_tokens(self, sequence: str) -> int:
        """Number of model tokens (without ``<cls>``/``<eos>``) of a normalised sequence.

        Parameters
        ----------
        sequence : str
            A normalised sequence (see :func:`normalize_sequences`).

        Returns
        -------
        int
            Its length in nucleotides (RNA-FM) or in whole codons (mRNA-FM).

        Raises
        ------
        None

        Examples
        --------
        >>> from rnafm_sklearn import get_alphabet
        >>> get_alphabet("rna").n_tokens("ACGUAC"), get_alphabet("codon").n_tokens("ACGUAC")
        (6, 2)
        """
        return len(sequence) // self.k

    def encode(self, sequence: str) -> list[int]:
        """Token ids of a normalised, validated sequence, with ``<cls>`` and ``<eos>``.

        Parameters
        ----------
        sequence : str
            Normalised and checked (see :meth:`check`).

        Returns
        -------
        list of int
            ``[cls_idx, ..., eos_idx]``.

        Raises
        ------
        KeyError
            A token outside the vocabulary (call :meth:`check` first for a clear message).

        Examples
        --------
        >>> from rnafm_sklearn import get_alphabet
        >>> rna = get_alphabet("rna")
        >>> ids = rna.encode("ACGU")
        >>> len(ids), ids[0] == rna.cls_idx, ids[-1] == rna.eos_idx
        (6, True, True)
        """
        ids = self._ids
        k = self.k
        body = [ids[sequence[i : i + k]] for i in range(0, len(sequence), k)]
        return [self.cls_idx, *body, self.eos_idx]

    def encode_body(self, sequence: str) -> bytes:
        """Compact token ids (one byte each) of a normalised sequence, without specials.

        Parameters
        ----------
        sequence : str
            Normalised and checked (see :meth:`check`).

        Returns
        -------
        bytes
            One byte per token (nucleotide or codon).

        Raises
        ------
        KeyError
            A codon outside the vocabulary (mRNA-FM; call :meth:`check` first).

        Examples
        --------
        >>> from rnafm_sklearn import get_alphabet
        >>> rna = get_alphabet("rna")
        >>> list(rna.encode_body("ACGU")) == rna.encode("ACGU")[1:-1]
        True
        """
        if self.k == 1:
            table = self.__dict__.get("_table")
            if table is None:
                table = str.maketrans({t: chr(i) for i, t in enumerate(self.tokens) if len(t) == 1})
                object.__setattr__(self, "_table", table)
            return sequence.translate(table).encode("latin-1")
        ids = self._ids
        return bytes(ids[sequence[i : i + self.k]] for i in range(0, len(sequence), self.k))

    def check(self, sequence: str, where: str) -> None:
        """Raise ``ValueError`` if a normalised ``sequence`` cannot be tokenised exactly.

        Parameters
        ----------
        sequence : str
            A normalised sequence.
        where : str
            How the error names the sequence, e.g. ``"Sequence at row 3 (0-based)"``.

        Returns
        -------
        None

        Raises
        ------
        ValueError
            Characters the model cannot read (listed with their 1-based positions), or for
            mRNA-FM a length that is not a whole number of codons or an ambiguous codon.

        Examples
        --------
        >>> from rnafm_sklearn import get_alphabet
        >>> get_alphabet("rna").check("ACGU", "row 0")
        >>> try:
        ...     get_alphabet("rna").check("ACXU", "row 1")
        ... except ValueError as err:
        ...     print(str(err)[:40])
        row 1 contains characters that RNA-FM ca
        """
        bad = set(sequence) - self.letters
        if bad:
            hits = [(i + 1, c) for i, c in enumerate(sequence) if c in bad]
            shown = ", ".join(f"{c!r} at {pos}" for pos, c in hits[:_MAX_REPORTED])
            more = f" (and {len(hits) - _MAX_REPORTED} more)" if len(hits) > _MAX_REPORTED else ""
            allowed = "".join(sorted(self.letters - {"-"})) + " and '-'"
            if self.k > 1:
                allowed = "ACGU"
            raise ValueError(
                f"{where} contains characters that {self._model} cannot read: {shown}{more} "
                f"(1-based positions). Allowed: {allowed}; lowercase is upper-cased, T is read "
                "as U, '.' and '~' as the gap '-'. Remove or replace these characters "
                + ("(e.g. with 'N')." if self.k == 1 else "before embedding.")
            )
        if self.k > 1 and len(sequence) % self.k:
            raise ValueError(
                f"{where} has {len(sequence)} nt, not a multiple of {self.k}: {self._model} "
                f"reads whole codons. The last {len(sequence) % self.k} nt form a partial codon "
                "at the end; trim it or check the reading frame."
            )

    @property
    def _model(self) -> str:
        return family(self.name).display_name


_ALPHABETS = {
    "rna": Alphabet("rna", _RNA_TOKENS, k=1),
    "codon": Alphabet("codon", tuple(_CODON_TOKENS), k=3),
}


def get_alphabet(name: str) -> Alphabet:
    """Return the alphabet ``"rna"`` (RNA-FM) or ``"codon"`` (mRNA-FM).

    Parameters
    ----------
    name : {"rna", "codon"}
        ``"rna"``: RNA-FM's 25 tokens (nucleotides, IUPAC codes, gap and special tokens);
        ``"codon"``: mRNA-FM's codon vocabulary.

    Returns
    -------
    Alphabet
        The shared, immutable alphabet object.

    Raises
    ------
    ValueError
        For any other name; the message lists the known ones.

    Examples
    --------
    >>> from rnafm_sklearn import get_alphabet
    >>> len(get_alphabet("codon"))
    73
    """
    try:
        return _ALPHABETS[name]
    except KeyError:
        raise ValueError(
            f"Unknown alphabet {name!r}; expected one of {sorted(_ALPHABETS)}."
        ) from None


def row_name(i: int, label: object = None) -> str:
    """``"row 3 (0-based)"``, or ``"row 3 (0-based; index 'seqB')"`` when the label says more.

    Rows are counted from 0 as in pandas' ``iloc``; positions inside a sequence are 1-based
    (and say so where they are reported).
    """
    if label is None or (isinstance(label, Integral) and label == i):
        return f"row {i} (0-based)"
    return f"row {i} (0-based; index {label!r})"


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return (
            isinstance(value, float) and math.isnan(value) or str(value) in ("nan", "NaT", "<NA>")
        )
    except Exception:  # pragma: no cover - exotic objects with a failing __str__
        return False


def normalize_sequences(
    sequences: Iterable[object],
    alphabet: Alphabet | str = "rna",
    *,
    index: Sequence[object] | None = None,
) -> list[str]:
    """Validate and normalise sequences for an RNA-FM model.

    Each sequence is stripped of surrounding ASCII whitespace, ASCII letters are upper-cased,
    ``T`` is read as ``U``, and ``.``/``~`` as the gap ``-``. Nothing else is normalised: a
    non-ASCII character (``'ß'``, a non-breaking space) is reported like any other invalid
    one, never case-mapped. Nothing is ever dropped, truncated or replaced by ``<unk>``:
    anything the model cannot read exactly raises an error naming the row (0-based) and the
    positions (1-based).

    Parameters
    ----------
    sequences : iterable of str
        The sequences.
    alphabet : Alphabet or str, default="rna"
        The vocabulary to check against.
    index : sequence, optional
        Row labels (e.g. a pandas index) quoted in error messages next to the position.

    Returns
    -------
    list of str
        The normalised sequences, in input order.

    Raises
    ------
    TypeError
        A row holds something other than a string.
    ValueError
        A row is missing (None/NaN), empty, or has characters outside the alphabet.

    Examples
    --------
    >>> from rnafm_sklearn import normalize_sequences
    >>> normalize_sequences([" acgt ", "GG.A~N"])
    ['ACGU', 'GG-A-N']
    """
    if isinstance(alphabet, str):
        alphabet = get_alphabet(alphabet)
    labels = list(index) if index is not None else None
    return [
        normalize_sequence(
            seq, alphabet, "Sequence at " + row_name(i, labels[i] if labels is not None else None)
        )
        for i, seq in enumerate(sequences)
    ]


def normalize_sequence(sequence: object, alphabet: Alphabet, where: str) -> str:
    """One sequence normalised as :func:`normalize_sequences` does; errors start with ``where``."""
    if not isinstance(sequence, str):
        if _is_missing(sequence):
            raise ValueError(
                f"{where} is missing ({sequence!r}). Drop or fill missing sequences before "
                "embedding; rnafm_sklearn never drops rows silently."
            )
        raise TypeError(
            f"{where} is of type {type(sequence).__name__} ({sequence!r}); expected a string of "
            "nucleotides."
        )
    norm = strip_ascii(sequence).translate(_RENAME)
    if not norm:
        raise ValueError(f"{where} is empty. RNA-FM needs at least one nucleotide.")
    alphabet.check(norm, where)
    return norm


def strip_ascii(text: str) -> str:
    """``text`` without surrounding ASCII whitespace (other whitespace is content)."""
    return text.strip(_ASCII_WHITESPACE)


def is_missing(value: object) -> bool:
    """None, NaN, NaT or pandas' NA: a missing value, not a sequence."""
    return _is_missing(value)
