"""The ``demo`` source: an offline, deterministic, ERA5-Land-like world on real land cells.

The world (``demo_world.DemoWorld``) is simulated forward one day at a time from
``source.demo.epoch``, so a day's values never depend on which range was asked for. Model states
are cached at the start of every month in ``source.demo.cache_dir``; a later request resumes from
the nearest earlier checkpoint instead of the epoch. The newest available day imitates
ERA5-Land's latency: today (UTC) minus ``source.demo.latency_days``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import xarray as xr
from tqdm.auto import tqdm

from smcast.clock import utc_today
from smcast.config import Config
from smcast.errors import ConfigError, DataUnavailableError
from smcast.grid import Grid, mask_hash
from smcast.ingest.daily import Piece
from smcast.ingest.landmask import globe_land_fraction, land_mask
from smcast.sources.base import register
from smcast.sources.demo_world import STATIC_VARIABLES, DemoWorld
from smcast.variables import SOURCE_VARIABLES, VARIABLES

log = logging.getLogger(__name__)
DEMO_VERSION = 1


@register("demo")
class DemoSource:
    """Daily fields of the simulated world on the store grid, in store units."""

    name = "demo"

    def __init__(self, cfg: Config, grid: Grid) -> None:
        self.cfg = cfg.source.demo
        self.grid = grid
        self.cache_dir = Path(self.cfg.cache_dir or cfg.data_dir / "cache" / "demo")
        self.fraction = globe_land_fraction(grid, self.cache_dir)
        self.mask = land_mask(self.fraction, grid, cfg.grid)
        if not self.mask.any():
            raise ConfigError(f"the {grid.describe()} holds no land cell; choose a grid.area "
                              "over land")
        self._world: DemoWorld | None = None

    @property
    def world(self) -> DemoWorld:
        """The simulated world, built on first use (a run with nothing to ingest never pays)."""
        if self._world is None:
            lat2, lon2 = np.meshgrid(self.grid.lat, self.grid.lon, indexing="ij")
            self._world = DemoWorld(lat2[self.mask], lon2[self.mask], seed=self.cfg.seed)
            log.info("demo world: %d land cells on the %s", int(self.mask.sum()),
                     self.grid.describe())
        return self._world

    def available_until(self, today: date) -> date:
        """Today minus the imitated latency."""
        return today - timedelta(days=self.cfg.latency_days)

    def check(self, days: list[date], today: date | None = None) -> None:
        """Days before the epoch or newer than the imitated latency allows are unavailable."""
        if not days:
            return
        if days[0] < self.cfg.epoch:
            raise DataUnavailableError(
                f"the demo world starts at {self.cfg.epoch}; {days[0]} is earlier. Start at or "
                "after it, or set source.demo.epoch earlier")
        newest = self.available_until(today or utc_today())
        if days[-1] > newest:
            raise DataUnavailableError(
                f"demo data (imitating ERA5-Land's {self.cfg.latency_days}-day latency) reaches "
                f"{newest}; {days[-1]} is not available yet. End the range at {newest} or earlier")

    def land_fraction(self, grid: Grid) -> np.ndarray:
        """GLOBE land fraction of each cell."""
        return self.fraction

    def statics(self, grid: Grid) -> xr.Dataset:
        """The world's static fields on the grid, NaN over sea."""
        data = {}
        for name, (units, long_name) in STATIC_VARIABLES.items():
            data[name] = (("lat", "lon"), self._to_grid(self.world.statics[name]),
                          {"units": units, "long_name": long_name})
        return xr.Dataset(data, coords=grid.coords())

    def iter_days(self, days: list[date]) -> Iterator[tuple[date, dict[str, Piece]]]:
        """Simulate up to the last day, yielding the requested ones (ascending)."""
        wanted = set(days)
        day, state = self._resume(min(days))
        spin_up = (min(days) - day).days
        if spin_up > 31:
            log.info("demo: simulating %d day(s) %s…%s before the first requested day (states "
                     "are cached, later runs start closer)", spin_up, day, min(days))
        bar = tqdm(total=spin_up, desc="demo spin-up", unit="day", disable=None if spin_up > 31
                   else True, leave=False)
        while day <= max(days):
            if day.day == 1:
                self._save_checkpoint(day, state)
            state, fields = self.world.step(state, day)
            if day in wanted:
                bar.close()
                yield day, self._pieces(day, fields)
            else:
                bar.update(1)
            day += timedelta(days=1)

    # -- internals ----------------------------------------------------------------------------
    def _pieces(self, day: date, fields: dict[str, np.ndarray]) -> dict[str, Piece]:
        """One Dataset for the day (cheaper than one DataArray per variable), split in pieces."""
        ds = xr.Dataset({n: (("time", "lat", "lon"), self._to_grid(fields[n])[None],
                             {"units": VARIABLES[n].units}) for n in SOURCE_VARIABLES},
                        coords={"time": [np.datetime64(day, "ns")], "lat": self.grid.lat,
                                "lon": self.grid.lon})
        return {n: Piece(ds[n], "daily", [f"demo:{day}"]) for n in SOURCE_VARIABLES}

    def _to_grid(self, values: np.ndarray) -> np.ndarray:
        out = np.full(self.grid.shape, np.nan, np.float32)
        out[self.mask] = values
        return out

    def _key_dir(self) -> Path:
        key = json.dumps([DEMO_VERSION, self.cfg.seed, str(self.cfg.epoch), self.grid.attrs(),
                          mask_hash(self.mask)])
        return self.cache_dir / hashlib.sha256(key.encode()).hexdigest()[:16]

    def _resume(self, first: date) -> tuple[date, dict[str, np.ndarray]]:
        """The newest checkpoint at or before ``first`` (or the epoch's initial state)."""
        folder = self._key_dir()
        stamps = sorted(date.fromisoformat(p.stem) for p in folder.glob("*.npz")
                        if _is_iso(p.stem)) if folder.exists() else []
        usable = [d for d in stamps if self.cfg.epoch <= d <= first]
        if usable:
            with np.load(folder / f"{usable[-1]}.npz") as npz:
                return usable[-1], {k: npz[k] for k in npz.files}
        return self.cfg.epoch, self.world.initial_state()

    def _save_checkpoint(self, day: date, state: dict[str, np.ndarray]) -> None:
        path = self._key_dir() / f"{day}.npz"
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{day}.tmp.npz")
        np.savez(tmp, **state)
        tmp.replace(path)


def _is_iso(text: str) -> bool:
    try:
        date.fromisoformat(text)
        return True
    except ValueError:
        return False
