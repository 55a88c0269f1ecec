"""Independent expectations for ingest tests: cell means by an explicit loop, store snapshots."""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import xarray as xr

from smcast.config import Config, load_config
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


#: a small demo grid and a tiny model: forecasts in seconds (issue 2021-04-10 → L = 2021-04-05)
FORECAST_SETS = ["grid.area=[48,4,44,10]", "source.demo.epoch=2021-01-01",
                 "model.hidden_size=8", "model.leads=[1,2,3]", "forecast.consistency_days=10"]


def tiny_forecast_setup(root: Path, demo_cache: Path) -> tuple[Config, list[str]]:
    """A demo store of 2021-01-01…2021-03-20 under ``root`` and an untrained tiny PHYs model
    made current; returns the config and its ``--set`` overrides (for the CLI)."""
    from smcast.ingest.pipeline import ingest
    from smcast.model.package import save_package
    from smcast.model.registry import set_current
    from smcast.train.data import load_cells
    from smcast.train.retrain import build_model

    sets = [f"data_dir={root}", f"source.demo.cache_dir={demo_cache}", *FORECAST_SETS]
    cfg = load_config(None, sets, environ={})
    ingest(cfg, date(2021, 1, 1), date(2021, 3, 20))
    store = DailyStore(cfg.store_path)
    fit = load_cells(store, date(2021, 1, 1), date(2021, 3, 20), cfg.model.dynamic_inputs,
                     cfg.model.static_inputs, deep=True)
    save_package(build_model(cfg, "phys", fit, store), cfg.data_dir / "models" / "tiny",
                 {"periods": {}, "metrics": {}, "seed": 42})
    set_current(cfg, "tiny")
    return cfg, sets
