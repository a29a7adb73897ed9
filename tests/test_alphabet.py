import re

import fm
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnafm_sklearn import get_alphabet, normalize_sequences

# RNA-FM-FACTS.md, "Alphabet": the ids every checkpoint was trained with.
EXPECTED_RNA = [
    "<cls>", "<pad>", "<eos>", "<unk>", "A", "C", "G", "U", "R", "Y", "K", "M", "S", "W",
    "B", "D", "H", "V", "N", "-", "<null_1>", "<null_2>", "<null_3>", "<null_4>", "<mask>",
]  # fmt: skip


def test_rna_ids_are_pinned():
    rna = get_alphabet("rna")
    assert list(rna.tokens) == EXPECTED_RNA
    assert (rna.cls_idx, rna.padding_idx, rna.eos_idx, rna.unk_idx, rna.mask_idx) == (
        0,
        1,
        2,
        3,
        24,
    )


@pytest.mark.parametrize(("name", "theme"), [("rna", "rna"), ("codon", "rna-3mer")])
def test_ids_match_official_alphabet(name, theme):
    ours = get_alphabet(name)
    official = fm.Alphabet.from_architecture("roberta_large", theme=theme)
    assert list(ours.tokens) == official.all_toks
    assert ours.mask_idx == official.mask_idx and ours.padding_idx == official.padding_idx


def test_codon_alphabet_has_73_tokens():
    codon = get_alphabet("codon")
    assert len(codon) == 73 and codon.tokens[4] == "GAG" and codon.tokens[-1] == "<mask>"
    assert codon.encode("AUGUAA") == [0, codon.index("AUG"), codon.index("UAA"), 2]


def test_encode_matches_official_batch_converter(real_sequences):
    rna = get_alphabet("rna")
    official = fm.Alphabet.from_architecture("roberta_large", theme="rna")
    convert = official.get_batch_converter()
    for seq in real_sequences:
        _, _, tokens = convert([("x", seq)])
        assert rna.encode(seq) == tokens[0].tolist()


def test_normalisation():
    out = normalize_sequences(["  acgt\n", "GG.A~N", "ryKMswbdhvn-", "u"])
    assert out == ["ACGU", "GG-A-N", "RYKMSWBDHVN-", "U"]


def test_invalid_characters_name_row_chars_and_positions():
    msg = "Sequence at row 1 (0-based) contains characters that RNA-FM cannot read: 'X' at 3, 'Z' at 5"
    with pytest.raises(ValueError, match=re.escape(msg)) as err:
        normalize_sequences(["ACGU", "acxgz"])
    assert "(1-based positions)" in str(err.value) and "'N'" in str(err.value)


def test_invalid_characters_are_capped_at_five():
    with pytest.raises(ValueError, match=re.escape("'X' at 5 (and 2 more)")):
        normalize_sequences(["XXXXXXX"])


def test_inner_whitespace_is_not_stripped():
    with pytest.raises(ValueError, match=re.escape("' ' at 3")):
        normalize_sequences(["AC GU"])


def test_index_labels_appear_in_messages():
    s = pd.Series(["ACGU", "AC!"], index=["seqA", "seqB"])
    with pytest.raises(ValueError, match=re.escape("Sequence at row 1 (0-based; index 'seqB')")):
        normalize_sequences(s, index=s.index)


@pytest.mark.parametrize("missing", [None, float("nan"), np.nan, pd.NA])
def test_missing_values(missing):
    with pytest.raises(ValueError, match=re.escape("Sequence at row 2 (0-based) is missing")):
        normalize_sequences(["A", "C", missing])


@pytest.mark.parametrize("value", [3, 2.5, b"ACGU", ["A"]])
def test_non_strings(value):
    with pytest.raises(TypeError, match=r"Sequence at row 0 \(0-based\) is of type \w+ .*expected a string"):
        normalize_sequences([value])


@pytest.mark.parametrize("empty", ["", "   ", "\n"])
def test_empty(empty):
    with pytest.raises(ValueError, match=re.escape("Sequence at row 0 (0-based) is empty")):
        normalize_sequences([empty])


def test_codon_errors():
    with pytest.raises(ValueError, match=r"row 0 \(0-based\) has 7 nt, not a multiple of 3.*last 1 nt"):
        normalize_sequences(["AUGAAAU"], "codon")
    with pytest.raises(ValueError, match=re.escape("mRNA-FM cannot read: 'N' at 4")):
        normalize_sequences(["AUGNAA"], "codon")


def test_unknown_alphabet():
    with pytest.raises(ValueError, match="Unknown alphabet 'dna'"):
        get_alphabet("dna")


def test_nan_float_is_not_confused_with_string_nan():
    # the letters N, A, N are valid IUPAC codes: the *string* "nan" is a sequence
    assert normalize_sequences(["nan"]) == ["NAN"]
    with pytest.raises(ValueError, match=re.escape("row 1 (0-based) is missing (nan)")):
        normalize_sequences(["nan", float("nan")])


# ----------------------------------------------------------------- fuzzing the normaliser

_ASCII_WS = " \t\n\r\x0b\x0c"
_RNA_LETTERS = set("ACGURYKMSWBDHVN-")


def _oracle(text: str) -> str:
    """The documented normalisation, written independently: ASCII only, nothing else."""
    out = []
    for c in text.strip(_ASCII_WS):
        if "a" <= c <= "z":
            c = chr(ord(c) - 32)
        out.append({"T": "U", ".": "-", "~": "-"}.get(c, c))
    return "".join(out)


_texts = st.one_of(
    st.text(max_size=40),  # any Unicode, including 'ß', ligatures, other whitespace
    st.text(alphabet="acgtuACGTUnN.~- \t\nrykmswbdhvRYKMSWBDHVxXßſﬅﬆ\u00a0İı0", max_size=40),
)


@settings(max_examples=3000, deadline=None)
@given(_texts)
def test_fuzz_normalisation_is_exactly_the_documented_one(text):
    expected = _oracle(text)
    if expected and set(expected) <= _RNA_LETTERS:
        assert normalize_sequences([text]) == [expected]
        return
    with pytest.raises(ValueError) as err:
        normalize_sequences([text])
    msg = str(err.value)
    assert msg.startswith("Sequence at row 0 (0-based)")
    if expected:  # a character outside the alphabet: the first one is named with its position
        i, bad = next((i, c) for i, c in enumerate(expected) if c not in _RNA_LETTERS)
        assert f"{bad!r} at {i + 1}" in msg
    else:
        assert "is empty" in msg


_objects = st.one_of(
    _texts, st.none(), st.integers(), st.floats(), st.binary(max_size=8), st.lists(st.text(), max_size=2)
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_objects, max_size=6))
def test_fuzz_any_row_gives_the_librarys_error_or_a_clean_result(rows):
    try:
        out = normalize_sequences(rows)
    except (ValueError, TypeError) as exc:
        assert str(exc).startswith("Sequence at row ")
        return
    assert len(out) == len(rows)
    assert all(set(s) <= _RNA_LETTERS and s for s in out)
