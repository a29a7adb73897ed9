"""The persistent embedding cache: keys, CV reuse, concurrency, interruption, corruption."""

import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from _official import make_official_checkpoint
from _tolerance import assert_close
from conftest import ROOT, TINY_HF, TINY_PTH, rfam
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from rnafm_sklearn import EmbeddingCache, RnaFmEmbedder, convert_checkpoint
from rnafm_sklearn._cli import main
from rnafm_sklearn._inference import Runner

MODEL = str(TINY_PTH)


def emb(cache, **kw):
    return RnaFmEmbedder(model=kw.pop("model", MODEL), cache=str(cache), progress=False, **kw)


@pytest.fixture
def computed(monkeypatch):
    """Counts the sequences that reach the model."""
    counts = []
    real = Runner.pooled

    def spy(self, tokens, plan, sink=None):
        counts.append(len(tokens))
        return real(self, tokens, plan, sink)

    monkeypatch.setattr(Runner, "pooled", spy)
    return counts


def test_hit_returns_exactly_the_stored_vector(tmp_path, computed, real_sequences):
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(real_sequences)
    first = emb(tmp_path).transform(real_sequences)
    assert_close(first, direct)  # computed: the cache path batches the missing rows itself
    cache = EmbeddingCache(tmp_path)
    assert len(cache) == len(set(real_sequences))
    again = emb(tmp_path).transform(real_sequences[::-1])
    np.testing.assert_array_equal(again, first[::-1])  # hits: the stored bytes
    assert computed == [len(set(real_sequences)), len(set(real_sequences))]
    assert computed[-1] != 0 and len(computed) == 2  # the second call never reached the model


def test_every_setting_that_changes_numbers_misses(tmp_path, computed, real_sequences):
    seqs = real_sequences[:5]
    other_weights = make_official_checkpoint(tmp_path / "RNA-FM_other.pth", seed=99)
    emb(tmp_path).transform(seqs)
    variants = [
        {"model": str(other_weights)},
        {"layers": 1},
        {"layers": [1, 2]},
        {"layers": [1, 2], "layer_aggregation": "mean"},
        {"pooling": "cls"},
        {"pooling": ["mean", "max"]},
        {"dtype": "bfloat16"},
    ]
    for kw in variants:
        computed.clear()
        emb(tmp_path, **kw).transform(seqs)
        assert computed == [5], kw


def test_numerics_version_and_reduced_precision_device_are_in_the_key(tmp_path, monkeypatch):
    import torch

    from rnafm_sklearn import _base

    def keys(dtype="float32", device=None):
        e = emb(tmp_path, dtype=dtype)
        runner, plan, tokens = e._prepare(["ACGUAGG", "GGGAAAC"])
        if device is not None:
            runner.device = torch.device(device)
        return e._cache_keys(e._key_settings(runner, plan), runner, plan.window_stride, tokens)

    fp32, bf16 = keys(), keys("bfloat16")
    assert keys() == fp32 and set(fp32).isdisjoint(bf16)
    # float32 matches the official model on every device: its keys ignore the device
    assert keys(device="cuda") == fp32
    # reduced precision differs between device classes
    assert set(keys("bfloat16", device="cuda")).isdisjoint(bf16)
    # a kernel change that alters the numbers bumps NUMERICS_VERSION: every key changes
    monkeypatch.setattr(_base, "NUMERICS_VERSION", _base.NUMERICS_VERSION + 1)
    assert set(keys()).isdisjoint(fp32)


def test_same_weights_in_another_format_hit(tmp_path, computed, real_sequences):
    emb(tmp_path / "c").transform(real_sequences)
    native = convert_checkpoint(TINY_PTH, tmp_path / "native")
    for source in (TINY_HF, native):
        computed.clear()
        emb(tmp_path / "c", model=str(source)).transform(real_sequences)
        assert computed == [], source  # hash of the weights, not of the file


