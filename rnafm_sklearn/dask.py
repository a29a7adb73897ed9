"""Embedding on a Dask cluster: ``rnafm_sklearn.dask.embed``.

Needs the optional extra: ``pip install "rnafm_sklearn[dask]"``.

Each partition is embedded on a worker by a copy of the estimator. The estimator pickles
without its weights, and every worker process keeps the encoder it loaded in the library's
process-wide registry, so the weights are read **once per worker**, not once per task or
partition. A worker uses its own device (``device="auto"``: its GPU when it has one; with
dask-cuda each worker sees one GPU) and as many torch threads as it has Dask threads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ._embedder import RnaFmEmbedder
from ._input import select_column

__all__ = ["embed"]


def _require_dask():
    try:
        import dask.dataframe as dd
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "rnafm_sklearn.dask needs dask: pip install 'rnafm_sklearn[dask]'"
        ) from None
    return dd


def _worker_threads() -> int | None:
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None  # not on a distributed worker (e.g. the threaded scheduler)


def _embed_partition(
    part: pd.Series | pd.DataFrame,
    embedder: RnaFmEmbedder,
    columns: list[str],
    partition_info: dict | None = None,
) -> pd.DataFrame:
    threads = _worker_threads()
    if threads:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    try:
        X = embedder.transform(part)
    except (ValueError, TypeError) as exc:
        where = "" if partition_info is None else f"partition {partition_info['number']}: "
        raise type(exc)(f"In {where}{exc}") from exc
    return pd.DataFrame(X, index=part.index, columns=columns)


def embed(data: Any, embedder: RnaFmEmbedder) -> Any:
    """Embed a Dask Series (or DataFrame) lazily, partition by partition.

    Parameters
    ----------
    data : dask.dataframe.Series or dask.dataframe.DataFrame
        The sequences. A DataFrame needs ``embedder.column`` (or a single column).
    embedder : RnaFmEmbedder
        Its parameters are used on every worker (give ``model`` as a path every worker can
        read, or ``"rna-fm"`` with a shared ``RNAFM_SKLEARN_HOME``). A ``cache`` path is safe
        to share between the workers of one machine, not over a network file system (SQLite
        locking). Column names come from the checkpoint's config: the client loads no weights.

    Returns
    -------
    dask.dataframe.DataFrame
        Lazy; float32 columns ``embedder.get_feature_names_out()``, the input's index and
        partitions. A bad sequence raises the library's error naming the partition, the row
        and its index label.

    Raises
    ------
    ModuleNotFoundError
        dask is not installed (``pip install "rnafm_sklearn[dask]"``).
    TypeError
        ``embedder`` is not an :class:`~rnafm_sklearn.RnaFmEmbedder`, or ``data`` is not a Dask
        Series or DataFrame (for pandas or lists call ``embedder.transform``).
    ValueError
        A DataFrame whose sequence column cannot be chosen (see ``embedder.column``).

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> from rnafm_sklearn import RnaFmEmbedder
    >>> from rnafm_sklearn.dask import embed
    >>> s = pd.Series(["ACGU", "GGCA", "UUAG"], index=["a", "b", "c"])
    >>> s = dd.from_pandas(s, npartitions=2)
    >>> features = embed(s, RnaFmEmbedder(model="tests/fixtures/RNA-FM_tiny.pth"))
    >>> features.compute().shape, list(features.compute().index)
    ((3, 32), ['a', 'b', 'c'])
    """
    dd = _require_dask()
    if not isinstance(embedder, RnaFmEmbedder):
        raise TypeError(f"embedder must be an RnaFmEmbedder, got {type(embedder).__name__}.")
    if isinstance(data, dd.DataFrame):
        data = data[select_column(data.columns, embedder.column, what="data")]
    elif not isinstance(data, dd.Series):
        raise TypeError(
            f"data must be a dask Series or DataFrame, got {type(data).__name__}; for pandas "
            "or lists call embedder.transform directly."
        )
    columns = [str(c) for c in embedder.get_feature_names_out()]
    meta = pd.DataFrame(
        {c: pd.Series(dtype=np.float32) for c in columns},
        index=data._meta.index,
    )
    return data.map_partitions(
        _embed_partition, embedder, columns, meta=meta, enforce_metadata=False
    )
