"""The CDS source under faults: the real ``cdsapi`` client against FakeCDS, which fails, stalls,
queues or cuts off on purpose. Sleep and clock are injected: nothing waits for real except the
socket timeouts (0.5 s), and every ingest is one day over a tiny box (two requests)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from smcast.config import load_config
from smcast.grid import Grid
from smcast.ingest.pipeline import ingest
from smcast.sources.base import SOURCES
from smcast.sources.cds import CdsSource
from smcast.testing.cds_fake import FakeCDS
from smcast.testing.era5 import era5_grid, synthetic_hourly
from tests.conftest import AREA, sea_points
from tests.helpers import snapshot
from tests.integration.test_cds_ingest import responder

pytest.importorskip("cdsapi")
pytestmark = [pytest.mark.usefixtures("cds_offline"), pytest.mark.timeout(60)]

START = date(2024, 1, 30)
SETS = [f"grid.area={AREA}", "source.name=cds", "source.cds.latency_days=0",
        "source.cds.backoff_seconds=1", "source.cds.retries=2", "source.cds.poll_seconds=3600",
        "source.cds.timeout_seconds=0.5"]


class FakeTime:
    """Injected ``sleep``/``clock``: sleeping advances the clock instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def world():
    lat, lon = era5_grid(AREA[2] - 0.5, AREA[0] + 0.5, AREA[1] - 0.5, AREA[3] + 0.5)
    return synthetic_hourly(lat, lon, START, 2, seed=5, sea=sea_points(lat, lon))


@pytest.fixture
def clock(monkeypatch) -> FakeTime:
    """Every CdsSource made from now on (CLI included) sleeps and reads time from this."""
    fake = FakeTime()
    monkeypatch.setitem(SOURCES, "cds", functools.partial(CdsSource, sleep=fake.sleep,
                                                          clock=fake.clock))
    return fake


def config(root: Path, *sets: str):
    return load_config(None, [f"data_dir={root}", *SETS, *sets], environ={})


def run_cli(root: Path, day: date, *sets: str):
    args = ["ingest", "--start", str(day), "--end", str(day), "--set", f"data_dir={root}"]
    for item in (*SETS, *sets):
        args += ["--set", item]
    return CliRunner().invoke(main, args, env={"SMCAST_CONFIG": ""}, catch_exceptions=False)


@contextlib.contextmanager
def serve(monkeypatch, responder, **kwargs) -> Iterator[FakeCDS]:
    """A started FakeCDS that the default client (CDSAPI_URL/CDSAPI_KEY) talks to."""
    with FakeCDS(responder, **kwargs) as cds:
        monkeypatch.setenv("CDSAPI_URL", cds.url)
        monkeypatch.setenv("CDSAPI_KEY", cds.key)
        yield cds


def leftovers(root: Path) -> list[Path]:
    """Partial or temporary files anywhere under the data directory."""
    return [p for p in root.rglob("*") if p.name.endswith((".part", ".download", ".tmp"))]


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    with xr.open_zarr(path) as ds:
        return {name: ds[name].values for name in ds.data_vars}


@pytest.fixture(scope="module")
def clean(world, tmp_path_factory) -> dict[str, np.ndarray]:
    """The store a fault-free run writes for START (what every recovered run must equal)."""
    root = tmp_path_factory.mktemp("clean")
    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        with serve(mp, responder(world)) as cds:
            ingest(config(root), START, START,
                   source=CdsSource(config(root), _grid(), sleep=_no_sleep))
            assert len(cds.requests) == 2
    finally:
        mp.undo()
    return store_arrays(config(root).store_path)


def _grid() -> Grid:
    return Grid.from_config(config(Path("/unused")).grid)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"a fault-free run slept {seconds} s")


def assert_same(store: Path, clean: dict[str, np.ndarray]) -> None:
    got = store_arrays(store)
    assert got.keys() == clean.keys()
    for name, values in clean.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


# -- transient faults: retried with doubling backoff, same store -------------------------------
@pytest.mark.parametrize("stage, faults, jobs", [
    ("submit", [500, 502], 2),    # failed submissions create no job
    ("poll", [503, 500], 2),      # the same job is polled again, not submitted again
    ("download", [502, 503], 2),  # the same job's file is downloaded again
    ("poll", ["stall"], 2),       # a status poll that hangs past timeout_seconds
    ("submit", ["stall"], 2),
    ("download", ["stall"], 2),
    ("download", ["truncate"], 2),  # full Content-Length, half the bytes, hang up
])
def test_transient_fault_is_retried_and_the_store_equals_a_clean_run(
        tmp_path, world, clean, clock, monkeypatch, stage, faults, jobs):
    with serve(monkeypatch, responder(world), faults={stage: faults}, stall_seconds=3) as cds:
        result = run_cli(tmp_path, START)
    assert result.exit_code == 0, result.output
    assert cds.faults[stage] == []  # every fault was served
    assert clock.sleeps == [1.0, 2.0][:len(faults)]  # backoff_seconds, doubled
    assert len(cds.requests) == jobs
    assert_same(config(tmp_path).store_path, clean)
    assert not leftovers(tmp_path)
    assert "retrying in 1 s" in result.stderr


def test_file_that_is_not_netcdf_is_refused_and_asked_again(tmp_path, world, clean, clock,
                                                            monkeypatch):
    good, served = responder(world), []

    def error_page_first(dataset: str, request: dict) -> bytes:
        served.append(dataset)
        return b"<html>503 busy</html>" if len(served) == 1 else good(dataset, request)

    with serve(monkeypatch, error_page_first) as cds:
        result = run_cli(tmp_path, START)
    assert result.exit_code == 0, result.output
    assert len(cds.requests) == 3  # the bad job's request was submitted again
    assert clock.sleeps == [1.0]
    assert "neither NetCDF nor GRIB" in result.stderr
    assert_same(config(tmp_path).store_path, clean)
    assert not leftovers(tmp_path)


