"""The daily Zarr store: create, append, gaps, replace, completeness, locking."""

from datetime import date, timedelta

import numpy as np
import pytest
import xarray as xr

from smcast.errors import StoreError
from smcast.grid import Grid
from smcast.store import DailyStore, store_lock
from smcast.variables import VARIABLES

GRID = Grid(0.5, 40.0, 41.0, 10.0, 11.0)


def fields(value: float) -> dict[str, np.ndarray]:
    return {n: np.full(GRID.shape, value, np.float32) for n in VARIABLES}


@pytest.fixture
def store(tmp_path):
    mask = np.array([[True, False], [True, True]])
    return DailyStore.create(tmp_path / "s.zarr", GRID, mask.astype(float), mask, None,
                             date(2024, 1, 1), "test")


def test_new_store_has_one_incomplete_day_and_the_mask(store):
    assert store.days() == [date(2024, 1, 1)]
    assert store.complete_days() == [] and store.latest_complete_day() is None
    assert store.land_cells == 3
    ds = xr.open_zarr(store.path)
    assert ds["tp"].attrs["units"] == "m" and ds["ssrd"].attrs["units"] == "W m-2"
    assert ds["lon"].values.tolist() == [10.25, 10.75]


def test_append_with_gap_and_replace(store):
    d = [date(2024, 1, 1) + timedelta(days=i) for i in range(5)]
    with store_lock(store.path):
        store.write_days([d[0], d[1]], [fields(1.0), fields(2.0)])
        store.write_days([d[4]], [fields(5.0)])  # leaves 3 and 4 incomplete
    assert store.days() == d
    assert store.complete_days() == [d[0], d[1], d[4]]
    assert store.gaps() == [(d[2], d[3])]
    assert store.latest_complete_day() == d[4]
    with store_lock(store.path):
        store.write_days([d[1]], [fields(20.0)])  # re-ingest replaces
    tp = xr.open_zarr(store.path)["tp"].values[:, 0, 0]
    np.testing.assert_array_equal(tp[[0, 1, 4]], [1.0, 20.0, 5.0])
    assert np.isnan(tp[2:4]).all()


def test_day_before_start_is_refused(store):
    with pytest.raises(StoreError, match="starts at 2024-01-01"):
        store.write_days([date(2023, 12, 31)], [fields(0.0)])


def test_second_writer_is_refused_at_once(store):
    with store_lock(store.path):
        with pytest.raises(StoreError, match="another smcast process"):
            with store_lock(store.path):
                pass


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no smcast store"):
        DailyStore(tmp_path)
    xr.Dataset({"a": ("x", [1])}).to_zarr(tmp_path / "other.zarr", zarr_format=2)
    with pytest.raises(StoreError, match="not an smcast store"):
        DailyStore(tmp_path / "other.zarr")


def test_interrupted_append_is_repaired(store):
    import zarr

    with store_lock(store.path):
        store.write_days([date(2024, 1, 1)], [fields(1.0)])
    group = zarr.open_group(str(store.path), mode="r+")
    group["tp"].resize((3, *GRID.shape))  # as if killed half-way through an append
    with store_lock(store.path):
        store.write_days([date(2024, 1, 2)], [fields(2.0)])
    ds = xr.open_zarr(store.path)
    assert ds.sizes["time"] == 2 and ds["tp"].shape[0] == 2
    assert store.complete_days() == [date(2024, 1, 1), date(2024, 1, 2)]


def test_day_chunks_are_row_bands_of_at_most_4_mib():
    from smcast.store import day_chunks

    assert day_chunks(360, 720) == (1, 360, 720)  # global 0.5°: one chunk per day, as before
    assert day_chunks(720, 1440) == (1, 720, 1440)  # global 0.25°: 4.0 MB, still one
    assert day_chunks(1800, 3600) == (1, 258, 3600)  # global 0.1°: 7 bands of 3.7 MB
    assert 258 * 3600 * 4 <= 4 * 2**20 and 7 * 258 >= 1800
    assert day_chunks(5, 10, chunk_bytes=8) == (1, 1, 10)  # a row is the smallest band


BIG = Grid(0.5, 40.0, 45.0, 10.0, 12.0)  # 10 x 4 cells


def big_fields(value: float) -> dict[str, np.ndarray]:
    v = value + np.arange(40, dtype=np.float32).reshape(BIG.shape)
    return {n: v for n in VARIABLES}


def make_big(path, monkeypatch, chunk_bytes: int) -> DailyStore:
    import smcast.store as store_module

    monkeypatch.setattr(store_module, "CHUNK_BYTES", chunk_bytes)
    mask = np.ones(BIG.shape, bool)
    return DailyStore.create(path, BIG, mask.astype(float), mask, None, date(2024, 1, 1), "test")


def check_days(store: DailyStore, values: dict[int, float]) -> None:
    tp = xr.open_zarr(store.path)["tp"].values
    for i, v in values.items():
        want = np.full(BIG.shape, np.nan) if v is None else big_fields(v)["tp"]
        np.testing.assert_array_equal(tp[i], want)


@pytest.mark.parametrize("created, later", [(48, 48), (10**9, 48), (48, 10**9)],
                         ids=["row-bands", "old-whole-grid-store", "row-band-store"])
def test_appends_and_replacements_follow_the_stores_own_chunks(tmp_path, monkeypatch, created,
                                                               later):
    """A store written in row bands (here 3 rows of 4 cells) and one made before row bands
    (one chunk per day) both take appends, gaps and replacements; each keeps its chunks."""
    import smcast.store as store_module
    import zarr

    store = make_big(tmp_path / "s.zarr", monkeypatch, created)
    chunks = zarr.open_group(str(store.path))["tp"].chunks
    assert chunks == ((1, 3, 4) if created == 48 else (1, 10, 4))
    monkeypatch.setattr(store_module, "CHUNK_BYTES", later)
    d = [date(2024, 1, 1) + timedelta(days=i) for i in range(4)]
    with store_lock(store.path):
        store.write_days(d[:2], [big_fields(1.0), big_fields(2.0)])
        store.write_days([d[3]], [big_fields(4.0)])
        store.write_days([d[1]], [big_fields(20.0)])
    check_days(store, {0: 1.0, 1: 20.0, 2: None, 3: 4.0})
    assert store.complete_days() == [d[0], d[1], d[3]]
    group = zarr.open_group(str(store.path))
    assert all(group[n].chunks == chunks for n in VARIABLES)
