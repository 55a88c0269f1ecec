"""Round trip of ERA5-Land-like GRIB: smcast.testing.grib writes, smcast.sources.grib reads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from smcast.errors import InputDataError
from smcast.sources.grib import DIMS, open_grib
from smcast.testing.grib import PARAM_IDS, write_era5land_grib
from smcast.variables import VARIABLES, lookup

ACCUMULATED = ("tp", "e", "ro", "sro", "ssrd", "strd")
INSTANTANEOUS = ("sd", "t2m", "d2m", "sp", "u10", "v10", "swvl1", "swvl2", "swvl3")
#: Units as ERA5-Land GRIB (ecCodes tables) spells them.
GRIB_UNITS = {"tp": "m", "ro": "m", "sro": "m", "e": "m of water equivalent",
              "sd": "m of water equivalent", "t2m": "K", "d2m": "K", "sp": "Pa",
              "u10": "m s**-1", "v10": "m s**-1", "ssrd": "J m**-2", "strd": "J m**-2",
              "swvl1": "m**3 m**-3", "swvl2": "m**3 m**-3", "swvl3": "m**3 m**-3"}
#: Hourly increments of the accumulated fields (native units per hour): (low, high).
_HOURLY = {"tp": (0.0, 2e-3), "e": (-4e-4, 5e-5), "ro": (0.0, 1e-3), "sro": (0.0, 5e-4),
           "ssrd": (0.0, 3e6), "strd": (1e6, 1.5e6)}
_INSTANT = {"sd": (0.0, 0.3), "t2m": (250.0, 300.0), "d2m": (240.0, 290.0),
            "sp": (9e4, 1.03e5), "u10": (-15.0, 15.0), "v10": (-15.0, 15.0),
            "swvl1": (0.05, 0.45), "swvl2": (0.05, 0.45), "swvl3": (0.05, 0.45)}


def running_totals(hourly: np.ndarray, times: pd.DatetimeIndex) -> np.ndarray:
    """ERA5-Land accumulation of ``hourly`` (time, lat, lon): running sums since 00 UTC, so the
    value at 00 UTC of day D+1 is the total of the 24 hours of day D."""
    start = (times - pd.Timedelta(hours=1)).normalize()  # the day each value accumulates into
    out = np.empty_like(hourly)
    for day in start.unique():
        sel = np.flatnonzero(start == day)
        out[sel] = np.cumsum(hourly[sel], axis=0)
    return out


def synthetic(names=tuple(PARAM_IDS), *, days: int = 2, lat0: float = 45.0, lon0: float = 178.0,
              step: float = 1.0, nlat: int = 4, nlon: int = 6, seed: int = 42) -> xr.Dataset:
    """Hourly ERA5-Land-like fields from 00 UTC of day 1 to 00 UTC of day ``days + 1``.

    Grid: ``nlat`` × ``nlon`` cells of ``step`` degrees, latitude descending from ``lat0``,
    longitude ascending from ``lon0`` (0…360). Three fixed sea cells are NaN in every field.
    """
    rng = np.random.default_rng(seed)
    times = pd.date_range("2023-06-30", periods=24 * days + 1, freq="h")
    lat = lat0 - step * np.arange(nlat)
    lon = lon0 + step * np.arange(nlon)
    sea = np.zeros((nlat, nlon), dtype=bool)
    sea[0, 0] = sea[-1, -1] = sea[nlat // 2, nlon // 2] = True
    shape = (times.size, nlat, nlon)
    ds = xr.Dataset(coords={"valid_time": times, "latitude": lat, "longitude": lon})
    for name in names:
        low, high = _HOURLY.get(name) or _INSTANT[name]
        values = rng.uniform(low, high, shape)
        if lookup(name).kind == "accumulated":
            values = running_totals(values, times)
        values[:, sea] = np.nan
        ds[name] = (DIMS, values)
    return ds


def assert_round_trip(expected: xr.Dataset, actual: xr.Dataset) -> None:
    """Same names, dims, times, grid, NaN mask and values (within 24-bit packing precision)."""
    assert set(actual.data_vars) == set(expected.data_vars)
    assert actual["valid_time"].dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(actual["valid_time"].values, expected["valid_time"].values)
    np.testing.assert_allclose(actual["latitude"].values, expected["latitude"].values, atol=1e-6)
    np.testing.assert_allclose(actual["longitude"].values, expected["longitude"].values,
                               atol=1e-6)
    for name, want in expected.data_vars.items():
        got = actual[name]
        assert got.dims == DIMS
        np.testing.assert_array_equal(np.isnan(got.values), np.isnan(want.values), err_msg=name)
        land = want.values[~np.isnan(want.values)]
        span = float(land.max() - land.min()) if land.size else 0.0
        np.testing.assert_allclose(got.values, want.values, rtol=1e-6, atol=span * 2.0**-22,
                                   equal_nan=True, err_msg=name)


@pytest.fixture(scope="module")
def hourly(tmp_path_factory) -> tuple[xr.Dataset, Path, xr.Dataset]:
    """All 15 ERA5-Land variables, 2 days + 00 UTC of day 3: (truth, GRIB file, as read)."""
    ds = synthetic()
    path = write_era5land_grib(tmp_path_factory.mktemp("grib") / "era5land.grib", ds)
    return ds, path, open_grib(path)


def test_round_trip_all_variables(hourly):
    ds, _, out = hourly
    assert_round_trip(ds, out)
    assert set(out.sizes) == set(DIMS)
    assert out["valid_time"].to_index().is_monotonic_increasing
    assert out["valid_time"].to_index().is_unique
    assert (out["longitude"] > 180).any()  # 0…360 convention kept as in the file


def test_units_as_in_file_and_known_to_vocabulary(hourly):
    for name, da in hourly[2].data_vars.items():
        assert da.attrs["units"] == GRIB_UNITS[name]
        assert da.attrs["units"] in VARIABLES[name].native_units


def test_accumulations_on_valid_time(hourly):
    """The 00 UTC value is the previous day's total; 01 UTC is a single hour (the reset)."""
    ds, _, out = hourly
    land = ~np.isnan(ds["tp"].isel(valid_time=0).values)
    day1_total = out["tp"].sel(valid_time="2023-07-01T00").values[land]
    day1_last_hour = out["tp"].sel(valid_time="2023-06-30T23").values[land]
    after_reset = out["tp"].sel(valid_time="2023-07-01T01").values[land]
    np.testing.assert_allclose(day1_total, ds["tp"].sel(valid_time="2023-07-01T00").values[land],
                               rtol=1e-5)
    assert np.all(day1_total >= day1_last_hour - 1e-7)
    assert np.all(after_reset < day1_total)


