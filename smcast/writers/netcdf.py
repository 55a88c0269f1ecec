"""The forecast as one CF-1.11 + ACDD-1.3 NetCDF4 file.

``write_netcdf(ds, path)`` takes the forecast dataset built by :mod:`smcast.forecast` and writes
it atomically (temporary sibling + ``os.replace``). The file passes
``compliance-checker -t cf:1.11 -t acdd:1.3 -c normal``.

Layout of the file (``nv`` = 2 bounds):

* ``time(time)`` validity day start in days since 1970-01-01 with ``time_bnds`` [D, D+1);
  ``lat(lat)``/``lon(lon)`` cell centres with ``lat_bnds``/``lon_bnds``;
* scalar ``depth`` (0.035 m, the middle of the 0–0.07 m layer; see ``_DEPTH_COMMENT`` for why it
  has no bounds), scalar ``forecast_reference_time``,
  ``forecast_period(time)`` in hours and ``lead(time)`` in days: auxiliary coordinates;
* ``swvl1(time, lat, lon)`` float32 m3 m-3, ``verification_flag(time, lat, lon)`` and
  ``consistency_flag(lat, lon)`` ubyte flags (255 = sea), ``consistency_rate(lat, lon)`` float32;
* ``crs``: the WGS 84 grid mapping (``pyproj.CRS("EPSG:4326").to_cf()``).

The time stamps are handed to the file as numbers with explicit attributes, so that xarray adds
no ``units``/``calendar`` to ``time_bnds`` (bounds must not repeat them in CF-1.11) and no
``_FillValue`` to coordinates; all ``coordinates`` attributes are written explicitly.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import xarray as xr
import yaml

import smcast
from smcast.templates import templates_dir
from smcast.variables import LAYER_BOUNDS_M, lookup
from smcast.writers.atomic import atomic_path

#: Default attribute template: ``netcdf_attributes.yaml`` of smcast's templates folder; None
#: looks it up (:func:`smcast.templates.templates_dir`) when needed.
DEFAULT_TEMPLATE: Path | None = None

#: comma-separated: compliance-checker's ACDD test splits on commas only (CF accepts both)
CONVENTIONS = "CF-1.11, ACDD-1.3"
STANDARD_NAME_VOCABULARY = "CF Standard Name Table v93"
TIME_UNITS = "days since 1970-01-01 00:00:00"
#: proleptic_gregorian: the checker notes that "standard" is only needed for dates before 1582
CALENDAR = "proleptic_gregorian"
FLOAT_FILL = np.float32(-9999.0)
FLAG_FILL = np.uint8(255)
#: flag meanings, in the order of their values 0, 1, 2, 3
CONSISTENCY_MEANINGS = ("consistent", "inconsistent", "no_water_balance_signal")
VERIFICATION_MEANINGS = CONSISTENCY_MEANINGS + ("not_yet_verifiable",)
#: largest chunk edge along lat and lon (a float32 chunk stays ≤ 4 MiB; see ``_chunks``)
MAX_CHUNK_EDGE = 1024
COMPRESSION = {"zlib": True, "complevel": 4, "shuffle": True}

DATA_VARS = ("swvl1", "consistency_rate", "consistency_flag", "verification_flag")
REQUIRED_ATTRS = ("smcast_model", "smcast_variant", "smcast_version", "smcast_model_sha256",
                  "issue_date", "last_forcing_day", "consistency_threshold", "consistency_days",
                  "grid_resolution")
_EXPECTED_DIMS = {"swvl1": ("time", "lat", "lon"), "verification_flag": ("time", "lat", "lon"),
                  "consistency_rate": ("lat", "lon"), "consistency_flag": ("lat", "lon")}
_TIME_COORDS = "depth forecast_reference_time forecast_period lead"
_NS_PER_DAY = np.timedelta64(1, "D").astype("timedelta64[ns]").astype(np.int64)
_DEPTH_COMMENT = (
    "swvl1 is the mean over soil layer 1, {:g} to {:g} m below the surface; depth is the layer's "
    "mid-point. The layer is not given as depth bounds: CF allows bounds of a scalar coordinate, "
    "but compliance-checker 6.1 rejects them.").format(*LAYER_BOUNDS_M["swvl1"])


def write_netcdf(ds: xr.Dataset, path: Path, template: Path | None = None) -> Path:
    """Write the forecast ``ds`` to ``path`` as CF-1.11 + ACDD-1.3 NetCDF4, atomically.

    Args:
        ds: the forecast built by :mod:`smcast.forecast`: ``swvl1`` (float, m3 m-3, NaN over
            sea) and ``verification_flag`` (uint8, 255 over sea) on (time, lat, lon);
            ``consistency_rate`` (0…1, NaN where not computable) and ``consistency_flag`` (uint8)
            on (lat, lon); coordinates ``time`` (valid-day starts), ascending ``lat``/``lon``,
            scalar ``forecast_reference_time``, ``forecast_period`` (hours) and ``lead`` (days)
            on time; the attributes in ``REQUIRED_ATTRS``.
        path: target file; an existing file is replaced only once the new one is complete.
        template: YAML of global attributes; None: the repository's
            ``templates/netcdf_attributes.yaml``.

    Returns:
        ``path``.

    Raises:
        ValueError: the dataset breaks the input contract (the message names what).
        FileNotFoundError: the attribute template does not exist.
    """
    check_forecast(ds)
    attrs = global_attributes(ds, load_template(template))
    out = build_dataset(ds, attrs)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        out.to_netcdf(tmp, format="NETCDF4", engine="netcdf4", encoding=encoding(out))
    return path


# ----------------------------------------------------------------------------------- input checks
def check_forecast(ds: xr.Dataset) -> None:
    """Raise ``ValueError`` naming the first way ``ds`` breaks the writer's input contract."""
    missing = [v for v in DATA_VARS if v not in ds.data_vars]
    missing += [c for c in ("forecast_reference_time", "forecast_period", "lead")
                if c not in ds.coords]
    missing += [f"attribute {a}" for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise ValueError(f"forecast dataset lacks {', '.join(missing)}")
    for name, dims in _EXPECTED_DIMS.items():
        if set(ds[name].dims) != set(dims):
            raise ValueError(f"{name} has dims {ds[name].dims}, expected {dims}")
    if ds.sizes["time"] == 0:
        raise ValueError("forecast dataset has no valid days (time is empty)")
    for dim in ("time", "lat", "lon"):
        values = ds[dim].values
        if values.size > 1 and not np.all(values[1:] > values[:-1]):
            raise ValueError(f"{dim} must be strictly ascending")
    _check_range(ds["swvl1"], 0.0, 1.0)
    _check_range(ds["consistency_rate"], 0.0, 1.0)
    _check_flags(ds["consistency_flag"], len(CONSISTENCY_MEANINGS))
    _check_flags(ds["verification_flag"], len(VERIFICATION_MEANINGS))


def _check_range(da: xr.DataArray, lo: float, hi: float) -> None:
    values = da.values
    finite = values[np.isfinite(values)]
    if finite.size and (finite.min() < lo or finite.max() > hi):
        raise ValueError(f"{da.name} has values {finite.min():g}…{finite.max():g} outside its "
                         f"valid range {lo:g}…{hi:g}; readers would mask them")


def _check_flags(da: xr.DataArray, n_meanings: int) -> None:
    values = np.unique(da.values)
    bad = [v for v in values if not (v == FLAG_FILL or 0 <= v < n_meanings)]
    if bad:
        raise ValueError(f"{da.name} holds {bad}; valid values are 0…{n_meanings - 1} and "
                         f"{int(FLAG_FILL)} (sea)")


# ------------------------------------------------------------------------------------- templates
def load_template(template: Path | None = None) -> dict[str, Any]:
    """Read the YAML attribute template (a mapping of attribute name → value)."""
    path = Path(template) if template is not None else (
        DEFAULT_TEMPLATE or templates_dir() / "netcdf_attributes.yaml")
    if not path.is_file():
        raise FileNotFoundError(
            f"NetCDF attribute template {path} not found; pass template=<file> or restore "
            "templates/netcdf_attributes.yaml from the smcast repository")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of attribute names to values")
    return data


def fill_placeholders(template: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    """Fill ``{name}`` placeholders in the template's strings; lists are joined with ``", "``.

    Raises ``ValueError`` naming the attribute for an unknown placeholder or a bad value type.
    """
    out: dict[str, Any] = {}
    for key, value in template.items():
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        if isinstance(value, str):
            out[str(key)] = _format(str(key), value, fields)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = value
        else:
            raise ValueError(f"template attribute {key!r}: {type(value).__name__} values are not "
                             "supported (use a string, number or list of strings)")
    return out


def _format(key: str, value: str, fields: Mapping[str, str]) -> str:
    names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    unknown = sorted(names - set(fields))
    if unknown:
        raise ValueError(f"template attribute {key!r} uses unknown placeholder(s) {unknown}; "
                         f"valid: {sorted(fields)} (write literal braces as {{{{ }}}})")
    return value.format_map(fields)


def placeholder_fields(ds: xr.Dataset) -> dict[str, str]:
    """The values template placeholders can use."""
    issue = str(ds.attrs["issue_date"])
    return {"issue_date": issue, "issue_year": issue[:4], "model": str(ds.attrs["smcast_model"]),
            "variant": str(ds.attrs["smcast_variant"]),
            "version": str(ds.attrs["smcast_version"]),
            "last_forcing_day": str(ds.attrs["last_forcing_day"])}


# ----------------------------------------------------------------------------- global attributes
def global_attributes(ds: xr.Dataset, template: Mapping[str, Any],
                      now: datetime | None = None) -> dict[str, Any]:
    """All global attributes: the filled template, then the forecast's own attributes, then the
    computed ones (conventions, dates, history, geospatial and time coverage)."""
    now = now or datetime.now(timezone.utc)
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = fill_placeholders(template, placeholder_fields(ds))
    attrs.update({k: _attr_value(v) for k, v in ds.attrs.items()})
    attrs.update({
        "Conventions": CONVENTIONS,
        "standard_name_vocabulary": STANDARD_NAME_VOCABULARY,
        "date_created": created, "date_modified": created, "date_metadata_modified": created,
        "date_issued": str(ds.attrs["issue_date"]),
        "history": f"{created} written by smcast {smcast.__version__} "
                   f"(smcast.writers.netcdf) from model {ds.attrs['smcast_model']}",
        "product_version": str(ds.attrs["smcast_version"]),
    })
    attrs.update(geospatial_attributes(ds))
    attrs.update(time_coverage_attributes(ds["time"].values))
    return attrs


def _attr_value(value: Any) -> Any:
    """A netCDF-storable attribute value (strings and numbers as they are, others as text)."""
    if isinstance(value, (str, int, float, np.number)) and not isinstance(value, bool):
        return value
    return str(value)


def geospatial_attributes(ds: xr.Dataset) -> dict[str, Any]:
    """ACDD geospatial attributes. ``geospatial_lat/lon_min/max`` are the extreme cell centres
    (the checker compares them with ``lat``/``lon``); ``geospatial_bounds`` is the outer cell
    edges as a WKT polygon in ACDD's latitude-longitude order."""
    res = float(ds.attrs["grid_resolution"])
    lat, lon = ds["lat"].values, ds["lon"].values
    south, north = lat.min() - res / 2, lat.max() + res / 2
    west, east = lon.min() - res / 2, lon.max() + res / 2
    ring = [(south, west), (north, west), (north, east), (south, east), (south, west)]
    depth, top_bottom = _depth_value(), LAYER_BOUNDS_M["swvl1"]
    return {
        "geospatial_lat_min": float(lat.min()), "geospatial_lat_max": float(lat.max()),
        "geospatial_lat_units": "degrees_north", "geospatial_lat_resolution": f"{res:g} degrees",
        "geospatial_lon_min": float(lon.min()), "geospatial_lon_max": float(lon.max()),
        "geospatial_lon_units": "degrees_east", "geospatial_lon_resolution": f"{res:g} degrees",
        "geospatial_bounds": "POLYGON ((" + ", ".join(f"{y:g} {x:g}" for y, x in ring) + "))",
        "geospatial_bounds_crs": "EPSG:4326",
        "geospatial_vertical_min": depth, "geospatial_vertical_max": depth,
        "geospatial_vertical_units": "m", "geospatial_vertical_positive": "down",
        "geospatial_vertical_resolution": f"{top_bottom[1] - top_bottom[0]:g} m (one soil layer, "
                                          f"{top_bottom[0]:g} to {top_bottom[1]:g} m)",
    }


def time_coverage_attributes(time: np.ndarray) -> dict[str, str]:
    """ACDD time coverage: start/end are the first/last time stamps (valid-day starts, as the
    checker requires), the duration spans the daily means [first day, last day + 1)."""
    time = time.astype("datetime64[ns]")
    span = (time[-1] + np.timedelta64(1, "D") - time[0]).astype("timedelta64[h]").astype(int)
    duration = f"P{span // 24}D" if span % 24 == 0 else f"PT{span}H"
    return {"time_coverage_start": _iso(time[0]), "time_coverage_end": _iso(time[-1]),
            "time_coverage_duration": duration, "time_coverage_resolution": "P1D"}


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "s")) + "Z"


