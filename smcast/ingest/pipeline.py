"""``smcast ingest``: source → daily fields → store grid → checks → the daily store.

Reads like the data flow: the source is asked first whether every requested day can be delivered
(nothing is written otherwise); then day by day the pieces are aggregated to daily values in store
units, derived variables added, averaged onto the store grid by cell bounds, masked to land,
checked, and written in batches. A day is marked complete only after its data is written, so an
interruption never leaves a day that claims to be whole but is not.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from smcast.config import Config
from smcast.errors import ConfigError, InputDataError, SmcastError, StoreError
from smcast.grid import Grid
from smcast.ingest.cluster import day_engine
from smcast.ingest.days import DayResult, day_results
from smcast.ingest.landmask import land_mask
from smcast.sources.base import Source, make_source
from smcast.store import DailyStore, date_range, store_lock
from smcast.variables import VARIABLES

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What an ingest did."""

    source: str
    store: Path
    first: date
    last: date
    written: int
    replaced: int
    land_cells: int
    latest_complete: date | None
    seconds: float

    def line(self) -> str:
        """The one-line summary printed at the end of ``smcast ingest``."""
        return (f"ingested {self.written} day(s) {self.first}…{self.last} from {self.source} into "
                f"{self.store} ({self.replaced} replaced): {self.land_cells} land cells, latest "
                f"complete day {self.latest_complete} [{self.seconds:.1f} s]")


def ingest(cfg: Config, start: date, end: date, source_name: str | None = None,
           store_path: Path | None = None, source: Source | None = None) -> IngestSummary:
    """Ingest the days ``start``…``end`` (inclusive) into the daily store."""
    if start > end:
        raise ConfigError(f"start {start} is after end {end}; swap them")
    t0 = time.perf_counter()
    grid = Grid.from_config(cfg.grid)
    path = Path(store_path or cfg.store_path)
    days = list(date_range(start, end))
    existing = _open_matching(path, grid)
    source = source or make_source(cfg, grid, source_name)
    source.check(days)
    with day_engine(cfg.ingest, source, days) as client, store_lock(path):
        store, replaced = _run(cfg, source, grid, path, days, existing, client)
    return IngestSummary(source.name, path, start, end, len(days), replaced, store.land_cells,
                         store.latest_complete_day(), time.perf_counter() - t0)


def _open_matching(path: Path, grid: Grid) -> DailyStore | None:
    if not path.exists():
        return None
    store = DailyStore(path)
    if store.grid != grid:
        raise StoreError(f"the store {path} has a {store.grid.describe()}, but the config asks "
                         f"for a {grid.describe()}; use the store's grid settings or a new --store")
    return store


def _run(cfg: Config, source: Source, grid: Grid, path: Path, days: list[date],
         store: DailyStore | None, client: Client | None) -> tuple[DailyStore, int]:
    """Aggregate ``days`` (on ``client``'s dask workers, or in this process when None), then
    mask, check and write them in order, one progress-bar tick per day."""
    done = set(store.days()) if store else set()
    replaced = sum(d in done for d in days)
    mask = store.land_mask if store else None
    batch_days: list[date] = []
    batch: list[dict[str, np.ndarray]] = []
    bar = tqdm(total=len(days), desc="ingest", unit="day", disable=None, leave=False)
    for result in day_results(source, days, grid, client):
        if mask is None:
            fraction, mask = _land(cfg, grid, source, result.fraction)
        try:
            batch.append(_masked_and_checked(result, mask, grid, cfg.ingest.check_ranges))
        except SmcastError:
            if store is not None and batch_days:
                store.write_days(batch_days, batch)
                log.warning("kept the %d valid day(s) before %s", len(batch_days), result.day)
            raise
        batch_days.append(result.day)
        if store is None:
            store = DailyStore.create(path, grid, fraction, mask, source.statics(grid),
                                      result.day, source.name, cfg.store.compression_level)
            log.info("created store %s: %s, %d land cells", path, grid.describe(),
                     store.land_cells)
        if len(batch) >= _batch_days(cfg, grid):
            store.write_days(batch_days, batch)
            batch_days, batch = [], []
        bar.update(1)
    store.write_days(batch_days, batch)
    bar.close()
    return store, replaced


#: days held for one store write are capped at this many bytes (a 0.1° day is ~440 MB)
BATCH_BYTES = 512 * 2**20


def _batch_days(cfg: Config, grid: Grid) -> int:
    """``ingest.batch_days``, lowered so that one batch of days stays under ``BATCH_BYTES``."""
    nlat, nlon = grid.shape
    per_day = len(VARIABLES) * nlat * nlon * 4
    return max(1, min(cfg.ingest.batch_days, BATCH_BYTES // per_day))


def _land(cfg: Config, grid: Grid, source: Source, data_fraction: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """Land fraction and mask for a new store: the source's own, else from the data."""
    known = source.land_fraction(grid)
    fraction = data_fraction if known is None else known
    mask = land_mask(fraction, grid, cfg.grid)
    log.info("land mask: %d land cells (%s)", int(mask.sum()),
             "from the data" if known is None else f"from the {source.name} source")
    return fraction, mask


def _masked_and_checked(result: DayResult, mask: np.ndarray, grid: Grid, check_ranges: bool
                        ) -> dict[str, np.ndarray]:
    out = {n: np.where(mask, v, np.float32(np.nan)) for n, v in result.fields.items()}
    _check(out, mask, grid, result.day, result.origin, check_ranges)
    return out


def _check(fields: dict[str, np.ndarray], mask: np.ndarray, grid: Grid, day: date,
           origins: dict[str, str], check_ranges: bool) -> None:
    """NaN over land, or values outside the physical range, are errors naming the first cell."""
    for name, field in fields.items():
        origin = origins.get(name, "derived")
        land = field[mask]
        nan = ~np.isfinite(land)
        if nan.any():
            raise InputDataError(f"{name} on {day}: {int(nan.sum())} land cell(s) have no data "
                                 f"(first at {_first_cell(~np.isfinite(field) & mask, grid)}) in "
                                 f"{origin}; the files do not cover the store's land cells: "
                                 "download them again, or use files that cover grid.area")
        lo, hi = VARIABLES[name].valid_range
        bad = (field < lo) | (field > hi)
        if check_ranges and (bad & mask).any():
            where = bad & mask
            value = float(field[where][0])
            raise InputDataError(
                f"{name} on {day}: {int(where.sum())} land cell(s) outside the physical range "
                f"{lo:g}…{hi:g} {VARIABLES[name].units} (e.g. {value:g} at "
                f"{_first_cell(where, grid)}) in {origin}; check the file's units and content")


def _first_cell(where: np.ndarray, grid: Grid) -> str:
    i, j = np.argwhere(where)[0]
    return f"lat {grid.lat[i]:g}, lon {grid.lon[j]:g}"