def test_messages_laid_out_like_era5land(hourly):
    """GRIB1; analyses at step 0; accumulations from 00 UTC with stepRange 0-1 … 0-24."""
    import eccodes  # after smcast: its modules load pyproj first (see smcast.sources.grib)

    path = hourly[1]
    seen = {}
    with open(path, "rb") as f:
        while (h := eccodes.codes_grib_new_from_file(f)) is not None:
            try:
                keys = {k: eccodes.codes_get(h, k) for k in (
                    "edition", "paramId", "shortName", "dataDate", "dataTime", "stepType",
                    "stepRange", "validityDate", "validityTime", "bitmapPresent", "marsClass")}
            finally:
                eccodes.codes_release(h)
            seen[(keys["shortName"], keys["validityDate"], keys["validityTime"])] = keys
    assert len(seen) == 15 * 49
    tp00 = seen[("tp", 20230701, 0)]
    assert (tp00["dataDate"], tp00["dataTime"], tp00["stepType"], tp00["stepRange"]) == (
        20230630, 0, "accum", "0-24")
    tp01 = seen[("tp", 20230701, 100)]
    assert (tp01["dataDate"], tp01["stepRange"]) == (20230701, "0-1")
    t2m00 = seen[("2t", 20230701, 0)]
    assert (t2m00["dataDate"], t2m00["dataTime"], t2m00["stepType"], t2m00["stepRange"]) == (
        20230701, 0, "instant", "0")
    assert {k["edition"] for k in seen.values()} == {1}
    assert {k["bitmapPresent"] for k in seen.values()} == {1}
    assert {k["marsClass"] for k in seen.values()} == {"l5"}
    assert {k["paramId"] for k in seen.values()} == set(PARAM_IDS.values())


@pytest.mark.parametrize("names", [ACCUMULATED, INSTANTANEOUS, ("swvl1",), ("tp",)],
                         ids=["accumulated-only", "instantaneous-only", "one-soil", "tp-only"])
def test_round_trip_subsets(tmp_path, names):
    ds = synthetic(names, days=3, seed=len(names))
    assert_round_trip(ds, open_grib(write_era5land_grib(tmp_path / "subset.grib", ds)))


def test_round_trip_daily_layout_fine_grid(tmp_path):
    """One field a day at 00 UTC (accumulations all step 24) on a 0.1° grid near 360°E."""
    ds = synthetic(("tp", "ssrd", "t2m", "swvl1"), days=4, lat0=-10.0, lon0=359.4, step=0.1,
                   nlat=3, nlon=6).isel(valid_time=slice(0, None, 24))
    assert_round_trip(ds, open_grib(write_era5land_grib(tmp_path / "daily.grib", ds)))


def test_single_valid_time_all_sea_keeps_dims(tmp_path):
    """One valid time on a 1 × 2 grid that is all sea (every value missing)."""
    ds = synthetic(("tp", "t2m"), nlat=1, nlon=2).isel(valid_time=[7])
    assert ds["tp"].isnull().all()
    out = open_grib(write_era5land_grib(tmp_path / "one.grib", ds))
    assert_round_trip(ds, out)
    assert out["tp"].shape == (1, 1, 2)


