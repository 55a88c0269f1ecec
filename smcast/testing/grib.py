"""Write ERA5-Land-like hourly GRIB files as the CDS lays them out (for tests and benchmarks).

Layout of every message (GRIB edition 1, from the ``regular_ll_sfc_grib1`` sample):

* MARS local section: ``class=l5``, ``stream=oper``, ``expver=0001``; ``type=an`` for
  instantaneous fields, ``type=fc`` for accumulated fields;
* instantaneous fields: ``dataDate``/``dataTime`` = valid time, step 0 (``stepType=instant``);
* accumulated fields: the accumulation starts at 00 UTC, so ``dataDate`` = the day the accumulation
  started (for a value valid at 00 UTC, the previous day), ``dataTime=0000``, ``stepType=accum``,
  ``stepRange="0-h"`` with h = 1…24;
* soil water (``swvl1..3``) on ``depthBelowLandLayer`` 0–7, 7–28, 28–100 cm; everything else on
  ``surface``;
* regular lat-lon grid, scanning north to south then west to east, simple packing with a bitmap
  marking missing (sea) points.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

with contextlib.suppress(ImportError):
    # Load pyproj before ecCodes; see the note in smcast.sources.grib (eckitlib's bundled libproj
    # otherwise crashes the interpreter at exit once pyproj is imported).
    import pyproj  # noqa: F401

import eccodes
import numpy as np
import pandas as pd
import xarray as xr

from smcast.variables import lookup

#: ECMWF GRIB parameter ids (table 128) of the ERA5-Land fields smcast reads.
PARAM_IDS: dict[str, int] = {
    "tp": 228, "e": 182, "ro": 205, "sro": 8, "sd": 141, "t2m": 167, "d2m": 168, "sp": 134,
    "u10": 165, "v10": 166, "ssrd": 169, "strd": 175, "swvl1": 39, "swvl2": 40, "swvl3": 41,
}
#: Soil layers as GRIB1 ``depthBelowLandLayer`` (top, bottom) in cm.
SOIL_LAYERS_CM: dict[str, tuple[int, int]] = {"swvl1": (0, 7), "swvl2": (7, 28), "swvl3": (28, 100)}
#: Packing precision: 24 bits resolve 1/16.7 million of each field's range (ERA5-Land uses 16).
DEFAULT_BITS_PER_VALUE = 24
_SAMPLE = "regular_ll_sfc_grib1"
_DIMS = ("valid_time", "latitude", "longitude")


def write_era5land_grib(path: Path, ds: xr.Dataset, *,
                        bits_per_value: int = DEFAULT_BITS_PER_VALUE) -> Path:
    """Write ``ds`` to ``path`` as ERA5-Land hourly GRIB1, one message per variable and hour.

    Args:
        path: the file to create (overwritten).
        ds: hourly ERA5-Land fields in the CDS layout: dims (valid_time, latitude, longitude),
            latitude descending (90 → -90 order), longitude ascending in 0…360 (regular grid, any
            spacing/extent), variables named by short names (tp, e, ro, sro, sd, t2m, d2m, sp,
            u10, v10, ssrd, strd, swvl1, swvl2, swvl3 — any subset, aliases such as ``2t``
            accepted) in native ERA5-Land units (m, K, Pa, m s**-1, J m**-2, m**3 m**-3), NaN over
            the sea. Accumulated variables are running totals since 00 UTC, so the value valid
            at 00 UTC of day D+1 is the total of day D.
        bits_per_value: simple-packing precision; the error is about (max - min) / 2**bits of
            each field (24 bits: ~6e-8 of the range; real ERA5-Land files use 16).

    Returns:
        ``path``.

    Raises:
        ValueError: unknown variable, wrong dims, irregular or wrongly ordered grid, valid
            times that are not whole hours.
    """
    path = Path(path)
    names = {name: _param_name(name) for name in ds.data_vars}
    times = _valid_times(ds)
    arrays = {name: ds[name].transpose(*_DIMS).values for name in names}
    grid = _grid_template(ds["latitude"].values, ds["longitude"].values, bits_per_value)
    templates: dict[str, int] = {}
    try:
        for name, short in names.items():
            templates[name] = _variable_template(grid, short)
        with open(path, "wb") as f:
            for i, time in enumerate(times):
                for name, short in names.items():
                    _write_message(f, templates[name], short, time, arrays[name][i])
    finally:
        for handle in (grid, *templates.values()):
            eccodes.codes_release(handle)
    return path


def _param_name(name: str) -> str:
    """The vocabulary short name of a dataset variable; ValueError if ERA5-Land has no GRIB id."""
    try:
        short = lookup(name).name
    except KeyError as exc:
        raise ValueError(str(exc)) from exc
    if short not in PARAM_IDS:
        raise ValueError(f"{name!r} is not an ERA5-Land GRIB field; known: {', '.join(PARAM_IDS)}")
    return short


def _valid_times(ds: xr.Dataset) -> pd.DatetimeIndex:
    """The dataset's valid times (UTC, whole hours), after checking the dims of every variable."""
    for name, da in ds.data_vars.items():
        if set(da.dims) != set(_DIMS):
            raise ValueError(f"{name!r} has dims {da.dims}; expected {_DIMS}")
    times = pd.DatetimeIndex(ds["valid_time"].values)
    if (times != times.floor("h")).any():
        raise ValueError("valid_time must be whole hours")
    return times


