"""The embedding cache's SQLite file: its format, whose it is, its schema, and SQLite plumbing.

* Format: constants (file name and suffixes, ``PRAGMA application_id`` ``RnFm``, schema
  version, tables) and the row checksum :func:`_digest`.
* Identification, reading only: :func:`_probe` and :func:`_inspect` classify a file as
  missing, empty, ours or schema 1, and raise :class:`EmbeddingCacheError` for anything else;
  the error classifiers ``_is_corruption``, ``_is_busy`` and ``_is_unwritable``.
* Schema: :func:`_create_tables` and :func:`_upgrade_v1`.
* Plumbing: :func:`_retrying` (busy/locked retries), :class:`_transaction`, :func:`_warn`.

The store itself, :class:`~rnafm_sklearn._cache.EmbeddingCache`, is in :mod:`._cache`; opening
the file (the connection, the read-only fallback, recovery) in :mod:`._cache_connection`.
"""

from __future__ import annotations

import hashlib
import random
import sqlite3
import stat
import time
import warnings
from pathlib import Path

_FILE_NAME = "rnafm-embeddings.sqlite3"
_SUFFIXES = (".sqlite", ".sqlite3", ".db")
_APPLICATION_ID = int.from_bytes(b"RnFm", "big")  # SQLite header bytes 68..71
_SCHEMA_VERSION = 2  # 1: the digest covered the vector only
_BUSY_TIMEOUT_S = 120.0
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
    The header and the schema are read in one read transaction: read one by one, another
    process creating the cache could commit in between (an unmarked header, then our tables),
    and its new cache would be mistaken for a foreign database.
    """
    if conn.in_transaction:
        return _classify(conn, path)
    conn.execute("BEGIN")
    try:
        state = _classify(conn, path)
    except BaseException:
        if conn.in_transaction:  # SQLite may already have ended it (e.g. on a damaged page)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return state


def _classify(conn: sqlite3.Connection, path: Path) -> str:
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
