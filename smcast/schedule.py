"""``smcast schedule``: the daily job under an APScheduler 3.x blocking scheduler (a daemon).

- A cron trigger from the config (``schedule.cron`` in ``schedule.timezone``, UTC by default).
- A persistent SQLite job store (``schedule.jobstore``): the next run time survives restarts, so
  a run missed while the daemon was down is seen when it comes back.
- One worker, ``max_instances=1``, ``coalesce=True`` (several missed runs make one), a misfire
  grace time of hours (APScheduler's default is 1 s).
- The job is added only when it is absent: ``add_job(replace_existing=True)`` at start-up would
  reset the stored next run time and silently drop a missed run. A changed trigger in the config
  reschedules the stored job, and says so.
- Listeners log failed and missed runs; SIGTERM/SIGINT stop the daemon cleanly: the running job
  gets SIGTERM (its run unwinds, leaving nothing partial) and the daemon waits for it.

Each run is a child process, ``python -m smcast forecast --date D --catch-up --verify --config
<snapshot>``: the same code, lock and idempotence as a run from cron or systemd, memory returned
after every run, and a crash of a run cannot take the daemon down. The children read a snapshot
of the daemon's resolved configuration (config changes take effect when the daemon restarts) and
record themselves in the run ledger with trigger ``schedule``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.events import (EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED,
                                EVENT_SCHEDULER_STARTED, JobExecutionEvent)
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from smcast.catchup import catch_up_dates
from smcast.clock import utc_today
from smcast.config import Config
from smcast.errors import NOTHING_TO_DO, BusyError
from smcast.ledger import TRIGGER_VAR
from smcast.writers.atomic import atomic_path

log = logging.getLogger(__name__)
JOB_ID = "smcast-daily"
JOB_FUNC = "smcast.schedule:daily_job"  # a textual reference: the job store keeps it across versions
STOP_TIMEOUT_S = 120.0


class JobFailed(Exception):
    """The daily job's process ended with a failure exit code."""


class ChildRunner:
    """Runs one job process at a time and can ask it to stop (SIGTERM)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._child: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.idle = threading.Event()
        self.idle.set()

    def run(self, argv: list[str], env: dict[str, str]) -> int | None:
        """Run ``argv`` to its end; its exit code, or None when the daemon is stopping."""
        with self._lock:
            if self.stopping.is_set():
                return None
            self._child = subprocess.Popen(argv, env=env)
            self.idle.clear()
        try:
            return self._child.wait()
        finally:
            with self._lock:
                self._child = None
                self.idle.set()

    def stop(self) -> None:
        """No new job starts; a running one gets SIGTERM."""
        with self._lock:
            self.stopping.set()
            if self._child is not None and self._child.poll() is None:
                log.info("asking the running job (pid %d) to stop", self._child.pid)
                self._child.send_signal(signal.SIGTERM)


RUNNER = ChildRunner()


def job_argv(config: str, issue: str) -> list[str]:
    """The command line of one run: the forecast for ``issue`` with catch-up, then verify."""
    return [sys.executable, "-m", "smcast", "forecast", "--date", issue, "--catch-up",
            "--verify", "--config", config]


def daily_job(config: str, issue: str | None = None) -> int | None:
    """The scheduled job: today's (UTC) forecast, missed issue dates, verification.

    Exit 0 (done), 7 (nothing to do) and 75 (another run holds the lock) are fine; anything
    else raises :class:`JobFailed`, which the error listener logs."""
    day = issue or str(utc_today())
    argv = job_argv(config, day)
    log.info("job starts: smcast %s", " ".join(argv[3:]))
    code = RUNNER.run(argv, {**os.environ, TRIGGER_VAR: "schedule"})
    if code is None or RUNNER.stopping.is_set():
        log.warning("job for %s stopped by the daemon's shutdown; the next run redoes it", day)
    elif code == BusyError.exit_code:
        log.warning("job for %s skipped: another smcast run holds the lock", day)
    elif code not in (0, NOTHING_TO_DO):
        what = f"was killed by signal {-code}" if code < 0 else f"exited {code}"
        raise JobFailed(f"the forecast job for {day} {what}; see its messages above and "
                        "`smcast status`")
    return code


def cron_trigger(cfg: Config) -> CronTrigger:
    """The configured cron trigger."""
    return CronTrigger.from_crontab(cfg.schedule.cron, timezone=ZoneInfo(cfg.schedule.timezone))


def build_scheduler(cfg: Config) -> BlockingScheduler:
    """A blocking scheduler: SQLite job store, one worker, coalescing, hours of grace."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    path = Path(cfg.schedule.jobstore or cfg.data_dir / "scheduler.sqlite").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return BlockingScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{path}"),
                   "memory": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": int(cfg.schedule.misfire_grace_hours * 3600)},
        timezone=ZoneInfo(cfg.schedule.timezone))


