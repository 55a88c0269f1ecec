"""Synthetic hourly ERA5-Land fields and writers for the CDS NetCDF layouts.

``synthetic_hourly`` returns fields the way the CDS delivers them — ``valid_time`` hourly,
latitude descending, longitude 0…360, NaN over the sea, accumulations as running totals since
00 UTC (the 00 UTC value is the previous day's total) — together with the daily truth computed
from the hourly increments, so tests can check the ingest against values it never saw.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from smcast.variables import SOURCE_VARIABLES, VARIABLES

# mean, spread of instantaneous fields (native units) and of hourly increments of accumulations
_INSTANT = {"t2m": (285.0, 8.0), "d2m": (278.0, 6.0), "sp": (95_000.0, 2_000.0),
            "u10": (2.0, 3.0), "v10": (-1.0, 3.0), "sd": (0.02, 0.02),
            "swvl1": (0.25, 0.06), "swvl2": (0.27, 0.05), "swvl3": (0.30, 0.04)}
_HOURLY_INCREMENT = {"tp": 1.5e-4, "e": -8e-5, "ro": 4e-5, "sro": 2e-5,
                     "ssrd": 7.0e5, "strd": 1.2e6}
_PARAM_ID = {"tp": 228, "e": 182, "ro": 205, "sro": 8, "sd": 141, "t2m": 167, "d2m": 168,
             "sp": 134, "u10": 165, "v10": 166, "ssrd": 169, "strd": 175, "swvl1": 39,
             "swvl2": 40, "swvl3": 41}


def era5_grid(south: float, north: float, west: float, east: float, step: float = 0.1
              ) -> tuple[np.ndarray, np.ndarray]:
    """ERA5-Land-style point coordinates: latitude north → south, longitude in 0…360 order
    (points at multiples of ``step``, both ends included)."""
    lat = np.round(np.arange(north, south - step / 2, -step), 6)
    lon = np.round(np.arange(west, east + step / 2, step), 6) % 360.0
    return lat, np.sort(lon)


def synthetic_hourly(lat: np.ndarray, lon: np.ndarray, start: date, n_days: int, seed: int = 0,
                     sea: np.ndarray | None = None,
                     variables: tuple[str, ...] = SOURCE_VARIABLES
                     ) -> tuple[xr.Dataset, xr.Dataset]:
    """Hourly fields for ``n_days`` complete days from ``start`` and their daily truth.

    Args:
        lat, lon: point coordinates (ny,), (nx,) in the file's order.
        sea: optional (ny, nx) bool, True where the point is sea (NaN in every field).

    Returns:
        (hourly, daily): hourly has ``24 * n_days + 1`` stamps ``start 00:00 … start+n_days
        00:00``; daily holds, per day, the mean of the 24 instantaneous values 00…23 UTC and the
        sum of the 24 hourly increments of each accumulation, in native units.
    """
    rng = np.random.default_rng(seed)
    t0 = pd.Timestamp(start)
    times = pd.date_range(t0, periods=24 * n_days + 1, freq="h")
    shape = (len(times), len(lat), len(lon))
    hourly, daily = {}, {}
    for name in variables:
        if VARIABLES[name].kind == "accumulated":
            inc = _increments(rng, name, (len(times) + 23, *shape[1:]))
            hourly[name], daily[name] = _running(inc, n_days)
        else:
            mean, spread = _INSTANT[name]
            values = mean + spread * rng.standard_normal(shape)
            if name == "sd":
                values = np.abs(values)
            hourly[name] = values
            daily[name] = values[:-1].reshape(n_days, 24, *shape[1:]).mean(axis=1)
    if sea is not None:
        for arrays in (hourly, daily):
            for name in arrays:
                arrays[name] = np.where(sea, np.nan, arrays[name])
    coords = {"latitude": lat, "longitude": lon}
    hds = xr.Dataset({n: (("valid_time", "latitude", "longitude"), v.astype(np.float32),
                          {"units": VARIABLES[n].native_units[0]}) for n, v in hourly.items()},
                     coords={"valid_time": times, **coords})
    dds = xr.Dataset({n: (("time", "latitude", "longitude"), v,
                          {"units": VARIABLES[n].native_units[0]}) for n, v in daily.items()},
                     coords={"time": pd.date_range(t0, periods=n_days, freq="D"), **coords})
    return hds, dds


def _increments(rng: np.random.Generator, name: str, shape: tuple[int, ...]) -> np.ndarray:
    scale = _HOURLY_INCREMENT[name]
    if name in ("ssrd", "strd"):
        return np.abs(scale * (1.0 + 0.3 * rng.standard_normal(shape)))
    return scale * rng.exponential(1.0, shape)


def _running(inc: np.ndarray, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Running totals since 00 UTC on stamps 00:00…(n_days)00:00 from hourly increments.

    ``inc`` holds 23 extra leading hours so the first stamp (00 UTC of the first day) carries a
    whole previous day. Increment k (k ≥ 23) is the hour ending at stamp k − 23.
    """
    per_day = inc[:24 * (n_days + 1)].reshape(n_days + 1, 24, *inc.shape[1:])
    running = np.cumsum(per_day, axis=1)  # running[d, h] = total of day d-1 up to hour h+1
    stamps = [running[0, -1]]
    for d in range(1, n_days + 1):
        stamps.extend(running[d, :23])
        stamps.append(running[d, -1])
    series = np.stack(stamps[: 24 * n_days + 1])
    daily = running[1:, -1]
    # stamps: 00 UTC of day 0 = total of the day before; then hours 01…23 and 00 of next day
    return series, daily