# --------------------------------------------------------------------------------- the dataset
def build_dataset(ds: xr.Dataset, attrs: Mapping[str, Any]) -> xr.Dataset:
    """The file's content: numeric times, bounds, auxiliary coordinates, crs, data and flags."""
    ds = ds.transpose("time", "lat", "lon")
    res = float(ds.attrs["grid_resolution"])
    days = _days(ds["time"].values)
    lat = ds["lat"].values.astype(np.float64)
    lon = ds["lon"].values.astype(np.float64)
    coords = {
        "time": ("time", days, _time_attrs()),
        "lat": ("lat", lat, _axis_attrs("latitude", "degrees_north", "Y", "lat_bnds")),
        "lon": ("lon", lon, _axis_attrs("longitude", "degrees_east", "X", "lon_bnds")),
    }
    data_vars: dict[str, Any] = {
        "time_bnds": (("time", "nv"), np.stack([days, days + 1.0], axis=-1)),
        "lat_bnds": (("lat", "nv"), np.stack([lat - res / 2, lat + res / 2], axis=-1)),
        "lon_bnds": (("lon", "nv"), np.stack([lon - res / 2, lon + res / 2], axis=-1)),
        **_forecast_coords(ds, days),
        "crs": ((), np.int32(0), pyproj.CRS("EPSG:4326").to_cf()),
        "swvl1": _swvl1(ds),
        "consistency_rate": _consistency_rate(ds),
        "consistency_flag": _flag(ds, "consistency_flag", CONSISTENCY_MEANINGS,
                                  _consistency_flag_long_name(ds)),
        "verification_flag": _flag(ds, "verification_flag", VERIFICATION_MEANINGS,
                                   _verification_flag_long_name(ds)),
    }
    return xr.Dataset(data_vars, coords, attrs=dict(attrs))


