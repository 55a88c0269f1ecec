"""The daily store: one Zarr cube of ERA5-Land short names on the store's grid.

Layout (``xarray.open_zarr(path)`` opens it):

* ``<name>(time, lat, lon)`` float32 for every vocabulary variable, in store units, NaN over sea;
  chunks of one day x a band of whole latitude rows of at most ``CHUNK_BYTES`` (4 MiB): one
  chunk per day up to the global 0.25° grid, 7 row bands at 0.1° (``day_chunks``). Appending
  and replacing a day touch only that day's chunks; a store keeps the chunks it was created
  with (appends follow its encoding), so stores made before row bands still work;
* ``complete(time)`` int8: 1 when every variable of the day was written and checked. It is set
  **last**, after the day's data, and cleared first when a day is replaced, so a day marked
  complete is always whole, whatever interrupted a write;
* ``land_mask(lat, lon)`` int8 and ``land_fraction(lat, lon)`` float32, plus static fields
  (lat, lon), written once when the store is created;
* global attributes: the grid, the land-mask hash, the source, the format version.

The time axis is contiguous and daily: a day ingested after a gap extends the axis with
incomplete (NaN) days. Only one process writes at a time (an exclusive lock file beside the store).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Iterator

import numcodecs
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from smcast.errors import StoreError
from smcast.grid import Grid, mask_hash
from smcast.locks import exclusive_lock
from smcast.variables import VARIABLES

FORMAT_VERSION = 1
TIME_VARIABLES: tuple[str, ...] = tuple(VARIABLES)


class DailyStore:
    """A handle on an existing daily store (create one with ``DailyStore.create``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not (self.path / ".zgroup").exists() and not (self.path / "zarr.json").exists():
            raise StoreError(f"no smcast store at {self.path}; create it with `smcast ingest`")
        attrs = zarr.open_group(str(self.path), mode="r").attrs.asdict()
        if attrs.get("smcast_store_version") != FORMAT_VERSION:
            raise StoreError(f"{self.path} is not an smcast store (format version "
                             f"{attrs.get('smcast_store_version')!r}, expected {FORMAT_VERSION})")
        self.attrs = attrs
        self.grid = Grid.from_attrs(attrs)

    # -- creation -----------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, grid: Grid, land_fraction: np.ndarray,
               land_mask: np.ndarray, statics: xr.Dataset | None, first_day: date,
               source: str, compression_level: int = 1) -> "DailyStore":
        """Create a store whose time axis starts at ``first_day`` (one incomplete day).

        ``land_fraction`` (lat, lon) in 0…1, ``land_mask`` (lat, lon) bool, ``statics``: 2-D
        fields on the grid. Written to a temporary folder and renamed, so a store either exists
        whole or not at all.
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        ds = _empty_days(grid, [first_day])
        ds["land_fraction"] = (("lat", "lon"), land_fraction.astype(np.float32),
                               {"long_name": "fraction of the cell with land data", "units": "1"})
        ds["land_mask"] = (("lat", "lon"), land_mask.astype(np.int8),
                           {"long_name": "smcast land cell", "flag_values": [0, 1],
                            "flag_meanings": "sea land"})
        if statics is not None:
            ds = ds.merge(statics.assign_coords(grid.coords()), join="override")
        ds.attrs = {"smcast_store_version": FORMAT_VERSION, **grid.attrs(),
                    "land_mask_hash": mask_hash(land_mask), "land_cells": int(land_mask.sum()),
                    "source": source, "title": "smcast daily ERA5-Land store"}
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True,
                   encoding=_encoding(ds, compression_level))
        os.replace(tmp, path)
        return cls(path)

    # -- reading ------------------------------------------------------------------------------
    def open(self) -> xr.Dataset:
        """The store as a lazy xarray Dataset."""
        return xr.open_zarr(self.path, consolidated=True)

    @property
    def land_mask(self) -> np.ndarray:
        """Boolean land mask, shape (nlat, nlon)."""
        return zarr.open_group(str(self.path), mode="r")["land_mask"][:].astype(bool)

    @property
    def row_chunk(self) -> int:
        """Latitude rows per chunk of the daily variables (``day_chunks``; the whole grid's
        rows in a store made before row bands)."""
        group = zarr.open_group(str(self.path), mode="r")
        return int(group[TIME_VARIABLES[0]].chunks[1])

    @property
    def land_cells(self) -> int:
        """Number of land cells."""
        return int(self.attrs["land_cells"])

    def days(self) -> list[date]:
        """Every day on the time axis, complete or not, ascending."""
        group = zarr.open_group(str(self.path), mode="r", use_consolidated=False)
        return _decode_days(group["time"])

    def complete_days(self) -> list[date]:
        """Days whose every variable is written and checked, ascending."""
        group = zarr.open_group(str(self.path), mode="r", use_consolidated=False)
        flags = group["complete"][:].astype(bool)
        return [d for d, ok in zip(_decode_days(group["time"]), flags) if ok]

    def latest_complete_day(self) -> date | None:
        """The newest complete day, or None for a store with none."""
        done = self.complete_days()
        return done[-1] if done else None

    def gaps(self, start: date | None = None, end: date | None = None) -> list[tuple[date, date]]:
        """Runs of incomplete days [first, last] between start and end (default: the axis)."""
        days = self.days()
        if not days:
            return []
        start, end = start or days[0], end or days[-1]
        done = set(self.complete_days())
        runs: list[tuple[date, date]] = []
        for day in date_range(start, end):
            if day in done:
                continue
            if runs and runs[-1][1] == day - timedelta(days=1):
                runs[-1] = (runs[-1][0], day)
            else:
                runs.append((day, day))
        return runs

    # -- writing ------------------------------------------------------------------------------
    def write_days(self, days: list[date], fields: list[dict[str, np.ndarray]]) -> None:
        """Write whole days (each a dict name → (nlat, nlon) array in store units).

        Days already on the axis are replaced; later days extend it (gaps become incomplete
        days); days before the axis start are an error. Call inside ``store_lock``.
        """
        if not days:
            return
        self._repair()
        axis = self.days()
        if days[0] < axis[0]:
            raise StoreError(f"store {self.path} starts at {axis[0]}; it cannot take {days[0]}. "
                             "Ingest into a new store (--store PATH) that starts earlier.")
        batch = _days_dataset(self.grid, days, fields)
        batch.attrs = self.attrs  # xarray rewrites the group's attributes on append
        after = list(date_range(axis[-1] + timedelta(days=1), days[-1]))
        if after == days:  # whole batch new and contiguous: one append, flags still 0
            batch.assign(complete=("time", np.zeros(len(days), np.int8))).to_zarr(
                self.path, append_dim="time", consolidated=True)
            self._set_complete(days, 1)
            return
        if after:
            extra = _empty_days(self.grid, after)
            extra.attrs = self.attrs
            extra.to_zarr(self.path, append_dim="time", consolidated=True)
        self._set_complete(days, 0)
        batch.to_zarr(self.path, region="auto", consolidated=True)
        self._set_complete(days, 1)

    def _set_complete(self, days: list[date], value: int) -> None:
        index = {d: i for i, d in enumerate(self.days())}
        arr = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)["complete"]
        positions = [index[d] for d in days]
        lo, hi = min(positions), max(positions) + 1
        current = arr[lo:hi]
        current[[p - lo for p in positions]] = value
        arr[lo:hi] = current

    def _repair(self) -> None:
        """Bring every array back to the time axis's length after an interrupted append (the
        days concerned stay incomplete, so nothing half-written is ever taken as data).

        An append killed while writing the time coordinate leaves it resized but with entries
        never written (read as the fill value, 1970-01-01): the axis is cut before the first
        entry that does not continue the daily sequence."""
        group = zarr.open_group(str(self.path), mode="r+", use_consolidated=False)
        values = group["time"][:]
        broken = np.flatnonzero(values != values[0] + np.arange(len(values)))
        n = int(broken[0]) if broken.size else len(values)
        for name in ("time", *TIME_VARIABLES, "complete"):
            arr = group[name]
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        zarr.consolidate_metadata(str(self.path))


@contextmanager
def store_lock(path: str | Path) -> Iterator[None]:
    """Exclusive write lock on the store at ``path`` (a ``.lock`` file beside it); raises
    StoreError at once when another process holds it."""
    path = Path(path)
    lock_path = path.with_name(path.name + ".lock")

    def busy(_: object) -> StoreError:
        return StoreError(f"store {path} is being written by another smcast process (lock "
                          f"{lock_path}); wait for it to finish")

    with exclusive_lock(lock_path, f"the store's folder {path.parent}",
                        "data_dir or store.path", busy):
        yield


def date_range(start: date, end: date) -> Iterator[date]:
    for i in range((end - start).days + 1):
        yield start + timedelta(days=i)


def _decode_days(time_array) -> list[date]:
    """Dates of a zarr time array stored as integer days since 1970-01-01."""
    units = time_array.attrs.get("units", "")
    if units != "days since 1970-01-01":
        raise StoreError(f"unexpected time units {units!r} in the store")
    epoch = date(1970, 1, 1)
    return [epoch + timedelta(days=int(v)) for v in time_array[:]]


def _time_coord(days: list[date]) -> xr.DataArray:
    return xr.DataArray(pd.DatetimeIndex([pd.Timestamp(d) for d in days]), dims="time",
                        attrs={"standard_name": "time", "long_name": "UTC day (start)"})


def _var_attrs(name: str) -> dict[str, str]:
    var = VARIABLES[name]
    return {"units": var.units, "long_name": var.long_name, "standard_name": var.standard_name,
            "smcast_kind": var.kind}


def _empty_days(grid: Grid, days: list[date]) -> xr.Dataset:
    shape = (len(days), *grid.shape)
    data = {name: (("time", "lat", "lon"), np.full(shape, np.nan, np.float32), _var_attrs(name))
            for name in TIME_VARIABLES}
    data["complete"] = (("time",), np.zeros(len(days), np.int8),
                        {"long_name": "day fully ingested", "flag_values": [0, 1],
                         "flag_meanings": "incomplete complete"})
    return xr.Dataset(data, coords={"time": _time_coord(days), **grid.coords()})


def _days_dataset(grid: Grid, days: list[date], fields: list[dict[str, np.ndarray]]
                  ) -> xr.Dataset:
    data = {name: (("time", "lat", "lon"),
                   np.stack([f[name] for f in fields]).astype(np.float32), _var_attrs(name))
            for name in TIME_VARIABLES}
    return xr.Dataset(data, coords={"time": _time_coord(days)})


#: largest uncompressed chunk of a daily variable (bytes of float32)
CHUNK_BYTES = 4 * 2**20


def day_chunks(nlat: int, nlon: int, chunk_bytes: int = CHUNK_BYTES) -> tuple[int, int, int]:
    """Chunk shape (1, rows, nlon) of a daily (time, lat, lon) float32 variable: one day, a band
    of whole rows, each chunk at most ``chunk_bytes`` (a single row may exceed it), the rows
    shared evenly between the bands.

    Global 0.5° (360 x 720, 1.0 MB) and 0.25° (720 x 1440, 4.0 MB) keep one chunk per day;
    global 0.1° (1800 x 3600, 25.9 MB) gets 7 bands of 258 rows (3.7 MB each), so reading a band
    of land cells decompresses only the chunks holding its rows.
    """
    per_row = max(1, nlon * 4)
    bands = max(1, -(-nlat * per_row // chunk_bytes))
    return 1, max(1, -(-nlat // bands)), nlon


def _encoding(ds: xr.Dataset, level: int) -> dict[str, dict]:
    comp = [numcodecs.Blosc(cname="zstd", clevel=level, shuffle=numcodecs.Blosc.SHUFFLE)]
    enc: dict[str, dict] = {"time": {"units": "days since 1970-01-01", "dtype": "int32",
                                     "calendar": "proleptic_gregorian"}}
    for name, var in ds.data_vars.items():
        if var.dims == ("time", "lat", "lon"):
            chunks = day_chunks(*var.shape[1:], CHUNK_BYTES)
        else:
            chunks = (1, *var.shape[1:]) if var.dims[:1] == ("time",) else var.shape
        enc[name] = {"compressors": comp, "chunks": chunks}
    return enc
