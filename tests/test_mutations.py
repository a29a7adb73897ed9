"""Mutation strings and mutant sequences -> token substitutions (groundwork of variant scoring)."""

import doctest
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnafm_sklearn._mutations as mutations
from rnafm_sklearn import get_alphabet
from rnafm_sklearn._alphabet import row_name
from rnafm_sklearn._mutations import (
    Substitution,
    all_single_mutants,
    apply,
    mutations_from_mutant,
    parse_mutations,
)

WHERE = "Mutation at " + row_name(3, "x")  # "Mutation at row 3 (0-based; index 'x')"
WT = "ACGUACGUACGUNACG"  # 16 nt; 'N' at 13
SYNTAX = "Write <ref><position><alt> with a 1-based nucleotide position, e.g. 'A12G'"


def test_where_names_the_row():
    assert WHERE == "Mutation at row 3 (0-based; index 'x')"


# --- happy paths -------------------------------------------------------------------------------


def test_single():
    assert parse_mutations("A5G", WT, "rna", WHERE) == (Substitution(4, "A", "G"),)


def test_several_are_sorted_by_position():
    assert parse_mutations("U8C:A1G:G3A", WT) == (
        Substitution(0, "A", "G"),
        Substitution(2, "G", "A"),
        Substitution(7, "U", "C"),
    )


def test_lowercase_t_and_whitespace():
    expected = (Substitution(1, "C", "U"), Substitution(3, "U", "A"))
    assert parse_mutations("  c2t :\tT4a \n", WT) == expected
    # The wild type is normalised too (lowercase, DNA).
    assert parse_mutations("C2U:U4A", " acgtacgtacgtnacg ") == expected


@pytest.mark.parametrize("text", ["WT", "wt", " Wt "])
def test_wt_is_the_empty_variant(text):
    assert parse_mutations(text, WT) == ()


def test_leading_zeros_are_a_position():
    assert parse_mutations("A0005G", WT) == (Substitution(4, "A", "G"),)


# --- error paths: each names the row, the token and the fix -----------------------------------


def raises(match: str):
    return pytest.raises(ValueError, match=re.escape(match))


def test_empty_string_is_an_error():
    with raises(f"{WHERE} is empty. {SYNTAX}"):
        parse_mutations("  ", WT, "rna", WHERE)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_missing_is_an_error(missing):
    with raises(f"{WHERE} is missing ({missing!r}). Write 'WT'"):
        parse_mutations(missing, WT, "rna", WHERE)


def test_non_string_is_a_type_error():
    with pytest.raises(TypeError, match=re.escape(f"{WHERE} is of type int (12)")):
        parse_mutations(12, WT, "rna", WHERE)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("A12", "'A12' is not a substitution."),
        ("12G", "'12G' is not a substitution."),
        ("AG", "'AG' is not a substitution."),
        ("A1.5G", "'A1.5G' is not a substitution."),
        ("A 5G", "'A 5G' is not a substitution. Mutations are separated by ':'"),
        ("A1G,C2U", "'A1G,C2U' is not a substitution. Mutations are separated by ':'"),
        ("A1G;C2U", "'A1G;C2U' is not a substitution. Mutations are separated by ':'"),
        ("A1G::C2U", "An empty mutation (two ':' in a row, or one at an end)."),
        ("A1G:", "An empty mutation (two ':' in a row, or one at an end)."),
        ("WT:A1G", "'WT' cannot be combined with mutations."),
        ("ACGUACGU", "'ACGUACGU' is not a substitution. It looks like a sequence"),
        ("A\u00a01G", "'A\\xa01G' is not a substitution."),  # no-break space is not tolerated
        ("A١G", "'A١G' is not a substitution."),  # an Arabic-Indic digit is not a position
    ],
)
def test_malformed_token(text, message):
    with raises(f"{WHERE}: {message}"):
        parse_mutations(text, WT, "rna", WHERE)
    with raises(SYNTAX + "; join several with ':' (e.g. 'A12G:C30U'), or write 'WT'"):
        parse_mutations(text, WT, "rna", WHERE)


