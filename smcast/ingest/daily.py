"""Hourly (or daily) source fields → one UTC day in store units, plus derived variables.

ERA5-Land conventions (see ``smcast.variables``):

* accumulated fields run from 00 UTC and reset daily: the value stamped 00 UTC of day D+1 is the
  total of day D (it usually lives in the next day's or month's file);
* instantaneous fields: the daily value is the mean of the 24 hourly values 00…23 UTC;
* daily sources already hold daily means / daily totals, stamped at 00 UTC of the day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import xarray as xr

from smcast.errors import InputDataError
from smcast.variables import VARIABLES

Frequency = Literal["hourly", "daily"]

#: IFS constants for saturation vapour pressure over water (Tetens' formula, ECMWF IFS doc.)
_ES0, _A3, _T0, _A4 = 611.21, 17.502, 273.16, 32.19
_EPSILON = 0.621981  # ratio of the gas constants of dry air and water vapour


@dataclass
class Piece:
    """The source data for one variable around one day.

    Attributes:
        data: (time, lat, lon) in the file's units (``units`` attribute), coordinates normalised.
        frequency: hourly (ERA5-Land steps) or daily (daily means/totals stamped 00 UTC).
        origin: file names the data came from, for messages.
    """

    data: xr.DataArray
    frequency: Frequency
    origin: list[str] = field(default_factory=list)


_HOUR = np.timedelta64(3600, "s").astype("timedelta64[ns]")
_DAY = 24 * _HOUR


def needed_times(name: str, day: date, frequency: Frequency) -> np.ndarray:
    """Time stamps (datetime64[ns], ascending) that make ``day`` complete for ``name``."""
    start = np.datetime64(day, "D").astype("datetime64[ns]")
    if frequency == "daily":
        return np.array([start])
    if VARIABLES[name].kind == "accumulated":
        return np.array([start + _DAY])
    return start + _HOUR * np.arange(24)


def missing_times(name: str, day: date, frequency: Frequency, have: np.ndarray
                  ) -> list[np.datetime64]:
    """The stamps of ``needed_times`` that are not among ``have`` (datetime64 stamps)."""
    need = needed_times(name, day, frequency)
    return list(need[~np.isin(need, np.asarray(have).astype("datetime64[ns]"))])


def completeness_problems(names: tuple[str, ...], day: date,
                          stamps: Callable[[str], tuple[Frequency, np.ndarray] | None],
                          absent: str) -> list[str]:
    """What keeps ``day`` from being complete, one line per variable (empty: complete).

    ``stamps(name)`` gives the frequency and time stamps available for a variable, or None when
    there are none (reported as ``"<name>: <absent>"``).
    """
    out = []
    for name in names:
        known = stamps(name)
        if known is None:
            out.append(f"{name}: {absent}")
            continue
        missing = missing_times(name, day, *known)
        if missing:
            out.append(describe_missing(name, day, missing))
    return out


def describe_missing(name: str, day: date, missing: list[np.datetime64]) -> str:
    """E.g. ``t2m: missing 13:00…23:00 UTC`` or ``tp: missing 2024-01-06 00:00 UTC (…)``."""
    stamps = [str(t)[:16].replace("T", " ") for t in missing]
    if VARIABLES[name].kind == "accumulated" and len(missing) == 1 and stamps[0][:10] != str(day):
        return (f"{name}: missing {stamps[0]} UTC (the daily total of {day} is the 00 UTC step of "
                "the next day, usually in the next file)")
    hours = [s[11:16] for s in stamps]
    if len(hours) > 3:
        return f"{name}: missing {len(hours)} hours ({hours[0]}…{hours[-1]} UTC)"
    return f"{name}: missing {', '.join(hours)} UTC"


#: latitude rows reduced at a time by ``daily_value`` (bounds its memory; see there)
ROW_BLOCK = 256


def daily_value(piece: Piece, name: str, day: date, rows: int = ROW_BLOCK) -> np.ndarray:
    """The day's value of one variable in store units, shape (lat, lon), float64.

    The hours are reduced ``rows`` latitude rows at a time (``piece.data.isel(time=…, lat=…)``,
    so a lazily opened file is read one block at a time). Memory besides ``piece`` itself: the
    (lat, lon) float64 result (two of them while the unit factor is applied) and one block of
    24 hours × ``rows`` × nlon values, as read and as float64 — for ``rows=256`` on ERA5-Land's
    global 0.1° grid (3600 longitudes) with float32 data 24 × 256 × 3600 × (4 + 8) B ≈ 265 MB,
    against ≈ 1.9 GB for the whole day at once. The result is bit-identical to reducing the
    whole (hours, lat, lon) array (the same float64 mean over the hours, axis 0).

    Raises InputDataError when hours are missing or the units are not ERA5-Land's.
    """
    missing = missing_times(name, day, piece.frequency, piece.data["time"].values)
    if missing:
        raise InputDataError(f"{day} is incomplete: {describe_missing(name, day, missing)} "
                             f"(files: {', '.join(piece.origin) or 'none'})")
    stamps = piece.data["time"].values
    positions = np.searchsorted(stamps, needed_times(name, day, piece.frequency))
    nlat = piece.data.sizes["lat"]
    value = np.empty((nlat, piece.data.sizes["lon"]), dtype=np.float64)
    partial = 0
    for start in range(0, nlat, rows):
        values = _read_block(piece, name, positions, slice(start, start + rows))
        partial += _partial_points(values)
        value[start:start + rows] = values[0] if values.shape[0] == 1 else values.mean(axis=0)
    if partial:
        raise InputDataError(
            f"{name} on {day}: {partial} point(s) have data in some hours but "
            f"not others (files: {', '.join(piece.origin)}); the file is damaged or "
            "mixes grids: download it again")
    return value * unit_factor(name, piece.data.attrs.get("units"), piece.origin)


def _read_block(piece: Piece, name: str, positions: np.ndarray, rows: slice) -> np.ndarray:
    """(hours, rows, lon) float64 of ``piece``; a failing read names the files."""
    try:
        block = piece.data.isel(time=positions, lat=rows).values
    except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError
        raise InputDataError(f"{', '.join(piece.origin)}: reading {name} failed ({exc}); the "
                             "file is corrupt or truncated: download it again") from None
    return np.asarray(block).astype(np.float64)


def _partial_points(values: np.ndarray) -> int:
    """Points of a (hours, lat, lon) block that are NaN in some hours but not all."""
    if values.shape[0] == 1:
        return 0
    gaps = np.isnan(values)
    return int((gaps.any(axis=0) & ~gaps.all(axis=0)).sum())


def unit_factor(name: str, units: str | None, origin: list[str] | None = None) -> float:
    """Factor from a file's daily value in ``units`` to store units; None trusts the file.

    Native ERA5-Land units take the vocabulary's scale (J m-2 per day → W m-2); values already in
    store units take 1. Anything else is an error naming the variable, the units and the file.
    """
    var = VARIABLES[name]
    if units is None:
        return var.scale
    u = units.strip()
    if u in var.native_units:
        return var.scale
    if u == var.units:
        return 1.0
    raise InputDataError(
        f"variable {name} has units {u!r} in {', '.join(origin or []) or 'the source'}; smcast "
        f"expects ERA5-Land's {var.native_units[0]!r} (or {var.units!r}). Convert the file, or "
        "check that it is ERA5-Land and not another product.")


def specific_humidity(d2m: np.ndarray, sp: np.ndarray) -> np.ndarray:
    """Specific humidity (kg kg-1) from 2 m dewpoint (K) and surface pressure (Pa), any shape.

    Vapour pressure from Tetens' formula with the IFS constants over water,
    ``q = ε e / (p − (1 − ε) e)``.
    """
    e = _ES0 * np.exp(_A3 * (d2m - _T0) / (d2m - _A4))
    return _EPSILON * e / (sp - (1.0 - _EPSILON) * e)


def derive(fields: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add the derived variables (``q``, ``wind``) to daily fields in store units."""
    out = dict(fields)
    out["q"] = specific_humidity(fields["d2m"], fields["sp"])
    out["wind"] = np.hypot(fields["u10"], fields["v10"])
    return out


def to_daily(pieces: dict[str, Piece], day: date, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Daily values (lat, lon) in store units of every variable in ``names``, plus derived ones.

    Raises InputDataError listing every variable that is missing or incomplete on that day.
    """
    def stamps(name: str) -> tuple[Frequency, np.ndarray] | None:
        piece = pieces.get(name)
        return None if piece is None else (piece.frequency, piece.data["time"].values)

    problems = completeness_problems(names, day, stamps, "variable not found")
    if problems:
        origin = sorted({o for p in pieces.values() for o in p.origin})
        raise InputDataError(f"{day} is incomplete: " + "; ".join(problems)
                             + f" (files: {', '.join(origin) or 'none'})")
    return derive({n: daily_value(pieces[n], n, day) for n in names})
