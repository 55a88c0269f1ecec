"""``smcast forecast``: the daily operational run.

Step 1 — bring the store up to date from the source up to the issue date — is in place; the model
run and the product writers arrive with the model and forecast issues, and until then the command
stops after step 1 with a clear message.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta

from smcast.config import Config
from smcast.errors import DataUnavailableError, SmcastError
from smcast.grid import Grid
from smcast.ingest.pipeline import IngestSummary, ingest
from smcast.sources.base import make_source
from smcast.store import DailyStore

log = logging.getLogger(__name__)

#: days of forcing a run needs before the latest complete day: the 7-day input window plus the
#: 30 most recent verifiable days used for the consistency layers
WINDOW_DAYS = 37


def update_store(cfg: Config, issue: date) -> tuple[date, IngestSummary | None]:
    """Ingest what the source has up to ``issue`` that the store lacks in the run's window.

    Returns (L, summary): the latest day the source can deliver for this issue date and what was
    ingested (None when the store was already up to date).
    """
    grid = Grid.from_config(cfg.grid)
    source = make_source(cfg, grid)
    newest = source.available_until(issue)
    if newest is None:
        raise DataUnavailableError(f"the {source.name} source has no complete day up to {issue}")
    first = newest - timedelta(days=WINDOW_DAYS - 1)
    done: set[date] = set()
    if cfg.store_path.exists():
        store = DailyStore(cfg.store_path)
        done = set(store.complete_days())
        first = max(first, store.days()[0])
    todo = [first + timedelta(days=i) for i in range((newest - first).days + 1)]
    todo = [d for d in todo if d not in done]
    if not todo:
        log.info("store already holds every day up to %s", newest)
        return newest, None
    return newest, ingest(cfg, todo[0], todo[-1], source=source)


def run_forecast(cfg: Config, issue: date) -> str:
    """The forecast run for one issue date; returns its summary line."""
    newest, summary = update_store(cfg, issue)
    if summary:
        log.info(summary.line())
    raise SmcastError(f"store {cfg.store_path} is up to date to {newest}, but `smcast forecast` "
                      "cannot forecast yet: the model and the product writers are not "
                      "implemented in this version (use `smcast ingest` and `smcast info`)")
