"""``load_cells(cells=...)``: a subset of land cells, read a band of rows and a block of days at
a time, equals the same cells taken from a whole read."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

import smcast.train.data as data_mod
from smcast.config import PAPER_DYNAMIC, PAPER_STATIC
from smcast.ingest.pipeline import ingest
from smcast.store import DailyStore
from smcast.train.data import load_cells, load_truth

FIRST, LAST = date(2021, 1, 1), date(2021, 1, 12)


@pytest.fixture(scope="module")
def store(tmp_path_factory, demo_cache) -> DailyStore:
    from smcast.config import load_config

    root = tmp_path_factory.mktemp("cells")
    cfg = load_config(None, [f"data_dir={root}", "grid.area=[48,4,44,10]", "grid.resolution=0.25",
                             f"source.demo.cache_dir={demo_cache}",
                             "source.demo.epoch=2021-01-01"], environ={})
    ingest(cfg, FIRST, LAST)
    return DailyStore(cfg.store_path)


def _fields(c) -> list[np.ndarray]:
    return [c.dynamic, c.statics, c.target, c.direction, c.direction_eval, c.lat, c.cells]


def test_subset_equals_whole_read_in_small_blocks(store, monkeypatch):
    whole = load_cells(store, FIRST, LAST, list(PAPER_DYNAMIC), list(PAPER_STATIC), deep=True)
    n = whole.target.shape[0]
    assert n == store.land_cells > 50
    # a middle band and a scattered subset, read 3 days at a time
    row_bytes = store.grid.shape[1] * 4
    monkeypatch.setattr(data_mod, "READ_BLOCK_BYTES", 3 * row_bytes * store.grid.shape[0])
    for cells in (np.arange(n // 3, 2 * n // 3), np.arange(1, n, 7)):
        part = load_cells(store, FIRST, LAST, list(PAPER_DYNAMIC), list(PAPER_STATIC),
                          deep=True, cells=cells)
        ref = whole.subset(cells)
        for got, want in zip(_fields(part), _fields(ref)):
            np.testing.assert_array_equal(got, want)
    obs, d = load_truth(store, FIRST, LAST, cells=np.arange(5, 9))
    np.testing.assert_array_equal(obs, whole.target[5:9])
    np.testing.assert_array_equal(d, whole.direction_eval[5:9])


def test_cells_must_be_ascending_land_cells(store):
    with pytest.raises(ValueError, match="ascending land-cell numbers"):
        load_cells(store, FIRST, LAST, ["t2m"], [], deep=True, cells=np.array([3, 2]))
    with pytest.raises(ValueError, match="ascending land-cell numbers"):
        load_cells(store, FIRST, LAST, ["t2m"], [], deep=True,
                   cells=np.array([store.land_cells]))