def test_malformed_token_is_truncated_in_the_message():
    with raises(f"{WHERE}: '{('ACGU' * 10)[:37]}...' is not a substitution."):
        parse_mutations("ACGU" * 100, WT, "rna", WHERE)


def test_codon_syntax_help_says_positions_are_nucleotides():
    with raises("For mRNA-FM too, positions are nucleotide positions"):
        parse_mutations("GAG1GAA", "GAGAAA", "codon", WHERE)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("A0G", "0"),
        ("A17G", "17"),
        ("A0017G", "17"),
        ("A99999999999999999999999G", "999999999999... (23 digits)"),
    ],
)
def test_position_out_of_range(text, shown):
    with raises(
        f"{WHERE}: {text!r} is at position {shown}, outside the wild type (positions 1..16, "
        "1-based)."
    ):
        parse_mutations(text, WT, "rna", WHERE)


@pytest.mark.parametrize("digits", ["0" * 5000 + "17", "1" * 5000, "0" * 4999 + "7" * 5000])
def test_position_of_thousands_of_digits_is_a_short_error_naming_the_row(digits):
    """Python refuses int() on over 4 300 digits; the message quotes the input cut short."""
    text = f"A{digits}G"
    with pytest.raises(ValueError, match=re.escape(f"{WHERE}: '{text[:37]}...'")) as err:
        parse_mutations(text, WT, "rna", WHERE)
    assert len(str(err.value)) < 300
    # leading zeros: the position is read, not refused
    expected = "17," if digits.endswith("017") else f"{digits.lstrip('0')[:12]}... ("
    assert f"is at position {expected}" in str(err.value)


def test_a_value_of_another_type_is_quoted_cut_short():
    with pytest.raises(TypeError, match=re.escape(f"{WHERE} is of type list ([1, 1, 1")) as err:
        parse_mutations([1] * 10_000, WT, "rna", WHERE)
    assert len(str(err.value)) < 200


def test_reference_mismatch():
    with raises(
        f"{WHERE}: 'A12G' does not match the wild type: position 12 is 'U' in the wild type, "
        "not 'A'. Positions are 1-based"
    ):
        parse_mutations("A1G:A12G", WT, "rna", WHERE)


def test_reference_mismatch_reads_t_as_u():
    assert parse_mutations("T12G", WT) == (Substitution(11, "U", "G"),)


def test_no_op_substitution():
    with raises(f"{WHERE}: 'a5A' replaces 'A' by itself (a no-op). Remove it, or write 'WT'"):
        parse_mutations("a5A", WT, "rna", WHERE)


@pytest.mark.parametrize("alt", ["N", "R", "X"])
def test_alt_must_be_a_nucleotide(alt):
    with raises(
        f"{WHERE}: 'A5{alt}' substitutes {alt!r}: RNA-FM's substitution scores compare the four "
        "nucleotides A, C, G and U only. Use one of A, C, G, U"
    ):
        parse_mutations(f"A5{alt}", WT, "rna", WHERE)


def test_alt_gap_points_to_pseudo_likelihood():
    with raises("'A5-' substitutes '-'") as info:
        parse_mutations("A5-", WT, "rna", WHERE)
    assert "only method='pseudo-likelihood' scores the ungapped mutant" in str(info.value)


def test_ambiguous_reference_is_an_error():
    with raises(
        f"{WHERE}: 'N13A' mutates position 13, which holds 'N' in the wild type, an ambiguity "
        "code or gap"
    ):
        parse_mutations("N13A", WT, "rna", WHERE)


def test_same_position_twice():
    with raises(
        f"{WHERE}: position 5 is mutated twice ('A5G' and 'a5c'); a variant changes each "
        "position at most once."
    ):
        parse_mutations("A5G:C2U:a5c", WT, "rna", WHERE)


