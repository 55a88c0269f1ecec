"""Read ERA5-Land GRIB files (as delivered by the CDS) into smcast's vocabulary.

ERA5-Land GRIB labels instantaneous fields as analyses (``dataDate``/``dataTime`` = valid time,
step 0) and accumulated fields as 24-hour forecasts from 00 UTC (``dataDate`` = the day the
accumulation started, step 1…24; the value valid at 00 UTC of day D+1 has ``dataDate`` D and step
24). With cfgrib's default ``time_dims=("time", "step")`` accumulations therefore come out on a
(time, step) grid that is NaN wherever no message exists (e.g. only step 24 for the day before
the file's first hour) and must be stacked onto valid times. We index every field by its valid
time directly instead (``time_dims=("valid_time",)``); ERA5-Land has exactly one message per
(parameter, valid time), so this needs no padding and gives the same answer for hourly and daily
files, and for files holding only instantaneous or only accumulated fields.
"""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

with contextlib.suppress(ImportError):
    # pyproj must be loaded before ecCodes: the eckitlib wheel (loaded by eccodes via findlibs with
    # RTLD_GLOBAL) bundles its own libproj, and a pyproj imported afterwards (e.g. by rioxarray,
    # whose backend xarray loads whenever a file is opened by engine name) binds to it and the
    # interpreter crashes at exit ("double free or corruption", exit code 134/139).
    import pyproj  # noqa: F401

import cfgrib
import numpy as np
import xarray as xr
from cfgrib.messages import OffsetType
from cfgrib.xarray_plugin import CfGribBackend

from smcast.errors import InputDataError
from smcast.variables import SOURCE_VARIABLES, canonical_name

DIMS = ("valid_time", "latitude", "longitude")
#: cfgrib options: one dimension per field for its valid time, nothing squeezed (size-1 dims are
#: dropped here, by name), errors raised rather than logged. Messages are read from memory, so
#: no .idx file is written next to the data (a mirror may be read-only).
_BACKEND_KWARGS = {"time_dims": ("valid_time",), "squeeze": False, "errors": "raise"}
_KEPT_ATTRS = ("units", "long_name", "standard_name", "GRIB_paramId", "GRIB_shortName",
               "GRIB_stepType", "GRIB_typeOfLevel", "GRIB_gridType")


def open_grib(path: Path) -> xr.Dataset:
    """Open an ERA5-Land GRIB file (hourly or daily) in memory, in smcast's vocabulary.

    Args:
        path: a GRIB file (edition 1 or 2) on a regular lat-lon grid.

    Returns:
        A Dataset with dims (valid_time, latitude, longitude): ``valid_time`` datetime64[ns] UTC,
        sorted and unique (the union over all fields; a field is NaN at valid times it lacks);
        latitude/longitude in degrees, in the file's order (ERA5-Land: 90 → -90, 0 → 359.9).
        Variables are float32, renamed to vocabulary short names (``2t``/``t2m`` → ``t2m``, …),
        NaN where the file has missing values (sea), in the file's units given by their
        ``units`` attribute (e.g. ``J m**-2``); accumulated fields are placed on their valid time
        (still running totals since 00 UTC). Non-ERA5-Land fields are dropped; no file handle
        stays open.

    Raises:
        InputDataError: naming the file, when it is missing, not GRIB, truncated or corrupt,
            not on a regular lat-lon grid, holds several grids or several messages for one
            variable and valid time, or holds no ERA5-Land variable.
    """
    path = Path(path)
    parts = [_tidy(part, path) for part in _read_parts(path)]
    parts = [part for part in parts if part.data_vars]
    if not parts:
        raise InputDataError(f"{path}: no ERA5-Land variable in this GRIB file "
                             f"(expected some of {', '.join(SOURCE_VARIABLES)})")
    return _merge(parts, path)