def _increment(values: np.ndarray, axis: str, descending: bool) -> float:
    """The constant spacing (degrees, positive) of a 1-D coordinate; ValueError if irregular."""
    if values.size < 2:
        return 1.0  # any increment describes a single row/column
    steps = np.diff(values) * (-1.0 if descending else 1.0)
    if not np.all(steps > 0) or not np.allclose(steps, steps[0], rtol=0, atol=1e-6):
        order = "descending" if descending else "ascending"
        raise ValueError(f"{axis} must be regular and {order}")
    return float(steps[0])


def _grid_template(lat: np.ndarray, lon: np.ndarray, bits_per_value: int) -> int:
    """An eccodes handle with the grid, packing and bitmap set (caller releases it).

    ``lat`` (Nj,) descending, ``lon`` (Ni,) ascending, both in degrees.
    """
    dlat, dlon = _increment(lat, "latitude", True), _increment(lon, "longitude", False)
    h = eccodes.codes_grib_new_from_samples(_SAMPLE)
    for key, value in (
        ("Ni", lon.size), ("Nj", lat.size),
        ("latitudeOfFirstGridPointInDegrees", float(lat[0])),
        ("latitudeOfLastGridPointInDegrees", float(lat[-1])),
        ("longitudeOfFirstGridPointInDegrees", float(lon[0])),
        ("longitudeOfLastGridPointInDegrees", float(lon[-1])),
        ("iDirectionIncrementInDegrees", dlon), ("jDirectionIncrementInDegrees", dlat),
        ("iScansNegatively", 0), ("jScansPositively", 0),
        ("marsClass", "l5"), ("marsStream", "oper"), ("experimentVersionNumber", "0001"),
        ("bitmapPresent", 1), ("bitsPerValue", bits_per_value),
    ):
        eccodes.codes_set(h, key, value)
    return h


def _variable_template(grid: int, short: str) -> int:
    """A clone of ``grid`` with the parameter, level and MARS type of variable ``short``."""
    h = eccodes.codes_clone(grid)
    eccodes.codes_set(h, "paramId", PARAM_IDS[short])
    accumulated = lookup(short).kind == "accumulated"
    eccodes.codes_set(h, "marsType", "fc" if accumulated else "an")
    if short in SOIL_LAYERS_CM:
        top, bottom = SOIL_LAYERS_CM[short]
        eccodes.codes_set(h, "indicatorOfTypeOfLevel", 112)  # depthBelowLandLayer
        eccodes.codes_set(h, "topLevel", top)
        eccodes.codes_set(h, "bottomLevel", bottom)
    eccodes.codes_set(h, "stepType", "accum" if accumulated else "instant")
    return h


def _reference_time(short: str, time: pd.Timestamp) -> tuple[pd.Timestamp, int]:
    """(dataDate/dataTime, step in hours) of the message valid at ``time``.

    Instantaneous fields: (time, 0). Accumulated fields: (00 UTC of the day the accumulation
    started, 1…24), i.e. a value valid at 00 UTC belongs to the previous day's forecast.
    """
    if lookup(short).kind != "accumulated":
        return time, 0
    start = (time - pd.Timedelta(hours=1)).normalize()
    return start, int((time - start) / pd.Timedelta(hours=1))


def _write_message(f, template: int, short: str, time: pd.Timestamp, field: np.ndarray) -> None:
    """Append one message: ``field`` (Nj, Ni) in native units, NaN = missing, valid at ``time``."""
    ref, step = _reference_time(short, time)
    h = eccodes.codes_clone(template)
    try:
        eccodes.codes_set(h, "dataDate", int(ref.strftime("%Y%m%d")))
        eccodes.codes_set(h, "dataTime", int(ref.strftime("%H%M")))
        if lookup(short).kind == "accumulated":
            eccodes.codes_set(h, "stepRange", f"0-{step}")
        values = np.asarray(field, dtype=np.float64).ravel()  # north→south rows, west→east
        missing = _missing_value(values)
        eccodes.codes_set(h, "missingValue", missing)
        eccodes.codes_set_values(h, np.where(np.isnan(values), missing, values))
        eccodes.codes_write(h, f)
    finally:
        eccodes.codes_release(h)


def _missing_value(values: np.ndarray) -> float:
    """A missing-value sentinel that no valid value equals (9999 unless the data holds it)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0 or not np.any(finite == 9999.0):
        return 9999.0
    return float(np.max(np.abs(finite))) * 2.0 + 1.0
