"""Independent expectations for ingest tests: cell means by an explicit loop, store snapshots."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import xarray as xr

from smcast.ingest.daily import specific_humidity
from smcast.store import DailyStore
from smcast.variables import SOURCE_VARIABLES, VARIABLES


def cell_means(field: np.ndarray, lat: np.ndarray, lon: np.ndarray, store: DailyStore
               ) -> np.ndarray:
    """Independent reference: for each 0.5° cell, points inside weigh 1, points on its edge 1/2,
    times cos(latitude); NaN points skipped."""
    grid = store.grid

    def w1(x, lo, hi, step=0.1):
        return np.clip(np.minimum(x + step / 2, hi) - np.maximum(x - step / 2, lo), 0, None) / step

    out = np.full(grid.shape, np.nan)
    for i, (la, lb) in enumerate(grid.lat_bounds()):
        for j, (oa, ob) in enumerate(grid.lon_bounds()):
            w = w1(lat, la, lb)[:, None] * np.cos(np.deg2rad(lat))[:, None] * w1(lon, oa, ob)
            ok = np.isfinite(field) & (w > 0)
            if ok.any():
                out[i, j] = np.sum(np.where(ok, field, 0) * w) / np.sum(np.where(ok, w, 0))
    return out


def expected_day(truth: xr.Dataset, k: int, store: DailyStore) -> dict[str, np.ndarray]:
    lat = truth["latitude"].values
    lon = ((truth["longitude"].values + 180.0) % 360.0) - 180.0  # the reference works in -180…180
    day = {n: truth[n].values[k] * VARIABLES[n].scale for n in SOURCE_VARIABLES}
    day["q"] = specific_humidity(day["d2m"], day["sp"])
    day["wind"] = np.hypot(day["u10"], day["v10"])
    mask = store.land_mask
    return {n: np.where(mask, cell_means(v, lat, lon, store), np.nan) for n, v in day.items()}


def snapshot(path: Path) -> str:
    """Hash of every file in the store (what 'unchanged' means)."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + p.read_bytes())
    return h.hexdigest()


def assert_store_matches(store: DailyStore, truth: xr.Dataset, days: list[date], rtol: float,
                         atol_frac: float = 0.0) -> None:
    ds = store.open()
    for k, day in enumerate(days):
        want = expected_day(truth, k, store)
        for name, values in want.items():
            got = ds[name].sel(time=str(day)).values
            scale = np.nanmax(np.abs(values)) or 1.0
            np.testing.assert_allclose(got, values, rtol=rtol, atol=atol_frac * scale,
                                       err_msg=f"{name} {day}")
