"""A persistent, content-addressed store of embedding vectors (SQLite).

Knows nothing of models or estimators: it maps opaque keys (bytes) to float32 vectors.
The caller derives keys from everything that changes the numbers.

* Concurrency: WAL mode, a long busy timeout; each ``put`` is one transaction, so processes
  share the file and an interrupted run keeps every batch it committed.
* Integrity: a row's BLAKE2 digest covers its key, width and vector; a row that fails it (a
  damaged vector, or a vector under another key) is reported, deleted and recomputed.
* Ownership: our files carry ``PRAGMA application_id`` ``RnFm`` and ``user_version`` = schema.
  Any other file (another program's database, a text file) raises :class:`EmbeddingCacheError`
  and is never modified; an empty (0-byte) file is initialised. Our own unreadable file is
  moved aside (``*.corrupt-<time>``) with a warning. Schema-1 rows (digest without the key)
  are dropped with a warning.
* Locations: one that cannot be used (a file where the folder should be, a folder that cannot
  be created) raises :class:`EmbeddingCacheError` on first use, before anything is computed.
  An existing cache that cannot be written is read: hits served, misses computed but not
  stored, one warning.
"""

from __future__ import annotations

import hashlib
import os
import random
import sqlite3
import stat
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["EmbeddingCache", "EmbeddingCacheError"]

_FILE_NAME = "rnafm-embeddings.sqlite3"
_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_APPLICATION_ID = int.from_bytes(b"RnFm", "big")  # SQLite header bytes 68..71
_SCHEMA_VERSION = 2  # 1: the digest covered the vector only
_BUSY_TIMEOUT_S = 120.0
_CHUNK = 500  # keys per SELECT (SQLite limits bound parameters)
_TABLES = (
    "CREATE TABLE embeddings (key BLOB PRIMARY KEY, dim INTEGER NOT NULL,"
    " vec BLOB NOT NULL, digest BLOB NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)",
)
_V1_NAMES = {"embeddings", "meta", "sqlite_autoindex_embeddings_1", "sqlite_autoindex_meta_1"}
_ANOTHER = "Pass another cache= path"


class EmbeddingCacheError(OSError):
    """The embedding cache location cannot be used; the message names the path and the fix."""


class _Damaged(sqlite3.DatabaseError):
    """Our own file, but its tables are not what we wrote."""


def _errorname(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""  # Python >= 3.11


def _is_corruption(exc: BaseException) -> bool:
    """True for a damaged file; False for busy/locked and other transient errors."""
    if isinstance(exc, _Damaged):
        return True
    name = _errorname(exc)
    # a truncated file reads short: as damaged as a malformed one
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_IOERR_SHORT_READ")):
        return True
    if name or isinstance(exc, sqlite3.OperationalError):
        return False
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


def _is_busy(exc: BaseException) -> bool:
    """True when another connection holds a lock: worth waiting for, never a reason to reset."""
    name = _errorname(exc)
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc).lower()


def _is_unwritable(exc: BaseException) -> bool:
    """True when SQLite could not write or create a file (read-only place, permissions)."""
    name = _errorname(exc)
    if name:
        return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM"))
    text = str(exc).lower()
    return "readonly" in text or "unable to open" in text


def _digest(key: bytes, dim: int, vec: bytes) -> bytes:
    """Checksum of a row: binds the vector to its key (hence to the settings) and width."""
    h = hashlib.blake2b(digest_size=16, person=b"rnafm-cache-v2")
    h.update(len(key).to_bytes(8, "little"))
    h.update(key)
    h.update(int(dim).to_bytes(8, "little"))
    h.update(vec)
    return h.digest()


def _not_ours(path: Path) -> EmbeddingCacheError:
    return EmbeddingCacheError(
        f"{path} is not an rnafm_sklearn embedding cache; pass another cache= path (a folder, "
        "or a new file ending in .sqlite). The file was not modified."
    )


