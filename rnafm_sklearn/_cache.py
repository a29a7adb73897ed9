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

The file format, its identification, the schema and the SQLite plumbing are in
:mod:`._cache_file`; opening the file (location checks, the read-only fallback, moving an
unreadable file aside) in :mod:`._cache_connection`. This module reads and writes entries.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ._cache_connection import _CacheConnection
from ._cache_file import (
    _FILE_NAME,
    _SUFFIXES,
    EmbeddingCacheError,
    _digest,
    _is_corruption,
    _is_unwritable,
    _retrying,
    _transaction,
    _warn,
)

__all__ = ["EmbeddingCache", "EmbeddingCacheError"]

_CHUNK = 500  # keys per SELECT (SQLite limits bound parameters)


class EmbeddingCache(_CacheConnection):
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
    def close(self) -> None:
        """Close this process's connection (the next use opens it again).

        Returns
        -------
        None

        Raises
        ------
        None
            Closing a closed cache, or one opened by another process (after a fork), is a
            no-op.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> cache.close()
        >>> len(cache)
        2
        """
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    def __getstate__(self) -> dict:
        state = {"path": self.path, "_conn": None, "_pid": None}
        return state | {"_read_only": None, "_told_read_only": False}

    # ------------------------------------------------------------------------- reading
    def get(self, keys: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        """Vectors of the keys found; rows that fail the checksum are dropped with a warning.

        Parameters
        ----------
        keys : sequence of bytes
            Cache keys (the estimators derive them from the weights, the settings and the
            tokens).

        Returns
        -------
        dict of bytes to ndarray
            The float32 vector of every key found (missing keys are absent).

        Raises
        ------
        EmbeddingCacheError
            The location cannot be used at all (a file where the folder should be, a folder
            that cannot be created, another program's file at the cache path).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> sorted(cache.get([b"k1", b"nope"]))
        [b'k1']
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

        Parameters
        ----------
        keys : sequence of bytes
            One key per row; an existing key is replaced.
        vectors : ndarray of shape (len(keys), n_features)
            Stored as float32.

        Returns
        -------
        None

        Raises
        ------
        EmbeddingCacheError
            The location cannot be used at all (a file where the folder should be, a folder
            that cannot be created, another program's file at the cache path).
        ValueError
            ``keys`` and ``vectors`` differ in length.

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> len(cache)
        2
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
        """Bytes on disk, the write-ahead log included.

        Returns
        -------
        int
            0 when the file does not exist yet.

        Raises
        ------
        None

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> cache.size_bytes() > 0
        True
        """
        return sum(
            Path(str(self.path) + s).stat().st_size
            for s in ("", "-wal")
            if Path(str(self.path) + s).exists()
        )

    def info(self) -> dict[str, object]:
        """Path, number of entries and size on disk.

        Returns
        -------
        dict
            ``{"path": str, "entries": int, "bytes": int}``.

        Raises
        ------
        EmbeddingCacheError
            The location cannot be used at all (a file where the folder should be, a folder
            that cannot be created, another program's file at the cache path).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> cache.info()["entries"]
        2
        """
        return {"path": str(self.path), "entries": len(self), "bytes": self.size_bytes()}

    def clear(self) -> None:
        """Delete every entry and give the space back to the file system.

        Returns
        -------
        None

        Raises
        ------
        EmbeddingCacheError
            The location cannot be used at all (a file where the folder should be, a folder
            that cannot be created, another program's file at the cache path).
            Also raised when the cache cannot be written (read-only file or file system).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> cache.clear()
        >>> len(cache)
        0
        """
        conn = self._writable_connection("clear")
        with _transaction(conn):
            conn.execute("DELETE FROM embeddings")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")

    def prune(self, max_bytes: int) -> int:
        """Delete the oldest entries until the file is at most ``max_bytes``; return how many.

        Parameters
        ----------
        max_bytes : int
            Target size on disk, in bytes (the write-ahead log included).

        Returns
        -------
        int
            Number of entries deleted (oldest first, by time of storage).

        Raises
        ------
        EmbeddingCacheError
            The location cannot be used at all (a file where the folder should be, a folder
            that cannot be created, another program's file at the cache path).
            Also raised when the cache cannot be written (read-only file or file system).

        Examples
        --------
        >>> import tempfile, numpy as np
        >>> from rnafm_sklearn import EmbeddingCache
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> cache.put([b"k1", b"k2"], np.ones((2, 3), np.float32))
        >>> cache.prune(max_bytes=10**9)
        0
        """
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