def test_long_sequence_policy_is_part_of_the_key(tmp_path, computed):
    rng = np.random.default_rng(0)
    long = "".join(rng.choice(list("ACGU"), 2500))
    short = "ACGUAGGCUA"
    with pytest.warns(UserWarning, match="Truncated 1 of 2"):
        right = emb(tmp_path, long_sequences="truncate").transform([long, short])
    with pytest.warns(UserWarning, match="Truncated 1 of 2"):
        left = emb(tmp_path, long_sequences="truncate", truncation_side="left").transform(
            [long, short]
        )
    assert computed == [2, 1]  # short: hit; long: other tokens kept
    assert not np.array_equal(left[0], right[0])
    computed.clear()
    w511 = emb(tmp_path, long_sequences="window").transform([long, short])
    w300 = emb(tmp_path, long_sequences="window", window_stride=300).transform([long, short])
    assert computed == [1, 1]  # each stride computes the long one; the short one is a hit
    assert not np.array_equal(w511[0], w300[0])
    np.testing.assert_array_equal(w511[1], right[1])  # a hit: the stored bytes


def test_cross_validation_embeds_each_sequence_once(tmp_path, computed):
    df = rfam().groupby("family").head(15)
    pipe = Pipeline([("emb", emb(tmp_path)), ("clf", LogisticRegression(max_iter=2000))])
    scores = cross_val_score(pipe, df.sequence, df.family, cv=5)
    assert sum(computed) == df.sequence.nunique()
    no_cache = Pipeline(
        [
            ("emb", RnaFmEmbedder(model=MODEL, progress=False)),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    np.testing.assert_allclose(scores, cross_val_score(no_cache, df.sequence, df.family, cv=5))


def _embed_worker(cache, seqs, out):
    X = RnaFmEmbedder(model=MODEL, cache=cache, batch_tokens=200, progress=False).transform(seqs)
    np.save(out, X)


def test_two_processes_write_concurrently(tmp_path, computed, real_sequences):
    a, b = real_sequences[:16], real_sequences[8:]  # overlapping halves
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_embed_worker, args=(str(tmp_path), s, tmp_path / f"{i}.npy"))
        for i, s in enumerate((a, b))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a guard against a hang, not a timing
        assert p.exitcode == 0
    # (another batch size than the workers': equal up to float32 rounding)
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(real_sequences)
    assert len(EmbeddingCache(tmp_path)) == len(set(real_sequences))
    assert_close(np.load(tmp_path / "0.npy"), direct[:16])
    assert_close(np.load(tmp_path / "1.npy"), direct[8:])
    computed.clear()
    cached = emb(tmp_path).transform(real_sequences)
    assert computed == []  # everything was written by the two workers: hits, the stored bytes
    np.testing.assert_array_equal(cached[:8], np.load(tmp_path / "0.npy")[:8])
    np.testing.assert_array_equal(cached[16:], np.load(tmp_path / "1.npy")[8:])


@pytest.mark.numerics
def test_killed_run_resumes(tmp_path, computed, real_sequences):
    """The child dies (os._exit, as a kill would) right after its third committed batch."""
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        from conftest import mixed_real_sequences
        from rnafm_sklearn import RnaFmEmbedder, EmbeddingCache
        real_put = EmbeddingCache.put
        calls = []
        def put(self, keys, rows):
            real_put(self, keys, rows)
            calls.append(len(keys))
            if len(calls) == 3:
                os._exit(17)
        EmbeddingCache.put = put
        RnaFmEmbedder(model={MODEL!r}, cache={str(tmp_path)!r}, batch_tokens=700,
                      progress=False).transform(mixed_real_sequences())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 17, proc.stderr
    kept = len(EmbeddingCache(tmp_path))
    n = len(set(real_sequences))
    assert 0 < kept < n
    X = emb(tmp_path).transform(real_sequences)
    assert computed == [n - kept]  # only the rest was computed
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(real_sequences)
    assert_close(X, direct)  # the child used other batches


def test_corrupt_entry_is_detected_and_recomputed(tmp_path, computed, real_sequences):
    direct = emb(tmp_path).transform(real_sequences[:4])
    cache = EmbeddingCache(tmp_path)
    conn = sqlite3.connect(cache.path)
    (key, vec) = conn.execute("SELECT key, vec FROM embeddings LIMIT 1").fetchone()
    damaged = bytearray(vec)
    damaged[7] ^= 0x40
    conn.execute("UPDATE embeddings SET vec = ? WHERE key = ?", (bytes(damaged), key))
    conn.commit()
    conn.close()
    computed.clear()
    with pytest.warns(
        RuntimeWarning, match="1 corrupt entries failed the checksum; they are recomputed"
    ):
        X = emb(tmp_path).transform(real_sequences[:4])
    assert_close(X, direct)  # the recomputed row ran alone, not in a batch of 4
    assert computed == [1]


@pytest.mark.parametrize("damage", ["damaged_pages", "truncate"])
def test_corrupt_file_is_moved_aside(tmp_path, real_sequences, damage):
    """Our own file (our application id in the header), unreadable: moved aside, started over.
    (A file without our header is never touched: test_a_file_that_is_not_ours_is_never_modified.)"""
    direct = emb(tmp_path).transform(real_sequences[:4])
    path = EmbeddingCache(tmp_path).path
    EmbeddingCache(tmp_path).clear()  # checkpoint the WAL into the main file
    emb(tmp_path).transform(real_sequences[:4])
    for suffix in ("-wal", "-shm"):
        (tmp_path / (path.name + suffix)).unlink(missing_ok=True)
    data = path.read_bytes()
    garbage = data[:4096] + b"this is not sqlite" * (len(data) // 18)
    path.write_bytes(garbage if damage == "damaged_pages" else data[:100])
    with pytest.warns(RuntimeWarning, match="is unreadable .*moved it to .*corrupt-"):
        X = emb(tmp_path).transform(real_sequences[:4])
    np.testing.assert_array_equal(X, direct)  # the same 4 rows in the same batch again
    assert len(EmbeddingCache(tmp_path)) == 4
    assert any(".corrupt-" in p.name for p in tmp_path.iterdir())


def test_info_clear_prune(tmp_path, real_sequences):
    emb(tmp_path).transform(real_sequences)
    cache = EmbeddingCache(tmp_path)
    info = cache.info()
    assert info["entries"] == len(set(real_sequences)) and info["bytes"] > 0
    removed = cache.prune(max_bytes=1)
    assert removed == len(set(real_sequences)) and len(cache) == 0
    emb(tmp_path).transform(real_sequences)
    cache.clear()
    assert len(cache) == 0


def test_sqlite_file_path_and_pickling(tmp_path, real_sequences):
    import pickle

    e = emb(tmp_path / "my.sqlite")
    e.transform(real_sequences[:3])
    assert (tmp_path / "my.sqlite").exists()
    clone = pickle.loads(pickle.dumps(e))
    np.testing.assert_array_equal(  # both read the stored bytes
        clone.transform(real_sequences[:3]), e.transform(real_sequences[:3])
    )


def _writer_worker(cache, start, barrier):
    barrier.wait()  # every process opens the brand-new file at the same moment
    rows = np.full((50, 4), start, np.float32)
    for i in range(0, 50, 5):  # many small transactions, each on a new connection
        keys = [f"k{start + j}".encode() for j in range(i, i + 5)]
        c = EmbeddingCache(cache)  # as transform() does: open, read, write, close
        c.get(keys)
        c.put(keys, rows[i : i + 5])
        c.close()


def test_many_processes_creating_the_same_cache_lose_nothing(tmp_path):
    """Regression: a 'database is locked' while switching a new file to WAL mode was taken
    for corruption and the file moved aside, losing the other processes' entries."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [
        ctx.Process(target=_writer_worker, args=(str(tmp_path), 1000 * i, barrier))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)  # a guard against a hang, not a timing
        assert p.exitcode == 0
    cache = EmbeddingCache(tmp_path)
    assert len(cache) == 200
    assert not any(".corrupt-" in p.name for p in tmp_path.iterdir())
    got = cache.get([f"k{3000 + j}".encode() for j in range(50)])
    assert len(got) == 50 and all((v == 3000).all() for v in got.values())


def test_a_locked_database_is_waited_for_not_moved_aside(tmp_path, monkeypatch):
    """'database is locked' is transient: retried, never taken for corruption."""
    import rnafm_sklearn._cache as cache_module

    cache = EmbeddingCache(tmp_path)
    cache.put([b"a"], np.ones((1, 2), np.float32))
    real = cache_module._transaction.__enter__
    calls = []

    def flaky_enter(self):
        calls.append(1)
        if len(calls) <= 2:
            raise sqlite3.OperationalError("database is locked")
        return real(self)

    monkeypatch.setattr(cache_module._transaction, "__enter__", flaky_enter)
    cache.put([b"b"], np.zeros((1, 2), np.float32))
    assert len(calls) == 3 and len(cache) == 2
    assert not any(".corrupt-" in p.name for p in tmp_path.iterdir())


# ----------------------------------------------------------------- a row under another key


def test_a_vector_moved_under_another_key_is_detected(tmp_path, computed, real_sequences):
    """The digest binds the vector to its key: two rows whose keys were swapped (as a damaged
    index would) are reported and recomputed, never returned for each other."""
    direct = emb(tmp_path).transform(real_sequences[:4])
    conn = sqlite3.connect(EmbeddingCache(tmp_path).path)
    a, b = [k for (k,) in conn.execute("SELECT key FROM embeddings ORDER BY key LIMIT 2")]
    for old, new in ((a, b"swap"), (b, a), (b"swap", b)):
        conn.execute("UPDATE embeddings SET key = ? WHERE key = ?", (new, old))
    conn.commit()
    conn.close()
    computed.clear()
    with pytest.warns(
        RuntimeWarning, match="2 corrupt entries failed the checksum; they are recomputed"
    ):
        X = emb(tmp_path).transform(real_sequences[:4])
    assert_close(X, direct)  # the recomputed rows ran in a batch of 2, not 4
    assert computed == [2]


def test_a_lone_row_under_a_wrong_key_is_not_returned(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put([b"A", b"B"], np.array([[1, 2], [3, 4]], np.float32))
    cache.close()
    conn = sqlite3.connect(cache.path)
    conn.execute("DELETE FROM embeddings WHERE key = ?", (b"A",))
    conn.execute("UPDATE embeddings SET key = ? WHERE key = ?", (b"A", b"B"))
    conn.commit()
    conn.close()
    with pytest.warns(RuntimeWarning, match="1 corrupt entries failed the checksum"):
        assert EmbeddingCache(tmp_path).get([b"A"]) == {}
    assert len(EmbeddingCache(tmp_path)) == 0  # the bad row is gone


def _v1_cache(path):
    """A cache as rnafm_sklearn wrote it before the digest covered the key (schema 1)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(
        "CREATE TABLE embeddings (key BLOB PRIMARY KEY, dim INTEGER NOT NULL,"
        " vec BLOB NOT NULL, digest BLOB NOT NULL, created REAL NOT NULL)"
    )
    conn.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)")
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for key in (b"k1", b"k2"):
        vec = np.ones(3, np.float32).tobytes()
        digest = hashlib.blake2b(vec, digest_size=16).digest()
        conn.execute("INSERT INTO embeddings VALUES (?, 3, ?, ?, 0)", (key, vec, digest))
    conn.close()


def test_rows_of_the_old_schema_are_dropped_with_a_warning(tmp_path):
    path = tmp_path / "old.sqlite"
    _v1_cache(path)
    cache = EmbeddingCache(path)
    with pytest.warns(
        RuntimeWarning,
        match=r"older rnafm_sklearn \(schema 1\).*its 2 entries were dropped",
    ):
        assert cache.get([b"k1", b"k2"]) == {}
    assert len(cache) == 0
    cache.put([b"k1"], np.zeros((1, 3), np.float32))
    assert cache.get([b"k1"])[b"k1"].tolist() == [0, 0, 0]
    cache.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # upgraded once: no second warning
        assert len(EmbeddingCache(path)) == 1


# ----------------------------------------------------------- locations that cannot be used


@pytest.mark.parametrize("where", ["is_a_file", "below_a_file", "sqlite_path_is_a_folder"])
def test_unusable_cache_location_is_a_clear_error_before_any_compute(tmp_path, computed, where):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    folder = tmp_path / "c.sqlite"
    folder.mkdir()
    cache, expected = {
        "is_a_file": (blocker, f"{blocker} is a file, not a folder"),
        "below_a_file": (
            blocker / "sub",
            f"Cannot create the embedding cache folder {blocker / 'sub'}: {blocker} is a file",
        ),
        "sqlite_path_is_a_folder": (folder, f"{folder} is a folder, not a file"),
    }[where]
    with pytest.raises(OSError, match=re.escape(expected) + ".*Pass another cache= path"):
        emb(cache).transform(["ACGU"])
    assert computed == []  # raised on first use, before the model ran
    assert blocker.read_text() == "x" and sorted(p.name for p in tmp_path.iterdir()) == [
        "c.sqlite",
        "file",
    ]


def test_folder_on_a_read_only_file_system_is_a_clear_error(tmp_path, computed, monkeypatch):
    import errno

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(
        OSError,
        match=re.escape(f"Cannot create the embedding cache folder {tmp_path / 'new' / 'sub'}")
        + ".*Read-only file system.*Pass another cache= path",
    ):
        emb(tmp_path / "new" / "sub").transform(["ACGU"])
    assert computed == []


def _deny_writes(monkeypatch, *paths):
    """What ``os.access`` reports on a read-only mount (root ignores permission bits)."""
    real = os.access
    denied = {Path(p) for p in paths}

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and Path(path) in denied:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_read_only_cache_serves_hits_and_warns_once(tmp_path, computed, real_sequences, monkeypatch):
    seqs = real_sequences[:8]
    emb(tmp_path).transform(seqs[:4])
    path = EmbeddingCache(tmp_path).path
    before = path.read_bytes()
    _deny_writes(monkeypatch, tmp_path, path)
    computed.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        X = emb(tmp_path, batch_tokens=300).transform(seqs)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert re.search(r"is read-only \(.+\): cached embeddings are used, new ones are not stored", messages[0])
    assert sum(computed) == 4  # the 4 cached ones were served
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(seqs)
    assert_close(X, direct)
    assert path.read_bytes() == before and len(EmbeddingCache(tmp_path)) == 4
    with pytest.raises(OSError, match=re.escape(f"{path} is read-only; cannot clear it")):
        EmbeddingCache(tmp_path).clear()
    assert len(EmbeddingCache(tmp_path)) == 4


_RO_SCRIPT = """
import json, os, sys, warnings
sys.path.insert(0, {tests!r})
from conftest import mixed_real_sequences
from rnafm_sklearn import EmbeddingCache, RnaFmEmbedder
from rnafm_sklearn._inference import Runner
computed = []
real = Runner.pooled
def spy(self, tokens, plan, sink=None):
    computed.append(len(tokens))
    return real(self, tokens, plan, sink)
Runner.pooled = spy
seqs = mixed_real_sequences()[:8]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    X = RnaFmEmbedder(model={model!r}, cache={cache!r}, progress=False).transform(seqs)
errors = []
for action in (lambda: EmbeddingCache({cache!r}).clear(),
               lambda: EmbeddingCache(os.path.join({cache!r}, "new")).get([b"k"])):
    try:
        action()
    except OSError as exc:
        errors.append(str(exc))
print(json.dumps({{"warnings": [str(w.message) for w in caught], "computed": computed,
                  "X": X.tolist(), "errors": errors}}))
"""


def _read_only_mount_works(folder):
    if shutil.which("unshare") is None:
        return False
    probe = f'mount --bind -o ro "{folder}" "{folder}" && ! touch "{folder}/x" 2>/dev/null'
    return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0


def test_cache_on_a_read_only_mount(tmp_path, real_sequences):
    """A real read-only file system (a private read-only bind mount): the cached half is
    served, the rest computed and not stored, with one warning; nothing is written."""
    folder = tmp_path / "c"
    emb(folder).transform(real_sequences[:4])
    if not _read_only_mount_works(folder):
        pytest.skip("needs unshare and mount to make a read-only folder")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    script = _RO_SCRIPT.format(tests=str(ROOT / "tests"), model=MODEL, cache=str(folder))
    shell = 'mount --bind -o ro "$0" "$0" && exec "$1" -c "$2"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", shell, str(folder), sys.executable, script],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["warnings"]) == 1, out["warnings"]
    assert "is read-only" in out["warnings"][0] and "new ones are not stored" in out["warnings"][0]
    assert sum(out["computed"]) == 4
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(real_sequences[:8])
    assert_close(out["X"], direct)  # another process
    assert "is read-only; cannot clear it" in out["errors"][0]
    assert "Cannot create the embedding cache folder" in out["errors"][1]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


# --------------------------------------------------------------------- files not our own


def _foreign(path, kind):
    if kind == "text":
        path.write_bytes(b"my lab notes, not a database\n" * 200)
        return
    conn = sqlite3.connect(path, isolation_level=None)
    if kind == "sqlite_wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY, name TEXT)")
    conn.executemany("INSERT INTO samples (name) VALUES (?)", [("s" * 500,)] * 40)
    conn.close()
    if kind == "damaged_sqlite":
        path.write_bytes(path.read_bytes()[:5000])


