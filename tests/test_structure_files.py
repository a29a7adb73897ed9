"""Structure files (dot-bracket FASTA, CT, BPSEQ), dot-bracket <-> pairs, and the pair F1."""

import os
import string

import numpy as np
import pandas as pd
import pytest
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.base import BaseEstimator
from sklearn.metrics import make_scorer

from rnafm_sklearn import base_pair_f1, read_structures, write_structures
from rnafm_sklearn._structure_files import dot_bracket_to_pairs, pairs_to_dot_bracket

SAMPLE = FIXTURES / "structures" / "bprna_ts0_sample.dbn"
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- dot-bracket <-> pairs


def test_dot_bracket_tiers_and_unpaired_characters():
    pairs = dot_bracket_to_pairs("([{<Aa>}])-,_:~.")
    assert pairs.tolist() == [[0, 9], [1, 8], [2, 7], [3, 6], [4, 5]]
    assert pairs.dtype == np.int64
    assert dot_bracket_to_pairs("(.[.).]").tolist() == [[0, 4], [2, 6]]
    assert dot_bracket_to_pairs("....").shape == (0, 2)
    assert dot_bracket_to_pairs("").shape == (0, 2)


@pytest.mark.parametrize(
    ("structure", "message"),
    [
        ("((..)", r"'\(' at position 1 is never closed"),
        ("(..))", r"'\)' at position 5 closes no '\('"),
        ("(..]", r"'\]' at position 4 closes no '\['"),
        ("((*))", r"unknown dot-bracket character '\*' at position 3"),
        ("(( ))", r"unknown dot-bracket character ' ' at position 3"),
    ],
)
def test_bad_dot_bracket_names_position_and_character(structure, message):
    with pytest.raises(ValueError, match=message):
        dot_bracket_to_pairs(structure)


def test_pairs_to_dot_bracket_puts_the_largest_nested_set_in_round_brackets():
    # three crossing helices: the 3-pair helix goes to (), then the largest crossing-free
    # set of the rest, (6, 14) and (7, 13), to []; (4, 12) crosses both and goes to {}
    pairs = [[0, 10], [1, 9], [2, 8], [4, 12], [6, 14], [7, 13]]
    assert pairs_to_dot_bracket(pairs, 15) == "(((.{.[[))).}]]"
    assert pairs_to_dot_bracket(np.empty((0, 2)), 3) == "..."
    assert pairs_to_dot_bracket([(5, 1)], 6) == ".(...)"  # (j, i) is read as (i, j)


@pytest.mark.parametrize(
    ("pairs", "length", "message"),
    [
        ([[0, 3], [3, 5]], 6, "base 3 is in more than one pair"),
        ([[0, 3], [0, 3]], 6, "base 0 is in more than one pair"),
        ([[2, 2]], 6, "base 2 is paired with itself"),
        ([[0, 6]], 6, "base index 6 is out of range for a sequence of length 6"),
        ([[-1, 3]], 6, "base index -1 is out of range"),
        ([[0, 1, 2]], 6, r"\(n, 2\) array"),
        ([[0.5, 3]], 6, "integer base indices"),
        ([[0, 3]], -1, "length must be a non-negative integer"),
    ],
)
def test_bad_pairs_are_refused(pairs, length, message):
    with pytest.raises(ValueError, match=message):
        pairs_to_dot_bracket(pairs, length)


def test_more_than_thirty_crossing_tiers_is_refused():
    n = 31  # pairs (k, n + k) all cross each other: 31 tiers
    with pytest.raises(ValueError, match="more than 30 crossing tiers"):
        pairs_to_dot_bracket([[k, n + k] for k in range(n)], 2 * n)


