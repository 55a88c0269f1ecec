"""The CF-1.11 + ACDD-1.3 NetCDF writer: checker, cf-xarray, round trip, attributes, atomicity."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cf_xarray  # noqa: F401  (registers the .cf accessor)
import numpy as np
import pytest
import xarray as xr

from smcast.writers import netcdf
from smcast.writers.netcdf import write_netcdf

ISSUE = "2024-06-16"
LAST_FORCING_DAY = "2024-06-10"


def make_forecast_dataset(*, nlat: int = 8, nlon: int = 12, ndays: int = 3, res: float = 0.5,
                          seed: int = 0) -> xr.Dataset:
    """A tiny forecast in the writer's input contract: 0.5° cells over 40…44°N, 2°W…4°E, sea
    in the south-west corner, ``ndays`` valid days after LAST_FORCING_DAY."""
    rng = np.random.default_rng(seed)
    lat = np.round(40.0 + res * (np.arange(nlat) + 0.5), 10)
    lon = np.round(-2.0 + res * (np.arange(nlon) + 0.5), 10)
    sea = (lat[:, None] < 41.0) & (lon[None, :] < -1.0)
    frt = np.datetime64(LAST_FORCING_DAY, "ns") + np.timedelta64(1, "D")
    time = frt + np.arange(ndays) * np.timedelta64(1, "D")
    swvl1 = rng.uniform(0.05, 0.45, (ndays, nlat, nlon)).astype(np.float32)
    swvl1[:, sea] = np.nan
    rate = rng.uniform(0.0, 1.0, (nlat, nlon)).astype(np.float32)
    rate[sea] = np.nan
    rate[7, 11] = np.nan  # a land cell without a water-balance signal
    cflag = np.where(rate >= 0.5, 0, 1).astype(np.uint8)
    cflag[7, 11] = 2
    cflag[sea] = 255
    vflag = np.full((ndays, nlat, nlon), 3, dtype=np.uint8)
    vflag[0] = rng.integers(0, 3, (nlat, nlon))
    vflag[:, sea] = 255
    cube, grid = ("time", "lat", "lon"), ("lat", "lon")
    return xr.Dataset(
        {"swvl1": (cube, swvl1), "consistency_rate": (grid, rate),
         "consistency_flag": (grid, cflag), "verification_flag": (cube, vflag)},
        coords={"time": time, "lat": lat, "lon": lon, "forecast_reference_time": frt,
                "forecast_period": ("time", (time - frt) / np.timedelta64(1, "h")),
                "lead": ("time", np.arange(1, ndays + 1, dtype=np.int32))},
        attrs={"smcast_model": "demo-phys", "smcast_variant": "phys", "smcast_version": "0.1.0",
               "smcast_model_sha256": "ab" * 32, "issue_date": ISSUE,
               "last_forcing_day": LAST_FORCING_DAY, "consistency_threshold": 0.5,
               "consistency_days": 30, "grid_resolution": res})


@pytest.fixture
def forecast() -> xr.Dataset:
    return make_forecast_dataset()


@pytest.fixture
def written(tmp_path: Path, forecast: xr.Dataset) -> Path:
    return write_netcdf(forecast, tmp_path / "forecast.nc")


def _failures(report: dict) -> list[str]:
    """Failing checks of a ``json_new`` report, as readable lines."""
    lines = []
    for checker, result in report.items():
        for priority in ("high_priorities", "medium_priorities", "low_priorities"):
            for check in result.get(priority, []):
                if check["value"][0] < check["value"][1]:
                    lines.append(f"{checker} {priority} {check['name']}: {check['msgs']}")
    return lines


def test_passes_compliance_checker(written: Path, tmp_path: Path):
    exe = shutil.which("compliance-checker")
    if exe is None:
        pytest.skip("compliance-checker is not installed (pip install compliance-checker)")
    report_path = tmp_path / "report.json"
    proc = subprocess.run([exe, "-t", "cf:1.11", "-t", "acdd:1.3", "-c", "normal",
                           "-f", "json_new", "-o", str(report_path), str(written)],
                          capture_output=True, text=True, timeout=120)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    failing = "\n".join(_failures(next(iter(report.values()), {}))) if report else proc.stderr
    assert proc.returncode == 0, f"compliance-checker exit {proc.returncode}:\n{failing}"


def test_cf_xarray_resolves_names_axes_flags_and_grid_mapping(written: Path):
    with xr.open_dataset(written) as ds:
        assert ds.cf["volume_fraction_of_condensed_water_in_soil"].name == "swvl1"
        axes = ds.cf.axes
        assert axes["X"] == ["lon"] and axes["Y"] == ["lat"]
        assert axes["T"] == ["time"] and axes["Z"] == ["depth"]
        coords = ds.cf.coordinates
        assert coords["latitude"] == ["lat"] and coords["longitude"] == ["lon"]
        assert "time" in coords["time"]
        assert ds.cf.bounds["time"] == ["time_bnds"] and ds.cf.bounds["lat"] == ["lat_bnds"]
        assert ds.cf.grid_mapping_names == {"latitude_longitude": ["crs"]}
        soil = ds.cf["volume_fraction_of_condensed_water_in_soil"]
        assert soil.cf.grid_mapping_name == "latitude_longitude" and "crs" in soil.coords
        assert set(ds.cf["quality_flag"].name.split()) <= {"consistency_rate"}
    with xr.open_dataset(written, mask_and_scale=False) as raw:
        cflag = raw["consistency_flag"].cf.flags
        assert list(cflag) == ["consistent", "inconsistent", "no_water_balance_signal"]
        vflag = raw["verification_flag"].cf.flags
        assert list(vflag)[-1] == "not_yet_verifiable"
        assert (raw["verification_flag"].cf == "not_yet_verifiable").isel(time=-1).any()


def test_values_round_trip(written: Path, forecast: xr.Dataset):
    with xr.open_dataset(written) as ds:
        np.testing.assert_array_equal(ds["swvl1"].values, forecast["swvl1"].values)
        np.testing.assert_array_equal(np.isnan(ds["swvl1"].values),
                                      np.isnan(forecast["swvl1"].values))
        np.testing.assert_array_equal(ds["consistency_rate"].values,
                                      forecast["consistency_rate"].values)
        np.testing.assert_array_equal(ds["time"].values, forecast["time"].values)
        np.testing.assert_array_equal(ds["lat"].values, forecast["lat"].values)
        np.testing.assert_array_equal(ds["lon"].values, forecast["lon"].values)
        assert ds["forecast_reference_time"].values == forecast["forecast_reference_time"].values
        np.testing.assert_array_equal(ds["forecast_period"].values,
                                      forecast["forecast_period"].values)
        np.testing.assert_array_equal(ds["lead"].values, forecast["lead"].values)
        assert ds["lead"].dtype == np.int32
    with xr.open_dataset(written, mask_and_scale=False) as raw:
        for name in ("consistency_flag", "verification_flag"):
            assert raw[name].dtype == np.uint8
            np.testing.assert_array_equal(raw[name].values, forecast[name].values)


def test_time_bounds_depth_and_encoding(written: Path):
    with xr.open_dataset(written) as ds:
        bnds = ds["time_bnds"].values
        np.testing.assert_array_equal(bnds[:, 0], ds["time"].values)
        assert np.all(bnds[:, 1] - bnds[:, 0] == np.timedelta64(1, "D"))
        assert float(ds["depth"]) == pytest.approx(0.035)
        assert ds["depth"].attrs["positive"] == "down" and ds["depth"].attrs["units"] == "m"
        assert "0 to 0.07 m" in ds["depth"].attrs["comment"]
        np.testing.assert_allclose(ds["lat_bnds"].values[0], [40.0, 40.5])
    import netCDF4

    with netCDF4.Dataset(written) as nc:
        assert nc.data_model == "NETCDF4"
        swvl1 = nc["swvl1"]
        assert swvl1.filters()["zlib"] and swvl1.filters()["shuffle"]
        assert swvl1.filters()["complevel"] == 4 and swvl1.chunking() == [1, 8, 12]
        assert swvl1.coordinates.split() == ["depth", "forecast_reference_time",
                                             "forecast_period", "lead"]
        assert nc["time"].units_metadata == "leap_seconds: none"
        for name in ("time", "lat", "lon", "time_bnds", "lat_bnds", "lon_bnds", "depth", "crs"):
            assert "_FillValue" not in nc[name].ncattrs(), name
        for name in ("time_bnds", "lat_bnds", "lon_bnds", "crs"):
            assert "coordinates" not in nc[name].ncattrs(), name
            assert not {"units", "calendar"} & set(nc[name].ncattrs()) or name == "crs"
        flag = nc["verification_flag"]
        assert flag.dtype == np.uint8 and flag._FillValue == 255
        assert flag.flag_values.dtype == np.uint8 and list(flag.valid_range) == [0, 3]
        assert "30 most recent" in nc["consistency_flag"].long_name
        assert ">= 0.5" in nc["consistency_flag"].long_name


def test_global_attributes(written: Path, forecast: xr.Dataset):
    with xr.open_dataset(written) as ds:
        attrs = ds.attrs
    assert attrs["Conventions"] == "CF-1.11, ACDD-1.3"
    assert attrs["standard_name_vocabulary"] == "CF Standard Name Table v93"
    assert "demo-phys" in attrs["title"] and ISSUE in attrs["title"]
    assert "0.1.0" in attrs["source"] and "phys" in attrs["source"]
    assert "{" not in "".join(str(v) for v in attrs.values())
    assert "https://doi.org/10.3389/ffgc.2024.1353011" in attrs["references"]
    assert "10.24381/cds.e2161bac" in attrs["references"]
    assert "0.1.0" in attrs["history"] and attrs["date_created"] in attrs["history"]
    for key, value in forecast.attrs.items():
        assert attrs[key] == value, key
    assert attrs["time_coverage_start"] == "2024-06-11T00:00:00Z"
    assert attrs["time_coverage_end"] == "2024-06-13T00:00:00Z"
    assert attrs["time_coverage_duration"] == "P3D"
    assert attrs["geospatial_lat_min"] == 40.25 and attrs["geospatial_lon_max"] == 3.75
    assert attrs["geospatial_bounds"].startswith("POLYGON ((40 -2, 44 -2, 44 4, 40 4")
    for key in ("keywords", "license", "summary", "institution", "creator_name", "project"):
        assert attrs[key].strip(), key


def test_custom_template_and_bad_placeholders(tmp_path: Path, forecast: xr.Dataset):
    good = tmp_path / "attrs.yaml"
    good.write_text('title: "T {model} {variant} {version} {issue_date}"\nkeywords: [a, b]\n'
                    'Conventions: "CF-1.6"\n')
    out = write_netcdf(forecast, tmp_path / "custom.nc", template=good)
    with xr.open_dataset(out) as ds:
        assert ds.attrs["title"] == f"T demo-phys phys 0.1.0 {ISSUE}"
        assert ds.attrs["keywords"] == "a, b"
        assert ds.attrs["Conventions"] == "CF-1.11, ACDD-1.3"
    bad = tmp_path / "bad.yaml"
    bad.write_text('title: "{nope}"\n')
    with pytest.raises(ValueError, match="nope"):
        write_netcdf(forecast, tmp_path / "bad.nc", template=bad)
    with pytest.raises(FileNotFoundError, match="netcdf_attributes"):
        write_netcdf(forecast, tmp_path / "x.nc", template=tmp_path / "netcdf_attributes.yaml")
    assert not (tmp_path / "bad.nc").exists() and not (tmp_path / "x.nc").exists()


def test_default_template_missing_raises(monkeypatch, tmp_path: Path, forecast: xr.Dataset):
    monkeypatch.setattr(netcdf, "DEFAULT_TEMPLATE", tmp_path / "absent.yaml")
    with pytest.raises(FileNotFoundError, match="absent.yaml"):
        write_netcdf(forecast, tmp_path / "f.nc")


def test_rejects_broken_input(tmp_path: Path, forecast: xr.Dataset):
    with pytest.raises(ValueError, match="consistency_rate"):
        write_netcdf(forecast.drop_vars("consistency_rate"), tmp_path / "a.nc")
    wet = forecast.copy(deep=True)
    wet["swvl1"][0, 4, 4] = 1.2
    with pytest.raises(ValueError, match="swvl1"):
        write_netcdf(wet, tmp_path / "b.nc")
    flagged = forecast.copy(deep=True)
    flagged["consistency_flag"][4, 4] = 3
    with pytest.raises(ValueError, match="consistency_flag"):
        write_netcdf(flagged, tmp_path / "c.nc")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_leaves_no_file_and_keeps_old(monkeypatch, tmp_path: Path,
                                                    forecast: xr.Dataset):
    target = tmp_path / "forecast.nc"
    real_to_netcdf = xr.Dataset.to_netcdf

    def partial_then_fail(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n\x1a\n partial")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", partial_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_netcdf(forecast, target)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(xr.Dataset, "to_netcdf", real_to_netcdf)
    write_netcdf(forecast, target)
    good = target.read_bytes()
    monkeypatch.setattr(xr.Dataset, "to_netcdf", partial_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_netcdf(forecast.isel(time=[0]), target)
    assert list(tmp_path.iterdir()) == [target]
    assert target.read_bytes() == good


def test_chunks_of_large_grids_are_equal_parts_of_at_most_1024_cells():
    assert netcdf._chunks((6, 1800, 3600)) == (1, 900, 900)  # global 0.1°: 3.1 MiB chunks
    assert netcdf._chunks((6, 360, 720)) == (1, 360, 720)  # global 0.5°: one chunk per day
    assert netcdf._chunks((720, 1440)) == (720, 720)
    assert netcdf._chunks((1, 1025, 3)) == (1, 513, 3)
