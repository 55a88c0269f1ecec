"""Land-cell arrays for training and evaluation, gathered from the daily store.

Everything the trainer needs for a span of days is held in memory as float32 arrays over land
cells (global 0.5°, two years: ~62 000 cells x 730 days x 8 inputs ≈ 1.4 GB), with the
physics direction D (paper Eq. 12–13) precomputed once: it depends on the forcing and the
observed soil moisture only, never on the prediction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import zarr

from smcast.errors import InputDataError
from smcast.physics import deep_storage, direction, water_input
from smcast.store import DailyStore

#: what the observed soil moisture and the Eq. 11 direction are computed from
TRUTH_VARS = ("swvl1", "swvl2", "swvl3", "tp", "e", "ro", "sd")


@dataclass
class CellData:
    """Arrays over land cells (C order of the land mask) and consecutive days.

    Attributes:
        days: the days, (T,).
        cells: indices (n,) of the cells into the land-cell numbering.
        lat: cell-centre latitudes (n,) in degrees.
        dynamic: (n, T, n_dyn) model inputs in store units.
        statics: (n, n_static) static fields.
        target: (n, T) observed swvl1 (m3 m-3).
        direction: (n, T) int8 water-input direction D after the Eq. 13 filter, from the
            training variant's water input (Eq. 10, or Eq. 11 for PHYs).
        direction_eval: (n, T) int8 D from the full water balance with the deep layers
            (Eq. 11), the one definition every model is scored with (consistency rate).
    """

    days: list[date]
    cells: np.ndarray
    lat: np.ndarray
    dynamic: np.ndarray
    statics: np.ndarray
    target: np.ndarray
    direction: np.ndarray
    direction_eval: np.ndarray

    def span(self, first: date, last: date) -> "CellData":
        """The same cells over the days first…last (a view, no copy)."""
        i, j = self.days.index(first), self.days.index(last) + 1
        return CellData(self.days[i:j], self.cells, self.lat, self.dynamic[:, i:j],
                        self.statics, self.target[:, i:j], self.direction[:, i:j],
                        self.direction_eval[:, i:j])

    def subset(self, cells: np.ndarray) -> "CellData":
        """A subset of the cells, by position (n_sub,)."""
        return CellData(self.days, self.cells[cells], self.lat[cells], self.dynamic[cells],
                        self.statics[cells], self.target[cells], self.direction[cells],
                        self.direction_eval[cells])


def load_cells(store: DailyStore, first: date, last: date, dynamic: list[str],
               statics: list[str], deep: bool, snow_sign: str = "paper",
               cells: np.ndarray | None = None) -> CellData:
    """Read days first…last of land cells; all days must be complete in the store.

    ``cells``: ascending land-cell numbers (n,) to read, default every land cell. Memory is
    that of the result (n x T x (n_dyn + 8) x 4 bytes) plus one read block of at most
    ``READ_BLOCK_BYTES``, whatever the grid: a 0.1° store is read a band of rows at a time.
    """
    group, cube, cells, flat = _reader(store, first, last, (*dynamic, *statics, *TRUTH_VARS),
                                       cells)
    dyn = np.stack([cube(v) for v in dynamic], axis=-1)
    stat = _statics(group, statics, flat)
    target, d_eval = _truth(cube, snow_sign)
    d = d_eval if deep else np.asarray(direction(water_input(
        cube("tp"), cube("e"), cube("ro"), cube("sd"), snow_sign=snow_sign), target)).astype(np.int8)
    lat = store.grid.lat[flat // store.grid.shape[1]]
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return CellData(days, cells, lat.astype(np.float32), dyn, stat, target, d, d_eval)


def load_truth(store: DailyStore, first: date, last: date, snow_sign: str = "paper",
               cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Observed swvl1 (n, T) in m3 m-3 and the Eq. 11 direction D (n, T) int8 of land cells
    (default: all) for days first…last (what verification needs; D is 0 on the first two days)."""
    _, cube, _, _ = _reader(store, first, last, TRUTH_VARS, cells)
    return _truth(cube, snow_sign)