@st.composite
def pairings(draw):
    """Any valid pairing (pseudoknots included): a random matching of random bases."""
    length = draw(st.integers(0, 60))
    order = draw(st.permutations(range(length)))
    n_pairs = draw(st.integers(0, length // 2))
    pairs = sorted(tuple(sorted(order[2 * k : 2 * k + 2])) for k in range(n_pairs))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), length


@FAST
@given(pairings())
def test_pairs_round_trip_through_dot_bracket(case):
    pairs, length = case
    structure = pairs_to_dot_bracket(pairs, length)
    assert len(structure) == length
    assert np.array_equal(dot_bracket_to_pairs(structure), pairs)


def test_tiers_written_for_the_bprna_sample_are_the_published_ones():
    """The sample's strings were written by the data set's converter (max-nested tiers)."""
    df = read_structures(SAMPLE)
    for structure in df["structure"]:
        assert pairs_to_dot_bracket(dot_bracket_to_pairs(structure), len(structure)) == structure


# ---------------------------------------------------------------- reading and writing


def test_bprna_sample_reads_with_its_pseudoknots():
    df = read_structures(SAMPLE)
    assert df.shape == (20, 3)
    assert df["id"].iloc[0] == "633123"
    assert df["structure"].str.contains(r"\[").sum() == 6
    assert df["structure"].str.contains(r"\{").sum() == 2
    assert (df["sequence"].str.len() == df["structure"].str.len()).all()


@pytest.mark.parametrize(
    ("fmt", "per_file"),
    [("dot-bracket", False), ("dot-bracket", True), ("ct", False), ("ct", True), ("bpseq", None)],
)
def test_real_data_round_trip_keeps_ids_sequences_and_pseudoknots(tmp_path, fmt, per_file):
    df = read_structures(SAMPLE)
    target = tmp_path / ("out" if per_file in (True, None) else f"out.{fmt[:2]}")
    write_structures(df, target, fmt, one_file_per_record=per_file)
    if per_file is not False:
        assert sorted(p.stem for p in target.iterdir()) == sorted(df["id"])
    back = read_structures(target, format=fmt if per_file is False else None)
    key = back.set_index("id").loc[df["id"]].reset_index()
    assert key.values.tolist() == df.values.tolist()


def test_structures_given_as_pair_arrays_are_written_too(tmp_path):
    df = pd.DataFrame(
        {"id": ["a"], "sequence": ["GGGGAAACCCC"], "structure": [np.array([[0, 9], [1, 10]])]}
    )
    write_structures(df, tmp_path / "a.db")
    assert (tmp_path / "a.db").read_text() == ">a\nGGGGAAACCCC\n([.......)]\n"


def test_ct_layout_is_standard_with_zero_after_the_last_base(tmp_path):
    df = pd.DataFrame({"id": ["x y"], "sequence": ["GCAAAGC"], "structure": ["((...))"]})
    write_structures(df, tmp_path / "x.ct", "ct")
    lines = (tmp_path / "x.ct").read_text().splitlines()
    assert lines[0] == "7\tx y"
    assert lines[1].split() == ["1", "G", "0", "2", "7", "1"]
    assert lines[-1].split() == ["7", "C", "6", "0", "1", "7"]
    assert read_structures(tmp_path / "x.ct")["id"].tolist() == ["x y"]  # title with a space


def test_official_rnafm_ct_with_n_plus_one_next_column_is_read(tmp_path):
    """redevelop/engine/predictor.py matrix2ct writes next = i + 1 on every row, L + 1 last."""
    rows = ["5\tofficial"] + [
        f"{i}\t{b}\t{i - 1}\t{i + 1}\t{p}\t{i}"
        for i, b, p in zip(range(1, 6), "GAAAC", [5, 0, 0, 0, 1], strict=True)
    ]
    (tmp_path / "o.ct").write_text("\n".join(rows) + "\n")
    assert read_structures(tmp_path / "o.ct").values.tolist() == [["official", "GAAAC", "(...)"]]


def test_multi_record_ct_and_records_without_title(tmp_path):
    text = "3 first\n1 G 0 2 3 1\n2 A 1 3 0 2\n3 C 2 0 1 3\n\n2\n1 A 0 2 0 1\n2 U 1 0 0 2\n"
    (tmp_path / "m.ct").write_text(text)
    df = read_structures(tmp_path / "m.ct")
    assert df.values.tolist() == [["first", "GAC", "(.)"], ["m_2", "AU", ".."]]
    (tmp_path / "one.ct").write_text("2\n1 A 0 2 0 1\n2 U 1 0 0 2\n")
    assert read_structures(tmp_path / "one.ct")["id"].tolist() == ["one"]


def test_bpseq_comments_and_free_text_header_lines(tmp_path):
    text = "Filename: x.bpseq\nOrganism: E. coli\n# comment\n1 G 4\n2 A 0\n3 A 0\n4 C 1\n"
    (tmp_path / "r1.bpseq").write_text(text)
    assert read_structures(tmp_path / "r1.bpseq").values.tolist() == [["r1", "GAAC", "(..)"]]


def test_dot_bracket_energy_field_and_headerless_bprna_file(tmp_path):
    (tmp_path / "v.fa").write_text(">hp extra words\nGGGAAACCC\n(((...))) (-1.20)\n")
    assert read_structures(tmp_path / "v.fa").values.tolist() == [["hp", "GGGAAACCC", "(((...)))"]]
    (tmp_path / "b.dbn").write_text("#Name: bpRNA_X_1\n#Length: 5\nGAAAC\n(...)\n")
    assert read_structures(tmp_path / "b.dbn")["id"].tolist() == ["bpRNA_X_1"]


def test_folder_mixes_formats_and_skips_other_files(tmp_path):
    (tmp_path / "a.ct").write_text("2 ct_rec\n1 A 0 2 0 1\n2 U 1 0 0 2\n")
    (tmp_path / "b.bpseq").write_text("1 G 0\n")
    (tmp_path / "README.txt").write_text("not a structure")
    (tmp_path / ".hidden.ct").write_text("garbage")
    df = read_structures(tmp_path)
    assert df["id"].tolist() == ["ct_rec", "b"]
    (tmp_path / "c.fa").write_text(">b\nA\n.\n")
    with pytest.raises(ValueError, match=r"c.fa, record 1 \('b'\): duplicate id 'b' \(first in"):
        read_structures(tmp_path)


def test_missing_path_empty_folder_and_unknown_suffix(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found: .*nowhere.ct"):
        read_structures(tmp_path / "nowhere.ct")
    with pytest.raises(ValueError, match="no structure files"):
        read_structures(tmp_path)
    (tmp_path / "x.txt").write_text(">a\nA\n.\n")
    with pytest.raises(ValueError, match=r"cannot tell the format from the suffix '.txt'"):
        read_structures(tmp_path / "x.txt")
    assert read_structures(tmp_path / "x.txt", format="dot-bracket")["id"].tolist() == ["a"]
    with pytest.raises(ValueError, match="format must be one of"):
        read_structures(tmp_path / "x.txt", format="fasta")


CT_OK = "3 t\n1 G 0 2 3 1\n2 A 1 3 0 2\n3 C 2 0 1 3\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3 t\n1 G 0 2 3 1\n2 A 1 3 0 2\n3 C 2 0 0 3\n", r"line 2: base 1 pairs with 3, but base 3 pairs with nothing"),
        ("4 t\n1 G 0 2 3 1\n2 A 1 3 3 2\n3 C 2 4 1 3\n4 A 3 0 0 4\n", "line 3: base 2 pairs with 3, but base 3 pairs with 1"),
        ("3 t\n1 G 0 2 1 1\n2 A 1 3 0 2\n3 C 2 0 0 3\n", "line 2: base 1 is paired with itself"),
        ("3 t\n1 G 0 2 9 1\n2 A 1 3 0 2\n3 C 2 0 0 3\n", "line 2: partner 9 of base 1 is outside 1..3"),
        ("3 t\n1 G 0 2 3 1\n2 A 1 3 0 2\n", "header says 3 bases but the file ends after 2 rows"),
        ("2 t\n1 G 0 2 0 1\n2 A 1 3 0 2\n3 C 2 0 0 3\n", "record 2, line 4: a base row where a header"),
        ("3 t\n1 G 0 2 3 1\n2 A x 3 0 2\n3 C 2 0 1 3\n", "record 1, line 3: CT row indices must be integers, got 'x'"),
        ("3 t\n1 G 0 2 3 1\n2 A 1 3 0\n3 C 2 0 1 3\n", "line 3: a CT row has 6 columns"),
        ("3 t\n1 G 0 2 3 1\n3 A 1 3 0 2\n3 C 2 0 1 3\n", "line 3: base index 3, expected 2"),
        ("x t\n", "line 1: the header's base count must be integers, got 'x'"),
        ("0 t\n", "the header gives 0 bases"),
        ("3 t\n1 GG 0 2 3 1\n2 A 1 3 0 2\n3 C 2 0 1 3\n", "the base must be one letter"),
    ],
)  # fmt: skip
def test_damaged_ct_names_file_record_and_line(tmp_path, text, message):
    (tmp_path / "bad.ct").write_text(text)
    with pytest.raises(ValueError, match=f"bad.ct, .*{message}"):
        read_structures(tmp_path / "bad.ct")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 G 3\n2 A 0\n3 C 0\n", "line 1: base 1 pairs with 3, but base 3 pairs with nothing"),
        ("1 G 3\n2 A 3\n3 C 1\n", "line 2: base 2 pairs with 3, but base 3 pairs with 1"),
        ("1 G 0\n2 A\n", "line 2: a BPSEQ row has 3 columns"),
        ("1 G 0\n2 A zero\n", "line 2: the index and partner must be integers, got 'zero'"),
        ("1 G 0\n3 A 0\n", "line 2: base index 3, expected 2"),
        ("# only a comment\n", "no base rows"),
    ],
)
def test_damaged_bpseq_names_file_and_line(tmp_path, text, message):
    (tmp_path / "bad.bpseq").write_text(text)
    with pytest.raises(ValueError, match=f"bad.bpseq, record 1.*{message}"):
        read_structures(tmp_path / "bad.bpseq")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (">a\nGGAC\n((.)\n", r"record 1 \('a'\), line 3: unbalanced dot-bracket: '\(' at position 1"),
        (">a\nGGAC\n(..)\n>b\nGAC\n(..)\n", r"record 2 \('b'\), line 6: the structure has 4 characters but the sequence 3"),
        (">a\nGGAC\nGGAC\n(..)\n", r"line 1: expected one sequence line and one structure line, got 3"),
        (">a\nGG1C\n(..)\n", "line 2: the sequence line must hold letters only"),
        (">a\nGGAC\n(?x)\n", r"line 3: unknown dot-bracket character '\?' at position 2"),
        ("GGAC\n(..)\n>a\nGGAC\n(..)\n", "line 1: data before the first '>' header"),
        (">\nGGAC\n(..)\n", "line 1: empty header"),
        (">a\nGAC\n(.)\n>a\nGAC\n...\n", r"record 2 \('a'\): duplicate id 'a' \(first in .*record 1"),
    ],
)  # fmt: skip
def test_damaged_dot_bracket_names_file_record_and_line(tmp_path, text, message):
    (tmp_path / "bad.fa").write_text(text)
    with pytest.raises(ValueError, match=f"bad.fa.*{message}"):
        read_structures(tmp_path / "bad.fa")


