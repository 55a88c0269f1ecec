"""Catch-up after downtime: the issue dates that lack a forecast, produced oldest first.

The output inventory (the forecasts' manifests) is the record of what was done, so cron,
systemd, Kubernetes and the daemon all catch up the same way: ``smcast forecast --date today
--catch-up``.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from pathlib import Path

from smcast.config import Config
from smcast.errors import BusyError, SmcastError, Terminated
from smcast.forecast import ForecastResult, run_forecast
from smcast.inventory import issue_dates
from smcast.outputs import filenames
from smcast.store import date_range

log = logging.getLogger(__name__)


def catch_up_dates(cfg: Config, today: date, output: Path | None = None) -> list[date]:
    """Issue dates among the last ``operations.catch_up_days`` (today included) that have no
    forecast, oldest first. Dates before the first forecast in the output directory were never
    missed (a new installation starts with today)."""
    out = Path(output or cfg.output_dir).resolve()
    done = issue_dates(out, filenames(cfg)["manifest"])
    first = today - timedelta(days=cfg.operations.catch_up_days - 1)
    if not done:
        return [today]
    missing = [d for d in date_range(max(first, min(done)), today) if d not in done]
    older = [d for d in done if d < first]
    if older and max(older) < first - timedelta(days=1):  # the gap reaches beyond the window
        log.warning("forecasts are missing before %s, beyond operations.catch_up_days=%d; "
                    "produce them with `smcast forecast --date YYYY-MM-DD`", first,
                    cfg.operations.catch_up_days)
    return missing


def run_catch_up(cfg: Config, today: date, model_name: str | None = None,
                 output: Path | None = None, force: bool = False) -> list[ForecastResult]:
    """``today``'s forecast plus every missed issue date before it (:func:`catch_up_dates`),
    oldest first. A date that fails is logged and the next one is tried; the first failure is
    raised at the end, so the exit code tells that something is wrong."""
    dates = sorted(set(catch_up_dates(cfg, today, output)) | {today})
    if len(dates) > 1:
        log.info("catching up %d issue date(s): %s", len(dates), ", ".join(map(str, dates)))
    results, failures = [], []
    for day in dates:
        try:
            results.append(run_forecast(cfg, day, model_name, output, force and day == today))
        except (BusyError, Terminated, KeyboardInterrupt):
            raise
        except SmcastError as exc:
            log.error("forecast %s failed: %s", day, exc)
            failures.append(exc)
    if failures:
        raise failures[0]
    return results
