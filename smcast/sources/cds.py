"""The ``cds`` source: ERA5-Land from the Copernicus Climate Data Store through ``cdsapi``.

Two ways to fetch (``source.cds.mode``):

* ``daily`` (default): instantaneous variables as daily means from
  ``derived-era5-land-daily-statistics`` (computed on the CDS), and accumulated ones as the single
  00 UTC step of the *next* day from ``reanalysis-era5-land`` — the daily total, at 1/24 of the
  hourly volume. (The daily statistics' ``daily_mean`` of an accumulated variable averages the
  running accumulations, which is not the daily total: never use it for tp, e, ro, …)
* ``hourly``: all 24 steps from ``reanalysis-era5-land`` plus 00 UTC of the day after.

Requests are split by day or month and by accumulated/instantaneous (one file type each, so the
CDS never answers with a zip). Each lands in ``download_dir`` under a name derived from the
request; a file already there is not asked for again (resumable), a download goes to a temporary
name and is renamed only when complete, and failures are retried with exponential backoff.
A request is submitted, then polled (``sleep`` and ``clock`` are injectable): one still queued
after ``max_queue_hours`` is cancelled and the run fails with exit 4; the next run submits it
again. The key is blanked in smcast's messages and in the client libraries' log records.
Downloaded files are read by the same code as the ``directory`` source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any

import xarray as xr
from tqdm.auto import tqdm

from smcast.clock import utc_today
from smcast.config import Config
from smcast.errors import ConfigError, DataUnavailableError, InputDataError, SmcastError
from smcast.grid import Grid
from smcast.ingest.daily import Frequency, Piece
from smcast.sources.base import register
from smcast.sources.files import FileIndex, file_format
from smcast.variables import SOURCE_VARIABLES, VARIABLES

log = logging.getLogger(__name__)

HOURLY_DATASET = "reanalysis-era5-land"
DAILY_DATASET = "derived-era5-land-daily-statistics"
ALL_HOURS = [f"{h:02d}:00" for h in range(24)]
ACCUMULATED = tuple(n for n in SOURCE_VARIABLES if VARIABLES[n].kind == "accumulated")
INSTANTANEOUS = tuple(n for n in SOURCE_VARIABLES if VARIABLES[n].kind == "instantaneous")


@dataclass(frozen=True)
class Request:
    """One CDS request and the file it is saved to.

    Attributes:
        dataset: CDS dataset name.
        request: the request dictionary, exactly as sent.
        target: file path in the download directory.
        frequency: how the file's time stamps are read (daily means or hourly steps).
    """

    dataset: str
    request: dict[str, Any]
    target: Path
    frequency: Frequency


def plan_requests(days: list[date], mode: str, split: str, area: list[float] | None,
                  folder: Path) -> list[Request]:
    """The requests that deliver every source variable for the contiguous ``days``."""
    out: list[Request] = []
    chunks = list(_chunks(days, split))
    for chunk in chunks:
        if mode == "daily":
            out.append(_request(DAILY_DATASET, INSTANTANEOUS, chunk, None, area, folder,
                                "daily", "daily-mean"))
            nxt = [d + timedelta(days=1) for d in chunk]
            out += [_request(HOURLY_DATASET, ACCUMULATED, list(g), ["00:00"], area, folder,
                             "hourly", "accum-00utc") for _, g in groupby(nxt, _month)]
        else:
            for names, kind in ((INSTANTANEOUS, "hourly-instant"), (ACCUMULATED, "hourly-accum")):
                out.append(_request(HOURLY_DATASET, names, chunk, ALL_HOURS, area, folder,
                                    "hourly", kind))
    if mode == "hourly" and chunks:  # the last day's total is the next day's 00 UTC step
        after = [chunks[-1][-1] + timedelta(days=1)]
        out.append(_request(HOURLY_DATASET, ACCUMULATED, after, ["00:00"], area, folder,
                            "hourly", "accum-00utc"))
    return out


def _month(day: date) -> tuple[int, int]:
    return day.year, day.month


def _chunks(days: list[date], split: str) -> Iterator[list[date]]:
    key = (lambda d: d) if split == "day" else _month
    for _, group in groupby(days, key):
        yield list(group)


def _request(dataset: str, names: tuple[str, ...], days: list[date], times: list[str] | None,
             area: list[float] | None, folder: Path, frequency: Frequency, kind: str) -> Request:
    req: dict[str, Any] = {
        "variable": [VARIABLES[n].cds_name for n in names],
        "year": f"{days[0].year:04d}", "month": f"{days[0].month:02d}",
        "day": [f"{d.day:02d}" for d in days],
    }
    if dataset == DAILY_DATASET:
        req.update(daily_statistic="daily_mean", time_zone="utc+00:00", frequency="1_hourly")
    else:
        req.update(time=times, data_format="netcdf", download_format="unarchived")
    if area:
        req["area"] = area
    digest = hashlib.sha256(json.dumps([dataset, req], sort_keys=True).encode()).hexdigest()[:10]
    name = f"{kind}_{days[0]:%Y%m%d}-{days[-1]:%Y%m%d}_{digest}.nc"
    return Request(dataset, req, folder / name, frequency)


def grid_area(grid: Grid) -> list[float] | None:
    """CDS ``area`` [N, W, S, E] covering the grid's cells (None for the whole globe)."""
    if (grid.south, grid.north, grid.west, grid.east) == (-90.0, 90.0, -180.0, 180.0):
        return None
    return [grid.north, grid.west, grid.south, grid.east]


