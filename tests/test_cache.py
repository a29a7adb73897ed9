"""The persistent embedding cache: keys, CV reuse, concurrency, interruption, corruption."""

import multiprocessing as mp
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from _official import make_official_checkpoint
from conftest import ROOT, TINY_HF, TINY_PTH, rfam
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from rnafm_sklearn import EmbeddingCache, RnaFmEmbedder, convert_checkpoint
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
    np.testing.assert_array_equal(first, direct)
    cache = EmbeddingCache(tmp_path)
    assert len(cache) == len(set(real_sequences))
    again = emb(tmp_path).transform(real_sequences[::-1])
    np.testing.assert_array_equal(again, direct[::-1])
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
    np.testing.assert_array_equal(w511[1], right[1])


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
        p.join(120)
        assert p.exitcode == 0
    # (another batch size than the workers': equal up to float32 rounding)
    direct = RnaFmEmbedder(model=MODEL, progress=False).transform(real_sequences)
    assert len(EmbeddingCache(tmp_path)) == len(set(real_sequences))
    np.testing.assert_allclose(np.load(tmp_path / "0.npy"), direct[:16], atol=1e-6, rtol=0)
    np.testing.assert_allclose(np.load(tmp_path / "1.npy"), direct[8:], atol=1e-6, rtol=0)
    computed.clear()
    cached = emb(tmp_path).transform(real_sequences)
    assert computed == []  # everything was written by the two workers
    np.testing.assert_array_equal(cached[:8], np.load(tmp_path / "0.npy")[:8])
    np.testing.assert_array_equal(cached[16:], np.load(tmp_path / "1.npy")[8:])


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
    np.testing.assert_allclose(X, direct, atol=1e-6, rtol=0)  # the child used other batches


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
    np.testing.assert_array_equal(X, direct)
    assert computed == [1]


@pytest.mark.parametrize("damage", ["garbage", "truncate"])
def test_corrupt_file_is_moved_aside(tmp_path, real_sequences, damage):
    direct = emb(tmp_path).transform(real_sequences[:4])
    path = EmbeddingCache(tmp_path).path
    EmbeddingCache(tmp_path).clear()  # checkpoint the WAL into the main file
    emb(tmp_path).transform(real_sequences[:4])
    for suffix in ("-wal", "-shm"):
        (tmp_path / (path.name + suffix)).unlink(missing_ok=True)
    data = path.read_bytes()
    path.write_bytes(b"this is not sqlite" * 100 if damage == "garbage" else data[:100])
    with pytest.warns(RuntimeWarning, match="is unreadable .*moved it to .*corrupt-"):
        X = emb(tmp_path).transform(real_sequences[:4])
    np.testing.assert_array_equal(X, direct)
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
    np.testing.assert_array_equal(
        clone.transform(real_sequences[:3]), e.transform(real_sequences[:3])
    )


def test_unwritable_cache_location(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises((PermissionError, FileExistsError, NotADirectoryError)):
        emb(blocker / "sub").transform(["ACGU"])


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
        p.join(120)
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
