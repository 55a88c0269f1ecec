"""Regular latitude/longitude grids and coordinate normalisation.

The store's grid has cells bounded at multiples of the resolution, centres at the cell middles
(0.5° cells are centred on .25/.75), latitude ascending (south → north) and longitude ascending in
−180…180. Writers flip to north-up where a format wants it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import xarray as xr

from smcast.config import GridConfig

LAT_NAMES = ("latitude", "lat")
LON_NAMES = ("longitude", "lon")
TIME_NAMES = ("valid_time", "time")


@dataclass(frozen=True)
class Grid:
    """A regular grid by cell bounds.

    Attributes:
        resolution: cell size in degrees.
        south, north, west, east: outer bounds in degrees (west/east in −180…180).
    """

    resolution: float
    south: float = -90.0
    north: float = 90.0
    west: float = -180.0
    east: float = 180.0

    @classmethod
    def from_config(cls, cfg: GridConfig) -> "Grid":
        """The grid of a config, with ``area`` rounded outwards to cell bounds."""
        res = cfg.resolution
        if cfg.area is None:
            return cls(res)
        north, west, south, east = cfg.area
        return cls(res, south=_floor(south, res), north=_ceil(north, res),
                   west=_floor(west, res), east=_ceil(east, res))

    @property
    def lat(self) -> np.ndarray:
        """Cell-centre latitudes, ascending, shape (nlat,)."""
        return _centres(self.south, self.north, self.resolution)

    @property
    def lon(self) -> np.ndarray:
        """Cell-centre longitudes, ascending, shape (nlon,)."""
        return _centres(self.west, self.east, self.resolution)

    @property
    def shape(self) -> tuple[int, int]:
        """(nlat, nlon)."""
        return len(self.lat), len(self.lon)

    def lat_bounds(self) -> np.ndarray:
        """Cell bounds in latitude, shape (nlat, 2)."""
        return _bounds(self.lat, self.resolution)

    def lon_bounds(self) -> np.ndarray:
        """Cell bounds in longitude, shape (nlon, 2)."""
        return _bounds(self.lon, self.resolution)

    def coords(self) -> dict[str, xr.DataArray]:
        """CF-annotated ``lat``/``lon`` coordinates."""
        return {
            "lat": xr.DataArray(self.lat, dims="lat", attrs={
                "standard_name": "latitude", "units": "degrees_north", "axis": "Y"}),
            "lon": xr.DataArray(self.lon, dims="lon", attrs={
                "standard_name": "longitude", "units": "degrees_east", "axis": "X"}),
        }

    def attrs(self) -> dict[str, float]:
        """The grid as store attributes (round-trips through ``from_attrs``)."""
        return {"grid_resolution": self.resolution, "grid_south": self.south,
                "grid_north": self.north, "grid_west": self.west, "grid_east": self.east}

    @classmethod
    def from_attrs(cls, attrs: dict) -> "Grid":
        """Inverse of ``attrs``."""
        return cls(float(attrs["grid_resolution"]), float(attrs["grid_south"]),
                   float(attrs["grid_north"]), float(attrs["grid_west"]),
                   float(attrs["grid_east"]))

    def describe(self) -> str:
        """E.g. ``0.5° grid, 360 x 720 cells, lat -90…90, lon -180…180``."""
        nlat, nlon = self.shape
        return (f"{self.resolution:g}° grid, {nlat} x {nlon} cells, lat {self.south:g}…"
                f"{self.north:g}, lon {self.west:g}…{self.east:g}")


def _floor(x: float, res: float) -> float:
    return float(np.floor(x / res + 1e-9) * res)


def _ceil(x: float, res: float) -> float:
    return float(np.ceil(x / res - 1e-9) * res)


def _centres(lo: float, hi: float, res: float) -> np.ndarray:
    n = int(round((hi - lo) / res))
    return np.round(lo + res * (np.arange(n) + 0.5), 10)


def _bounds(centres: np.ndarray, res: float) -> np.ndarray:
    return np.stack([centres - res / 2, centres + res / 2], axis=-1)


def mask_hash(mask: np.ndarray) -> str:
    """A short, stable sha256 of a boolean land mask (shape and values)."""
    h = hashlib.sha256(str(mask.shape).encode())
    h.update(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    return h.hexdigest()[:16]


def normalise_coords(ds: xr.Dataset) -> xr.Dataset:
    """Bring a source dataset onto smcast's conventions.

    Renames ``valid_time``→``time``, ``latitude``→``lat``, ``longitude``→``lon``; moves
    longitudes from 0…360 to −180…180; sorts latitude and longitude ascending; drops the
    ``number`` (ensemble member) and collapses ``expver`` (ERA5T vs ERA5 in the same file) by
    taking, per point, the first version that has data.
    """
    ds = _rename_first(ds, TIME_NAMES, "time")
    ds = _rename_first(ds, LAT_NAMES, "lat")
    ds = _rename_first(ds, LON_NAMES, "lon")
    if "expver" in ds.dims:
        ds = _collapse(ds, "expver")
    if "number" in ds.dims:
        ds = ds.isel(number=0)
    ds = ds.drop_vars([c for c in ("expver", "number") if c in ds.coords])
    lon = ds["lon"].values
    if lon.size and lon.max() > 180.0:
        ds = ds.assign_coords(lon=((lon + 180.0) % 360.0) - 180.0)
    for dim in ("lon", "lat", "time"):
        if dim in ds.dims:
            ds = ascending(ds, dim)
    return ds


def ascending(ds: xr.Dataset | xr.DataArray, dim: str) -> xr.Dataset | xr.DataArray:
    """Sort along ``dim``; a reversed axis is flipped by a slice (cheap, lazy, a view), not an
    index."""
    values = ds[dim].values
    if values.size < 2 or np.all(values[1:] > values[:-1]):
        return ds
    if np.all(values[1:] < values[:-1]):
        return ds.isel({dim: slice(None, None, -1)})
    return ds.sortby(dim)


def _rename_first(ds: xr.Dataset, names: tuple[str, ...], target: str) -> xr.Dataset:
    for name in names:
        if name in ds.variables or name in ds.dims:
            if name != target:
                ds = ds.rename({name: target})
            return ds
    return ds


def _collapse(ds: xr.Dataset, dim: str) -> xr.Dataset:
    out = ds.isel({dim: 0})
    for i in range(1, ds.sizes[dim]):
        out = out.combine_first(ds.isel({dim: i}))
    return out
