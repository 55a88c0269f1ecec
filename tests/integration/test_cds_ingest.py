"""The CDS source offline, at the client boundary: the real ``cdsapi.Client`` talks to a local
fake of the CDS HTTP API that answers with files in the CDS's NetCDF layout."""

from __future__ import annotations

import tempfile
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from smcast.errors import ConfigError, DataUnavailableError
from smcast.grid import Grid
from smcast.ingest.pipeline import ingest
from smcast.sources.cds import (DAILY_DATASET, HOURLY_DATASET, CdsSource, default_client,
                                plan_requests)
from smcast.store import DailyStore
from smcast.testing.cds_fake import FakeCDS
from smcast.testing.era5 import cds_area_subset, era5_grid, synthetic_hourly, write_cds_netcdf
from smcast.variables import VARIABLES
from tests.conftest import AREA, sea_points
from tests.helpers import assert_store_matches

pytestmark = pytest.mark.usefixtures("cds_offline")

START = date(2024, 1, 30)
N_DAYS = 3
BY_CDS_NAME = {v.cds_name: v.name for v in VARIABLES.values() if v.cds_name}


@pytest.fixture(scope="module")
def world():
    lat, lon = era5_grid(AREA[2] - 0.5, AREA[0] + 0.5, AREA[1] - 0.5, AREA[3] + 0.5)
    return synthetic_hourly(lat, lon, START, N_DAYS, seed=3, sea=sea_points(lat, lon))


def responder(world):
    """Answer a request from the synthetic world, cut to its area, as the CDS would."""
    hourly, truth = world

    def respond(dataset: str, request: dict) -> bytes:
        names = [BY_CDS_NAME[v] for v in request["variable"]]
        days = [date(int(request["year"]), int(request["month"]), int(d)) for d in request["day"]]
        if dataset == DAILY_DATASET:
            ds = truth[names].sel(time=[np.datetime64(d, "ns") for d in days])
            ds = ds.rename(time="valid_time").astype(np.float32)
            for n in names:
                ds[n].attrs["units"] = VARIABLES[n].native_units[0]
        else:
            stamps = [np.datetime64(datetime.combine(d, datetime.min.time())
                                    + timedelta(hours=int(t[:2])), "ns")
                      for d in days for t in request["time"]]
            ds = hourly[names].sel(valid_time=stamps)
        ds = cds_area_subset(ds, request.get("area"))
        with tempfile.TemporaryDirectory() as tmp:
            return write_cds_netcdf(ds, Path(tmp) / "x.nc").read_bytes()

    return respond


@pytest.fixture
def cds_cfg(mirror_cfg, monkeypatch):
    mirror_cfg.source.name = "cds"
    mirror_cfg.source.cds.latency_days = 0
    mirror_cfg.source.cds.backoff_seconds = 1.0
    return mirror_cfg


def use_fake(monkeypatch, cds: FakeCDS) -> None:
    monkeypatch.setenv("CDSAPI_URL", cds.url)
    monkeypatch.setenv("CDSAPI_KEY", cds.key)


def days(n: int) -> list[date]:
    return [START + timedelta(days=i) for i in range(n)]


# -- request planning ------------------------------------------------------------------------
def test_daily_plan_splits_by_month_and_shifts_accumulations():
    reqs = plan_requests([date(2024, 1, 30), date(2024, 1, 31), date(2024, 2, 1)], "daily",
                         "month", [42.0, 10.0, 40.0, 12.0], Path("/dl"))
    daily = [r for r in reqs if r.dataset == DAILY_DATASET]
    accum = [r for r in reqs if r.dataset == HOURLY_DATASET]
    assert [r.request["day"] for r in daily] == [["30", "31"], ["01"]]
    assert daily[0].request["daily_statistic"] == "daily_mean"
    assert daily[0].request["time_zone"] == "utc+00:00"
    assert "total_precipitation" not in daily[0].request["variable"]  # never a daily_mean trap
    # the totals of Jan 30, 31 and Feb 1 are the 00 UTC steps of Jan 31, Feb 1 and Feb 2
    assert [(r.request["month"], r.request["day"]) for r in accum] == [
        ("01", ["31"]), ("02", ["01"]), ("02", ["02"])]
    assert all(r.request["time"] == ["00:00"] and r.request["data_format"] == "netcdf"
               for r in accum)
    assert set(accum[0].request["variable"]) == {"total_precipitation", "total_evaporation",
                                                 "runoff", "surface_runoff",
                                                 "surface_solar_radiation_downwards",
                                                 "surface_thermal_radiation_downwards"}
    assert all(r.request["area"] == [42.0, 10.0, 40.0, 12.0] for r in reqs)
    assert len({r.target for r in reqs}) == len(reqs)