def test_non_utf8_file_is_a_value_error(tmp_path):
    (tmp_path / "bin.ct").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="bin.ct is not a UTF-8 text file"):
        read_structures(tmp_path / "bin.ct")


@pytest.mark.parametrize("suffix", [".ct", ".bpseq", ".fa"])
@FAST
@given(data=st.binary(max_size=300))
def test_fuzzed_bytes_give_a_dataframe_or_our_value_error(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("fuzz") / f"f{suffix}"
    path.write_bytes(data)
    try:
        df = read_structures(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert list(df.columns) == ["id", "sequence", "structure"]


@st.composite
def damaged_text(draw):
    """A valid file of each format with random line-level edits (closer to real damage)."""
    fmt = draw(st.sampled_from([".ct", ".bpseq", ".fa"]))
    base = {".ct": CT_OK * 2, ".bpseq": "1 G 3\n2 A 0\n3 C 1\n", ".fa": ">a\nGAC\n(.)\n"}[fmt]
    lines = base.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "dup", "edit"]))
        if action == "drop" and len(lines) > 1:
            lines.pop(k)
        elif action == "dup":
            lines.insert(k, lines[k])
        else:
            token = draw(st.text(string.printable.strip() + "([{<>}]).", max_size=4))
            parts = lines[k].split() or [""]
            parts[draw(st.integers(0, len(parts) - 1))] = token
            lines[k] = " ".join(parts)
    return fmt, "\n".join(lines) + "\n"


