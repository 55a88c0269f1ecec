"""Reading ERA5-Land files (NetCDF in the old and new CDS layouts, GRIB) and indexing a set of
them by variable and time, so a day's data can be found without loading anything else.

New CDS NetCDF: dimension ``valid_time`` (seconds since 1970), coordinates ``expver``/``number``,
latitude 90 → −90, longitude 0 → 359.9. Old CDS NetCDF: dimension ``time`` (hours since 1900),
packed shorts, sometimes an ``expver`` dimension mixing ERA5 and ERA5T. Both, and GRIB, end up
with the same normalised coordinates (see ``smcast.grid.normalise_coords``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import xarray as xr

from smcast.errors import InputDataError
from smcast.grid import normalise_coords
from smcast.ingest.daily import Frequency, Piece, completeness_problems, needed_times
from smcast.variables import SOURCE_VARIABLES, canonical_name

log = logging.getLogger(__name__)

_NETCDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"\x89HDF")


def file_format(path: Path) -> str:
    """``netcdf`` or ``grib`` from the file's first bytes; InputDataError for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputDataError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(b"GRIB"):
        return "grib"
    if head.startswith(_NETCDF_MAGIC):
        return "netcdf"
    hint = " (a zip archive: unpack it first)" if head.startswith(b"PK") else ""
    raise InputDataError(f"{path} is neither NetCDF nor GRIB{hint}; remove it from the input "
                         "directory or narrow source.directory.pattern")


def open_era5(path: Path) -> xr.Dataset:
    """Open one file with normalised coordinates and vocabulary names (only smcast's variables).

    NetCDF stays lazy; GRIB is decoded into memory. InputDataError names the file when it is
    corrupt, truncated, or holds none of smcast's variables.
    """
    path = Path(path)
    if file_format(path) == "grib":
        from smcast.sources.grib import open_grib

        ds = open_grib(path)
    else:
        try:
            ds = xr.open_dataset(path, engine="netcdf4", decode_timedelta=False)
        except Exception as exc:  # netCDF4/HDF5 raise OSError, RuntimeError, ValueError
            raise InputDataError(f"{path} cannot be read as NetCDF ({exc}); it is corrupt or "
                                 "truncated: download it again") from None
    rename = {v: canonical_name(v) for v in ds.data_vars if canonical_name(v) in SOURCE_VARIABLES}
    if not rename:
        raise InputDataError(f"{path} holds none of smcast's ERA5-Land variables (found: "
                             f"{', '.join(map(str, ds.data_vars)) or 'none'})")
    ds = ds[list(rename)].rename({k: v for k, v in rename.items() if k != v})
    ds = normalise_coords(ds)
    if "time" not in ds.dims:
        raise InputDataError(f"{path} has no time dimension (valid_time or time)")
    return ds


def _scan_netcdf(path: Path) -> tuple[list[str], np.ndarray]:
    """Variable names (vocabulary) and time stamps of a NetCDF file, from its metadata and time
    coordinate only (fast: the index of a large mirror is built from this)."""
    import netCDF4

    try:
        with netCDF4.Dataset(path) as nc:
            tname = next((t for t in ("valid_time", "time") if t in nc.variables), None)
            names = [canonical_name(v) for v in nc.variables]
            names = [n for n in names if n in SOURCE_VARIABLES]
            if not names:
                raise InputDataError(f"{path} holds none of smcast's ERA5-Land variables "
                                     f"(found: {', '.join(nc.variables)})")
            if tname is None:
                raise InputDataError(f"{path} has no time coordinate (valid_time or time)")
            tvar = nc.variables[tname]
            stamps = netCDF4.num2date(tvar[:], tvar.units, getattr(tvar, "calendar", "standard"),
                                      only_use_cftime_datetimes=False,
                                      only_use_python_datetimes=True)
    except OSError as exc:
        raise InputDataError(f"{path} cannot be read as NetCDF ({exc}); it is corrupt or "
                             "truncated: download it again") from None
    return names, np.array(stamps, dtype="datetime64[ns]")


@dataclass
class FileEntry:
    """What one file holds: its frequency and, per variable, its time stamps (datetime64[ns])."""

    path: Path
    frequency: Frequency
    times: dict[str, np.ndarray]