def test_bad_wild_type_names_the_row():
    with raises(f"{WHERE}: the wild type contains characters that RNA-FM cannot read: 'X' at 3"):
        parse_mutations("A1G", "ACXU", "rna", WHERE)
    with raises(f"{WHERE}: the wild type is empty."):
        parse_mutations("A1G", " ", "rna", WHERE)


# --- mRNA-FM: nucleotide changes mapped to codons ---------------------------------------------

CDS = "AUGGAGAAAUAA"  # AUG GAG AAA UAA


def test_synonymous_change_is_a_codon_change():
    # GAG -> GAA (both Glu): still scored, as the codon change it is.
    assert parse_mutations("G6A", CDS, "codon") == (Substitution(1, "GAG", "GAA"),)


def test_two_mutations_in_one_codon_merge():
    assert parse_mutations("A9G:a7c:A5U", CDS, "codon") == (
        Substitution(1, "GAG", "GUG"),
        Substitution(2, "AAA", "CAG"),
    )


def test_codon_out_of_frame_is_an_error():
    with raises(
        f"{WHERE}: the wild type has 11 nt, not a multiple of 3: mRNA-FM reads whole codons."
    ):
        parse_mutations("A1G", CDS[:-1], "codon", WHERE)


def test_codon_ambiguous_alt_is_an_error():
    with raises(f"{WHERE}: 'A1N' substitutes 'N': mRNA-FM has codons of A, C, G and U only."):
        parse_mutations("A1N", CDS, "codon", WHERE)


def test_codon_reference_checked_per_nucleotide():
    with raises("position 4 is 'G' in the wild type, not 'A'"):
        parse_mutations("A4G", CDS, "codon", WHERE)


# --- mutant sequences --------------------------------------------------------------------------


def test_mutant_sequence():
    assert mutations_from_mutant(WT, "gcguacgcacgunacg") == (
        Substitution(0, "A", "G"),
        Substitution(7, "U", "C"),
    )
    assert mutations_from_mutant(WT, WT.lower()) == ()
    assert mutations_from_mutant(CDS, "AUGGAAAAGUAA", "codon") == (
        Substitution(1, "GAG", "GAA"),
        Substitution(2, "AAA", "AAG"),
    )


def test_mutant_of_another_length_explains_why():
    where = "Mutant at " + row_name(2)
    with raises(
        f"{where} has 17 nt but its wild type has 16 nt. The wt-marginal, masked-marginal and "
        "mutant-marginal scores compare the two sequences position by position"
    ) as info:
        mutations_from_mutant(WT, WT + "A", "rna", where)
    assert "Only method='pseudo-likelihood' (PLL(mutant) - PLL(wild type))" in str(info.value)


def test_mutant_with_ambiguity_code_is_an_error():
    with raises("Mutant: 'A5N' substitutes 'N'"):
        mutations_from_mutant(WT, "ACGUNCGUACGUNACG")
    with raises("Mutant: 'N13A' mutates position 13, which holds 'N'"):
        mutations_from_mutant(WT, "ACGUACGUACGUAACG")


def test_mutant_bad_sequence_names_which():
    with raises("Mutant at row 1 (0-based): the mutant contains characters"):
        mutations_from_mutant("ACGU", "ACGZ", "rna", "Mutant at " + row_name(1))
    with raises("Mutant: the mutant has 4 nt, not a multiple of 3"):
        mutations_from_mutant("ACG", "ACGU", "codon")


# --- apply -------------------------------------------------------------------------------------


