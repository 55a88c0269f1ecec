"""Ingest on dask.distributed: the same store in-process, on a LocalCluster started by smcast,
and on a running scheduler given by ``ingest.scheduler``; a task's error reaches the caller
unchanged; an unreachable scheduler is a config error (exit 2) that touches nothing."""

from __future__ import annotations

import logging
import os
import shutil
import signal
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from smcast.config import Config, load_config
from smcast.errors import InputDataError
from smcast.ingest import cluster, days
from smcast.ingest.pipeline import ingest
from smcast.sources.base import make_source
from tests.conftest import AREA, hourly_mirror

START = date(2024, 1, 30)
N_DAYS = 6  # more than 2 days per worker ahead (2 workers): the in-flight window refills
LAST = START + timedelta(days=N_DAYS - 1)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """Hourly 0.1° files for START…LAST (and the 00 UTC step after), shared by the module."""
    root = tmp_path_factory.mktemp("dask-mirror") / "mirror"
    hourly_mirror(root, START, N_DAYS)
    return root


@pytest.fixture(scope="module")
def scheduler() -> str:
    """The address of a LocalCluster (2 single-threaded worker processes) for the module,
    standing in for a remote dask cluster."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as local:
        yield local.scheduler_address


def config(root: Path, mirror: Path, *extra: str) -> Config:
    return load_config(None, [f"data_dir={root}", f"grid.area={AREA}", "source.name=directory",
                              f"source.directory.path={mirror}", "ingest.batch_days=4",
                              *extra], environ={})


@pytest.fixture(scope="module")
def in_process(mirror, tmp_path_factory) -> Path:
    """The reference: START…LAST ingested in this process (workers=1)."""
    root = tmp_path_factory.mktemp("in-process")
    ingest(config(root, mirror, "ingest.workers=1"), START, LAST)
    return root / "store.zarr"


def assert_same_store(got: Path, want: Path) -> None:
    """Every array equal (NaN where NaN): variables, complete flags, statics, the time axis."""
    a, b = xr.open_zarr(got), xr.open_zarr(want)
    assert sorted(a.variables) == sorted(b.variables)
    assert list(a["time"].values) == list(b["time"].values)
    assert a["complete"].values.all() and a.sizes["time"] == N_DAYS
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    assert a.attrs == b.attrs


def test_local_cluster_gives_the_in_process_store(mirror, in_process, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="smcast")
    summary = ingest(config(tmp_path, mirror, "ingest.workers=2"), START, LAST)
    assert summary.written == N_DAYS
    assert "local dask cluster: 2 worker process(es), memory limit 4GiB" in caplog.text
    assert_same_store(tmp_path / "store.zarr", in_process)


def test_scheduler_address_gives_the_in_process_store(mirror, in_process, scheduler, tmp_path,
                                                       caplog):
    caplog.set_level(logging.INFO, logger="smcast")
    # workers=1 would mean in-process, but a configured scheduler takes multi-day ranges
    cfg = config(tmp_path, mirror, "ingest.workers=1", f"ingest.scheduler={scheduler}")
    ingest(cfg, START, LAST)
    assert f"dask scheduler {scheduler}: 2 worker(s), 2 thread(s)" in caplog.text
    assert_same_store(tmp_path / "store.zarr", in_process)


def test_task_error_reaches_the_caller_unchanged(mirror, scheduler, tmp_path):
    """Wrong units in the 4th day's file, found on a worker: the same InputDataError (type,
    message, exit code) as in-process, and the same days kept before it."""
    bad = tmp_path / "mirror"
    shutil.copytree(mirror, bad)
    path = bad / f"era5land_{START + timedelta(days=3):%Y%m%d}.nc"
    ds = xr.load_dataset(path)
    ds["t2m"].attrs["units"] = "degC"
    path.unlink()
    ds.to_netcdf(path)
    errors, kept = [], []
    for name, extra in (("one", "ingest.workers=1"), ("dask", f"ingest.scheduler={scheduler}")):
        with pytest.raises(InputDataError) as err:
            ingest(config(tmp_path / name, bad, extra), START, LAST)
        errors.append(str(err.value))
        kept.append(tmp_path / name / "store.zarr")
    assert errors[0] == errors[1] and "t2m has units 'degC'" in errors[0]
    a, b = (xr.open_zarr(p) for p in kept)
    np.testing.assert_array_equal(a["complete"].values, b["complete"].values)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_a_worker_killed_mid_ingest_is_replaced(mirror, in_process, scheduler, tmp_path,
                                                 monkeypatch):
    """SIGKILL of a worker once the first day has arrived (what the nanny does to a worker over
    its memory limit): it is restarted, dask recomputes what it lost (the reader included),
    and the store is still the in-process one."""
    from distributed import Client

    with Client(scheduler, set_as_default=False) as client:
        victim = sorted(client.run(os.getpid).values())[0]
    killed: list[int] = []
    real = days._outcome

    def outcome_then_kill(day, future):
        result = real(day, future)
        if not killed:
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
        return result

    monkeypatch.setattr(days, "_outcome", outcome_then_kill)
    ingest(config(tmp_path, mirror, f"ingest.scheduler={scheduler}"), START, LAST)
    assert killed
    assert_same_store(tmp_path / "store.zarr", in_process)
    with Client(scheduler, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=30)  # the module's cluster whole again


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), env={"SMCAST_CONFIG": ""}, catch_exceptions=False)


@pytest.mark.parametrize("address", ["tcp://127.0.0.1:1",  # nobody listens (connect timeout)
                                     "tls://127.0.0.1:1"])  # refused: no TLS settings
def test_unreachable_scheduler_is_a_config_error(mirror, tmp_path, monkeypatch, address):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 2.0)
    result = invoke("ingest", "--start", str(START), "--end", str(LAST), "--input", str(mirror),
                    "--set", f"data_dir={tmp_path / 'data'}", "--set", f"grid.area={AREA}",
                    "--set", f"ingest.scheduler={address}")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "ingest.scheduler" in text and address in text
    assert "`dask scheduler`" in text and "ingest.scheduler: null" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "data").exists()  # no store, no lock file, not even the folder


@pytest.mark.parametrize("setting, words", [
    ("ingest.scheduler=10.0.0.5:8786", "not a dask scheduler address"),
    ("ingest.scheduler=tcp://", "not a dask scheduler address"),
    ("ingest.scheduler=inproc://x", "not a dask scheduler address"),
    ("ingest.memory_per_worker=lots", "not a memory size"),
])
def test_bad_cluster_settings_are_refused(tmp_path, setting, words):
    result = invoke("ingest", "--start", str(START), "--end", str(LAST), "--set", setting)
    assert result.exit_code == 2 and words in result.output, result.output


def test_which_ingests_start_a_cluster(mirror, tmp_path):
    cfg = config(tmp_path, mirror, "ingest.workers=2")
    files = make_source(cfg, None, "directory")
    demo = SimpleNamespace(name="demo")  # like the demo source: no reader
    two = [START, START + timedelta(days=1)]
    assert cluster.uses_cluster(cfg.ingest, files, two)
    assert not cluster.uses_cluster(cfg.ingest, files, two[:1])  # the daily forecast's ingest
    assert not cluster.uses_cluster(cfg.ingest, demo, two)  # no reader: a simulation
    cfg.ingest.workers = 1
    assert not cluster.uses_cluster(cfg.ingest, files, two)
    cfg.ingest.scheduler = "tcp://127.0.0.1:8786"
    assert cluster.uses_cluster(cfg.ingest, files, two)
    assert not cluster.uses_cluster(cfg.ingest, files, two[:1])
