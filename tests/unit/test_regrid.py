"""Regridding by cell bounds onto 0.5° cells, against cell means known in closed form."""

import numpy as np
import pytest

from smcast.errors import InputDataError
from smcast.grid import Grid
from smcast.ingest.regrid import Regridder


def fine_axis(lo, hi, step=0.1):
    return np.round(np.arange(lo, hi + step / 2, step), 6)


def reference_mean(field, lat, lon, lat_b, lon_b):
    """Independent cell mean: points inside the cell weigh 1, points on its edge 1/2 (their
    0.1° cell is cut in half), times cos(latitude); NaN points are skipped."""
    def w1(x, lo, hi, step=0.1):
        inside = np.clip(np.minimum(x + step / 2, hi) - np.maximum(x - step / 2, lo), 0, None)
        return inside / step
    w = w1(lat, *lat_b)[:, None] * np.cos(np.deg2rad(lat))[:, None] * w1(lon, *lon_b)[None, :]
    ok = np.isfinite(field)
    return np.sum(np.where(ok, field, 0) * w) / np.sum(w * ok)


def test_linear_field_in_longitude_gives_centre_value():
    lat, lon = fine_axis(39.8, 42.2), fine_axis(9.8, 12.2)
    field = np.broadcast_to(3.0 + 2.0 * lon[None, :], (len(lat), len(lon)))
    grid = Grid(0.5, 40.0, 42.0, 10.0, 12.0)
    mean, frac = Regridder.build(lat, lon, grid)(field)
    np.testing.assert_allclose(mean, np.broadcast_to(3.0 + 2.0 * grid.lon, grid.shape),
                               rtol=1e-12)
    np.testing.assert_allclose(frac, 1.0)


def test_random_field_matches_independent_cell_means():
    rng = np.random.default_rng(1)
    lat, lon = fine_axis(39.8, 42.2), fine_axis(9.8, 12.2)
    field = rng.normal(size=(len(lat), len(lon)))
    field[:6, :6] = np.nan  # sea corner
    grid = Grid(0.5, 40.0, 42.0, 10.0, 12.0)
    mean, frac = Regridder.build(lat, lon, grid)(field)
    for i, lb in enumerate(grid.lat_bounds()):
        for j, lob in enumerate(grid.lon_bounds()):
            assert mean[i, j] == pytest.approx(reference_mean(field, lat, lon, lb, lob), rel=1e-9)
    # the corner cell [40, 40.5] x [10, 10.5]: sea covers 3.5 of 5 point-widths in each
    # direction (edge points count half), so 0.7 x 0.7 = 0.49 of its area (cos(lat) aside)
    assert frac[0, 0] == pytest.approx(0.51, abs=0.002)
    assert frac[-1, -1] == pytest.approx(1.0)


def test_all_sea_cell_is_nan_with_zero_fraction():
    lat, lon = fine_axis(-0.2, 1.2), fine_axis(-0.2, 1.2)
    field = np.full((len(lat), len(lon)), np.nan)
    mean, frac = Regridder.build(lat, lon, Grid(0.5, 0.0, 1.0, 0.0, 1.0))(field)
    assert np.isnan(mean).all() and (frac == 0).all()


def test_global_grid_wraps_across_the_date_line():
    # a global 0.1° grid normalised to -180…179.9: the cell [179.5, 180] takes half of the
    # point at -180 (its 0.1° cell straddles the date line)
    lat = fine_axis(-1.0, 1.0)
    lon = np.round(np.arange(-180.0, 180.0, 0.1), 6)
    field = np.zeros((len(lat), len(lon)))
    field[:, 0] = 10.0  # only the -180 column
    grid = Grid(0.5, -0.5, 0.5, -180.0, 180.0)
    mean, _ = Regridder.build(lat, lon, grid)(field)
    assert mean[0, -1] == pytest.approx(10.0 * 0.5 / 5.0)   # [179.5, 180]
    assert mean[0, 0] == pytest.approx(10.0 * 0.5 / 5.0)    # [-180, -179.5]
    assert mean[0, 1] == pytest.approx(0.0)


def test_same_resolution_identity_and_shifted_grid_rejected():
    grid = Grid(0.5, 40.0, 42.0, 10.0, 12.0)
    field = np.arange(np.prod(grid.shape), dtype=float).reshape(grid.shape)
    mean, _ = Regridder.build(grid.lat, grid.lon, grid)(field)
    np.testing.assert_array_equal(mean, field)
    with pytest.raises(InputDataError, match="does not match the store's 0.5° cells"):
        Regridder.build(grid.lat + 0.25, grid.lon, grid)


def test_source_smaller_than_grid_is_an_error():
    lat, lon = fine_axis(40.0, 41.0), fine_axis(10.0, 12.0)
    with pytest.raises(InputDataError, match="source data covers latitude 40…41"):
        Regridder.build(lat, lon, Grid(0.5, 40.0, 42.0, 10.0, 12.0))
