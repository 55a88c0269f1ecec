"""The demo source into a store: real land cells, determinism, latency, checkpoints."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from smcast.errors import DataUnavailableError
from smcast.grid import Grid
from smcast.ingest.landmask import globe_land_fraction
from smcast.ingest.pipeline import ingest
from smcast.sources.demo import DemoSource
from smcast.store import DailyStore
from smcast.variables import VARIABLES

D0 = date(2021, 3, 1)


def test_demo_store_land_cells_follow_the_globe_mask(demo_cfg, demo_cache):
    summary = ingest(demo_cfg, D0, D0 + timedelta(days=4))
    store = DailyStore(demo_cfg.store_path)
    grid = Grid.from_config(demo_cfg.grid)
    fraction = globe_land_fraction(grid, demo_cache)
    np.testing.assert_array_equal(store.land_mask, fraction >= 0.5)
    assert summary.land_cells == int((fraction >= 0.5).sum()) > 50
    ds = store.open()
    for name, var in VARIABLES.items():
        land = ds[name].values[:, store.land_mask]
        assert np.isfinite(land).all(), name
        lo, hi = var.valid_range
        assert (land >= lo).all() and (land <= hi).all(), name
        assert np.isnan(ds[name].values[:, ~store.land_mask]).all(), name
    for name in ("elevation", "clay", "sand", "silt", "storage_capacity", "land_cover"):
        assert np.isfinite(ds[name].values[store.land_mask]).all(), name


def test_real_coastline_in_the_global_mask(demo_cache):
    fraction = globe_land_fraction(Grid(0.5), demo_cache)
    grid = Grid(0.5)
    def at(lat, lon):
        return fraction[np.searchsorted(grid.lat, lat) - 1, np.searchsorted(grid.lon, lon) - 1]
    assert at(48.9, 2.4) == 1.0        # Paris
    assert at(0.1, -30.1) == 0.0       # mid Atlantic
    assert at(-25.1, 134.1) == 1.0     # central Australia
    land = fraction >= 0.5
    assert 60_000 < land[grid.lat >= -60].sum() < 75_000  # ~29 % of the Earth, no Antarctica


def test_a_day_does_not_depend_on_the_range_asked(demo_cfg, tmp_path):
    ingest(demo_cfg, D0, D0 + timedelta(days=9))
    one = DailyStore(demo_cfg.store_path).open().load()
    demo_cfg.store.path = tmp_path / "split.zarr"
    ingest(demo_cfg, D0 + timedelta(days=5), D0 + timedelta(days=9))  # resumes from a checkpoint
    two = DailyStore(tmp_path / "split.zarr").open().load()
    for name in VARIABLES:
        np.testing.assert_array_equal(one[name].values[5:], two[name].values, err_msg=name)


def test_latency_and_epoch(demo_cfg):
    source = DemoSource(demo_cfg, Grid.from_config(demo_cfg.grid))
    today = date(2025, 6, 10)
    source.check([date(2025, 6, 5)], today=today)
    with pytest.raises(DataUnavailableError, match="5-day latency.*reaches 2025-06-05"):
        source.check([date(2025, 6, 6)], today=today)
    with pytest.raises(DataUnavailableError, match="starts at 2021-01-01"):
        source.check([date(2020, 12, 31)], today=today)


def test_weather_has_persistence_and_seasons(demo_cfg):
    ingest(demo_cfg, date(2021, 1, 1), date(2021, 12, 31))
    ds = DailyStore(demo_cfg.store_path).open()
    t2m = ds["t2m"].mean(("lat", "lon")).values
    assert t2m[180:210].mean() > t2m[0:30].mean() + 8  # European summer vs winter
    sm = ds["swvl1"].values
    land = np.isfinite(sm[0])
    series = sm[:, land]
    lag1 = [np.corrcoef(series[:-1, k], series[1:, k])[0, 1] for k in range(series.shape[1])]
    assert np.median(lag1) > 0.7  # soil moisture has memory
