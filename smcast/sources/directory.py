"""The ``directory`` source: a local mirror of ERA5-Land files (NetCDF or GRIB, hourly or daily)
found by a glob pattern under a root directory."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import xarray as xr

from smcast.config import Config
from smcast.errors import ConfigError, DataUnavailableError, InputDataError
from smcast.grid import Grid
from smcast.ingest.daily import Piece
from smcast.sources.base import register
from smcast.sources.files import FileIndex, day_problems_message
from smcast.variables import SOURCE_VARIABLES


@register("directory")
class DirectorySource:
    """Files under ``source.directory.path`` matching ``source.directory.pattern``."""

    name = "directory"

    def __init__(self, cfg: Config, grid: Grid) -> None:
        self.cfg = cfg.source.directory
        if self.cfg.path is None:
            raise ConfigError("the directory source needs a folder: set source.directory.path or "
                              "pass --input DIR")
        self.root = Path(self.cfg.path)
        if not self.root.is_dir():
            raise ConfigError(f"input directory {self.root} does not exist or is not a folder; "
                              "set source.directory.path or --input to the ERA5-Land mirror")
        files = sorted(p for p in self.root.glob(self.cfg.pattern) if p.is_file())
        if not files:
            raise DataUnavailableError(f"no files match {self.cfg.pattern!r} under {self.root}; "
                                       "check source.directory.pattern")
        self.index = FileIndex([(p, self.cfg.frequency) for p in files])

    def available_until(self, today: date) -> date | None:
        """The newest day every variable is complete for, judged from the index."""
        stamps = np.concatenate([t for e in self.index.entries for t in e.times.values()])
        day = (stamps.max().astype("datetime64[D]").astype(object))
        for _ in range(3):
            if not self.index.problems(day, SOURCE_VARIABLES):
                return day
            day -= timedelta(days=1)
        return None

    def check(self, days: list[date]) -> None:
        """Every requested day must be complete in the mirror (no data is read)."""
        problems = {d: p for d in days if (p := self.index.problems(d, SOURCE_VARIABLES))}
        if not problems:
            return
        newest = self.available_until(days[-1])
        message = day_problems_message(problems, str(self.root))
        if newest is not None and min(problems) > newest:
            raise DataUnavailableError(f"{message}\nthe mirror's newest complete day is {newest}; "
                                       "end the range there or wait for the files")
        raise InputDataError(f"{message}\nfill these gaps in the mirror (re-download the files) "
                             "or ingest a range without them")

    def reader(self, days: list[date]) -> FileIndex:
        """A picklable reader of the days (for worker processes)."""
        return self.index

    def iter_days(self, days: list[date]) -> Iterator[tuple[date, dict[str, Piece]]]:
        """The pieces of each day, read from the files that hold them."""
        try:
            for day in days:
                yield day, self.index.read(day)
        finally:
            self.index.close()

    def land_fraction(self, grid: Grid) -> None:
        """Derived from the data (share of each cell with valid points)."""
        return None

    def statics(self, grid: Grid) -> xr.Dataset | None:
        """ERA5-Land files carry no soil texture or land cover; none here."""
        return None
