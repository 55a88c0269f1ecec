"""The source protocol and registry.

A source turns a list of UTC days into ``Piece``s — per variable, the hourly or daily fields
around each day in the file's names mapped to the vocabulary, with normalised coordinates
(``time``, ``lat`` ascending, ``lon`` −180…180). The ingest pipeline does the rest (daily
aggregation, derived variables, regridding, checks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import Protocol

import numpy as np
import xarray as xr

from smcast.config import Config
from smcast.errors import ConfigError
from smcast.grid import Grid
from smcast.ingest.daily import Piece


class Source(Protocol):
    """What every data source provides."""

    name: str

    def available_until(self, today: date) -> date | None:
        """The newest day the source can deliver when asked on ``today`` (UTC); None if unknown."""

    def check(self, days: list[date]) -> None:
        """Cheap pre-flight before anything is written: raise DataUnavailableError or
        InputDataError naming every day (and hour, variable, file) that cannot be delivered."""

    def iter_days(self, days: list[date]) -> Iterator[tuple[date, dict[str, Piece]]]:
        """For each day, ascending, the pieces of every source variable."""

    def land_fraction(self, grid: Grid) -> np.ndarray | None:
        """Land fraction (nlat, nlon) on ``grid`` if the source knows it; None: derive it from
        the data (the share of each cell covered by valid points)."""

    def statics(self, grid: Grid) -> xr.Dataset | None:
        """Static fields on ``grid`` (elevation, soil texture, …) if the source has them."""


SourceFactory = Callable[[Config, Grid], Source]
SOURCES: dict[str, SourceFactory] = {}


def register(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Class decorator: make a source available under ``name``."""

    def deco(factory: SourceFactory) -> SourceFactory:
        SOURCES[name] = factory
        return factory

    return deco


def make_source(cfg: Config, grid: Grid, name: str | None = None) -> Source:
    """Build the named (default: configured) source; an unknown name lists the valid ones."""
    from smcast.sources import cds, demo, directory  # noqa: F401  (register the built-ins)

    name = name or cfg.source.name
    if name not in SOURCES:
        raise ConfigError(f"unknown source {name!r}; valid sources: {', '.join(sorted(SOURCES))}")
    return SOURCES[name](cfg, grid)