@FAST
@given(case=damaged_text())
def test_damaged_valid_files_give_a_dataframe_or_our_value_error(tmp_path_factory, case):
    fmt, text = case
    path = tmp_path_factory.mktemp("damaged") / f"d{fmt}"
    path.write_text(text)
    try:
        df = read_structures(path)
    except ValueError as exc:
        assert str(path) in str(exc)
    else:
        assert (df["sequence"].str.len() == df["structure"].str.len()).all()


def frame(**cols):
    base = {"id": ["a"], "sequence": ["GAAAC"], "structure": ["(...)"]}
    return pd.DataFrame({**base, **cols})


@pytest.mark.parametrize(
    ("df", "kwargs", "message"),
    [
        (frame(id=["a/b"]), {"format": "bpseq"}, r"row 0: id 'a/b' is not safe as a file name"),
        (frame(id=[".."]), {"format": "ct", "one_file_per_record": True}, "not safe as a file name"),
        (frame(id=["a b"]), {}, r"row 0: id 'a b' holds whitespace; a FASTA id cannot"),
        (frame(id=[" a"]), {"format": "ct"}, "without leading or trailing spaces"),
        (frame(id=[""]), {"format": "ct"}, "non-empty single-line string"),
        (frame(id=[7]), {}, "row 0: id 7 must be a non-empty"),
        (frame(structure=["(..)"]), {}, r"row 0 \('a'\): the structure has 4 characters but the sequence 5"),
        (frame(structure=["(...."]), {}, r"row 0 \('a'\): unbalanced dot-bracket"),
        (frame(structure=[np.array([[0, 5]])]), {}, "base index 5 is out of range"),
        (frame(sequence=["GA AC"]), {}, "the sequence must be a non-empty str of letters"),
        (frame().drop(columns="structure"), {}, r"missing: \['structure'\]"),
        (frame(), {"format": "bpseq", "one_file_per_record": False}, "one record per file"),
        (frame(), {"format": "stockholm"}, "format must be one of"),
    ],
)  # fmt: skip
def test_write_refuses_bad_rows_and_writes_nothing(tmp_path, df, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_structures(df, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_duplicate_ids_are_refused_case_insensitively_for_file_names(tmp_path):
    df = pd.DataFrame({"id": ["a", "A"], "sequence": ["G", "G"], "structure": [".", "."]})
    write_structures(df, tmp_path / "ok.fa")  # distinct FASTA ids
    with pytest.raises(ValueError, match=r"row 1: duplicate id 'A' \(first on row 0\)"):
        write_structures(df, tmp_path / "out", "bpseq")


def test_a_refused_write_leaves_the_old_file_and_other_files_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    write_structures(frame(), tmp_path / "s.fa")
    before = (tmp_path / "s.fa").read_bytes()
    with pytest.raises(ValueError, match="row 1"):
        write_structures(pd.concat([frame(), frame(id=["b"], structure=["("])]), tmp_path / "s.fa")
    assert (tmp_path / "s.fa").read_bytes() == before
    write_structures(frame(id=["keep"]), tmp_path, "bpseq")
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == ["keep.bpseq", "keep.txt", "s.fa"]  # no temp files


# ---------------------------------------------------------------- F1


def test_f1_values_and_conventions():
    truth = ["((..))", "(....)", "......", "......", "((..))"]
    pred = ["((..))", ".(..).", "......", "(....)", "(....)"]
    scores = base_pair_f1(truth, pred, average=False)
    # exact; shifted pair wrong; both empty -> 1; one empty -> 0; P = 1, R = 1/2 -> 2/3
    assert scores.tolist() == pytest.approx([1.0, 0.0, 1.0, 0.0, 2 / 3])
    assert base_pair_f1(truth, pred) == pytest.approx(np.mean(scores))
    pairs = [np.array([[0, 5], [1, 4]]), np.empty((0, 2))]
    assert base_pair_f1(pairs, ["((..))", "......"], average=False).tolist() == [1.0, 1.0]
    assert np.isnan(base_pair_f1([], []))


def test_f1_shift_moves_one_end_only_and_is_not_one_to_one():
    true = ["(.....)"]
    assert base_pair_f1(true, [".(....)"], shift=1) == 1.0  # (1, 6) vs (0, 6)
    assert base_pair_f1(true, ["(....)."], shift=1) == 1.0  # (0, 5)
    assert base_pair_f1(true, [".(...)."], shift=1) == 0.0  # both ends moved
    assert base_pair_f1(true, [".(...)."], shift=0) == 0.0
    # true (0, 6), (1, 5); predicted (1, 5) matches, but nothing is within one end's step of
    # (0, 6): precision 1, recall 1/2
    assert base_pair_f1(["((...))"], [".(...)."], shift=1) == pytest.approx(2 / 3)
    # one predicted pair (1, 5) counts as correct for both true pairs (0, 5) and (1, 6)
    truth = [np.array([[0, 5], [1, 6]])]
    assert base_pair_f1(truth, [np.array([[1, 5]])], shift=1) == 1.0
    assert base_pair_f1(["(......)"], [".(....)."], shift=2) == 0.0
    assert base_pair_f1(["(......)"], ["..(....)"], shift=2) == 1.0


def test_f1_is_a_scikit_learn_scorer():
    class Fixed(BaseEstimator):
        def predict(self, X):
            return np.array(["((..))", "......"], dtype=object)

        def fit(self, X, y):
            return self

    scorer = make_scorer(base_pair_f1)
    assert scorer(Fixed(), [[0], [1]], ["((..))", "(....)"]) == 0.5
    shifted = make_scorer(base_pair_f1, shift=1)
    assert shifted(Fixed(), [[0], [1]], ["(...).", "(....)"]) == 0.5
    assert scorer(Fixed(), [[0], [1]], ["(...).", "(....)"]) == 0.0


def test_f1_errors_name_the_row():
    with pytest.raises(ValueError, match="row 1: the true structure has 4 bases but the predicted"):
        base_pair_f1(["..", "(..)"], ["..", "(...)"])
    with pytest.raises(ValueError, match="y_true has 2 structures but y_pred has 1"):
        base_pair_f1(["..", ".."], [".."])
    with pytest.raises(ValueError, match=r"y_pred, row 0: unbalanced dot-bracket"):
        base_pair_f1(["(.)"], ["((."])
    with pytest.raises(ValueError, match="y_true, row 0: base 1 is in more than one pair"):
        base_pair_f1([[[0, 1], [1, 2]]], [[]])
    with pytest.raises(TypeError, match="a sequence of structures, not a single str"):
        base_pair_f1("(.)", "(.)")
    with pytest.raises(ValueError, match="shift must be a non-negative integer"):
        base_pair_f1(["."], ["."], shift=-1)


@FAST
@given(pairings(), pairings())
def test_f1_properties_on_random_pairings(a, b):
    (pa, la), (pb, lb) = a, b
    assert base_pair_f1([pa], [pa]) == 1.0
    ab, ba = base_pair_f1([pa], [pb]), base_pair_f1([pb], [pa])
    assert ab == pytest.approx(ba)  # F1 is symmetric in truth and prediction
    assert 0.0 <= ab <= 1.0
    assert base_pair_f1([pa], [pb], shift=1) >= ab  # the tolerance never lowers a score
    sa, sb = pairs_to_dot_bracket(pa, la), pairs_to_dot_bracket(pb, lb)
    if la == lb:
        assert base_pair_f1([sa], [sb]) == pytest.approx(ab)  # strings score like pairs