def load_inputs_target(store: DailyStore, first: date, last: date, dynamic: list[str],
                       cells: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic inputs (n, T, n_dyn) in store units and observed swvl1 (n, T) in m3 m-3 of land
    cells ``cells`` (ascending land-cell numbers; default all) for days first…last: what the
    min–max scalers are fitted on, without statics and directions (n x T x (n_dyn + 1) x 4
    bytes, plus one read block)."""
    _, cube, _, _ = _reader(store, first, last, (*dynamic, "swvl1"), cells)
    return np.stack([cube(v) for v in dynamic], axis=-1), cube("swvl1")


def load_statics(store: DailyStore, statics: list[str],
                 cells: np.ndarray | None = None) -> np.ndarray:
    """Static fields (n, n_static) float32 in store units of land cells ``cells`` (default all),
    the same values as ``load_cells(...).statics``."""
    group = zarr.open_group(str(store.path), mode="r")
    _require_variables(store, group, statics)
    return _statics(group, statics, _land_cells(store, cells)[1])


def _statics(group: zarr.Group, statics: list[str], flat: np.ndarray) -> np.ndarray:
    """(n, n_static) float32 of the grid cells ``flat`` (flat C-order indices)."""
    if not statics:
        return np.zeros((len(flat), 0), np.float32)
    return np.stack([group[v][:].ravel()[flat].astype(np.float32) for v in statics], axis=-1)


def _land_cells(store: DailyStore, cells: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """``cells`` checked (ascending land-cell numbers; None: all) and their flat grid indices."""
    land = store.land_mask.ravel().nonzero()[0]
    cells = np.arange(len(land)) if cells is None else np.asarray(cells, np.int64)
    if cells.size and (np.any(np.diff(cells) <= 0) or cells[0] < 0 or cells[-1] >= len(land)):
        raise ValueError(f"cells must be ascending land-cell numbers in 0…{len(land) - 1}")
    return cells, land[cells]


def _require_variables(store: DailyStore, group: zarr.Group, names) -> None:
    missing = [v for v in dict.fromkeys(names) if v not in group.array_keys()]
    if missing:
        raise InputDataError(f"the store {store.path} lacks {', '.join(missing)}; models need "
                             "them (statics come from the demo source or a static file)")


#: upper bound of one read from the store (bytes of float32 values), whatever the grid
READ_BLOCK_BYTES = 256 * 2**20


def _reader(store: DailyStore, first: date, last: date, names: tuple[str, ...],
            cells: np.ndarray | None):
    """The store's Zarr group, a reader of (n, T) float32 land-cell cubes of days first…last,
    and the cell numbers read with their flat grid indices, after checking that the days are complete and the variables
    present. Reads cover only the rows holding the cells, ``READ_BLOCK_BYTES`` at a time."""
    _require_complete(store, first, last)
    group = zarr.open_group(str(store.path), mode="r")
    axis = store.days()
    i0, i1 = axis.index(first), axis.index(last) + 1
    _require_variables(store, group, names)
    cells, flat = _land_cells(store, cells)
    nlon = store.grid.shape[1]
    r0, r1 = (int(flat[0] // nlon), int(flat[-1] // nlon) + 1) if cells.size else (0, 0)
    local = flat - r0 * nlon
    days_per_read = max(1, READ_BLOCK_BYTES // max(1, (r1 - r0) * nlon * 4))

    def cube(name: str) -> np.ndarray:  # (n, T), read straight from the Zarr chunks
        out = np.empty((len(cells), i1 - i0), np.float32)
        for t in range(i0, i1, days_per_read):
            block = group[name][t:min(t + days_per_read, i1), r0:r1]
            out[:, t - i0:t - i0 + block.shape[0]] = block.reshape(block.shape[0], -1)[:, local].T
        return out

    return group, cube, cells, flat


def _truth(cube, snow_sign: str) -> tuple[np.ndarray, np.ndarray]:
    target = cube("swvl1")
    forcing = (cube("tp"), cube("e"), cube("ro"), cube("sd"))
    deep_store = deep_storage(cube("swvl2"), cube("swvl3"))
    d_eval = np.asarray(direction(water_input(*forcing, deep=deep_store, snow_sign=snow_sign),
                                  target)).astype(np.int8)
    return target, d_eval


def _require_complete(store: DailyStore, first: date, last: date) -> None:
    done = set(store.complete_days())
    lacking = [first + timedelta(days=i) for i in range((last - first).days + 1)
               if first + timedelta(days=i) not in done]
    if lacking:
        raise InputDataError(
            f"the store {store.path} lacks {len(lacking)} day(s) between {first} and {last} "
            f"(first {lacking[0]}, last {lacking[-1]}); ingest them with `smcast ingest "
            f"--start {lacking[0]} --end {lacking[-1]}`")
