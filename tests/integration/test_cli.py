"""The command line end to end: exit codes, summary lines, --config, --set, SMCAST_CONFIG."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date, timedelta

import pytest
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from tests.conftest import AREA, hourly_mirror

START = date(2024, 1, 30)


def run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, list(args), env=env or {"SMCAST_CONFIG": ""},
                              catch_exceptions=False)


def test_ingest_directory_then_info(tmp_path):
    hourly_mirror(tmp_path / "mirror", START, 2)
    store = tmp_path / "out.zarr"
    result = run("ingest", "--start", "2024-01-30", "--end", "2024-01-31", "--input",
                 str(tmp_path / "mirror"), "--store", str(store), "--set", f"grid.area={AREA}",
                 "--set", f"data_dir={tmp_path}")
    assert result.exit_code == 0, result.output
    assert "ingested 2 day(s) 2024-01-30…2024-01-31 from directory" in result.stdout
    assert xr.open_zarr(store).sizes["time"] == 2
    info = run("info", "--store", str(store), "--set", f"grid.area={AREA}")
    assert info.exit_code == 0
    assert "latest complete day: 2024-01-31" in info.stdout and "gaps: none" in info.stdout
    assert "land cells: 15" in info.stdout and "gpu:" in info.stdout


@pytest.mark.parametrize("args, code, words", [
    (["ingest", "--start", "2024-02-02", "--end", "2024-02-01"], 2, "is after end"),
    (["ingest", "--start", "2024-13-01", "--end", "2024-02-01"], 2, "is not a date"),
    (["ingest", "--start", "2024-01-30", "--end", "2024-01-31", "--source", "ftp"], 2,
     "unknown source 'ftp'; valid sources: cds, demo, directory"),
    (["ingest", "--start", "2024-01-30", "--end", "2024-02-05"], 4, "newest complete day"),
    (["info", "--set", "grid.resolutoin=1"], 2, "unknown key 'grid.resolutoin'"),
])
def test_errors_exit_with_their_codes(tmp_path, args, code, words):
    hourly_mirror(tmp_path / "mirror", START, 2)
    result = run(*args, "--set", f"grid.area={AREA}", "--set", f"data_dir={tmp_path}",
                 "--set", "source.name=directory",
                 "--set", f"source.directory.path={tmp_path / 'mirror'}")
    assert result.exit_code == code, result.output
    assert words in result.stderr
    assert not (tmp_path / "store.zarr").exists()


def test_config_file_from_environment_and_option(tmp_path):
    cfg = tmp_path / "smcast.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'from-env'}\n")
    out = run("info", env={"SMCAST_CONFIG": str(cfg)})
    assert f"data_dir: {tmp_path / 'from-env'}" in out.stdout
    other = tmp_path / "other.yaml"
    other.write_text(f"data_dir: {tmp_path / 'from-option'}\n")
    out = run("info", "--config", str(other), env={"SMCAST_CONFIG": str(cfg)})
    assert f"data_dir: {tmp_path / 'from-option'}" in out.stdout


def test_console_script_runs_the_demo_offline(tmp_path, demo_cache):
    """The installed `smcast` entry point: demo ingest in a fresh folder, no network."""
    env = {**os.environ, "SMCAST_CONFIG": ""}
    end = date.today() - timedelta(days=6)
    cmd = [sys.executable, "-m", "smcast.cli", "ingest", "--start", str(end - timedelta(days=2)),
           "--end", str(end), "--set", "grid.area=[52,-2,48,4]",
           "--set", f"source.demo.epoch={end - timedelta(days=20)}",
           "--set", f"source.demo.cache_dir={demo_cache}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ingested 3 day(s)" in proc.stdout
    assert "land cells" in proc.stderr  # the land-cell count is logged
    assert (tmp_path / "smcast-data" / "store.zarr").is_dir()


def test_forecast_refuses_a_model_that_does_not_fit_the_store(tmp_path, demo_cache):
    """The bundled global model on a regional store: the store is brought up to date, then the
    model/store mismatch is refused with exit code 6 and no product is written."""
    issue = date(2021, 3, 10)
    args = ["forecast", "--date", str(issue), "--set", f"data_dir={tmp_path}",
            "--set", "grid.area=[52,-2,48,4]", "--set", "source.demo.epoch=2021-01-01",
            "--set", f"source.demo.cache_dir={demo_cache}"]
    result = run(*args)
    assert result.exit_code == 6, result.output
    assert "grid" in result.stderr and "demo-phys" in result.stderr
    from smcast.store import DailyStore

    store = DailyStore(tmp_path / "store.zarr")
    assert store.days()[0] == date(2021, 1, 28) and store.latest_complete_day() == date(2021, 3, 5)
    assert not (tmp_path / "forecasts").exists() or not any((tmp_path / "forecasts").glob("*/*"))