def _inspect(conn: sqlite3.Connection, path: Path) -> str:
    """Whose file this is, reading only: 'ours', 'empty' or 'v1' (schema 1).

    Raises :class:`EmbeddingCacheError` for another program's database or a newer schema.
    """
    app = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
    if app == _APPLICATION_ID:
        if version > _SCHEMA_VERSION:
            raise EmbeddingCacheError(
                f"Embedding cache {path} was written by a newer rnafm_sklearn (schema "
                f"{version}); upgrade rnafm_sklearn or {_ANOTHER.lower()}."
            )
        if version < _SCHEMA_VERSION or not {"embeddings", "meta"} <= names:
            raise _Damaged("an rnafm_sklearn cache without its tables")
        return "ours"
    if app == 0 and version == 0:
        if not names:
            return "empty"
        if names == _V1_NAMES:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(embeddings)")]
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            if columns == ["key", "dim", "vec", "digest", "created"] and row == ("1",):
                return "v1"
    raise _not_ours(path)


def _header_is_ours(path: Path) -> bool:
    """Our application id in the raw header (only used when SQLite cannot read the file)."""
    try:
        with open(path, "rb") as f:
            return f.read(72)[68:72] == _APPLICATION_ID.to_bytes(4, "big")
    except OSError:
        return False


def _connect_read_only(path: Path, immutable: bool) -> sqlite3.Connection:
    uri = path.resolve().as_uri() + ("?mode=ro&immutable=1" if immutable else "?mode=ro")
    return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)


def _probe(path: Path) -> str:
    """Classify the file at ``path`` without writing anything: 'missing', 'empty', 'ours' or
    'v1'; raise :class:`EmbeddingCacheError` for anything else.

    A file nobody has open (no ``-wal``/``-journal`` beside it) is read with ``immutable=1``
    so that SQLite creates no ``-wal``/``-shm`` next to another program's database.
    """
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "missing"  # the folder is checked when it is created
    except OSError as exc:
        raise EmbeddingCacheError(
            f"Cannot use the embedding cache {path}: {exc.strerror}. {_ANOTHER}."
        ) from exc
    if stat.S_ISDIR(st.st_mode):
        raise EmbeddingCacheError(
            f"Embedding cache {path} is a folder, not a file. {_ANOTHER} (a folder path without "
            f"the {'/'.join(_SUFFIXES)} suffix, or a file path)."
        )
    if not stat.S_ISREG(st.st_mode):
        raise EmbeddingCacheError(f"Embedding cache {path} is not a regular file. {_ANOTHER}.")
    if st.st_size == 0:
        return "empty"
    in_use = any(Path(str(path) + s).exists() for s in ("-wal", "-journal"))
    for immutable in (not in_use, True):
        try:
            conn = _connect_read_only(path, immutable)
            try:
                return _inspect(conn, path)
            finally:
                conn.close()
        except _Damaged:
            return "ours"
        except sqlite3.DatabaseError as exc:
            if _is_corruption(exc):
                if _header_is_ours(path):
                    return "ours"  # opened for real, it is moved aside
                raise _not_ours(path) from exc
            if immutable or not _is_unwritable(exc):  # cannot create -shm: read it immutable
                raise
    raise AssertionError("unreachable")  # pragma: no cover


