"""Per-day work: the pieces of one day → daily fields averaged onto the store grid.

This is the expensive, independent part of an ingest (reading files, hourly → daily, derived
variables, regridding), so for file sources it runs as dask.distributed tasks (one per day, a
bounded number of days ahead of the writer; see ``smcast.ingest.cluster``); the demo source, a
sequential simulation, and one-day ingests run in-process.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import numpy as np

from smcast.errors import SmcastError
from smcast.grid import Grid
from smcast.ingest.daily import Piece, to_daily
from smcast.ingest.regrid import Regridder
from smcast.variables import SOURCE_VARIABLES

if TYPE_CHECKING:
    from distributed import Client, Future


@dataclass
class DayResult:
    """One day on the store grid, before the land mask.

    Attributes:
        fields: name → (nlat, nlon) float32 area means in store units (NaN where no data).
        fraction: (nlat, nlon) share of each cell's area covered by valid source points.
        origin: name → the files the values came from (for messages).
    """

    day: date
    fields: dict[str, np.ndarray]
    fraction: np.ndarray
    origin: dict[str, str]


def aggregate(day: date, pieces: dict[str, Piece], grid: Grid,
              cache: dict[Any, Regridder]) -> DayResult:
    """Daily values of every variable, regridded; ``cache`` keeps one Regridder per source grid."""
    daily = to_daily(pieces, day, SOURCE_VARIABLES)
    first = pieces[SOURCE_VARIABLES[0]].data
    lat, lon = first["lat"].values, first["lon"].values
    key = (lat.tobytes(), lon.tobytes())
    if key not in cache:
        cache[key] = Regridder.build(lat, lon, grid)
    fields, fraction = {}, None
    for name, field in daily.items():
        mean, frac = cache[key](field)
        fields[name] = mean.astype(np.float32)
        fraction = frac if fraction is None else fraction
    origin = {n: ", ".join(p.origin) for n, p in pieces.items()}
    return DayResult(day, fields, fraction, origin)


def day_results(source: Any, days: list[date], grid: Grid, client: Client | None
                ) -> Iterator[DayResult]:
    """Results for ``days`` in order: as tasks on ``client``'s dask workers, reading with the
    source's picklable ``reader(days)`` (an object with ``read(day) -> pieces``), or in this
    process when ``client`` is None."""
    if client is None:
        cache: dict[Any, Regridder] = {}
        for day, pieces in source.iter_days(days):
            yield aggregate(day, pieces, grid, cache)
        return
    yield from _distributed(client, source.reader(days), days, grid)


def _distributed(client: Client, reader: Any, days: list[date], grid: Grid
                 ) -> Iterator[DayResult]:
    """At most 2 days per worker thread in flight, so memory stays bounded however long the
    range. The reader is a task of its own, which the day tasks depend on: each worker gets it
    once (and keeps its open files), and dask recomputes it should the worker holding it die
    (scattered data would be lost with it). An error of a day's task (InputDataError, …) is
    raised here with its type and message when that day's turn comes."""
    ahead = 2 * max(1, sum(client.nthreads().values()))
    tag = uuid4().hex[:8]
    shared = client.submit(_same, reader, key=f"smcast-reader-{tag}", pure=False)

    def submit(day: date) -> tuple[date, Future]:
        return day, client.submit(_work, shared, grid, day, key=f"smcast-day-{day}-{tag}",
                                  pure=False)

    todo = iter(days)
    pending: deque[tuple[date, Future]] = deque(submit(d) for _, d in zip(range(ahead), todo))
    try:
        while pending:
            outcome = _outcome(*pending.popleft())
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(submit(nxt))
            if isinstance(outcome, SmcastError):
                raise outcome
            yield outcome
    finally:
        if client.status == "running":
            client.cancel([*(f for _, f in pending), shared])


def _outcome(day: date, future: Future) -> DayResult | SmcastError:
    """A day task's result; a task whose workers kept dying (dask gives up after
    ``distributed.scheduler.allowed-failures`` tries) is an error with the likely fix."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        raise SmcastError(f"the dask workers died while aggregating {day} ({exc}); the usual "
                          "cause is memory: raise ingest.memory_per_worker (each worker's memory "
                          "limit; the machine needs ingest.workers times that)") from None


def _same(reader: Any) -> Any:
    """The reader, as the result of a task (see ``_distributed``)."""
    return reader


#: Regridders of this (worker) process for the store grid of its latest task
_REGRIDDERS: dict[Grid, dict[Any, Regridder]] = {}


def _work(reader: Any, grid: Grid, day: date) -> DayResult | SmcastError:
    """One day's task on a dask worker; smcast's own errors are returned, not raised, so that
    the worker logs no traceback for bad input and the writer raises them in day order."""
    cache = _REGRIDDERS.get(grid)
    if cache is None:
        _REGRIDDERS.clear()
        cache = _REGRIDDERS[grid] = {}
    try:
        return aggregate(day, reader.read(day), grid, cache)
    except SmcastError as exc:
        return exc