def _read_parts(path: Path) -> list[xr.Dataset]:
    """cfgrib's hypercubes of ``path`` (one or more per parameter), loaded into memory.

    The file is scanned once; each parameter's messages are then decoded from memory. (cfgrib's
    ``open_datasets`` re-scans the whole file once per parameter: 16 scans for ERA5-Land, ~8x
    slower on small grids.) Raises InputDataError if the file is unreadable.
    """
    if not path.is_file():
        raise InputDataError(f"{path}: GRIB file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            groups = _messages_by_param(path)
            parts = []
            for param in sorted(groups):
                if not _is_era5land(next(iter(groups[param].values()))):
                    continue
                parts.extend(_open_fields(groups.pop(param), path))  # pop: free once decoded
    except InputDataError:
        raise
    except Exception as exc:  # ecCodes/cfgrib raise EOFError, GribInternalError, ValueError, …
        raise InputDataError(f"{path}: not a readable GRIB file, or truncated/corrupt "
                             f"({type(exc).__name__}: {exc})") from exc
    return parts


def _messages_by_param(path: Path) -> dict[int, dict[OffsetType, cfgrib.Message]]:
    """All messages of ``path`` ({offset: message}) grouped by paramId, read in one pass.

    ``errors="raise"``: a truncated or corrupt message raises (cfgrib's default logs and skips
    it, which would silently drop hours).
    """
    groups: dict[int, dict[OffsetType, cfgrib.Message]] = {}
    for offset, message in cfgrib.FileStream(str(path), errors="raise").items():
        groups.setdefault(message["paramId"], {})[offset] = message
    return groups


def _is_era5land(message: cfgrib.Message) -> bool:
    """Whether a message holds a vocabulary variable (by GRIB shortName or cfgrib's name)."""
    names = (message.get("shortName"), message.get("cfVarName"))
    return any(canonical_name(str(name)) in SOURCE_VARIABLES for name in names if name)


def _open_fields(fields: dict[OffsetType, cfgrib.Message], path: Path,
                 filter_by_keys: dict | None = None) -> list[xr.Dataset]:
    """The messages of one parameter as loaded Dataset(s), split as cfgrib suggests when they
    disagree on a key that must be unique (e.g. two grids)."""
    kwargs = dict(_BACKEND_KWARGS, filter_by_keys=filter_by_keys or {})
    try:
        ds = xr.open_dataset(fields, engine=CfGribBackend, **kwargs).load()
    except cfgrib.DatasetBuildError as exc:
        if len(exc.args) < 3:
            raise
        return [part for keys in exc.args[2] for part in _open_fields(fields, path, keys)]
    if not filter_by_keys:
        _check_no_duplicates(ds, len(fields), path)
    return [ds]


def _check_no_duplicates(ds: xr.Dataset, n_messages: int, path: Path) -> None:
    """InputDataError if a parameter has more messages than (valid time, level, member) cells:
    cfgrib would silently keep only the first of two messages with the same valid time."""
    cells = int(np.prod([size for dim, size in ds.sizes.items()
                         if dim not in ("latitude", "longitude")]))
    if n_messages > cells:
        names = ", ".join(map(str, ds.data_vars))
        raise InputDataError(f"{path}: several messages for the same variable and valid time "
                             f"({names}: {n_messages} messages, {cells} distinct)")


def _tidy(part: xr.Dataset, path: Path) -> xr.Dataset:
    """One cfgrib hypercube reduced to (valid_time, latitude, longitude) ERA5-Land variables."""
    if "latitude" not in part.dims or "longitude" not in part.dims:
        raise InputDataError(f"{path}: not on a regular lat-lon grid (dims {tuple(part.dims)})")
    part = _drop_extra_dims(part, path)
    part = part.reset_coords(drop=True)  # non-index coordinates: step, time, expver, …
    renamed = {}
    for name, da in part.data_vars.items():
        short = canonical_name(str(name)) or canonical_name(str(da.attrs.get("GRIB_shortName")))
        if short in SOURCE_VARIABLES:
            renamed[short] = da.transpose(*DIMS).assign_attrs(_attrs(da.attrs))
    return xr.Dataset(renamed).assign_coords(
        valid_time=part["valid_time"].values.astype("datetime64[ns]"))


def _drop_extra_dims(part: xr.Dataset, path: Path) -> xr.Dataset:
    """Drop size-1 header dims (number, surface, depthBelowLandLayer, …) with their coordinates.

    A larger extra dim (ensemble members, several levels of one parameter) or no valid time
    raises InputDataError.
    """
    for dim, size in part.sizes.items():
        if dim in DIMS:
            continue
        if size != 1:
            raise InputDataError(f"{path}: unexpected dimension {dim!r} of size {size} "
                                 "(ensemble members or several levels are not ERA5-Land)")
        part = part.isel({dim: 0}, drop=True)
    if "valid_time" not in part.dims:
        raise InputDataError(f"{path}: GRIB messages carry no valid time")
    return part


def _attrs(attrs: dict) -> dict:
    """The variable attributes worth keeping (units as in the file, e.g. 'J m**-2')."""
    return {key: attrs[key] for key in _KEPT_ATTRS if key in attrs}


def _merge(parts: list[xr.Dataset], path: Path) -> xr.Dataset:
    """Merge the hypercubes (instantaneous, accumulated, soil levels) on the union of valid times.

    All parts must share one grid. A part is reindexed (NaN-filled) only where its valid times
    differ from the union, so the usual single-layout file is assembled without copying (xarray's
    ``merge``/``sortby`` would copy every array, doubling time and peak memory on global grids).
    """
    lat, lon = parts[0]["latitude"].values, parts[0]["longitude"].values
    for part in parts[1:]:
        if not (np.array_equal(part["latitude"].values, lat)
                and np.array_equal(part["longitude"].values, lon)):
            raise InputDataError(f"{path}: fields on different grids in one file")
    times = np.unique(np.concatenate([part["valid_time"].values for part in parts]))
    fields: dict[str, xr.DataArray] = {}
    for part in parts:
        for name, da in part.data_vars.items():
            fields[str(name)] = _combine(fields.get(str(name)), da, path)
    merged = xr.Dataset(
        {name: _on_times(fields[name], times) for name in SOURCE_VARIABLES if name in fields},
        attrs={"source": str(path)})
    return merged


def _combine(first: xr.DataArray | None, second: xr.DataArray, path: Path) -> xr.DataArray:
    """One variable from two parts with disjoint valid times (cfgrib split its messages)."""
    if first is None:
        return second
    if np.intersect1d(first["valid_time"].values, second["valid_time"].values).size:
        raise InputDataError(f"{path}: several messages for {second.name} at one valid time")
    return first.combine_first(second)


def _on_times(da: xr.DataArray, times: np.ndarray) -> xr.DataArray:
    """``da`` on the sorted valid times ``times`` (NaN where it has none); no copy if equal."""
    if np.array_equal(da["valid_time"].values, times):
        return da
    return da.reindex(valid_time=times)
