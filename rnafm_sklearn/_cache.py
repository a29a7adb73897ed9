"""A persistent, content-addressed store of embedding vectors (SQLite).

Knows nothing of models or estimators: it maps opaque keys (bytes) to float32 vectors.
The caller derives keys from everything that changes the numbers.

* Concurrency: SQLite in WAL mode with a generous busy timeout; every ``put`` is one
  transaction, so several processes can read and write the same file and an interrupted run
  keeps every batch it committed.
* Integrity: each row stores a BLAKE2 digest of its vector; a row that does not match is
  reported in a warning, deleted and treated as a miss (recomputed by the caller). A file that
  SQLite cannot read at all is moved aside (``*.corrupt-<time>``) with a warning and a fresh
  cache is started.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache"]

_FILE_NAME = "rnafm-embeddings.sqlite3"
_SCHEMA_VERSION = 1
_BUSY_TIMEOUT_S = 120.0
_CHUNK = 500  # keys per SELECT (SQLite limits bound parameters)


def _is_corruption(exc: BaseException) -> bool:
    """True for a damaged or foreign file; False for busy/locked and other transient errors."""
    name = getattr(exc, "sqlite_errorname", "") or ""  # Python >= 3.11
    # a truncated file reads short: as damaged as a malformed one
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ")):
        return True
    if name or isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_busy(exc: BaseException) -> bool:
    """True when another connection holds a lock: worth waiting for, never a reason to reset."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc).lower()


def _digest(vec: bytes) -> bytes:
    return hashlib.blake2b(vec, digest_size=16).digest()


