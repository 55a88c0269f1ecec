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
               statics: list[str], deep: bool, snow_sign: str = "paper") -> CellData:
    """Read days first…last of every land cell; all days must be complete in the store."""
    group, cube = _reader(store, first, last, (*dynamic, *statics, *TRUTH_VARS))
    mask = store.land_mask
    dyn = np.stack([cube(v) for v in dynamic], axis=-1)
    stat = np.stack([group[v][:][mask].astype(np.float32) for v in statics], axis=-1)
    target, d_eval = _truth(cube, snow_sign)
    d = d_eval if deep else np.asarray(direction(water_input(
        cube("tp"), cube("e"), cube("ro"), cube("sd"), snow_sign=snow_sign), target)).astype(np.int8)
    lat = np.broadcast_to(store.grid.lat[:, None], mask.shape)[mask]
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return CellData(days, np.arange(int(mask.sum())), lat.astype(np.float32), dyn, stat,
                    target, d, d_eval)


def load_truth(store: DailyStore, first: date, last: date,
               snow_sign: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """Observed swvl1 (n, T) in m3 m-3 and the Eq. 11 direction D (n, T) int8 of every land cell
    for days first…last (what verification needs; D is 0 on the first two days)."""
    _, cube = _reader(store, first, last, TRUTH_VARS)
    return _truth(cube, snow_sign)


def _reader(store: DailyStore, first: date, last: date, names: tuple[str, ...]):
    """The store's Zarr group and a reader of (n, T) float32 land-cell cubes of days
    first…last, after checking that the days are complete and the variables present."""
    _require_complete(store, first, last)
    group = zarr.open_group(str(store.path), mode="r")
    axis = store.days()
    i0, i1 = axis.index(first), axis.index(last) + 1
    mask = store.land_mask
    missing = [v for v in dict.fromkeys(names) if v not in group.array_keys()]
    if missing:
        raise InputDataError(f"the store {store.path} lacks {', '.join(missing)}; models need "
                             "them (statics come from the demo source or a static file)")

    def cube(name: str) -> np.ndarray:  # (n, T), read straight from the Zarr chunks
        return np.ascontiguousarray(group[name][i0:i1][:, mask].T.astype(np.float32))

    return group, cube


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