def default_client(cfg) -> Any:
    """A real ``cdsapi.Client``; credentials from ``~/.cdsapirc`` or CDSAPI_URL/CDSAPI_KEY."""
    import cdsapi

    try:
        # retry_max=1: no retries inside cdsapi, smcast's own backoff (CdsSource._fetch) rules
        return cdsapi.Client(quiet=True, progress=False, timeout=cfg.timeout_seconds,
                             retry_max=1, sleep_max=cfg.poll_seconds)
    except Exception as exc:  # cdsapi raises a bare Exception for missing credentials
        raise ConfigError(f"CDS credentials not found ({_redact(str(exc))}): create ~/.cdsapirc "
                          "with 'url: https://cds.climate.copernicus.eu/api' and 'key: <your "
                          "token>', or set CDSAPI_URL and CDSAPI_KEY") from None


#: loggers of the client libraries that may log server replies (multiurl logs error bodies)
CLIENT_LOGGERS = ("cdsapi", "ecmwf.datastores.legacy_client", "ecmwf.datastores.processing",
                  "multiurl.base", "multiurl.http", "multiurl.retry", "multiurl.downloader")


class _RedactKey(logging.Filter):
    """Blank the CDS key in a log record (message and traceback) before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the handler's business
            return True
        if (clean := _redact(message)) != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _redact(logging.Formatter().formatException(record.exc_info))
        return True


def _guard_client_logs() -> None:
    """Attach :class:`_RedactKey` to the client libraries' loggers (once)."""
    for name in CLIENT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RedactKey) for f in logger.filters):
            logger.addFilter(_RedactKey())


def _redact(text: str) -> str:
    """Remove the CDS key from a message, wherever it came from."""
    key = os.environ.get("CDSAPI_KEY")
    rc = Path(os.environ.get("CDSAPI_RC", Path.home() / ".cdsapirc"))
    if not key and rc.is_file():
        try:
            lines = rc.read_text().splitlines()
        except (OSError, UnicodeDecodeError):
            lines = []
        for line in lines:
            if line.strip().startswith("key:"):
                key = line.split(":", 1)[1].strip()
    return text.replace(key, "***") if key else text