def ensure_job(scheduler: BlockingScheduler, trigger: BaseTrigger, kwargs: dict[str, Any]):
    """Add the daily job when the job store lacks it; otherwise keep it (and its next run
    time), updating only what the configuration changed."""
    job = scheduler.get_job(JOB_ID)
    if job is None:
        job = scheduler.add_job(JOB_FUNC, trigger, id=JOB_ID, name="smcast daily forecast",
                                kwargs=kwargs)
        log.info("daily job added: %s; next run %s", trigger, job.next_run_time)
        return job
    if repr(job.trigger) != repr(trigger):
        log.warning("schedule changed from %s to %s: rescheduling", job.trigger, trigger)
        scheduler.reschedule_job(JOB_ID, trigger=trigger)
    if job.kwargs != kwargs:
        scheduler.modify_job(JOB_ID, kwargs=kwargs)
    job = scheduler.get_job(JOB_ID)  # Job.modify() leaves the local object stale
    log.info("daily job kept from the job store: next run %s", job.next_run_time)
    return job


def last_due_issue(trigger: BaseTrigger, now: datetime) -> date | None:
    """The UTC date of the trigger's newest fire time at or before ``now`` (within 2 days)."""
    t, last = trigger.get_next_fire_time(None, now - timedelta(days=2)), None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last.astimezone(timezone.utc).date() if last else None


def catch_up_now(cfg: Config, scheduler: BlockingScheduler, trigger: BaseTrigger,
                 kwargs: dict[str, Any]) -> list[date]:
    """At start-up: when issue dates whose run time has passed lack a forecast, run the job
    at once for the newest of them (its ``--catch-up`` produces the others, oldest first)."""
    due = last_due_issue(trigger, datetime.now(timezone.utc))
    missing = catch_up_dates(cfg, due) if due else []
    if missing:
        log.info("issue dates without a forecast: %s; running the job now",
                 ", ".join(map(str, missing)))
        scheduler.add_job(daily_job, "date", id="catch-up-at-start", jobstore="memory",
                          kwargs={**kwargs, "issue": str(due)})
    return missing


def write_snapshot(cfg: Config) -> Path:
    """The daemon's resolved configuration, for its job processes to read."""
    path = (cfg.data_dir / "schedule" / "config.yaml").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("# written by `smcast schedule` at start-up: the configuration its job "
                       "processes use\n" + cfg.dump())
    return path


def serve(cfg: Config, trigger: BaseTrigger | None = None, install_signals: bool = True,
          on_start: Callable[[BlockingScheduler], None] | None = None) -> str:
    """Run the daemon until SIGTERM/SIGINT (or ``scheduler.shutdown()``); the summary line.

    ``trigger`` replaces the configured cron trigger (tests use a short interval);
    ``on_start`` receives the running scheduler."""
    trigger = trigger or cron_trigger(cfg)
    kwargs = {"config": str(write_snapshot(cfg))}
    scheduler = build_scheduler(cfg)
    counts = {"ok": 0, "failed": 0, "missed": 0}

    def started(_: object) -> None:
        ensure_job(scheduler, trigger, kwargs)
        if cfg.schedule.catch_up_at_start:
            catch_up_now(cfg, scheduler, trigger, kwargs)
        if on_start:
            on_start(scheduler)

    def finished(event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            counts["missed"] += 1
            log.warning("the run due at %s was missed (more than %g h late); the next run "
                        "catches up", event.scheduled_run_time, cfg.schedule.misfire_grace_hours)
        elif event.code == EVENT_JOB_ERROR:
            counts["failed"] += 1
            log.error("job failed: %s", event.exception)
        else:
            counts["ok"] += 1

    scheduler.add_listener(started, EVENT_SCHEDULER_STARTED)
    scheduler.add_listener(finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop(scheduler, signum))
    RUNNER.stopping.clear()
    log.info("smcast schedule: %s (%s), job store %s", cfg.schedule.cron,
             cfg.schedule.timezone, scheduler._jobstores["default"].engine.url.database)
    scheduler.start()  # blocks until shutdown
    if not RUNNER.idle.wait(STOP_TIMEOUT_S):
        log.error("the running job did not stop within %.0f s", STOP_TIMEOUT_S)
    return (f"schedule: stopped; {counts['ok']} run(s) done, {counts['failed']} failed, "
            f"{counts['missed']} missed")


def stop(scheduler: BlockingScheduler, signum: int | None = None) -> None:
    """Stop the daemon: no new runs, SIGTERM to a running one, leave the main loop."""
    if signum is not None:
        log.info("received %s: shutting down", signal.Signals(signum).name)
    RUNNER.stop()
    if scheduler.running:
        scheduler.shutdown(wait=False)
