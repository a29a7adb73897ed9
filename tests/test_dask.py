"""Scale-out on a real distributed.LocalCluster (2 worker processes)."""

import re

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

import joblib  # noqa: E402
from _tolerance import assert_close  # noqa: E402
from conftest import TINY_PTH, rfam  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import StratifiedKFold, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

from rnafm_sklearn import EmbeddingCache, RnaFmEmbedder  # noqa: E402
from rnafm_sklearn.dask import embed  # noqa: E402

MODEL = str(TINY_PTH)


def _load_count():
    import rnafm_sklearn._models

    return rnafm_sklearn._models.LOAD_COUNT


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def data():
    return rfam().groupby("family").head(40).sample(frac=1, random_state=0)


def test_embed_matches_single_process_and_loads_once_per_worker(client, data):
    emb = RnaFmEmbedder(model=MODEL, progress=False)
    expected = emb.transform(data.sequence)
    lazy = embed(dd.from_pandas(data.sequence, npartitions=8, sort=False), emb)
    assert list(lazy.columns) == list(emb.get_feature_names_out())
    assert (lazy.dtypes == np.float32).all()
    first = lazy.compute()
    second = lazy.compute()
    assert list(first.index) == list(data.index)  # order and index kept
    assert_close(first.to_numpy(), expected)
    assert_close(second.to_numpy(), first.to_numpy())  # a partition may run on another worker
    counts = client.run(_load_count)
    assert len(counts) == 2
    assert sorted(counts.values()) == [1, 1], counts  # once per worker, however many tasks


def test_dataframe_with_column(client, data):
    frame = data.reset_index().assign(length=data.sequence.str.len().to_numpy())
    emb = RnaFmEmbedder(model=MODEL, column="sequence", progress=False)
    out = embed(dd.from_pandas(frame, npartitions=3, sort=False), emb).compute()
    assert_close(out.to_numpy(), emb.transform(frame))
    assert list(out.index) == list(frame.index)


def test_bad_sequence_raises_the_library_error(client):
    s = pd.Series(["ACGU", "GGCC", "UUAA", "ACXG"], index=["a", "b", "c", "d"])
    lazy = embed(dd.from_pandas(s, npartitions=2, sort=False), RnaFmEmbedder(model=MODEL))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "In partition 1: Sequence at row 1 (0-based; index 'd') contains characters that RNA-FM cannot read: 'X' at 3"
        ),
    ):
        lazy.compute()


def test_shared_cache_from_all_workers(client, data, tmp_path):
    emb = RnaFmEmbedder(model=MODEL, cache=str(tmp_path), progress=False)
    out = embed(dd.from_pandas(data.sequence, npartitions=8, sort=False), emb).compute()
    assert len(EmbeddingCache(tmp_path)) == data.sequence.nunique()
    again = embed(dd.from_pandas(data.sequence, npartitions=5, sort=False), emb).compute()
    np.testing.assert_array_equal(again.to_numpy(), out.to_numpy())  # hits: stored bytes


def test_joblib_dask_backend_cross_validation(client, data):
    pipe = Pipeline(
        [
            ("emb", RnaFmEmbedder(model=MODEL, progress=False)),
            ("clf", LogisticRegression(max_iter=2000)),
        ]
    )
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    local = cross_val_score(pipe, data.sequence, data.family, cv=cv)
    with joblib.parallel_backend("dask"):
        remote = cross_val_score(pipe, data.sequence, data.family, cv=cv, n_jobs=-1)
    np.testing.assert_allclose(remote, local)  # accuracies: discrete, robust to rounding


def test_building_the_graph_loads_no_weights_on_the_client():
    import rnafm_sklearn._models as models

    models.clear_model_cache()
    before = _load_count()
    s = dd.from_pandas(pd.Series(["ACGU", "GGCA"]), npartitions=1)
    lazy = embed(s, RnaFmEmbedder(model=MODEL, device="auto"))
    assert lazy.columns[0] == "rnafm_l2_mean_0"
    assert _load_count() == before  # column names come from the checkpoint's config


def test_input_errors():
    emb = RnaFmEmbedder(model=MODEL)
    with pytest.raises(TypeError, match="data must be a dask Series or DataFrame, got list"):
        embed(["ACGU"], emb)
    frame = dd.from_pandas(pd.DataFrame({"a": ["AC"], "b": ["GU"]}), npartitions=1, sort=False)
    with pytest.raises(
        ValueError, match=re.escape("data is a DataFrame with 2 columns ['a', 'b']; set column=")
    ):
        embed(frame, emb)
    with pytest.raises(ValueError, match="Column 'seq' not found in data; available columns"):
        embed(frame, RnaFmEmbedder(model=MODEL, column="seq"))
