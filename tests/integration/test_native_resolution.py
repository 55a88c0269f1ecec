"""Native resolutions: the store and the forecast on 0.1°, 0.25° and 1° grids from config, the
forecast streamed in bands of land cells, the forward-pass precision, and a global 0.1° COG.

Each grid is the 4° x 6° demo box of ``tests.helpers.FORECAST_SETS`` with a tiny untrained PHYs
model; the store holds only the forecast window (2021-03-20…2021-04-05), so a set-up takes
seconds even at 0.1°.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from smcast.config import Config, load_config
from smcast.errors import ConfigError
from smcast.forecast import cell_bands, run_forecast
from smcast.store import DailyStore
from smcast.writers.geotiff import validate_cog, write_cog
from tests.helpers import FORECAST_SETS

ISSUE = date(2021, 4, 10)  # demo latency 5 days → last forcing day 2021-04-05
FIRST, LAST = date(2021, 3, 20), date(2021, 4, 5)  # window: 7 + 10 consistency days
NORTH, WEST, SOUTH, EAST = 48.0, 4.0, 44.0, 10.0  # grid.area of FORECAST_SETS


def native_setup(root: Path, demo_cache: Path, resolution: float, *extra: str) -> Config:
    """A demo store of the forecast window on a ``resolution``° grid and an untrained tiny PHYs
    model (scalers fitted on the store) made current."""
    from smcast.ingest.pipeline import ingest
    from smcast.model.package import save_package
    from smcast.model.registry import set_current
    from smcast.train.data import load_cells
    from smcast.train.retrain import build_model

    sets = [f"data_dir={root}", f"source.demo.cache_dir={demo_cache}", *FORECAST_SETS,
            "source.demo.epoch=2021-03-15", f"grid.resolution={resolution}", *extra]
    cfg = load_config(None, sets, environ={})
    ingest(cfg, FIRST, LAST)
    store = DailyStore(cfg.store_path)
    fit = load_cells(store, FIRST, LAST, cfg.model.dynamic_inputs, cfg.model.static_inputs,
                     deep=True)
    save_package(build_model(cfg, "phys", fit, store), cfg.data_dir / "models" / "tiny",
                 {"periods": {}, "metrics": {}, "seed": 42})
    set_current(cfg, "tiny")
    return cfg


def products(cfg: Config, folder: str = "forecasts") -> Path:
    return cfg.data_dir / folder / "20210410"


def digests(folder: Path) -> dict[str, str]:
    """sha256 of every product but the NetCDF (its global attributes hold the creation time)
    and the manifest (timings)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())
            if p.suffix not in (".nc", ".json")}


def check_products(cfg: Config, resolution: float) -> None:
    """The products open in xarray and rasterio on the configured grid."""
    nlat, nlon = round((NORTH - SOUTH) / resolution), round((EAST - WEST) / resolution)
    out = products(cfg)
    store = DailyStore(cfg.store_path)
    land = store.land_cells
    assert store.grid.shape == (nlat, nlon) and store.grid.resolution == resolution
    with xr.open_dataset(out / "smcast_tiny_20210410.nc") as nc:
        assert nc["swvl1"].shape == (3, nlat, nlon)
        np.testing.assert_allclose(nc["lat"].values, store.grid.lat)
        np.testing.assert_allclose(nc["lon"].values, store.grid.lon)
        assert int(np.isfinite(nc["swvl1"].isel(time=0)).sum()) == land
        assert float(nc.attrs["grid_resolution"]) == resolution
    for tif in sorted(out.glob("*.tif")):
        assert validate_cog(tif) == [], tif.name
        with rasterio.open(tif) as src:
            assert (src.height, src.width) == (nlat, nlon)
            assert tuple(src.transform)[:6] == pytest.approx(
                (resolution, 0.0, WEST, 0.0, -resolution, NORTH), abs=1e-9)
            assert src.crs.to_epsg() == 4326 and src.overviews(1)
        if "swvl1" in tif.name:
            with rasterio.open(tif) as src:
                assert int(src.read(1, masked=True).count()) == land
    assert (out / "smcast_tiny_20210410.png").stat().st_size > 5000


@pytest.mark.parametrize("resolution", [1.0, 0.25, 0.1], ids=["1deg", "0.25deg", "0.1deg"])
def test_ingest_and_forecast_at_native_resolution(tmp_path, demo_cache, resolution):
    cfg = native_setup(tmp_path, demo_cache, resolution)
    result = run_forecast(cfg, ISSUE)
    assert result.status == "done" and result.last_forcing == LAST
    check_products(cfg, resolution)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["bands"] == 1 and manifest["land_cells"] == DailyStore(
        cfg.store_path).land_cells