def _days(times: np.ndarray) -> np.ndarray:
    """datetime64 → float64 days since 1970-01-01 (exact for whole hours)."""
    ns = np.asarray(times).astype("datetime64[ns]").astype(np.int64)
    return ns / _NS_PER_DAY


def _time_attrs() -> dict[str, str]:
    return {"standard_name": "time", "long_name": "validity time (start of the valid day, UTC)",
            "units": TIME_UNITS, "calendar": CALENDAR, "units_metadata": "leap_seconds: none",
            "axis": "T", "bounds": "time_bnds"}


def _axis_attrs(standard_name: str, units: str, axis: str, bounds: str) -> dict[str, str]:
    return {"standard_name": standard_name, "long_name": f"{standard_name} of the cell centre",
            "units": units, "axis": axis, "bounds": bounds}


def _depth_value() -> float:
    top, bottom = LAYER_BOUNDS_M["swvl1"]
    return (top + bottom) / 2


def _forecast_coords(ds: xr.Dataset, days: np.ndarray) -> dict[str, Any]:
    """Scalar depth and forecast_reference_time, forecast_period(time) and lead(time)."""
    frt = _days(ds["forecast_reference_time"].values.reshape(1))[0]
    period = ds["forecast_period"].values.astype(np.float64)
    if not np.allclose(period, (days - frt) * 24.0):
        raise ValueError("forecast_period must equal time - forecast_reference_time in hours")
    return {
        "depth": ((), _depth_value(), {
            "standard_name": "depth",
            "long_name": "depth below the land surface of the middle of soil layer 1",
            "units": "m", "positive": "down", "axis": "Z", "comment": _DEPTH_COMMENT}),
        "forecast_reference_time": ((), frt, {
            "standard_name": "forecast_reference_time",
            "long_name": "forecast reference time (end of the last ERA5-Land forcing day)",
            "units": TIME_UNITS, "calendar": CALENDAR, "units_metadata": "leap_seconds: none"}),
        "forecast_period": ("time", period, {
            "standard_name": "forecast_period",
            "long_name": "time from forecast_reference_time to the start of the valid day",
            "units": "hours"}),
        "lead": ("time", ds["lead"].values.astype(np.int32), {
            "long_name": "lead in days after the last forcing day", "units": "days"}),
    }