def _snapshot(folder):
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}


@pytest.mark.parametrize("kind", ["text", "sqlite", "sqlite_wal", "damaged_sqlite"])
def test_a_file_that_is_not_ours_is_never_modified(tmp_path, computed, capsys, kind):
    path = tmp_path / "data.db"
    _foreign(path, kind)
    before = _snapshot(tmp_path)
    message = re.escape(f"{path} is not an rnafm_sklearn embedding cache") + ".*pass another"
    with pytest.raises(OSError, match=message):
        emb(path).transform(["ACGU"])
    assert computed == []
    for action in ("clear", "info"):
        assert main(["cache", action, str(path)]) == 1
        assert re.search(message, capsys.readouterr().err)
    assert _snapshot(tmp_path) == before  # same bytes, same mtime, no -wal/-shm, no .corrupt-
    if kind == "sqlite":  # spelled out: no new table, journal mode unchanged
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("samples",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        conn.close()


def test_a_cache_of_a_newer_version_is_not_modified(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put([b"k"], np.ones((1, 2), np.float32))
    cache.close()
    conn = sqlite3.connect(cache.path)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = _snapshot(tmp_path)
    with pytest.raises(OSError, match=r"written by a newer rnafm_sklearn \(schema 99\)"):
        EmbeddingCache(tmp_path).get([b"k"])
    assert _snapshot(tmp_path) == before


def test_an_empty_file_becomes_a_cache(tmp_path, real_sequences):
    path = tmp_path / "new.sqlite"
    path.touch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb(path).transform(real_sequences[:3])
    assert len(EmbeddingCache(path)) == 3


def test_a_cache_created_while_being_inspected_is_not_mistaken_for_a_foreign_file(tmp_path):
    """Another process commits the new cache between our reads of the header and the schema.

    The reads form one snapshot: the commit waits (or the reader sees the whole cache), never an
    unmarked header together with our tables, which looked like another program's database.
    """
    from rnafm_sklearn import _cache_file

    path = tmp_path / "c.sqlite"
    sqlite3.connect(path).close()  # the empty file a creating process leaves first
    creator = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    creator.execute("BEGIN IMMEDIATE")
    _cache_file._create_tables(creator)
    outcome = []

    class Rows(list):
        def fetchone(self):
            return self[0] if self else None

        def fetchall(self):
            return list(self)

    class Reader:
        """A connection whose first read lets the creator try to commit."""

        def __init__(self, conn):
            self.conn = conn

        @property
        def in_transaction(self):
            return self.conn.in_transaction

        def execute(self, sql, *args):
            rows = self.conn.execute(sql, *args).fetchall()  # the statement is finished
            result = Rows(rows)
            if sql.startswith("PRAGMA application_id") and not outcome:
                try:
                    creator.execute("COMMIT")
                    outcome.append("committed between the reads")
                except sqlite3.OperationalError:
                    outcome.append("commit waited for the reader")
            return result

    reader = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    state = _cache_file._inspect(Reader(reader), path)
    assert (state, outcome) == ("empty", ["commit waited for the reader"])
    creator.execute("COMMIT")  # the creator retries once the reader is done
    assert _cache_file._inspect(reader, path) == "ours"