@pytest.fixture(scope="module")
def banded_store(tmp_path_factory, demo_cache) -> Config:
    """0.25° (16 x 24 cells) in store chunks of 4 rows: four row chunks."""
    import smcast.store as store_module

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store_module, "CHUNK_BYTES", 4 * 24 * 4)
        cfg = native_setup(tmp_path_factory.mktemp("banded"), demo_cache, 0.25)
    assert DailyStore(cfg.store_path).row_chunk == 4
    return cfg


def test_bands_cover_the_land_cells_and_keep_to_row_chunks(banded_store):
    store = DailyStore(banded_store.store_path)
    rows = store.land_mask.ravel().nonzero()[0] // store.grid.shape[1]
    for size in (1, 7, 50, 90, 10**6):
        bands = cell_bands(store, size)
        assert bands[0][0] == 0 and bands[-1][1] == store.land_cells
        assert all(a[1] == b[0] for a, b in zip(bands[:-1], bands[1:]))
        assert all(0 < hi - lo <= size for lo, hi in bands)
        chunks = [set(rows[lo:hi] // 4) for lo, hi in bands]
        assert all(len(c) == 1 for c in chunks) or size > 90  # a chunk holds ≤ 96 cells
    assert len(cell_bands(store, 10**6)) == 1


def test_banded_forecast_gives_the_same_products(banded_store):
    cfg = banded_store
    one = run_forecast(cfg, ISSUE, output=cfg.data_dir / "one-band")
    cfg.forecast.band_cells = 50
    try:
        banded = run_forecast(cfg, ISSUE, output=cfg.data_dir / "bands")
    finally:
        cfg.forecast.band_cells = 131072
    assert json.loads(one.manifest.read_text())["bands"] == 1
    assert json.loads(banded.manifest.read_text())["bands"] >= 3
    a, b = products(cfg, "one-band"), products(cfg, "bands")
    assert digests(a) == digests(b)  # COGs, QGIS styles and the quicklook, byte for byte
    with xr.open_dataset(a / "smcast_tiny_20210410.nc") as x, \
            xr.open_dataset(b / "smcast_tiny_20210410.nc") as y:
        xr.testing.assert_identical(x.drop_attrs(deep=False), y.drop_attrs(deep=False))


def test_bf16_forecast_is_close_and_labelled_and_fp16_needs_cuda(banded_store):
    import torch

    cfg = banded_store
    fp32 = products(cfg, "one-band")
    if not fp32.exists():
        run_forecast(cfg, ISSUE, output=cfg.data_dir / "one-band")
    cfg.forecast.precision = "bf16"
    try:
        result = run_forecast(cfg, ISSUE, output=cfg.data_dir / "bf16")
    finally:
        cfg.forecast.precision = "fp32"
    assert json.loads(result.manifest.read_text())["precision"] == "bf16"
    with xr.open_dataset(fp32 / "smcast_tiny_20210410.nc") as x, \
            xr.open_dataset(products(cfg, "bf16") / "smcast_tiny_20210410.nc") as y:
        assert y.attrs["smcast_precision"] == "bf16" and "smcast_precision" not in x.attrs
        diff = np.abs(x["swvl1"].values - y["swvl1"].values)
        assert np.isfinite(diff).sum() == np.isfinite(x["swvl1"].values).sum()
        assert np.nanmax(diff) < 0.02  # m3 m-3: bf16 keeps 8 significant bits
    if torch.cuda.is_available():
        pytest.skip("fp16 runs on this machine's GPU")
    cfg.forecast.precision = "fp16"
    try:
        with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
            run_forecast(cfg, ISSUE, output=cfg.data_dir / "fp16", force=True)
    finally:
        cfg.forecast.precision = "fp32"
    assert not (products(cfg, "fp16") / "smcast_tiny_20210410.json").exists()


def test_global_tenth_degree_cog_has_overviews_and_reads_back_equal(tmp_path):
    """3600 x 1800 cells: tiled, overviews down to under 512 px, values exact."""
    lat = np.round(-90 + 0.1 * (np.arange(1800) + 0.5), 10)
    lon = np.round(-180 + 0.1 * (np.arange(3600) + 0.5), 10)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    sm = (0.25 + 0.2 * np.sin(np.radians(3 * lo)) * np.cos(np.radians(4 * la))).astype(np.float32)
    sm[(np.sin(np.radians(2 * lo)) + np.cos(np.radians(3 * la))) < -0.3] = np.nan  # sea
    da = xr.DataArray(sm, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    path = write_cog(da, tmp_path / "global.tif", "soil_moisture", {"units": "m3 m-3"}, "sm")
    assert validate_cog(path) == []
    with rasterio.open(path) as src:
        assert (src.height, src.width) == (1800, 3600) and src.block_shapes == [(256, 256)]
        assert tuple(src.transform)[:6] == (0.1, 0.0, -180.0, 0.0, -0.1, 90.0)
        factors = src.overviews(1)
        assert factors and 3600 // factors[-1] < 512
        np.testing.assert_array_equal(src.read(1), sm[::-1])