def _swvl1(ds: xr.Dataset) -> tuple:
    var = lookup("swvl1")
    return (("time", "lat", "lon"), ds["swvl1"].values.astype(np.float32, copy=False), {
        "standard_name": var.standard_name, "long_name": f"{var.long_name}, forecast",
        "units": var.units, "valid_min": np.float32(0.0), "valid_max": np.float32(1.0),
        "grid_mapping": "crs", "cell_methods": "time: mean area: mean where land",
        "coverage_content_type": "modelResult", "coordinates": _TIME_COORDS,
        "ancillary_variables": "verification_flag consistency_flag consistency_rate"})


def _consistency_rate(ds: xr.Dataset) -> tuple:
    days = int(ds.attrs["consistency_days"])
    return (("lat", "lon"), ds["consistency_rate"].values.astype(np.float32, copy=False), {
        "standard_name": "quality_flag",
        "long_name": (f"share of the {days} most recent verifiable days on which the model's "
                      "predicted soil-moisture change agreed with the water balance "
                      "(physical consistency, Geng et al. 2024 Eq. 19)"),
        "units": "1", "valid_range": np.array([0.0, 1.0], dtype=np.float32),
        "grid_mapping": "crs", "coverage_content_type": "qualityInformation"})


def _flag(ds: xr.Dataset, name: str, meanings: tuple[str, ...], long_name: str) -> tuple:
    n = len(meanings)
    dims = ds[name].dims
    coords = {"coordinates": _TIME_COORDS} if "time" in dims else {}
    return (dims, ds[name].values.astype(np.uint8, copy=False), {
        **coords, "standard_name": "status_flag", "long_name": long_name,
        "flag_values": np.arange(n, dtype=np.uint8), "flag_meanings": " ".join(meanings),
        "valid_range": np.array([0, n - 1], dtype=np.uint8), "grid_mapping": "crs",
        "coverage_content_type": "qualityInformation",
        "comment": f"{int(FLAG_FILL)} (_FillValue): sea"})