def test_hourly_plan_by_day_has_the_closing_step():
    reqs = plan_requests([date(2024, 1, 30), date(2024, 1, 31)], "hourly", "day", None,
                         Path("/dl"))
    assert len(reqs) == 5
    assert reqs[0].request["time"][0] == "00:00" and len(reqs[0].request["time"]) == 24
    assert reqs[-1].request["day"] == ["01"] and reqs[-1].request["time"] == ["00:00"]
    assert "area" not in reqs[0].request


# -- through the fake HTTP API ---------------------------------------------------------------
@pytest.mark.parametrize("mode", ["daily", "hourly"])
def test_cds_ingest_matches_the_truth_and_resumes(cds_cfg, world, monkeypatch, mode):
    cds_cfg.source.cds.mode = mode
    with FakeCDS(responder(world)) as cds:
        use_fake(monkeypatch, cds)
        ingest(cds_cfg, START, START + timedelta(days=N_DAYS - 1))
        asked = len(cds.requests)
        assert cds.tokens_seen == {cds.key}
        # run again: every file is already downloaded, nothing is asked again
        ingest(cds_cfg, START, START + timedelta(days=N_DAYS - 1))
        assert len(cds.requests) == asked
    datasets = {d for d, _ in cds.requests}
    assert datasets == ({DAILY_DATASET, HOURLY_DATASET} if mode == "daily" else {HOURLY_DATASET})
    store = DailyStore(cds_cfg.store_path)
    assert store.complete_days() == days(N_DAYS)
    assert_store_matches(store, world[1], days(N_DAYS), rtol=2e-5, atol_frac=1e-6)


def test_transient_failures_are_retried_with_backoff(cds_cfg, world, monkeypatch):
    sleeps: list[float] = []
    with FakeCDS(responder(world), fail_first=2, fail_status=503) as cds:
        use_fake(monkeypatch, cds)
        source = CdsSource(cds_cfg, Grid.from_config(cds_cfg.grid), sleep=sleeps.append)
        ingest(cds_cfg, START, START, source=source)
    assert sleeps == [1.0, 2.0]
    assert DailyStore(cds_cfg.store_path).complete_days() == [START]


def test_persistent_failure_is_clear_and_leaves_nothing(cds_cfg, world, monkeypatch, caplog):
    cds_cfg.source.cds.retries = 1
    with FakeCDS(responder(world), fail_first=100, fail_status=500) as cds:
        use_fake(monkeypatch, cds)
        source = CdsSource(cds_cfg, Grid.from_config(cds_cfg.grid), sleep=lambda s: None)
        with pytest.raises(DataUnavailableError) as err:
            ingest(cds_cfg, START, START, source=source)
    text = str(err.value)
    assert "failed after 2 attempt(s)" in text and "500 Server Error" in text
    assert cds.key not in text and cds.key not in caplog.text
    assert not cds_cfg.store_path.exists()
    download_dir = cds_cfg.data_dir / "downloads" / "cds"
    assert not list(download_dir.glob("*.part")) and not list(download_dir.glob(".*.part"))


def test_wrong_key_fails_without_showing_it(cds_cfg, world, monkeypatch):
    cds_cfg.source.cds.retries = 0
    with FakeCDS(responder(world)) as cds:
        monkeypatch.setenv("CDSAPI_URL", cds.url)
        monkeypatch.setenv("CDSAPI_KEY", "11111111-wrong-key")
        with pytest.raises(DataUnavailableError) as err:
            ingest(cds_cfg, START, START)
    assert "401" in str(err.value) and "11111111-wrong-key" not in str(err.value)


def test_days_beyond_the_latency_are_not_requested(cds_cfg):
    cds_cfg.source.cds.latency_days = 5
    source = CdsSource(cds_cfg, Grid.from_config(cds_cfg.grid))
    today = date(2024, 2, 10)
    source.check([date(2024, 2, 5)], today=today)
    with pytest.raises(DataUnavailableError, match="lags about 5 days: 2024-02-06"):
        source.check([date(2024, 2, 6)], today=today)


def test_missing_credentials_say_how_to_fix(cds_cfg):
    with pytest.raises(ConfigError, match=r"~/.cdsapirc.*CDSAPI_KEY"):
        default_client(cds_cfg.source.cds)