class EmbeddingCache:
    """Persistent embedding store, safe to share between processes.

    Parameters
    ----------
    path : path
        A folder (the file ``rnafm-embeddings.sqlite3`` is created in it) or a file ending in
        ``.sqlite``, ``.sqlite3`` or ``.db``. An existing file must be an rnafm_sklearn cache
        (or empty); anything else raises :class:`EmbeddingCacheError` and is left untouched.

    Notes
    -----
    A cache that exists but cannot be written (read-only file system, permissions) is used
    read-only: :meth:`get` serves hits, :meth:`put` stores nothing and warns once,
    :meth:`clear` and :meth:`prune` raise :class:`EmbeddingCacheError`.

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
        if path.suffix not in _SUFFIXES:
            path = path / _FILE_NAME
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._read_only: str | None = None  # why, when the cache cannot be written
        self._told_read_only = False

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r})"

    # ------------------------------------------------------------------------ connection
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self._read_only = None
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise
            conn = self._recover(exc)
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _open(self) -> sqlite3.Connection:
        """Open the cache after checking the file is ours; read-only when it cannot be written."""
        state = _retrying(lambda: _probe(self.path))
        if state == "missing":
            self._make_folder()
        elif state == "ours" and not self._writable():
            return self._open_read_only(self._why_not_writable())
        try:
            # switching a new file to WAL mode can report "database is locked" at once,
            # without waiting for the busy timeout, when several processes create it together
            return _retrying(self._open_writable)
        except sqlite3.OperationalError as exc:
            if not _is_unwritable(exc):
                raise
            if state == "ours":
                return self._open_read_only(str(exc))
            verb = {"missing": "create", "empty": "initialise", "v1": "upgrade"}[state]
            raise EmbeddingCacheError(
                f"Cannot {verb} the embedding cache {self.path}: {exc} (read-only or no "
                f"permission). {_ANOTHER} (a writable folder)."
            ) from exc

    def _writable(self) -> bool:
        return os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK)

    def _why_not_writable(self) -> str:
        try:
            if os.statvfs(self.path).f_flag & os.ST_RDONLY:
                return "read-only file system"
        except (OSError, AttributeError):  # pragma: no cover - no statvfs (Windows)
            pass
        return "no write permission"

    def _make_folder(self) -> None:
        folder = self.path.parent
        if folder.is_file():
            raise EmbeddingCacheError(
                f"Embedding cache location {folder} is a file, not a folder. {_ANOTHER}: a "
                f"folder (the file {_FILE_NAME} is created in it) or a file path ending in "
                f"{', '.join(_SUFFIXES)}."
            )
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next((p for p in folder.parents if p.is_file()), None)
            reason = f"{blocker} is a file, not a folder" if blocker else exc.strerror or exc
            raise EmbeddingCacheError(
                f"Cannot create the embedding cache folder {folder}: {reason}. "
                f"{_ANOTHER} (a writable folder)."
            ) from exc

    def _open_writable(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        dropped = None
        try:
            state = _inspect(conn, self.path)
            if state in ("empty", "v1"):
                with _transaction(conn):  # decide again, holding the write lock
                    state = _inspect(conn, self.path)
                    if state == "empty":
                        _create_tables(conn)
                    elif state == "v1":
                        dropped = _upgrade_v1(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("SELECT count(*) FROM embeddings").fetchone()  # every page header
        except BaseException:
            conn.close()
            raise
        if dropped is not None:
            _warn(
                f"Embedding cache {self.path} was written by an older rnafm_sklearn (schema 1), "
                f"whose checksums do not cover the keys; its {dropped} entries were dropped "
                "and will be recomputed."
            )
        return conn

    def _open_read_only(self, reason: str) -> sqlite3.Connection:
        """Open an existing cache of ours read-only; immutable when no ``-shm`` can be made."""

        def attempt(immutable: bool) -> sqlite3.Connection:
            conn = _connect_read_only(self.path, immutable)
            try:
                if _inspect(conn, self.path) != "ours":
                    raise EmbeddingCacheError(
                        f"Embedding cache {self.path} is read-only ({reason}) and empty or of "
                        f"an older rnafm_sklearn; make it writable or {_ANOTHER.lower()}."
                    )
                conn.execute("SELECT count(*) FROM embeddings").fetchone()
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = _retrying(lambda: attempt(immutable=False))
        except sqlite3.OperationalError as exc:
            if not _is_unwritable(exc):
                raise
            conn = _retrying(lambda: attempt(immutable=True))
        self._read_only = reason
        return conn

    def _recover(self, exc: BaseException) -> sqlite3.Connection:
        """Move our unreadable file (and its -wal/-shm) aside and start an empty cache."""
        broken = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(str(self.path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(broken) + suffix))
        except OSError as move:
            raise EmbeddingCacheError(
                f"Embedding cache {self.path} is unreadable ({exc}) and cannot be moved aside "
                f"({move.strerror}). Delete it or {_ANOTHER.lower()}."
            ) from exc
        _warn(
            f"Embedding cache {self.path} is unreadable ({exc}); moved it to {broken} and "
            "started an empty cache. Affected embeddings will be recomputed."
        )
        return self._open()

    def close(self) -> None:
        """Close this process's connection (the next use opens it again)."""
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict:
        state = {"path": self.path, "_conn": None, "_pid": None}
        return state | {"_read_only": None, "_told_read_only": False}

    # ------------------------------------------------------------------------- reading
    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Vectors of the keys found; rows that fail the checksum are dropped with a warning.

        Raises :class:`EmbeddingCacheError` when the location cannot be used at all.
        """
        found: dict[bytes, np.ndarray] = {}
        bad: list[bytes] = []
        wanted = set(keys)
        try:
            conn = self._connect()
            for start in range(0, len(keys), _CHUNK):
                chunk = list(keys[start : start + _CHUNK])
                marks = ",".join("?" * len(chunk))
                query = f"SELECT key, dim, vec, digest FROM embeddings WHERE key IN ({marks})"
                rows = _retrying(lambda q=query, c=chunk: conn.execute(q, c).fetchall())
                for key, dim, vec, digest in rows:
                    if key not in wanted:  # only a damaged index answers with another key
                        continue
                    if len(vec) != 4 * dim or _digest(key, dim, vec) != digest:
                        bad.append(key)
                    else:
                        found[key] = np.frombuffer(vec, dtype=np.float32).copy()
        except sqlite3.DatabaseError as exc:
            self._failed("could not be read; recomputing", exc)
            return {}
        if bad:
            _warn(
                f"Embedding cache {self.path}: {len(bad)} corrupt entries failed the checksum; "
                "they are recomputed."
            )
            if self._read_only is None:
                try:
                    self._delete(bad)
                except sqlite3.DatabaseError as exc:
                    if not _is_unwritable(exc):
                        self._failed("could not delete corrupt entries", exc)
        return found

    def _failed(self, what: str, exc: BaseException) -> None:
        """Warn about a database error mid-operation; start over on a fresh file if corrupt.

        A busy or locked database (another process holding a lock past the timeout) is only
        reported: moving a file aside that others are using would lose their entries.
        """
        _warn(f"Embedding cache {self.path} {what} ({exc}).")
        read_only = self._read_only is not None
        self.close()
        if not _is_corruption(exc) or read_only:
            return
        try:
            self._conn, self._pid = self._recover(exc), os.getpid()
        except (sqlite3.DatabaseError, OSError):  # pragma: no cover - disk itself failing
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
        """Store rows (one transaction): ``vectors[i]`` under ``keys[i]``.

        A read-only cache stores nothing and warns once per connection.
        """
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        now = time.time()
        rows = []
        for key, vec in zip(keys, vectors, strict=True):
            blob = vec.tobytes()
            rows.append((key, vec.shape[0], blob, _digest(key, vec.shape[0], blob), now))

        def write() -> None:
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?, ?)", rows)

        try:
            conn = self._connect()
            if self._read_only is None:
                _retrying(write)
        except sqlite3.DatabaseError as exc:
            if not _is_unwritable(exc):
                self._failed(f"could not store {len(rows)} entries", exc)
                return
            self._read_only = str(exc)  # SQLite opened it read-only without saying so
        if self._read_only is not None and rows and not self._told_read_only:
            self._told_read_only = True
            _warn(
                f"Embedding cache {self.path} is read-only ({self._read_only}): cached "
                "embeddings are used, new ones are not stored. Pass a writable cache= path "
                "to keep them."
            )

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

    def _writable_connection(self, action: str) -> sqlite3.Connection:
        conn = self._connect()
        if self._read_only is not None:
            raise EmbeddingCacheError(
                f"Embedding cache {self.path} is read-only; cannot {action} it "
                f"({self._read_only})."
            )
        return conn

    def clear(self) -> None:
        """Delete every entry and give the space back to the file system."""
        conn = self._writable_connection("clear")
        with _transaction(conn):
            conn.execute("DELETE FROM embeddings")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")

    def prune(self, max_bytes: int) -> int:
        """Delete the oldest entries until the file is at most ``max_bytes``; return how many."""
        conn = self._writable_connection("prune")
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


def _create_tables(conn: sqlite3.Connection) -> None:
    """Mark an empty database as ours and create the tables (inside a transaction)."""
    conn.execute(f"PRAGMA application_id = {_APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
    for statement in _TABLES:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(_SCHEMA_VERSION),))


def _upgrade_v1(conn: sqlite3.Connection) -> int:
    """Schema 1 -> 2 (inside a transaction): its rows cannot be checked, so drop them."""
    dropped = conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]
    conn.execute("DROP TABLE embeddings")
    conn.execute("DROP TABLE meta")
    _create_tables(conn)
    return dropped


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)


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