def _consistency_flag_long_name(ds: xr.Dataset) -> str:
    thr, days = float(ds.attrs["consistency_threshold"]), int(ds.attrs["consistency_days"])
    return (f"physical consistency of the model over the {days} most recent verifiable days: "
            f"consistent if consistency_rate >= {thr:g}, inconsistent if below, "
            "no_water_balance_signal if no day had a water-balance signal")


def _verification_flag_long_name(ds: xr.Dataset) -> str:
    return ("verification of the valid day against the water balance once ERA5-Land holds it: "
            "consistent or inconsistent predicted change, no_water_balance_signal, or "
            f"not_yet_verifiable at issue ({ds.attrs['issue_date']})")


# ------------------------------------------------------------------------------------ encoding
def encoding(out: xr.Dataset) -> dict[str, dict[str, Any]]:
    """netCDF4 encoding: compressed, chunked data and flags; no fill value anywhere else."""
    enc: dict[str, dict[str, Any]] = {name: {"_FillValue": None} for name in out.variables}
    for name in DATA_VARS:
        fill = FLAG_FILL if out[name].dtype == np.uint8 else FLOAT_FILL
        enc[name] = {"_FillValue": fill, "dtype": out[name].dtype,
                     "chunksizes": _chunks(out[name].shape), **COMPRESSION}
    return enc


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One time step per chunk, lat/lon split into equal parts of at most ``MAX_CHUNK_EDGE``:
    (1, nlat, nlon) or (nlat, nlon) for a grid of up to 1024 × 1024 cells; the global 0.1°
    grid (1800 × 3600) gets 900 × 900 chunks (3.1 MiB of float32), not 1024 × 1024 ones with
    thin remainders."""
    *lead, nlat, nlon = shape
    return (*(1 for _ in lead), _edge(nlat), _edge(nlon))


def _edge(n: int) -> int:
    """Chunk edge of an axis of n cells: n split into the fewest equal parts ≤ MAX_CHUNK_EDGE."""
    parts = -(-n // MAX_CHUNK_EDGE)
    return -(-n // parts)
