"""Operations end to end on a small demo grid: verify, catch-up, the run ledger and status,
concurrent runs, SIGTERM mid-run, and the daemon's scheduled run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from smcast import schedule
from smcast.catchup import catch_up_dates, run_catch_up
from smcast.cli import main
from smcast.forecast import run_forecast
from smcast.ledger import Ledger
from smcast.outputs import sha256
from smcast.physics import deep_storage, direction, water_input
from smcast.status import collect_status
from smcast.store import DailyStore
from smcast.verify import run_verify
from tests.helpers import tiny_forecast_setup

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(tmp_path, demo_cache):
    return tiny_forecast_setup(tmp_path / "data", demo_cache)


def cli(sets: list[str], *args: str, env: dict[str, str] | None = None):
    argv = [*args, *[x for s in sets for x in ("--set", s)]]
    return CliRunner().invoke(main, argv, env={"SMCAST_CONFIG": "", **(env or {})},
                              catch_exceptions=False)


def spawn(sets: list[str], *args: str, trigger: str = "manual") -> subprocess.Popen:
    argv = [sys.executable, "-m", "smcast", *args, *[x for s in sets for x in ("--set", s)]]
    env = {**os.environ, "SMCAST_CONFIG": "", "SMCAST_TRIGGER": trigger}
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def outputs(cfg) -> list[Path]:
    return sorted(p for p in (cfg.data_dir / "forecasts").rglob("*") if p.is_file()
                  and p.name != ".smcast-forecast.lock")


def expected_flags(store: DailyStore, pred: np.ndarray, valid: date, snow_sign: str) -> np.ndarray:
    """Eq. 19 flags recomputed from the store with xarray (independent of smcast.verify)."""
    ds = store.open().sel(time=slice(str(valid - timedelta(days=2)), str(valid)))
    mask = store.land_mask
    cube = {v: ds[v].values[:, mask].T for v in ("swvl1", "swvl2", "swvl3", "tp", "e", "ro", "sd")}
    w = water_input(cube["tp"], cube["e"], cube["ro"], cube["sd"],
                    deep=deep_storage(cube["swvl2"], cube["swvl3"]), snow_sign=snow_sign)
    d = direction(w, cube["swvl1"])[:, -1]
    s = d * (cube["swvl1"][:, -2] - pred)
    return np.where(s < 0, 0, np.where(s > 0, 1, 2))


def test_verify_fills_flags_when_the_valid_day_arrives_and_the_table_grows(setup):
    cfg, sets = setup
    run_forecast(cfg, date(2021, 4, 10))  # L = 04-05, valid 04-06 … 04-08
    first = run_verify(cfg)
    assert (first.days, first.pending) == (0, 3)
    out = cfg.data_dir / "forecasts" / "20210410"
    with netCDF4.Dataset(out / "smcast_tiny_20210410.nc") as nc:
        assert set(np.unique(nc["verification_flag"][:].filled(255))) == {3, 255}

    run_forecast(cfg, date(2021, 4, 12))  # brings the store to 04-07
    second = run_verify(cfg)
    assert second.days == 2  # 04-06 and 04-07 of the first forecast
    store = DailyStore(cfg.store_path)
    mask = store.land_mask
    manifest = json.loads((out / "smcast_tiny_20210410.json").read_text())
    assert sorted(manifest["verified"]) == ["2021-04-06", "2021-04-07"]
    with netCDF4.Dataset(out / "smcast_tiny_20210410.nc") as nc:
        flags = nc["verification_flag"][:].filled(255)
        pred = nc["swvl1"][:].filled(np.nan)
    for i, valid in enumerate([date(2021, 4, 6), date(2021, 4, 7)]):
        want = expected_flags(store, pred[i][mask], valid, manifest["snow_sign"])
        np.testing.assert_array_equal(flags[i][mask], want)
        assert (flags[i][~mask] == 255).all()
        with rasterio.open(out / manifest["products"]["verification_flag"][str(valid)]) as src:
            np.testing.assert_array_equal(src.read(1)[::-1], flags[i])  # north-up raster
    assert set(np.unique(flags[2])) <= {3, 255}  # 04-08 is not in the store yet
    for item in manifest["files"]:
        assert sha256(out / item["path"]) == item["sha256"], item["path"]

    table = Ledger.for_config(cfg).verification()
    assert list(table["lead"]) == [1, 2] and set(table["issue_date"]) == {"2021-04-10"}
    obs = store.open()["swvl1"].sel(time="2021-04-06").values[mask]
    persist = store.open()["swvl1"].sel(time="2021-04-05").values[mask]
    row = table.iloc[0]
    assert row["r"] == pytest.approx(np.corrcoef(pred[0][mask], obs)[0, 1], rel=1e-5)
    assert row["persistence_rmse"] == pytest.approx(np.sqrt(np.mean((persist - obs) ** 2)),
                                                    rel=1e-5)
    assert row["n_consistent"] == int((flags[0][mask] == 0).sum())
    assert run_verify(cfg).days == 0  # nothing new: idempotent
    assert len(Ledger.for_config(cfg).verification()) == 2


def test_three_day_outage_is_caught_up_oldest_first(setup):
    cfg, sets = setup
    run_forecast(cfg, date(2021, 4, 10))
    today = date(2021, 4, 14)  # 04-11, 04-12 and 04-13 were missed
    assert catch_up_dates(cfg, today) == [date(2021, 4, d) for d in (11, 12, 13, 14)]
    results = run_catch_up(cfg, today)
    assert [r.issue for r in results] == [date(2021, 4, d) for d in (11, 12, 13, 14)]
    runs = Ledger.for_config(cfg).runs(command="forecast")[::-1]
    assert [r.issue_date for r in runs] == [f"2021-04-{d}" for d in (10, 11, 12, 13, 14)]
    assert all(r.status == "ok" for r in runs)
    assert catch_up_dates(cfg, today) == []
    cfg.operations.catch_up_days = 2  # an outage longer than the window: only its end
    assert catch_up_dates(cfg, date(2021, 4, 18)) == [date(2021, 4, 17), date(2021, 4, 18)]


def test_a_fresh_installation_starts_with_today(setup):
    cfg, _ = setup
    assert catch_up_dates(cfg, date(2021, 4, 14)) == [date(2021, 4, 14)]


def test_two_runs_started_at_once_make_one_forecast_and_one_busy_exit(setup):
    cfg, sets = setup
    procs = [spawn(sets, "forecast", "--date", "2021-04-10") for _ in range(2)]
    results = sorted((p.wait(120), p.stderr.read()) for p in procs)
    assert [code for code, _ in results] == [0, 75], results
    assert "already running" in results[1][1]
    assert len(list((cfg.data_dir / "forecasts").glob("*/*.json"))) == 1
    statuses = sorted(r.status for r in Ledger.for_config(cfg).runs())
    assert statuses == ["busy", "ok"]


def test_sigterm_mid_run_leaves_nothing_and_the_next_run_completes(setup):
    cfg, sets = setup
    lock = cfg.data_dir / "forecasts" / ".smcast-forecast.lock"
    proc = spawn(sets, "forecast", "--date", "2021-04-10", trigger="cron")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and f"pid {proc.pid}" not in _read(lock):
        time.sleep(0.01)  # the run holds the lock: it is past start-up, mid-run
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 143, proc.stderr.read()
    assert "terminated" in proc.stderr.read()
    assert outputs(cfg) == []
    assert not list((cfg.data_dir / "forecasts").glob(".staging-*"))
    last = Ledger.for_config(cfg).runs(1)[0]
    assert (last.status, last.exit_code, last.trigger) == ("interrupted", 143, "cron")
    report = collect_status(cfg, today=date(2021, 4, 10))
    assert not report.healthy and "interrupted" in report.text()

    again = cli(sets, "forecast", "--date", "2021-04-10", env={"SMCAST_TRIGGER": "cron"})
    assert again.exit_code == 0, again.output
    assert collect_status(cfg, today=date(2021, 4, 10)).healthy


def test_sigkill_is_recorded_as_abandoned_and_leftovers_are_cleaned(setup):
    cfg, sets = setup
    out = cfg.data_dir / "forecasts"
    proc = spawn(sets, "forecast", "--date", "2021-04-10", trigger="systemd")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and f"pid {proc.pid}" not in _read(
            out / ".smcast-forecast.lock"):
        time.sleep(0.01)
    (out / ".staging-2021-04-10-1").mkdir()  # what a killed run leaves
    proc.kill()
    proc.wait(60)
    report = collect_status(cfg, today=date(2021, 4, 10))
    assert "abandoned" in report.text() and not report.healthy
    run_forecast(cfg, date(2021, 4, 10))
    assert not list(out.glob(".staging-*"))


def test_status_cli_exit_codes_and_report(setup):
    cfg, sets = setup
    failed = cli(sets, "forecast", "--date", "2021-04-10", "--model", "nope",
                 env={"SMCAST_TRIGGER": "kubernetes"})
    assert failed.exit_code == 6
    status = cli(sets, "status")
    assert status.exit_code == 1
    assert "the last scheduled run (forecast 2021-04-10, kubernetes" in status.stdout
    assert "no model named 'nope'" in status.stdout
    run_forecast(cfg, date(2021, 4, 10))
    run_forecast(cfg, date(2021, 4, 13))
    run_verify(cfg)
    report = cli(sets, "report", "--days", "3660", "--output", str(cfg.data_dir / "rep"))
    assert report.exit_code == 0, report.output
    assert "3 verified forecast-days" in report.stdout
    assert (cfg.data_dir / "rep" / "report.html").exists()


def test_the_daemon_runs_the_job_on_its_trigger(setup, monkeypatch):
    from apscheduler.triggers.interval import IntervalTrigger

    cfg, sets = setup
    cfg.schedule.catch_up_at_start = False
    monkeypatch.setattr(schedule, "utc_today", lambda: date(2021, 4, 10))
    monkeypatch.chdir(REPO)
    box: dict = {}
    thread = threading.Thread(target=lambda: box.update(line=schedule.serve(
        cfg, IntervalTrigger(seconds=1), install_signals=False,
        on_start=lambda s: box.update(scheduler=s))))
    thread.start()
    manifest = cfg.data_dir / "forecasts" / "20210410" / "smcast_tiny_20210410.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _scheduled_ok(cfg):
        time.sleep(0.2)
    schedule.stop(box["scheduler"])
    thread.join(150)
    assert manifest.exists() and _scheduled_ok(cfg)
    assert box["line"].startswith("schedule: stopped;")
    runs = Ledger.for_config(cfg).runs()
    assert {r.trigger for r in runs} == {"schedule"}
    assert {r.command for r in runs} == {"forecast", "verify"}


def _scheduled_ok(cfg) -> bool:
    runs = Ledger.for_config(cfg).runs(command="verify")
    return any(r.status == "ok" and r.trigger == "schedule" for r in runs)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def test_snapshot_config_reloads(setup):
    cfg, _ = setup
    from smcast.config import load_config

    again = load_config(schedule.write_snapshot(cfg), environ={})
    assert again == cfg


def test_sigterm_stops_the_daemon_and_its_running_job_cleanly(setup):
    cfg, sets = setup
    lock = cfg.data_dir / "forecasts" / ".smcast-forecast.lock"
    daemon = spawn(sets, "schedule")  # no forecast yet: it runs the job at once (catch-up)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not ("pid" in _read(lock) and
                                                f"pid {daemon.pid} " not in _read(lock)):
        time.sleep(0.01)  # the job's own process holds the lock
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(150) == 0
    assert daemon.stdout.read().startswith("schedule: stopped;")
    assert "asking the running job" in daemon.stderr.read()
    assert outputs(cfg) == []
    run = Ledger.for_config(cfg).runs(1)[0]
    assert (run.command, run.status, run.trigger) == ("forecast", "interrupted", "schedule")