def test_apply():
    assert apply(WT, parse_mutations("A1G:U8C", WT)) == "GCGUACGCACGUNACG"
    assert apply(CDS, parse_mutations("A9G:a7c:A5U", CDS, "codon"), "codon") == "AUGGUGCAGUAA"
    assert apply("acgt", ()) == "ACGU"


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ((Substitution(4, "A", "G"),), "is outside the wild type (token positions 0..3"),
        ((Substitution(0, "C", "G"),), "which has 'A' at token position 0"),
        ((Substitution(0, "A", "G"), Substitution(0, "A", "C")), "position 0 is substituted"),
        ((Substitution(0, "A", "N"),), "that is not 1 letter(s) of A, C, G, U"),
    ],
)
def test_apply_rejects_substitutions_that_do_not_fit(variant, message):
    with raises(message):
        apply("ACGU", variant)


# --- planning ----------------------------------------------------------------------------------


def test_positions_of_codons_are_codon_indices():
    variants = [parse_mutations(m, CDS, "codon") for m in ["A5U", "G6A", "A9G:A1G", "WT"]]
    assert [[s.position for s in v] for v in variants] == [[1], [1], [0, 2], []]


def test_all_single_mutants():
    singles = all_single_mutants(WT)
    assert len(singles) == 3 * 15  # 'N' at 13 skipped
    assert singles[:4] == ["A1C", "A1G", "A1U", "C2A"]
    assert not any(s.startswith("N") for s in singles)
    mutants = {apply(WT, parse_mutations(s, WT)) for s in singles}
    assert len(mutants) == 45 and WT not in mutants
    assert all(sum(a != b for a, b in zip(m, WT, strict=True)) == 1 for m in mutants)


def test_all_single_mutants_codon():
    singles = all_single_mutants(CDS, "codon")
    assert len(singles) == 3 * len(CDS)
    variants = [parse_mutations(s, CDS, "codon") for s in singles]
    assert [v[0].position for v in variants] == [i // 9 for i in range(36)]
    assert all(len(v) == 1 for v in variants)
    with raises("Wild type has 11 nt, not a multiple of 3"):
        all_single_mutants(CDS[:-1], "codon")


# --- round trips (hypothesis) ------------------------------------------------------------------


@st.composite
def wild_type_and_mutations(draw, alphabet):
    k = get_alphabet(alphabet).k
    letters = "ACGU" if k > 1 else "ACGUN"
    n = draw(st.integers(1, 20)) * k
    wt = draw(st.text(alphabet=letters, min_size=n, max_size=n))
    mutable = [i for i, c in enumerate(wt) if c != "N"]
    positions = draw(st.lists(st.sampled_from(mutable), unique=True) if mutable else st.just([]))
    alts = [draw(st.sampled_from([b for b in "ACGU" if b != wt[p]])) for p in positions]
    return wt, dict(zip(positions, alts, strict=True))


def spelled(draw, wt, changes):
    """A mutation string for ``changes``, in the given order, with random case, T and spaces."""
    tokens = []
    for p, alt in changes.items():
        token = f"{wt[p]}{p + 1}{alt}"
        if draw(st.booleans()):
            token = token.replace("U", "T")
        if draw(st.booleans()):
            token = token.lower()
        tokens.append(draw(st.sampled_from(["", " ", "\t"])) + token + draw(st.sampled_from(["", " "])))
    return ":".join(tokens) if tokens else draw(st.sampled_from(["WT", "wt"]))


@pytest.mark.parametrize("alphabet", ["rna", "codon"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_round_trip(alphabet, data):
    wt, changes = data.draw(wild_type_and_mutations(alphabet))
    text = spelled(data.draw, wt, changes)
    variant = parse_mutations(text, wt, alphabet)
    k = get_alphabet(alphabet).k

    # The mutant, built independently of the module.
    expected = list(wt)
    for p, alt in changes.items():
        expected[p] = alt
    expected = "".join(expected)
    mutant = apply(wt, variant, alphabet)
    assert mutant == expected

    assert [s.position for s in variant] == sorted({p // k for p in changes})
    assert all(s.ref != s.alt and len(s.ref) == len(s.alt) == k for s in variant)
    assert mutations_from_mutant(wt, mutant, alphabet) == variant


def test_docstring_examples():
    result = doctest.testmod(mutations, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 15 and result.failed == 0
