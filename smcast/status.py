"""``smcast status``: is the operational chain healthy? For people and for monitoring checks.

It reports the last runs from the ledger, the store's latest day, the current model, how far the
forecasts lag behind real time, recent verified skill, and anything failing. Unhealthy (exit 1):

- the last scheduled run (trigger other than ``manual``; a run that found the lock taken does
  not count) failed, was interrupted, or was killed (``abandoned``);
- the newest forecast was issued more than ``operations.stale_after_days`` days ago (this also
  catches a daemon or cron that silently stopped running).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from smcast.clock import utc_today
from smcast.config import Config
from smcast.inventory import ForecastEntry, forecasts
from smcast.ledger import FAILED, Ledger, RunRecord
from smcast.outputs import filenames


@dataclass
class StatusReport:
    """Lines to print and the problems that make the status unhealthy."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        """No problem found."""
        return not self.problems

    def text(self) -> str:
        """The report; its last line is the verdict."""
        verdict = "health: OK" if self.healthy else "health: FAILING — " + "; ".join(
            self.problems)
        return "\n".join([*self.lines, verdict])


def collect_status(cfg: Config, n_runs: int = 10, today: date | None = None) -> StatusReport:
    """Gather the status (``today``: UTC today unless given)."""
    today = today or utc_today()
    report = StatusReport([f"smcast status, {today} (UTC)"])
    ledger = Ledger.for_config(cfg)
    ledger.reap()
    report.lines += _store_lines(cfg, today)
    report.lines += _model_lines(cfg)
    entries = forecasts(cfg.output_dir.resolve(), filenames(cfg)["manifest"])
    report.lines += _forecast_lines(cfg, entries, today, report)
    report.lines += _skill_lines(ledger, today)
    runs = ledger.runs(max(n_runs, 50))
    _check_scheduled(runs, report)
    if n_runs:
        report.lines.append(f"last {min(n_runs, len(runs))} run(s) (ledger {ledger.path}):")
        report.lines += [f"  {r.line()}" for r in runs[:n_runs]] or ["  none yet"]
    return report


def _store_lines(cfg: Config, today: date) -> list[str]:
    from smcast.errors import StoreError
    from smcast.store import DailyStore

    if not cfg.store_path.exists():
        return [f"store        {cfg.store_path}: not created yet"]
    try:
        latest = DailyStore(cfg.store_path).latest_complete_day()
    except StoreError as exc:
        return [f"store        {cfg.store_path}: unreadable ({exc})"]
    lag = f"{(today - latest).days} day(s) behind today" if latest else "no complete day"
    return [f"store        {cfg.store_path}: latest complete day {latest} ({lag}; ERA5-Land "
            "lags about 5)"]


def _model_lines(cfg: Config) -> list[str]:
    from smcast.model.registry import current_name

    name = cfg.forecast.model or current_name(cfg)
    return [f"model        {name or 'none (train one with `smcast retrain`)'}"]


def _forecast_lines(cfg: Config, entries: list[ForecastEntry], today: date,
                    report: StatusReport) -> list[str]:
    if not entries:
        report.problems.append(f"no forecast in {cfg.output_dir} yet")
        return [f"forecasts    {cfg.output_dir}: none yet"]
    newest = entries[-1]
    age = (today - newest.issue).days
    if age > cfg.operations.stale_after_days:
        report.problems.append(f"the newest forecast was issued {age} days ago ({newest.issue}), "
                               f"more than operations.stale_after_days="
                               f"{cfg.operations.stale_after_days}")
    waiting = sum(len([v for v in e.valid if v not in e.verified]) for e in entries)
    return [f"forecasts    {cfg.output_dir}: {len(entries)}, newest issued {newest.issue} "
            f"({age} day(s) ago), valid to {newest.valid[-1]}",
            f"verification {waiting} valid day(s) waiting for ERA5-Land"]


def _skill_lines(ledger: Ledger, today: date) -> list[str]:
    rows = ledger.verification(today - timedelta(days=30), today)
    rows = rows[rows["lead"] == rows["lead"].min()] if len(rows) else rows
    if not len(rows):
        return ["skill        nothing verified in the last 30 days"]
    lead = int(rows["lead"].iloc[0])
    return [f"skill        lead {lead}, last 30 days ({len(rows)} day(s)): median KGE "
            f"{rows['kge'].median():.3f} (persistence {rows['persistence_kge'].median():.3f}), "
            f"RMSE {rows['rmse'].median():.4f} m3 m-3 (persistence "
            f"{rows['persistence_rmse'].median():.4f}), consistency "
            f"{rows['consistency'].mean():.2f}"]


def _check_scheduled(runs: list[RunRecord], report: StatusReport) -> None:
    scheduled = [r for r in runs if r.scheduled and r.status not in ("busy", "running")]
    if scheduled and scheduled[0].status in FAILED:
        last = scheduled[0]
        error = ((last.error or "").strip().splitlines() or ["no message"])[0][:200]
        report.problems.append(
            f"the last scheduled run ({last.command} {last.issue_date or ''}, {last.trigger}, "
            f"{last.started}) {last.status}: {error}")
