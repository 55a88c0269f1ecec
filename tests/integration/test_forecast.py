"""`smcast forecast` end to end on a small demo grid with a tiny model."""

from __future__ import annotations

import json
from datetime import date, timedelta

import numpy as np
import pytest
import rasterio
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from smcast.errors import DataUnavailableError
from smcast.forecast import latest_window, product_path
from smcast.store import DailyStore
from tests.helpers import tiny_forecast_setup

ISSUE = date(2021, 4, 10)  # demo latency 5 days → last forcing day 2021-04-05


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_cache):
    return tiny_forecast_setup(tmp_path_factory.mktemp("forecast"), demo_cache)


def run(sets, *args):
    argv = [*args, *[x for s in sets for x in ("--set", s)]]
    return CliRunner().invoke(main, argv, env={"SMCAST_CONFIG": ""}, catch_exceptions=False)


def test_forecast_products_manifest_and_noop(setup):
    cfg, sets = setup
    first = run(sets, "forecast", "--date", str(ISSUE))
    assert first.exit_code == 0, first.output
    assert "forcing to 2021-04-05, valid 2021-04-06…2021-04-08" in first.stdout
    out = cfg.data_dir / "forecasts"
    manifest_file = out / "20210410" / "smcast_tiny_20210410.json"
    manifest = json.loads(manifest_file.read_text())
    assert manifest["last_forcing_day"] == "2021-04-05" and manifest["leads"] == [1, 2, 3]
    store = DailyStore(cfg.store_path)
    land = int(store.land_mask.sum())
    assert manifest["land_cells"] == land
    # every listed file exists with the recorded checksum
    from smcast.forecast import sha256

    for f in manifest["files"]:
        assert sha256(out / "20210410" / f["path"]) == f["sha256"]
    nc = xr.open_dataset(out / "20210410" / "smcast_tiny_20210410.nc")
    assert int(np.isfinite(nc["swvl1"].isel(time=0)).sum()) == land
    assert nc.sizes["time"] == 3
    raw = xr.open_dataset(out / "20210410" / "smcast_tiny_20210410.nc", mask_and_scale=False)
    assert set(np.unique(raw["verification_flag"].values).tolist()) == {3, 255}
    assert int((raw["consistency_flag"].values != 255).sum()) == land
    tif = out / "20210410" / "smcast_tiny_20210410_swvl1_20210406.tif"
    with rasterio.open(tif) as src:
        band = src.read(1, masked=True)
        assert int(band.count()) == land and src.transform.e < 0
    assert (out / "20210410" / "smcast_tiny_20210410_swvl1_20210406.qml").exists()
    assert (out / "20210410" / "smcast_tiny_20210410.png").stat().st_size > 5000
    # re-running the same issue date is a no-op with its own exit code
    before = manifest_file.read_bytes()
    again = run(sets, "forecast", "--date", str(ISSUE))
    assert again.exit_code == 7 and "nothing to do" in again.stdout
    assert manifest_file.read_bytes() == before
    forced = run(sets, "forecast", "--date", str(ISSUE), "--force")
    assert forced.exit_code == 0
    assert not list(out.glob(".staging-*"))


def test_failure_while_writing_leaves_nothing(setup, monkeypatch):
    cfg, sets = setup
    import smcast.writers.geotiff as geotiff

    calls = {"n": 0}
    real = geotiff.write_cog

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(geotiff, "write_cog", flaky)
    issue = ISSUE + timedelta(days=1)
    result = run(sets, "forecast", "--date", str(issue))
    assert result.exit_code == 1 and "No space left on device" in result.stderr
    out = cfg.data_dir / "forecasts"
    assert not (out / "20210411").exists()
    assert not list(out.glob(".staging-*"))


def test_missing_days_in_the_window_are_named(setup):
    cfg, _ = setup
    store = DailyStore(cfg.store_path)
    with pytest.raises(DataUnavailableError,
                       match=r"lacks 5 day\(s\) of the 25-day window ending 2021-01-20: 2020-12-27"):
        # ask for a window that reaches before the store's first day
        latest_window(store, date(2021, 1, 20), 25)


def test_output_patterns_cannot_escape(tmp_path):
    from smcast.errors import ConfigError

    with pytest.raises(ConfigError, match="writes outside"):
        product_path(tmp_path, "../{issue}.nc", issue="20210410")


def test_products_pass_cf_and_cog_validation(setup):
    import shutil
    import subprocess

    import cf_xarray  # noqa: F401

    from smcast.writers.geotiff import validate_cog

    cfg, sets = setup
    out = cfg.data_dir / "forecasts" / "20210410"
    if not out.exists():
        assert run(sets, "forecast", "--date", str(ISSUE)).exit_code == 0
    nc = out / "smcast_tiny_20210410.nc"
    checker = shutil.which("compliance-checker")
    if checker is None:
        pytest.skip("compliance-checker is not installed (pip install -e '.[test]')")
    proc = subprocess.run([checker, "-t", "cf:1.11", "-t", "acdd:1.3", "-c", "normal", str(nc)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    ds = xr.open_dataset(nc)
    assert ds.cf["volume_fraction_of_condensed_water_in_soil"].name == "swvl1"
    assert {"X", "Y", "T"} <= set(ds.cf.axes)
    for tif in sorted(out.glob("*.tif")):
        assert validate_cog(tif) == [], tif.name


def test_second_run_while_one_holds_the_lock_exits_busy(setup):
    from smcast.forecast import run_lock

    cfg, sets = setup
    with run_lock((cfg.data_dir / "forecasts").resolve()):
        busy = run(sets, "forecast", "--date", str(ISSUE), "--force")
    assert busy.exit_code == 75 and "already running" in busy.stderr


def test_recent_day_predictions_cached_per_window(setup, tmp_path, monkeypatch):
    """The consistency layer re-runs lead 1 on the recent days: a second run predicts nothing,
    a window moved by one day predicts one new day, and cached results equal fresh ones."""
    from smcast.forecast import recent_consistency
    from smcast.model.package import load_package
    from smcast.model.registry import current_name, model_path
    from smcast.model.wrapper import SoilMoistureModel
    from smcast.train.data import load_cells

    cfg, _ = setup
    store = DailyStore(cfg.store_path)
    model = load_package(model_path(cfg, current_name(cfg)))
    last = date(2021, 3, 20)
    days = model.seq_len + cfg.forecast.consistency_days

    def window(end: date):
        return load_cells(store, end - timedelta(days=days - 1), end, list(model.dynamic_inputs),
                          list(model.static_inputs), model.variant.deep)

    calls = []
    predict = SoilMoistureModel.predict
    monkeypatch.setattr(SoilMoistureModel, "predict",
                        lambda self, *a, **k: calls.append(1) or predict(self, *a, **k))
    cache = tmp_path / "cache"
    fresh = recent_consistency(model, window(last), 4096)
    assert len(calls) == cfg.forecast.consistency_days
    calls.clear()
    first = recent_consistency(model, window(last), 4096, cache)
    again = recent_consistency(model, window(last), 4096, cache)
    assert len(calls) == cfg.forecast.consistency_days  # all in the first cached run, none after
    np.testing.assert_array_equal(first, fresh)
    np.testing.assert_array_equal(again, fresh)
    calls.clear()
    recent_consistency(model, window(last - timedelta(days=1)), 4096, cache)
    assert len(calls) == 1  # one window older: only its first day is new
    calls.clear()
    half = window(last).subset(np.arange(0, store.land_cells // 2))
    recent_consistency(model, half, 4096, cache)  # other cells, other keys
    assert len(calls) == cfg.forecast.consistency_days
