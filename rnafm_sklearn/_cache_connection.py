"""Opening the embedding cache: this process's connection, and what to do when it cannot be had.

:class:`_CacheConnection` is the part of :class:`~rnafm_sklearn.EmbeddingCache` that turns a
path into a SQLite connection: one per process (a fork opens its own), after checking that the
file is ours (:func:`._cache_file._probe`); it creates the folder, initialises an empty file or
upgrades a schema-1 one, falls back to read-only access when the cache cannot be written, and
moves our own unreadable file aside to start an empty one. Every location that cannot be used
raises :class:`EmbeddingCacheError` naming the path and the fix. The file format is in
:mod:`._cache_file`; reading and writing entries in :mod:`._cache`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from ._cache_file import (
    _ANOTHER,
    _BUSY_TIMEOUT_S,
    _FILE_NAME,
    _SUFFIXES,
    EmbeddingCacheError,
    _connect_read_only,
    _create_tables,
    _inspect,
    _is_corruption,
    _is_unwritable,
    _probe,
    _retrying,
    _transaction,
    _upgrade_v1,
    _warn,
)


class _CacheConnection:
    """The connection of an :class:`~rnafm_sklearn.EmbeddingCache` (its base class).

    Uses the attributes that ``EmbeddingCache.__init__`` sets: ``path`` (the SQLite file),
    ``_conn`` and ``_pid`` (the open connection and the process that opened it) and
    ``_read_only`` (why the cache cannot be written, or ``None``).
    """

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

    def _writable_connection(self, action: str) -> sqlite3.Connection:
        conn = self._connect()
        if self._read_only is not None:
            raise EmbeddingCacheError(
                f"Embedding cache {self.path} is read-only; cannot {action} it "
                f"({self._read_only})."
            )
        return conn