def test_aliases_accepted_by_writer(tmp_path):
    ds = synthetic(("t2m", "u10")).rename({"t2m": "2t", "u10": "10u"})
    out = open_grib(write_era5land_grib(tmp_path / "alias.grib", ds))
    assert set(out.data_vars) == {"t2m", "u10"}


def test_no_file_handle_left_open(hourly):
    path = hourly[1]
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc")
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    assert str(path.resolve()) not in targets


def test_no_index_file_written(hourly):
    assert not list(hourly[1].parent.glob("*.idx"))


def test_duplicate_messages_rejected(tmp_path, hourly):
    """The same file twice over: cfgrib alone would silently keep one message of each pair."""
    path = tmp_path / "twice.grib"
    path.write_bytes(hourly[1].read_bytes() * 2)
    with pytest.raises(InputDataError, match="twice.grib.*several messages"):
        open_grib(path)


def test_variable_split_by_cfgrib_is_recombined(tmp_path):
    """t2m messages labelled partly an, partly fc: cfgrib opens them as two hypercubes."""
    import eccodes  # after smcast: its modules load pyproj first (see smcast.sources.grib)

    ds = synthetic(("t2m", "tp"))
    path = write_era5land_grib(tmp_path / "labels.grib", ds)
    relabelled = tmp_path / "relabelled.grib"
    with open(path, "rb") as src, open(relabelled, "wb") as dst:
        while (h := eccodes.codes_grib_new_from_file(src)) is not None:
            day = eccodes.codes_get(h, "dataDate")
            if eccodes.codes_get(h, "shortName") == "2t" and day > 20230630:
                eccodes.codes_set(h, "marsType", "fc")
            eccodes.codes_write(h, dst)
            eccodes.codes_release(h)
    assert_round_trip(ds, open_grib(relabelled))


def test_fields_on_two_grids_rejected(tmp_path):
    a = write_era5land_grib(tmp_path / "a.grib", synthetic(("t2m",)))
    b = write_era5land_grib(tmp_path / "b.grib", synthetic(("tp",), lon0=10.0))
    path = tmp_path / "two_grids.grib"
    path.write_bytes(a.read_bytes() + b.read_bytes())
    with pytest.raises(InputDataError, match="two_grids.grib.*different grids"):
        open_grib(path)


def test_truncated_file(tmp_path, hourly):
    data = hourly[1].read_bytes()
    path = tmp_path / "truncated.grib"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputDataError, match="truncated.grib"):
        open_grib(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.grib"
    path.write_text("this is not GRIB\n" * 20)
    with pytest.raises(InputDataError, match="notes.grib"):
        open_grib(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputDataError, match="absent.grib"):
        open_grib(tmp_path / "absent.grib")


def write_upper_air_temperature(path: Path) -> Path:
    """One message of a non-ERA5-Land field (temperature, paramId 130) on the sample's grid."""
    import eccodes  # after smcast: its modules load pyproj first (see smcast.sources.grib)

    h = eccodes.codes_grib_new_from_samples("regular_ll_sfc_grib1")
    try:
        eccodes.codes_set(h, "paramId", 130)
        with open(path, "wb") as f:
            eccodes.codes_write(h, f)
    finally:
        eccodes.codes_release(h)
    return path


def test_no_era5land_variable(tmp_path):
    path = write_upper_air_temperature(tmp_path / "upper_air.grib")
    with pytest.raises(InputDataError, match="upper_air.grib.*no ERA5-Land variable"):
        open_grib(path)


def test_other_fields_dropped(tmp_path):
    """A foreign field on another grid next to ERA5-Land fields is ignored, not an error."""
    ds = synthetic(("t2m", "tp"))
    path = write_era5land_grib(tmp_path / "mixed.grib", ds)
    extra = write_upper_air_temperature(tmp_path / "t.grib")
    path.write_bytes(path.read_bytes() + extra.read_bytes())
    assert_round_trip(ds, open_grib(path))


@pytest.mark.parametrize("change", ["ascending_lat", "irregular_lon", "half_hour", "derived_var",
                                    "unknown_var"])
def test_writer_rejects_bad_layout(tmp_path, change):
    ds = synthetic(("t2m",))
    if change == "ascending_lat":
        ds = ds.isel(latitude=slice(None, None, -1))
    elif change == "irregular_lon":
        ds = ds.assign_coords(longitude=ds["longitude"].values + [0, 0, 0, 0, 0, 0.5])
    elif change == "half_hour":
        ds = ds.assign_coords(valid_time=ds["valid_time"].values + np.timedelta64(30, "m"))
    elif change == "derived_var":
        ds = ds.rename({"t2m": "q"})
    else:
        ds = ds.rename({"t2m": "temperature"})
    with pytest.raises(ValueError):
        write_era5land_grib(tmp_path / "bad.grib", ds)
