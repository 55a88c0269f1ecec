"""The daemon's scheduler set-up: job store persistence, the add-only-when-absent rule, the
trigger, and how the job treats its process's exit codes."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from smcast import schedule
from smcast.config import load_config


@pytest.fixture
def cfg(tmp_path):
    return load_config(None, [f"data_dir={tmp_path}"], environ={})


def started(cfg) -> BackgroundScheduler:
    """A paused scheduler with the daemon's job stores, executors and defaults."""
    blocking = schedule.build_scheduler(cfg)
    sched = BackgroundScheduler(jobstores=blocking._jobstores, executors=blocking._executors,
                                job_defaults=blocking._job_defaults,
                                timezone=blocking.timezone)
    sched.start(paused=True)
    return sched


def test_job_is_added_once_and_a_missed_run_survives_a_restart(cfg):
    trigger = schedule.cron_trigger(cfg)
    first = started(cfg)
    job = schedule.ensure_job(first, trigger, {"config": "a.yaml"})
    assert (job.misfire_grace_time, job.coalesce, job.max_instances) == (6 * 3600, True, 1)
    missed = datetime.now(timezone.utc) - timedelta(hours=2)
    job.modify(next_run_time=missed)  # the daemon went down before this run was due

    restarted = started(cfg)  # a new daemon on the same job store
    kept = schedule.ensure_job(restarted, trigger, {"config": "a.yaml"})
    assert kept.next_run_time == missed  # replace_existing=True would have reset it
    assert len(restarted.get_jobs()) == 1
    restarted.remove_job(schedule.JOB_ID)  # before shutting down, which would process it
    for sched in (first, restarted):
        sched.shutdown(wait=False)


def test_a_changed_schedule_or_config_updates_the_stored_job(cfg):
    first = started(cfg)
    schedule.ensure_job(first, schedule.cron_trigger(cfg), {"config": "a.yaml"})
    first.shutdown(wait=False)
    cfg.schedule.cron = "0 7 * * *"
    second = started(cfg)
    job = schedule.ensure_job(second, schedule.cron_trigger(cfg), {"config": "b.yaml"})
    assert "hour='7'" in str(job.trigger) and job.kwargs == {"config": "b.yaml"}
    assert job.next_run_time.hour == 7 and job.next_run_time.minute == 0
    second.shutdown(wait=False)


def test_cron_trigger_uses_the_configured_time_zone(cfg):
    cfg.schedule.timezone = "Europe/Berlin"
    trigger = schedule.cron_trigger(cfg)
    now = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)
    fire = trigger.get_next_fire_time(None, now)
    assert fire.astimezone(timezone.utc) == datetime(2026, 1, 11, 5, 30, tzinfo=timezone.utc)


def test_last_due_issue_date():
    trigger = CronTrigger.from_crontab("30 6 * * *", timezone="UTC")
    before = datetime(2026, 3, 5, 6, 0, tzinfo=timezone.utc)
    after = datetime(2026, 3, 5, 7, 0, tzinfo=timezone.utc)
    assert schedule.last_due_issue(trigger, before) == date(2026, 3, 4)
    assert schedule.last_due_issue(trigger, after) == date(2026, 3, 5)


@pytest.mark.parametrize("code,raises", [(0, False), (7, False), (75, False), (3, True),
                                         (-9, True)])
def test_job_exit_codes(monkeypatch, code, raises):
    calls = []
    monkeypatch.setattr(schedule, "RUNNER", schedule.ChildRunner())  # not stopping
    monkeypatch.setattr(schedule.RUNNER, "run", lambda argv, env: calls.append(
        (argv, env)) or code)
    monkeypatch.setattr(schedule, "utc_today", lambda: date(2026, 3, 5))
    if raises:
        with pytest.raises(schedule.JobFailed, match="2026-03-05"):
            schedule.daily_job("/etc/smcast/smcast.yaml")
    else:
        assert schedule.daily_job("/etc/smcast/smcast.yaml") == code
    argv, env = calls[0]
    assert argv[3:] == ["forecast", "--date", "2026-03-05", "--catch-up", "--verify",
                        "--config", "/etc/smcast/smcast.yaml"]
    assert env["SMCAST_TRIGGER"] == "schedule"


def test_a_stopping_runner_starts_nothing():
    runner = schedule.ChildRunner()
    runner.stop()
    assert runner.run(["false"], {}) is None


def test_catch_up_at_start_runs_now_only_for_missed_dates(cfg, monkeypatch):
    sched = started(cfg)
    monkeypatch.setattr(schedule, "catch_up_dates", lambda c, day: [day])
    missing = schedule.catch_up_now(cfg, sched, schedule.cron_trigger(cfg), {"config": "x"})
    job = sched.get_job("catch-up-at-start")
    assert missing and job.kwargs["issue"] == str(missing[0])
    monkeypatch.setattr(schedule, "catch_up_dates", lambda c, day: [])
    job.remove()
    assert schedule.catch_up_now(cfg, sched, schedule.cron_trigger(cfg), {"config": "x"}) == []
    assert sched.get_job("catch-up-at-start") is None
    sched.shutdown(wait=False)


def test_bad_schedule_settings_are_config_errors(tmp_path):
    from smcast.errors import ConfigError

    with pytest.raises(ConfigError, match="schedule.cron"):
        load_config(None, ["schedule.cron=30 6 * *"], environ={})
    with pytest.raises(ConfigError, match="schedule.timezone"):
        load_config(None, ["schedule.timezone=Mars/Olympus"], environ={})
