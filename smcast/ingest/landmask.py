"""Which cells are land.

Rule (documented in the README): a cell is land when at least ``grid.min_land_fraction`` of its
area holds land — for ERA5-Land sources the area covered by valid (non-NaN) 0.1° points, for the
demo the share of the 1 km GLOBE land mask (``global-land-mask`` package) inside the cell — and
its centre lies north of ``grid.exclude_south_of`` (Antarctica is dropped by default, as in the
paper).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from smcast.config import GridConfig
from smcast.grid import Grid

log = logging.getLogger(__name__)

_GLOBE_POINTS_PER_DEGREE = 120  # the GLOBE mask is 21600 x 43200 points, 90°N → 90°S, 180°W → E


def land_mask(fraction: np.ndarray, grid: Grid, cfg: GridConfig) -> np.ndarray:
    """Boolean (nlat, nlon) land mask from a land fraction (nlat, nlon) in 0…1."""
    mask = np.nan_to_num(fraction, nan=0.0) >= max(cfg.min_land_fraction, 1e-9)
    if cfg.exclude_south_of is not None:
        mask &= (grid.lat >= cfg.exclude_south_of)[:, None]
    return mask


def globe_land_fraction(grid: Grid, cache_dir: Path | None = None) -> np.ndarray:
    """Land fraction (nlat, nlon) of each grid cell from the 1 km GLOBE mask.

    The global field is computed once per resolution (about 4 s and 1 GB while it runs) and
    cached as a small ``.npz`` in ``cache_dir``.
    """
    full = _cached_global_fraction(grid.resolution, cache_dir)
    res = grid.resolution
    lat0 = int(round((grid.south + 90.0) / res))
    lon0 = int(round((grid.west + 180.0) / res))
    nlat, nlon = grid.shape
    return full[lat0:lat0 + nlat, lon0:lon0 + nlon]


def _cached_global_fraction(resolution: float, cache_dir: Path | None) -> np.ndarray:
    if cache_dir is None:
        return _global_fraction(resolution)
    path = Path(cache_dir) / f"globe-land-fraction-{resolution:g}.npz"
    if path.exists():
        return np.load(path)["fraction"]
    fraction = _global_fraction(resolution)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{np.random.randint(1 << 30)}.npz")
    np.savez_compressed(tmp, fraction=fraction)
    tmp.replace(path)
    return fraction


@lru_cache(maxsize=4)
def _global_fraction(resolution: float) -> np.ndarray:
    """Global land fraction, latitude ascending (−90 → 90), longitude −180 → 180."""
    k = resolution * _GLOBE_POINTS_PER_DEGREE
    if abs(k - round(k)) > 1e-6:
        raise ValueError(f"resolution {resolution}° is not a multiple of 1/120°")
    k = int(round(k))
    log.info("computing the %g° land fraction from the GLOBE 1 km mask (once)", resolution)
    spec = find_spec("global_land_mask")
    assert spec is not None and spec.submodule_search_locations
    data = np.load(Path(spec.submodule_search_locations[0]) / "globe_combined_mask_compressed.npz")
    ocean = data["mask"]  # True over the ocean
    nlat, nlon = ocean.shape[0] // k, ocean.shape[1] // k
    sea = ocean.reshape(nlat, k, nlon, k).sum(axis=(1, 3), dtype=np.int32)
    land = 1.0 - sea / float(k * k)
    return land[::-1].astype(np.float32)
