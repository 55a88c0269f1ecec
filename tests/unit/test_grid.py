"""Grid definition and coordinate normalisation of source files."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from smcast.config import GridConfig
from smcast.grid import Grid, normalise_coords


def test_half_degree_cells_are_centred_on_quarter_degrees():
    grid = Grid(0.5)
    assert grid.shape == (360, 720)
    assert grid.lat[0] == -89.75 and grid.lat[-1] == 89.75
    assert grid.lon[0] == -179.75 and grid.lon[-1] == 179.75
    np.testing.assert_allclose(grid.lat_bounds()[0], [-90.0, -89.5])


def test_area_is_rounded_outwards_to_cell_bounds():
    grid = Grid.from_config(GridConfig(area=(41.9, 10.1, 40.2, 11.6)))
    assert (grid.south, grid.north, grid.west, grid.east) == (40.0, 42.0, 10.0, 12.0)
    assert grid.lat.tolist() == [40.25, 40.75, 41.25, 41.75]


def test_grid_attrs_round_trip():
    grid = Grid(0.25, 10.0, 20.0, -5.0, 5.0)
    assert Grid.from_attrs(grid.attrs()) == grid


def test_bad_resolution_rejected():
    with pytest.raises(ValueError, match="not a multiple"):
        GridConfig(resolution=0.7)


def _cds_like(lon, lat, extra_dims=None):
    times = pd.date_range("2024-01-01", periods=2, freq="h")
    values = np.arange(2 * len(lat) * len(lon), dtype=float).reshape(2, len(lat), len(lon))
    return xr.Dataset({"t2m": (("valid_time", "latitude", "longitude"), values)},
                      coords={"valid_time": times, "latitude": lat, "longitude": lon})


def test_normalise_new_cds_layout():
    lon = np.array([0.0, 90.0, 180.0, 270.0])
    lat = np.array([10.0, 0.0, -10.0])
    ds = _cds_like(lon, lat).assign_coords(number=0, expver=("valid_time", ["0001", "0005"]))
    out = normalise_coords(ds)
    assert list(out.dims) == ["time", "lat", "lon"] or set(out.dims) == {"time", "lat", "lon"}
    np.testing.assert_array_equal(out["lon"].values, [-180.0, -90.0, 0.0, 90.0])
    np.testing.assert_array_equal(out["lat"].values, [-10.0, 0.0, 10.0])
    assert "number" not in out.coords and "expver" not in out.coords
    # the value at (lat=10, lon=270) moves to (lat=10, lon=-90)
    src = ds["t2m"].sel(latitude=10.0, longitude=270.0).values
    np.testing.assert_array_equal(out["t2m"].sel(lat=10.0, lon=-90.0).values, src)


def test_normalise_collapses_expver_dimension():
    lat, lon = np.array([0.0]), np.array([0.0])
    times = pd.date_range("2024-01-01", periods=2, freq="h")
    era5 = [[[1.0]], [[np.nan]]]
    era5t = [[[np.nan]], [[2.0]]]
    ds = xr.Dataset({"t2m": (("time", "expver", "latitude", "longitude"),
                             np.stack([era5, era5t], axis=1))},
                    coords={"time": times, "expver": [1, 5], "latitude": lat, "longitude": lon})
    out = normalise_coords(ds)
    assert "expver" not in out.dims
    np.testing.assert_array_equal(out["t2m"].values.ravel(), [1.0, 2.0])