class FileIndex:
    """Variables and times of a set of files, and the pieces of any day."""

    def __init__(self, files: list[tuple[Path, Frequency]], cache_size: int = 4) -> None:
        self.entries = [self._entry(path, freq) for path, freq in sorted(files)]
        self._check_duplicates()
        self._open: OrderedDict[Path, xr.Dataset] = OrderedDict()
        self._cache_size = cache_size
        self._stamp_cache: dict[str, tuple[str, np.ndarray] | None] = {}

    @staticmethod
    def _entry(path: Path, frequency: Frequency) -> FileEntry:
        if file_format(path) == "netcdf":
            names, times = _scan_netcdf(path)
        else:
            ds = open_era5(path)
            names, times = [str(v) for v in ds.data_vars], ds["time"].values
            ds.close()
        times = np.sort(times.astype("datetime64[ns]"))
        if len(np.unique(times)) != len(times):
            raise InputDataError(f"{path} holds duplicate time stamps; re-download it")
        return FileEntry(path, frequency, {name: times for name in names})

    def _check_duplicates(self) -> None:
        seen: dict[tuple[str, np.datetime64], Path] = {}
        for entry in self.entries:
            for name, times in entry.times.items():
                for t in times:
                    other = seen.setdefault((name, t), entry.path)
                    if other != entry.path:
                        raise InputDataError(
                            f"{name} at {str(t)[:16]} is in both {other} and {entry.path}; keep "
                            "one copy in the input directory")

    def __getstate__(self) -> dict:
        """Picklable for worker processes: the index travels, open files do not."""
        return {**self.__dict__, "_open": OrderedDict()}

    def read(self, day: date) -> dict[str, Piece]:
        """The pieces of every source variable for ``day``."""
        return self.pieces(day, SOURCE_VARIABLES)

    def variables(self) -> set[str]:
        """Every vocabulary variable found in any file."""
        return {n for e in self.entries for n in e.times}

    def _stamps(self, name: str) -> tuple[str, np.ndarray] | None:
        """(frequency, sorted unique stamps) of a variable over all files; cached."""
        if name not in self._stamp_cache:
            holders = [e for e in self.entries if name in e.times]
            if not holders:
                self._stamp_cache[name] = None
            else:
                freq = holders[0].frequency
                stamps = np.concatenate([e.times[name] for e in holders if e.frequency == freq])
                self._stamp_cache[name] = (freq, np.unique(stamps))
        return self._stamp_cache[name]

    def problems(self, day: date, names: tuple[str, ...]) -> list[str]:
        """What is missing for ``day`` (empty when the day can be ingested)."""
        return completeness_problems(names, day, self._stamps,
                                     f"in none of the {len(self.entries)} files")

    def pieces(self, day: date, names: tuple[str, ...]) -> dict[str, Piece]:
        """Per variable, the data around ``day`` gathered from the files that hold it."""
        out: dict[str, Piece] = {}
        for name in names:
            parts, origin, freq = [], [], None
            for entry in self.entries:
                times = entry.times.get(name)
                if times is None or not times.size:
                    continue
                need = needed_times(name, day, entry.frequency)
                if need[-1] < times[0] or need[0] > times[-1]:
                    continue
                positions = np.flatnonzero(np.isin(times, need))
                if positions.size:
                    parts.append(self._load(entry.path, name, positions))
                    origin.append(entry.path.name)
                    freq = entry.frequency
            if parts:
                out[name] = Piece(_concat(parts, origin), freq or "hourly", origin)
        return out

    def _load(self, path: Path, name: str, positions: np.ndarray) -> xr.DataArray:
        """The given time positions, lazily: ``daily_value`` reads them a block of rows at a
        time, so a worker never holds a whole day of a global 0.1° variable (a contiguous run
        is one hyperslab; a file closed by the LRU is reopened by xarray on access)."""
        ds = self._dataset(path)
        lo, hi = int(positions[0]), int(positions[-1]) + 1
        index = slice(lo, hi) if hi - lo == positions.size else positions
        return ds[name].isel(time=index)

    def _dataset(self, path: Path) -> xr.Dataset:
        if path in self._open:
            self._open.move_to_end(path)
            return self._open[path]
        ds = open_era5(path)
        self._open[path] = ds
        while len(self._open) > self._cache_size:
            self._open.popitem(last=False)[1].close()
        return ds

    def close(self) -> None:
        """Close every open file."""
        for ds in self._open.values():
            ds.close()
        self._open.clear()


def _concat(parts: list[xr.DataArray], origin: list[str]) -> xr.DataArray:
    if len(parts) == 1:
        return parts[0]
    try:
        return xr.concat(parts, dim="time", join="exact").sortby("time")
    except ValueError:
        raise InputDataError(f"files {', '.join(origin)} are on different grids; a mirror must "
                             "hold one grid") from None


def day_problems_message(problems: dict[date, list[str]], where: str) -> str:
    """One readable message for the days that cannot be ingested."""
    lines = [f"{len(problems)} day(s) cannot be ingested from {where}:"]
    for day, items in list(problems.items())[:10]:
        lines.append(f"  {day}: " + "; ".join(items))
    if len(problems) > 10:
        lines.append(f"  … and {len(problems) - 10} more")
    return "\n".join(lines)

