"""The directory source end to end: hourly 0.1° CDS files → daily 0.5° store, checked against
cell means computed independently from the synthetic truth; and every bad input refused."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from smcast.errors import ConfigError, DataUnavailableError, InputDataError, StoreError
from smcast.ingest.pipeline import ingest
from smcast.store import DailyStore
from smcast.testing.era5 import write_cds_netcdf
from smcast.variables import VARIABLES
from tests.conftest import hourly_mirror
from tests.helpers import assert_store_matches, snapshot

START = date(2024, 1, 30)


def test_new_cds_layout_hourly_files(mirror_cfg, tmp_path):
    _, truth = hourly_mirror(tmp_path / "mirror", START, 3)
    summary = ingest(mirror_cfg, START, START + timedelta(days=2))
    store = DailyStore(mirror_cfg.store_path)
    assert summary.written == 3 and summary.latest_complete == date(2024, 2, 1)
    assert store.land_cells == 15  # 16 cells, the sea corner is not land
    assert not store.land_mask[0, 0]
    days = [START + timedelta(days=i) for i in range(3)]
    assert store.complete_days() == days
    assert_store_matches(store, truth, days, rtol=2e-5, atol_frac=1e-6)
    # the CF/units metadata travels
    assert xr.open_zarr(mirror_cfg.store_path)["ssrd"].attrs["units"] == "W m-2"


def test_old_layout_packed_with_expver_in_one_file(mirror_cfg, tmp_path):
    _, truth = hourly_mirror(tmp_path / "mirror", START, 2, layout="old-expver", per_day=False)
    ingest(mirror_cfg, START, START + timedelta(days=1))
    store = DailyStore(mirror_cfg.store_path)
    # int16 packing: errors up to half a packing step of the field's range
    assert_store_matches(store, truth, [START, START + timedelta(days=1)], rtol=1e-3,
                         atol_frac=2e-4)


def test_daily_files(mirror_cfg, tmp_path):
    hourly, truth = hourly_mirror(tmp_path / "h", START, 2)
    daily = truth.rename(time="valid_time").astype(np.float32)
    for name in daily.data_vars:
        daily[name].attrs["units"] = VARIABLES[name].native_units[0]
    write_cds_netcdf(daily, tmp_path / "mirror" / "daily.nc")
    mirror_cfg.source.directory.frequency = "daily"
    ingest(mirror_cfg, START, START + timedelta(days=1))
    assert_store_matches(DailyStore(mirror_cfg.store_path), truth,
                         [START, START + timedelta(days=1)], rtol=2e-5, atol_frac=1e-6)


def test_reingest_replaces_and_appends_after_a_gap(mirror_cfg, tmp_path):
    hourly_mirror(tmp_path / "mirror", START, 5)
    ingest(mirror_cfg, START, START)
    ingest(mirror_cfg, START + timedelta(days=3), START + timedelta(days=4))
    store = DailyStore(mirror_cfg.store_path)
    assert store.gaps() == [(START + timedelta(days=1), START + timedelta(days=2))]
    before = store.open()["t2m"].sel(time=str(START)).values
    summary = ingest(mirror_cfg, START, START + timedelta(days=2))
    assert summary.replaced == 3 and store.gaps() == []
    np.testing.assert_array_equal(store.open()["t2m"].sel(time=str(START)).values, before)


# -- bad input: a clear error, a non-zero exit code, the store as it was ----------------------
@pytest.fixture
def ingested(mirror_cfg, tmp_path):
    """A mirror of 4 days with the first 2 ingested; returns (cfg, mirror dir, snapshot)."""
    hourly_mirror(tmp_path / "mirror", START, 4)
    ingest(mirror_cfg, START, START + timedelta(days=1))
    return mirror_cfg, tmp_path / "mirror", snapshot(mirror_cfg.store_path)


def day_file(mirror: Path, day: date) -> Path:
    return mirror / f"era5land_{day:%Y%m%d}.nc"


def rewrite(path: Path, change) -> None:
    ds = xr.load_dataset(path)
    path.unlink()
    change(ds).to_netcdf(path)


def test_missing_hours_named_and_nothing_written(ingested):
    cfg, mirror, snap = ingested
    day = START + timedelta(days=2)
    rewrite(day_file(mirror, day), lambda ds: ds.isel(valid_time=slice(0, 13)))
    with pytest.raises(InputDataError) as err:
        ingest(cfg, START, START + timedelta(days=3))
    assert f"{day}: " in str(err.value) and "13:00…23:00 UTC" in str(err.value)
    assert err.value.exit_code == 3
    assert snapshot(cfg.store_path) == snap


def test_missing_variable_named_with_files(ingested):
    cfg, mirror, snap = ingested
    day = START + timedelta(days=2)
    rewrite(day_file(mirror, day), lambda ds: ds.drop_vars("swvl2"))
    with pytest.raises(InputDataError) as err:
        ingest(cfg, day, day)
    assert "swvl2: missing 24 hours" in str(err.value)
    assert snapshot(cfg.store_path) == snap


def test_last_day_not_yet_in_mirror_is_unavailable(ingested):
    cfg, mirror, snap = ingested
    with pytest.raises(DataUnavailableError) as err:
        ingest(cfg, START, START + timedelta(days=4))  # needs 00 UTC of day 5
    assert "newest complete day is 2024-02-02" in str(err.value)
    assert err.value.exit_code == 4 and snapshot(cfg.store_path) == snap


@pytest.mark.parametrize("damage, words", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3]), "corrupt or truncated"),
    (lambda p: p.write_text("<html>Service unavailable</html>"), "neither NetCDF nor GRIB"),
])
def test_corrupt_files_named(ingested, damage, words):
    cfg, mirror, snap = ingested
    bad = day_file(mirror, START + timedelta(days=2))
    damage(bad)
    with pytest.raises(InputDataError) as err:
        ingest(cfg, START, START + timedelta(days=3))
    assert bad.name in str(err.value) and words in str(err.value)
    assert snapshot(cfg.store_path) == snap


def test_values_out_of_physical_range(ingested):
    cfg, mirror, snap = ingested
    day = START + timedelta(days=2)

    def to_celsius_keep_units(ds):
        ds["t2m"] = ds["t2m"] - 273.15  # units attribute still says K
        return ds

    rewrite(day_file(mirror, day), to_celsius_keep_units)
    with pytest.raises(InputDataError, match=r"t2m on 2024-02-01: \d+ land cell\(s\) outside"):
        ingest(cfg, day, day)
    assert snapshot(cfg.store_path) == snap


def test_wrong_units(ingested):
    cfg, mirror, snap = ingested
    day = START + timedelta(days=2)

    def relabel(ds):
        ds["sp"].attrs["units"] = "hPa"
        return ds

    rewrite(day_file(mirror, day), relabel)
    with pytest.raises(InputDataError, match="sp has units 'hPa'"):
        ingest(cfg, day, day)
    assert snapshot(cfg.store_path) == snap


def test_grid_that_does_not_match_the_store(ingested):
    cfg, _, snap = ingested
    cfg.grid.resolution = 1.0
    with pytest.raises(StoreError, match="has a 0.5° grid.*asks for a 1° grid"):
        ingest(cfg, START, START)
    assert snapshot(cfg.store_path) == snap


def test_files_that_do_not_cover_the_area(mirror_cfg, tmp_path):
    hourly_mirror(tmp_path / "mirror", START, 1)
    mirror_cfg.grid.area = (44.0, 10.0, 40.0, 12.0)
    with pytest.raises(InputDataError, match="source data covers latitude"):
        ingest(mirror_cfg, START, START)
    assert not mirror_cfg.store_path.exists()


def test_start_after_end(mirror_cfg):
    with pytest.raises(ConfigError, match="start 2024-02-02 is after end 2024-02-01"):
        ingest(mirror_cfg, date(2024, 2, 2), date(2024, 2, 1))


def test_grib_mirror(mirror_cfg, tmp_path):
    from smcast.testing.grib import write_era5land_grib

    hourly, truth = hourly_mirror(tmp_path / "nc", START, 2)
    (tmp_path / "mirror").mkdir()
    for i in range(3):  # one GRIB file per day; the last holds the closing 00 UTC step
        part = hourly.isel(valid_time=slice(24 * i, 24 * i + 24))
        write_era5land_grib(tmp_path / "mirror" / f"era5land_{i}.grib", part)
    mirror_cfg.source.directory.pattern = "*.grib"
    ingest(mirror_cfg, START, START + timedelta(days=1))
    # 24-bit packing: errors of ~1e-7 of each field's range
    assert_store_matches(DailyStore(mirror_cfg.store_path), truth,
                         [START, START + timedelta(days=1)], rtol=1e-5, atol_frac=1e-5)


@pytest.mark.parametrize("convention", ["0-360, north first", "-180-180, south first"])
def test_grid_conventions_across_the_prime_meridian(tmp_path, convention):
    from smcast.config import load_config
    from smcast.testing.era5 import era5_grid, synthetic_hourly

    lat, lon = era5_grid(49.8, 52.2, -2.2, 2.2)  # lon 0…2.2 then 357.8…359.9
    hourly, truth = synthetic_hourly(lat, lon, START, 1, seed=5)
    if convention.startswith("-180"):
        hourly = hourly.assign_coords(longitude=((hourly.longitude + 180) % 360) - 180)
        hourly = hourly.sortby("longitude").sortby("latitude")
    write_cds_netcdf(hourly, tmp_path / "mirror" / "a.nc")
    cfg = load_config(None, [f"data_dir={tmp_path}", "grid.area=[52,-2,50,2]",
                             "source.name=directory", f"source.directory.path={tmp_path / 'mirror'}",
                             "ingest.workers=1"], environ={})
    ingest(cfg, START, START)
    store = DailyStore(cfg.store_path)
    assert store.grid.lon.tolist() == [-1.75, -1.25, -0.75, -0.25, 0.25, 0.75, 1.25, 1.75]
    assert_store_matches(store, truth, [START], rtol=2e-5, atol_frac=1e-6)
