"""Shared fixtures: small configs in temporary folders, a shared demo cache, ERA5-Land mirrors."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from smcast.config import Config, load_config
from smcast.testing.era5 import era5_grid, synthetic_hourly, write_cds_netcdf

#: a small European box: 0.5° cells 40…42°N, 10…12°E (some sea in the west)
AREA = [42.0, 10.0, 40.0, 12.0]


@pytest.fixture
def cds_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep CDS clients on 127.0.0.1 (no proxy from the environment) and ignore any real CDS
    or smcast set-up of the machine running the tests."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                "ALL_PROXY", "CDSAPI_URL", "CDSAPI_KEY", "ECMWF_DATASTORES_URL",
                "ECMWF_DATASTORES_KEY", "SMCAST_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("CDSAPI_RC", str(tmp_path / "no.cdsapirc"))
    monkeypatch.setenv("ECMWF_DATASTORES_RC_FILE", str(tmp_path / "no.datastoresrc"))


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """One demo cache per test session (the global land fraction is computed once)."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture
def demo_cfg(tmp_path: Path, demo_cache: Path) -> Config:
    """Demo source on a 4° x 6° box over Europe, data in tmp_path."""
    return load_config(None, [f"data_dir={tmp_path / 'data'}", "grid.area=[48,4,44,10]",
                              f"source.demo.cache_dir={demo_cache}",
                              "source.demo.epoch=2021-01-01"], environ={})


@pytest.fixture
def mirror_cfg(tmp_path: Path) -> Config:
    """Directory source over AREA, data in tmp_path, ingested in-process (the dask path has its
    own tests in tests/integration/test_dask_ingest.py)."""
    return load_config(None, [f"data_dir={tmp_path / 'data'}", f"grid.area={AREA}",
                              f"source.directory.path={tmp_path / 'mirror'}",
                              "source.name=directory", "ingest.workers=1"], environ={})


def sea_points(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """(ny, nx) True west of 10.35°E and south of 40.6°N: a sea corner in AREA."""
    lon180 = ((lon + 180) % 360) - 180
    return (lon180[None, :] < 10.35) & (lat[:, None] < 40.6)


def hourly_mirror(root: Path, start: date, n_days: int, layout: str = "new", seed: int = 0,
                  per_day: bool = True):
    """Write an hourly 0.1° mirror over AREA (one file per day, each holding 00…23 UTC; the last
    00 UTC step in a file of its own), return (hourly, daily truth)."""
    lat, lon = era5_grid(AREA[2] - 0.2, AREA[0] + 0.2, AREA[1] - 0.2, AREA[3] + 0.2)
    hourly, truth = synthetic_hourly(lat, lon, start, n_days, seed=seed,
                                     sea=sea_points(lat, lon))
    if per_day:
        for i in range(n_days + 1):
            day = start + timedelta(days=i)
            part = hourly.isel(valid_time=slice(24 * i, 24 * i + 24))
            write_cds_netcdf(part, root / f"era5land_{day:%Y%m%d}.nc", layout=layout)
    else:
        write_cds_netcdf(hourly, root / "era5land.nc", layout=layout)
    return hourly, truth