def write_cds_netcdf(ds: xr.Dataset, path: Path, layout: str = "new") -> Path:
    """Write hourly fields (as from ``synthetic_hourly``) as a CDS NetCDF file.

    ``layout="new"`` (CDS since 2024): ``valid_time`` in seconds since 1970, scalar ``number``,
    ``expver`` strings along time, float32, latitude ``stored_direction``. ``layout="old"``:
    ``time`` in hours since 1900 and packed int16 (scale_factor/add_offset). ``layout="old-expver"``:
    the old layout with an ``expver`` dimension (1 = ERA5, 5 = ERA5T) splitting the period in two.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ds.copy()
    for name in out.data_vars:
        out[name].attrs.update(long_name=VARIABLES[name].long_name,
                               GRIB_paramId=_PARAM_ID[name])
    out["latitude"].attrs.update(units="degrees_north", standard_name="latitude",
                                 stored_direction="decreasing")
    out["longitude"].attrs.update(units="degrees_east", standard_name="longitude")
    out.attrs = {"GRIB_centre": "ecmf", "institution": "European Centre for Medium-Range Weather "
                 "Forecasts", "Conventions": "CF-1.7", "history": "synthetic (smcast.testing)"}
    if layout == "new":
        out = out.assign_coords(number=0, expver=("valid_time",
                                                  np.full(out.sizes["valid_time"], "0001")))
        # one chunk per time step, as the CDS's GRIB → NetCDF conversion writes them
        step = (1, out.sizes["latitude"], out.sizes["longitude"])
        enc = {n: {"zlib": True, "complevel": 1, "dtype": "float32", "chunksizes": step}
               for n in out.data_vars}
        enc["valid_time"] = {"units": "seconds since 1970-01-01", "dtype": "int64",
                             "calendar": "proleptic_gregorian"}
    else:
        out = out.rename(valid_time="time")
        if layout == "old-expver":
            out = _split_expver(out)
        enc = {n: _packed(out[n]) for n in out.data_vars}
        enc["time"] = {"units": "hours since 1900-01-01 00:00:00.0", "dtype": "int32",
                       "calendar": "gregorian"}
    out.to_netcdf(path, encoding=enc, format="NETCDF4" if layout == "new" else "NETCDF3_64BIT")
    return path


def _split_expver(ds: xr.Dataset) -> xr.Dataset:
    half = ds.sizes["time"] // 2
    first = ds.where(ds["time"] < ds["time"][half])
    second = ds.where(ds["time"] >= ds["time"][half])
    return xr.concat([first, second], dim=pd.Index([1, 5], name="expver")).transpose(
        "time", "expver", ...)


def _packed(da: xr.DataArray) -> dict:
    lo, hi = float(np.nanmin(da.values)), float(np.nanmax(da.values))
    scale = (hi - lo) / (2**16 - 8) or 1.0  # keep clear of the fill value
    return {"dtype": "int16", "scale_factor": scale, "add_offset": (hi + lo) / 2,
            "_FillValue": np.int16(-32767), "missing_value": np.int16(-32767)}


def cds_area_subset(ds: xr.Dataset, area: list[float] | None) -> xr.Dataset:
    """Cut a CDS-layout dataset to an ``area`` [N, W, S, E] as the CDS does."""
    if not area:
        return ds
    north, west, south, east = area
    lon = ((ds["longitude"] + 180) % 360) - 180
    keep_lon = (lon >= west - 1e-9) & (lon <= east + 1e-9)
    keep_lat = (ds["latitude"] >= south - 1e-9) & (ds["latitude"] <= north + 1e-9)
    return ds.isel(longitude=np.flatnonzero(keep_lon.values),
                   latitude=np.flatnonzero(keep_lat.values))


def as_datetime(day: date) -> datetime:
    """Midnight UTC of a day."""
    return datetime(day.year, day.month, day.day)
