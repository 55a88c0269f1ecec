"""Per-day work: the pieces of one day → daily fields averaged onto the store grid.

This is the expensive, independent part of an ingest (reading files, hourly → daily, derived
variables, regridding), so for file sources it runs in a pool of worker processes, a bounded
number of days ahead of the writer; the demo source, a sequential simulation, runs in-process.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from smcast.grid import Grid
from smcast.ingest.daily import Piece, to_daily
from smcast.ingest.regrid import Regridder
from smcast.variables import SOURCE_VARIABLES


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


def day_results(source: Any, days: list[date], grid: Grid, workers: int
                ) -> Iterator[DayResult]:
    """Results for ``days`` in order: in worker processes when the source offers a picklable
    ``reader(days)`` (an object with ``read(day) -> pieces``) and ``workers > 1``."""
    make_reader = getattr(source, "reader", None)
    if make_reader is None or workers <= 1 or len(days) < 2:
        cache: dict[Any, Regridder] = {}
        for day, pieces in source.iter_days(days):
            yield aggregate(day, pieces, grid, cache)
        return
    yield from _parallel(make_reader(days), days, grid, workers)


_WORKER: dict[str, Any] = {}


def _init_worker(reader: Any, grid: Grid) -> None:
    _WORKER.update(reader=reader, grid=grid, cache={})


def _work(day: date) -> DayResult:
    return aggregate(day, _WORKER["reader"].read(day), _WORKER["grid"], _WORKER["cache"])


def _parallel(reader: Any, days: list[date], grid: Grid, workers: int) -> Iterator[DayResult]:
    """At most ``2 * workers`` days in flight, so memory stays bounded however long the range."""
    context = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pool = ProcessPoolExecutor(min(workers, len(days)), mp_context=context,
                               initializer=_init_worker, initargs=(reader, grid))
    todo = iter(days)
    pending: deque[Future] = deque()
    try:
        for day in todo:
            pending.append(pool.submit(_work, day))
            if len(pending) >= 2 * workers:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(_work, nxt))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