# -- persistent faults: exit code, clear message, nothing changed, nothing partial ------------
def _with_day_one(tmp_path, world, monkeypatch) -> str:
    """A store holding START (fault-free); returns its snapshot."""
    with serve(monkeypatch, responder(world)):
        assert run_cli(tmp_path, START).exit_code == 0
    return snapshot(config(tmp_path).store_path)


@pytest.mark.parametrize("faults, code, words", [
    ({"submit": [500] * 9}, 4, "500 Server Error"),
    ({"poll": [503] * 9}, 4, "503 Server Error"),
    ({"download": [502] * 9}, 4, "DownloadError: Download failed: downloaded 0 byte(s)"),
    ({"submit": ["stall"] * 9}, 4, "ReadTimeout"),
    ({"download": ["truncate"] * 9}, 4, "ChunkedEncodingError"),
])
def test_persistent_fault_exits_4_and_leaves_the_store_alone(tmp_path, world, clock, monkeypatch,
                                                             faults, code, words):
    before = _with_day_one(tmp_path, world, monkeypatch)
    clock.sleeps.clear()
    with serve(monkeypatch, responder(world), faults=faults, stall_seconds=3):
        result = run_cli(tmp_path, START + timedelta(days=1))
    assert result.exit_code == code, result.output
    message = result.stderr.splitlines()[-1]
    assert message.startswith("smcast: error: CDS request for ")
    assert "(derived-era5-land-daily-statistics) failed after 3 attempt(s)" in message
    assert words in message and "rerun to resume" in message
    assert clock.sleeps == [1.0, 2.0]
    assert snapshot(config(tmp_path).store_path) == before
    assert not leftovers(tmp_path)
    # the failed request left no file; only day one's two downloads are there
    assert len(list((tmp_path / "downloads" / "cds").iterdir())) == 2


def test_persistently_bad_file_exits_3(tmp_path, clock, monkeypatch):
    with serve(monkeypatch, lambda dataset, request: b"\x00" * 64) as cds:
        result = run_cli(tmp_path, START)
    assert result.exit_code == 3, result.output
    assert "failed after 3 attempt(s): the CDS sent a file that is neither NetCDF nor GRIB" \
        in result.stderr
    assert len(cds.requests) == 3  # submitted again each time
    assert not leftovers(tmp_path) and not any((tmp_path / "downloads" / "cds").iterdir())
    assert not config(tmp_path).store_path.exists()


def test_interrupted_download_leaves_nothing_partial(tmp_path, world, clock, monkeypatch):
    from ecmwf.datastores.processing import Results

    def interrupt(self, target: str) -> None:  # the file is written, the check is not done
        assert Path(target).stat().st_size > 0
        raise KeyboardInterrupt

    monkeypatch.setattr(Results, "_check_size", interrupt)
    with serve(monkeypatch, responder(world)):
        with pytest.raises(KeyboardInterrupt):
            ingest(config(tmp_path), START, START)
    assert not leftovers(tmp_path) and not any((tmp_path / "downloads" / "cds").iterdir())


# -- the queue limit ---------------------------------------------------------------------------
def test_request_queued_too_long_is_abandoned_then_resumed(tmp_path, world, clean, clock,
                                                           monkeypatch):
    with serve(monkeypatch, responder(world), queued_polls=10**9) as cds:
        first = run_cli(tmp_path, START)
        assert first.exit_code == 4, first.output
        name = CdsSource(config(tmp_path), _grid()).plan([START])[0].target.name
        assert (f"smcast: error: CDS request {name} (derived-era5-land-daily-statistics) still "
                "queued after 12 h (source.cds.max_queue_hours); the CDS is busy: run again "
                "later (downloads resume) or raise the limit") in first.stderr
        assert clock.now == 12 * 3600  # polled up to the limit, not beyond
        assert max(clock.sleeps) == 3600 and len(clock.sleeps) < 40  # poll_seconds caps pauses
        assert len(cds.requests) == 1 and len(cds.deleted) == 1  # not retried; cancelled
        assert not leftovers(tmp_path) and not any((tmp_path / "downloads" / "cds").iterdir())
        assert not config(tmp_path).store_path.exists()

        cds.queued_polls = 0  # the CDS is back to normal: the next run submits again
        clock.sleeps.clear()
        second = run_cli(tmp_path, START)
    assert second.exit_code == 0, second.output
    assert len(cds.requests) == 3 and len(cds.deleted) == 1
    assert clock.sleeps == []  # ready at the first poll, no backoff
    assert_same(config(tmp_path).store_path, clean)


@pytest.mark.parametrize("hours, polls, code, sleeps", [
    (0.002, 3, 0, [1.0, 1.5, 2.25] * 2),  # 7.2 s: each request is ready after 4.75 s
    (0.002, 4, 0, [1.0, 1.5, 2.25, 2.45] * 2),  # ready at the poll made at the deadline
    (0.001, 4, 4, [1.0, 1.5, 1.1]),  # 3.6 s: the last pause stops at the deadline
])
def test_polling_pauses_grow_up_to_the_deadline(tmp_path, world, clock, monkeypatch, hours,
                                                polls, code, sleeps):
    with serve(monkeypatch, responder(world), queued_polls=polls) as cds:
        result = run_cli(tmp_path, START, f"source.cds.max_queue_hours={hours}",
                         "source.cds.poll_seconds=60")
    assert result.exit_code == code, result.output
    assert clock.sleeps == pytest.approx(sleeps)
    assert len(cds.deleted) == (code == 4)
    if code:
        assert f"still queued after {hours:g} h" in result.stderr