@register("cds")
class CdsSource:
    """ERA5-Land fetched from the CDS into ``download_dir``, then read like a mirror."""

    name = "cds"

    def __init__(self, cfg: Config, grid: Grid,
                 client_factory: Callable[[Any], Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg.source.cds
        self.grid = grid
        self.folder = Path(self.cfg.download_dir or cfg.data_dir / "downloads" / "cds")
        self._client_factory = client_factory or default_client
        _guard_client_logs()
        self._client: Any = None
        self._sleep = sleep
        self._clock = clock

    def available_until(self, today: date) -> date:
        """ERA5-Land's latency: today minus ``latency_days``."""
        return today - timedelta(days=self.cfg.latency_days)

    def check(self, days: list[date], today: date | None = None) -> None:
        """Days newer than the latency allows are not requested."""
        newest = self.available_until(today or utc_today())
        if days and days[-1] > newest:
            raise DataUnavailableError(
                f"ERA5-Land on the CDS lags about {self.cfg.latency_days} days: {days[-1]} is "
                f"not available yet (newest expected {newest}); end the range earlier")

    def plan(self, days: list[date]) -> list[Request]:
        """The requests for ``days``."""
        return plan_requests(days, self.cfg.mode, self.cfg.split, grid_area(self.grid),
                             self.folder)

    def download(self, days: list[date]) -> list[Request]:
        """Fetch every planned file not already in the download directory."""
        requests = self.plan(days)
        todo = [r for r in requests if not _complete(r.target)]
        log.info("CDS: %d request(s), %d already downloaded", len(requests),
                 len(requests) - len(todo))
        for req in tqdm(todo, desc="cds", unit="request", disable=None, leave=False):
            self._fetch(req)
        return requests

    def _fetch(self, req: Request) -> None:
        """Submit ``req``, poll it until ready (at most ``max_queue_hours``), download it to a
        ``.part`` file, check it and rename it into place.

        HTTP errors, timeouts, failed jobs and bad downloads are retried with exponential backoff
        (``retries``, ``backoff_seconds``); a job that answered keeps being polled rather than
        submitted again, unless the CDS says it failed or is gone (a 4xx). A request still queued
        after ``max_queue_hours`` is not retried: the CDS is busy, more waiting in this run would
        only delay the alert; it is cancelled and the next run submits it again.
        """
        req.target.parent.mkdir(parents=True, exist_ok=True)
        tmp = req.target.with_name(f".{req.target.name}.part")
        self._client = self._client or self._client_factory(self.cfg)  # ConfigError: no retry
        submit = getattr(getattr(self._client, "client", None), "submit", None)
        delay = self.cfg.backoff_seconds
        remote: Any = None
        deadline = self._clock() + self.cfg.max_queue_hours * 3600
        for attempt in range(1, self.cfg.retries + 2):
            try:
                if submit is None:  # not an ecmwf-datastores client: blocking, no queue limit
                    self._client.retrieve(req.dataset, req.request, str(tmp))
                else:
                    if remote is None:
                        remote = submit(req.dataset, req.request)
                        log.debug("CDS: %s submitted as request %s", req.target.name,
                                  getattr(remote, "request_id", "?"))
                    self._wait(remote, deadline)
                    remote.download(str(tmp))
                _check_download(tmp)
                os.replace(tmp, req.target)
                log.info("CDS: downloaded %s", req.target.name)
                return
            except _StillQueued:
                tmp.unlink(missing_ok=True)
                _cancel(remote, req)
                raise DataUnavailableError(
                    f"CDS request {req.target.name} ({req.dataset}) still queued after "
                    f"{self.cfg.max_queue_hours:g} h (source.cds.max_queue_hours); the CDS is "
                    "busy: run again later (downloads resume) or raise the limit") from None
            except Exception as exc:  # the client raises requests/HTTP errors and bare Exception
                tmp.unlink(missing_ok=True)
                ours = isinstance(exc, SmcastError)
                if ours or _job_gone(exc):  # a bad file, a failed or lost job: submit again
                    remote = None
                message = _redact(str(exc) if ours else f"{type(exc).__name__}: {exc}")
                if attempt > self.cfg.retries:
                    raise (type(exc) if ours else DataUnavailableError)(
                        f"CDS request for {req.target.name} ({req.dataset}) failed after "
                        f"{attempt} attempt(s): {message}. Check the CDS status page and that "
                        "the dataset licence is accepted; rerun to resume") from None
                log.warning("CDS request %s failed (attempt %d/%d): %s; retrying in %.0f s",
                            req.target.name, attempt, self.cfg.retries + 1, message, delay)
            except BaseException:  # Ctrl-C, SIGTERM: nothing partial stays behind
                tmp.unlink(missing_ok=True)
                raise
            self._sleep(delay)
            delay *= 2

    def _wait(self, remote: Any, deadline: float) -> None:
        """Poll ``remote`` until its results are ready; _StillQueued once ``deadline`` passes.
        Pauses grow like the client's own (1 s, x1.5) up to ``poll_seconds``."""
        pause = min(1.0, self.cfg.poll_seconds)
        while not remote.results_ready:
            left = deadline - self._clock()
            if left <= 0:
                raise _StillQueued()
            self._sleep(min(pause, left))
            pause = min(pause * 1.5, self.cfg.poll_seconds)

    def reader(self, days: list[date]) -> FileIndex:
        """Download what is missing; a picklable reader of the downloaded files."""
        return FileIndex([(r.target, r.frequency) for r in self.download(days)])

    def iter_days(self, days: list[date]) -> Iterator[tuple[date, dict[str, Piece]]]:
        """Download what is missing, then read the days from the files."""
        index = self.reader(days)
        try:
            for day in days:
                yield day, index.read(day)
        finally:
            index.close()

    def land_fraction(self, grid: Grid) -> None:
        """Derived from the data."""
        return None

    def statics(self, grid: Grid) -> xr.Dataset | None:
        """Not fetched (ERA5-Land has no soil texture or land cover)."""
        return None


def _check_download(path: Path) -> None:
    """InputDataError unless the downloaded file starts like NetCDF or GRIB."""
    try:
        file_format(path)
    except InputDataError:
        raise InputDataError("the CDS sent a file that is neither NetCDF nor GRIB (an error "
                             "page or a cut-off download?)") from None


class _StillQueued(Exception):
    """The CDS job is still accepted/running at the ``max_queue_hours`` deadline."""


def _job_gone(exc: Exception) -> bool:
    """True when the job itself is lost (failed on the CDS, or a 4xx such as 404 for an
    expired job): the next attempt submits again. 5xx, timeouts and broken downloads keep it."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return type(exc).__name__ == "ProcessingFailedError" or (
        isinstance(status, int) and 400 <= status < 500)


def _cancel(remote: Any, req: Request) -> None:
    """Best effort: delete the abandoned job on the CDS so that it stops using the queue."""
    if remote is None or not hasattr(remote, "delete"):
        return
    try:
        remote.delete()
        log.info("CDS: cancelled queued request %s", req.target.name)
    except Exception as exc:  # noqa: BLE001 - cancelling is a courtesy, never an error
        log.warning("CDS: could not cancel request %s: %s", req.target.name,
                    _redact(f"{type(exc).__name__}: {exc}"))


def _complete(path: Path) -> bool:
    """A downloaded file counts when it exists and starts like NetCDF or GRIB."""
    if not path.exists():
        return False
    try:
        file_format(path)
        return True
    except SmcastError:
        return False