class EmbeddingCache:
    """Persistent embedding store, safe to share between processes.

    Parameters
    ----------
    path : path
        A folder (the file ``rnafm-embeddings.sqlite3`` is created in it) or a file ending in
        ``.sqlite``, ``.sqlite3`` or ``.db``.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from rnafm_sklearn import EmbeddingCache
    >>> cache = EmbeddingCache(tempfile.mkdtemp())
    >>> cache.put([b"k1"], np.ones((1, 3), np.float32))
    >>> cache.get([b"k1", b"k2"])[b"k1"].tolist(), len(cache)
    ([1.0, 1.0, 1.0], 1)
    """

    def __init__(self, path: str | os.PathLike):
        path = Path(path).expanduser()
        if path.suffix not in (".sqlite", ".sqlite3", ".db"):
            path = path / _FILE_NAME
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    # ------------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except PermissionError as exc:
            raise PermissionError(
                f"Cannot create the embedding cache folder {self.path.parent}: {exc}. "
                "Pass another cache= path."
            ) from exc
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            conn = self._recover(exc)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        """Open (creating if needed), retrying while another process holds a lock.

        Switching a new file to WAL mode can report "database is locked" at once, without
        waiting for the busy timeout, when several processes create the cache together.
        """
        return _retrying(self._open_once)

    def _open_once(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            self._initialise(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _initialise(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS embeddings (key BLOB PRIMARY KEY, dim INTEGER NOT NULL,"
            " vec BLOB NOT NULL, digest BLOB NOT NULL, created REAL NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)")
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),)
        )
        conn.execute("SELECT count(*) FROM embeddings").fetchone()  # touches every page header

    def _recover(self, exc: BaseException) -> sqlite3.Connection:
        broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        warnings.warn(
            f"Embedding cache {self.path} is unreadable ({exc}); moved it to {broken} and "
            "started an empty cache. Affected embeddings will be recomputed.",
            RuntimeWarning,
            stacklevel=4,
        )
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                os.replace(src, Path(str(broken) + suffix))
        return self._open()

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "_conn": None, "_pid": None}

    # ------------------------------------------------------------------------- reading
    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Vectors of the keys found; corrupt rows are dropped with a warning."""
        found: dict[bytes, np.ndarray] = {}
        bad: list[bytes] = []
        try:
            conn = self._connect()
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, dim, vec, digest FROM embeddings WHERE key IN ({marks})"
                rows = _retrying(lambda q=query, c=chunk: conn.execute(q, c).fetchall())
                for key, dim, vec, digest in rows:
                    if len(vec) != 4 * dim or _digest(vec) != digest:
                        bad.append(key)
                    else:
                        found[key] = np.frombuffer(vec, dtype=np.float32).copy()
        except sqlite3.DatabaseError as exc:
            self._failed("could not be read; recomputing", exc)
            return {}
        if bad:
            warnings.warn(
                f"Embedding cache {self.path}: {len(bad)} corrupt entries failed the checksum; "
                "they are recomputed.",
                RuntimeWarning,
                stacklevel=3,
            )
            self._delete(bad)
        return found

    def _failed(self, what: str, exc: BaseException) -> None:
        """Warn about a database error mid-operation; start over on a fresh file if corrupt.

        A busy or locked database (another process holding a lock past the timeout) is only
        reported: moving a file aside that others are using would lose their entries.
        """
        warnings.warn(f"Embedding cache {self.path} {what} ({exc}).", RuntimeWarning, stacklevel=4)
        self.close()
        if not _is_corruption(exc):
            return
        try:
            self._conn, self._pid = self._recover(exc), os.getpid()
        except sqlite3.DatabaseError:  # pragma: no cover - disk itself failing
            self._conn = None

    def _delete(self, keys: Iterable[bytes]) -> None:
        conn = self._connect()
        rows = [(k,) for k in keys]

        def delete() -> None:
            with _transaction(conn):
                conn.executemany("DELETE FROM embeddings WHERE key = ?", rows)

        _retrying(delete)

    # ------------------------------------------------------------------------- writing
    def put(self, keys: Sequence[bytes], vectors: np.ndarray) -> None:
        """Store rows (one transaction): ``vectors[i]`` under ``keys[i]``."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        rows = []
        for key, vec in zip(keys, vectors, strict=True):
            blob = vec.tobytes()
            rows.append((key, vec.shape[0], blob, _digest(blob), now))

        def write() -> None:
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

        try:
            conn = self._connect()
            _retrying(write)
        except sqlite3.DatabaseError as exc:
            self._failed(f"could not store {len(rows)} entries", exc)

    # ---------------------------------------------------------------------- inspection
    def __len__(self) -> int:
        return self._connect().execute("SELECT count(*) FROM embeddings").fetchone()[0]

    def size_bytes(self) -> int:
        """Bytes on disk, the write-ahead log included."""
        return sum(
            Path(str(self.path) + s).stat().st_size
            for s in ("", "-wal")
            if Path(str(self.path) + s).exists()
        )

    def info(self) -> dict[str, object]:
        """Path, number of entries and size on disk."""
        return {"path": str(self.path), "entries": len(self), "bytes": self.size_bytes()}

    def clear(self) -> None:
        """Delete every entry and give the space back to the file system."""
        conn = self._connect()
        with _transaction(conn):
            conn.execute("DELETE FROM embeddings")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")

    def prune(self, max_bytes: int) -> int:
        """Delete the oldest entries until the file is at most ``max_bytes``; return how many."""
        conn = self._connect()
        removed = 0
        while self.size_bytes() > max_bytes:
            total = len(self)
            if total == 0:
                break
            # drop the oldest quarter (at least one) per round, then compact
            n = max(1, total // 4)
            with _transaction(conn):
                conn.execute(
                    "DELETE FROM embeddings WHERE key IN "
                    "(SELECT key FROM embeddings ORDER BY created LIMIT ?)",
                    (n,),
                )
            removed += n
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
        return removed


def _retrying(operation):
    """Run ``operation()``, retrying while SQLite reports a transient busy/locked state.

    WAL databases can answer SQLITE_BUSY at once (without the busy timeout) while another
    process recovers or checkpoints the log; giving up there would drop cache entries.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_S
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05 + 0.1 * random.random())


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
