"""Reliability under faults: SIGKILL at random points while ingesting, training and forecasting.

Each loop first runs the real CLI uninterrupted to get a reference result and its wall time, then
``SMCAST_KILL_LOOPS`` times (default 7; seed ``SMCAST_KILL_SEED``) starts the same command as a
subprocess, kills it with SIGKILL after a random delay (a quarter of the kills spread over the
start-up, the rest one per slice of the work up to its end), records where the kill landed (the
"kill-point"), checks that what the kill left is clean, and goes on from that state: the next
run has to recover. A final run without a kill must then give the reference result. The
kill-points hit are printed as a table (``pytest -s``) and recorded with ``record_property``; each
loop asserts that its kills landed at more than one distinct point.

One more test pins down a window too narrow for random kills, found by killing the CLI at each
file replacement in turn: an append killed while writing the store's time coordinate. The last
covers the other fault of the issue: the newest day's file of a download that stopped halfway
(cut in half, or missing its last hours).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr
from click.testing import CliRunner

from smcast.cli import main
from smcast.config import Config, load_config
from smcast.forecast import run_forecast
from smcast.grid import Grid
from smcast.ingest.landmask import globe_land_fraction
from smcast.ingest.pipeline import ingest
from smcast.ledger import Ledger
from smcast.model.package import load_package
from smcast.model.registry import CURRENT, list_models
from smcast.outputs import sha256
from smcast.store import TIME_VARIABLES, DailyStore, store_lock
from smcast.train.trainer import CHECKPOINT
from tests.conftest import AREA, hourly_mirror
from tests.helpers import tiny_forecast_setup

REPO = Path(__file__).resolve().parents[2]
LOOPS = int(os.environ.get("SMCAST_KILL_LOOPS", "7"))
SEED = int(os.environ.get("SMCAST_KILL_SEED", "20240521"))
TRIGGER = "kill-loop"


# -- running and killing the CLI ------------------------------------------------------------------
def command(sets: list[str], *args: str) -> list[str]:
    return [sys.executable, "-m", "smcast", *args, *[x for s in sets for x in ("--set", s)]]


def spawn(sets: list[str], args: list[str], log: Path) -> subprocess.Popen:
    """The real CLI in a subprocess, output to ``log`` (a pipe nobody reads could block it)."""
    env = {**os.environ, "SMCAST_CONFIG": "", "SMCAST_TRIGGER": TRIGGER}
    with open(log, "ab") as fh:
        return subprocess.Popen(command(sets, *args), cwd=REPO, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)


def run_to_end(sets: list[str], args: list[str], log: Path, timeout: float = 300) -> int:
    proc = spawn(sets, args, log)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@dataclass
class Timing:
    """The reference run: seconds until its work began (``marker``), and in all."""

    startup: float
    total: float


def timed_run(sets: list[str], args: list[str], log: Path, marker: Callable[[], bool],
              timeout: float = 300) -> tuple[int, Timing]:
    t0 = time.monotonic()
    proc = spawn(sets, args, log)
    seen = None
    while proc.poll() is None:
        if seen is None and marker():
            seen = time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            proc.kill()
            proc.wait()
            raise TimeoutError(f"{args} took more than {timeout} s")
        time.sleep(0.005)
    total = time.monotonic() - t0
    return proc.returncode, Timing(seen if seen is not None else total / 2, total)


def kill_delays(rng: random.Random, n: int, timing: Timing) -> list[float]:
    """Seconds after the start at which to kill: a quarter of the kills at random during the
    start-up (imports, config), the others one per equal slice of the work, jittered inside it,
    up to the end of the reference run; shuffled."""
    n_start = min(n, max(1, n // 4)) if n else 0
    n_work = n - n_start
    work = timing.total - timing.startup
    delays = [rng.uniform(0.1, 1.0) * timing.startup for _ in range(n_start)]
    delays += [timing.startup + work * (i + rng.random()) / n_work for i in range(n_work)]
    rng.shuffle(delays)
    return delays


def kill_after(proc: subprocess.Popen, delay: float, t0: float) -> int:
    """SIGKILL ``proc`` ``delay`` s after ``t0`` unless it ended before; its exit status."""
    while time.monotonic() - t0 < delay:
        if proc.poll() is not None:
            return proc.returncode
        time.sleep(0.002)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(60)


KILLED = -signal.SIGKILL


@dataclass
class KillRecord:
    delay: float
    share: float  # of the reference run's wall time
    rc: int
    point: str
    detail: str = ""


def report(name: str, records: list[KillRecord], timing: Timing, record_property) -> set[str]:
    """Print the kill-points table, record it as a test property, return the distinct points."""
    lines = [f"\nkill-points hit: {name} ({len(records)} kills, seed {SEED}; reference run "
             f"{timing.total:.1f} s, its work from {timing.startup:.1f} s)",
             f"  {'#':>2} {'delay':>7} {'of ref':>6} {'exit':>5}  {'kill-point':<46} state"]
    for i, r in enumerate(records, 1):
        lines.append(f"  {i:>2} {r.delay:>6.2f}s {r.share:>6.0%} {r.rc:>5}  {r.point:<46} "
                     f"{r.detail}")
    counts = Counter(r.point for r in records)
    lines.append("  summary: " + "; ".join(f"{p} ×{n}" for p, n in counts.items()))
    print("\n".join(lines))
    record_property(f"kill_points_{name}", json.dumps(dict(counts)))
    return set(counts)


def assert_not_vacuous(points: set[str]) -> None:
    if LOOPS >= 2:
        assert len(points) >= 2, f"every kill landed at the same point {points}: the loop is " \
                                 "vacuous; change SMCAST_KILL_SEED or the delays"


def ledger_after_kill(db: Path, pid: int, rc: int) -> str | None:
    """Reap, then the status of the killed run's row (None: killed before it wrote one). A
    killed run is never left ``running``."""
    if not db.exists():
        return None
    ledger = Ledger(db)
    ledger.reap()
    rows = [r for r in ledger.runs(1000) if r.pid == pid]
    assert not [r for r in ledger.runs(1000) if r.status == "running"]
    if not rows:
        return None
    status = rows[0].status
    if rc == KILLED:
        assert status in ("abandoned", "ok", "nothing-to-do"), status
    return status


def warm_demo_cache(demo_cache: Path) -> None:
    """The global land fraction, computed once per session: not part of any measured run."""
    globe_land_fraction(Grid(0.5), demo_cache)


# -- the store ------------------------------------------------------------------------------------
def fingerprint(path: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``path``: what 'nothing written yet' compares."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in path.rglob("*") if p.is_file()}


def check_store(path: Path, reference: xr.Dataset) -> list[date]:
    """What a kill may leave of the store: it opens; every day flagged complete holds exactly the
    reference's values of that day for every variable (so none is complete but partial); the
    write lock is free. Returns the complete days."""
    store = DailyStore(path)
    ds = store.open()
    axis = pd_days(ds)  # what readers see: a contiguous daily axis
    assert axis == [axis[0] + timedelta(days=k) for k in range(len(axis))], "broken time axis"
    done = store.complete_days()
    assert set(done) <= set(axis) & set(pd_days(reference)), "a complete day readers or the " \
                                                              "reference lack"
    mask = store.land_mask
    if done:
        times = [np.datetime64(d, "ns") for d in done]
        got = ds[list(TIME_VARIABLES)].sel(time=times).load()
        want = reference[list(TIME_VARIABLES)].sel(time=times)
        for name in TIME_VARIABLES:
            assert np.isfinite(got[name].values[:, mask]).all(), f"{name}: a complete day " \
                                                                  "has land cells without data"
            np.testing.assert_array_equal(got[name].values, want[name].values, err_msg=name)
    with store_lock(path):  # a new ingest could run
        pass
    return done


def pd_days(ds: xr.Dataset) -> list[date]:
    return [date.fromisoformat(str(t)[:10]) for t in ds["time"].values]


def store_state(path: Path, before: dict[str, tuple[int, int]]) -> tuple[str, str]:
    """Where an ingest was killed, read from what it left of the store."""
    leftovers = list(path.parent.glob(f".{path.name}.tmp-*"))
    if not path.exists():
        if leftovers:
            return "creating the store (temporary folder)", f"{len(leftovers)} tmp folder(s)"
        return "start-up: nothing written yet", "no store"
    if fingerprint(path) == before:
        return "start-up: nothing written yet", "store untouched"
    group = zarr.open_group(str(path), mode="r", use_consolidated=False)
    n = group["time"].shape[0]
    ragged = sorted(v for v in (*TIME_VARIABLES, "complete") if group[v].shape[0] != n)
    values = group["time"][:]
    unwritten = int((values != values[0] + np.arange(n)).sum())
    flags = group["complete"][:].astype(bool)
    partial = len(list(path.rglob("*.partial")))
    detail = f"{int(flags.sum())}/{n} days complete" + (f", {partial} .partial file(s)"
                                                         if partial else "")
    if unwritten:
        return "mid-append (time axis partly written)", f"{detail}, {unwritten} unwritten"
    if ragged:
        return "mid-append (arrays of unequal length)", f"{detail}, {len(ragged)} ragged"
    if not flags.all():
        return "mid-write (days flagged incomplete)", detail
    return "between writes (every day on the axis complete)", detail


# -- 1. ingest ------------------------------------------------------------------------------------
INGEST_SETS = ["grid.area=[48,4,44,10]", "source.demo.epoch=2021-01-01", "ingest.batch_days=4"]
INGEST_ARGS = ["ingest", "--start", "2021-01-01", "--end", "2021-02-28"]


@pytest.mark.timeout(600)
def test_ingest_killed_at_random_points_recovers(tmp_path, demo_cache, record_property):
    rng = random.Random(SEED)

    def sets(root: Path) -> list[str]:
        return [f"data_dir={root}", f"source.demo.cache_dir={demo_cache}", *INGEST_SETS]

    ref_root, root = tmp_path / "reference", tmp_path / "killed"
    warm_demo_cache(demo_cache)
    rc, timing = timed_run(sets(ref_root), INGEST_ARGS, tmp_path / "reference.log",
                           lambda: (ref_root / "store.zarr.lock").exists())
    assert rc == 0, (tmp_path / "reference.log").read_text()
    reference = DailyStore(ref_root / "store.zarr").open().load()
    assert len(DailyStore(ref_root / "store.zarr").complete_days()) == 59

    path, records = root / "store.zarr", []
    for i, delay in enumerate(kill_delays(rng, LOOPS, timing)):
        before = fingerprint(path)
        t0 = time.monotonic()
        proc = spawn(sets(root), INGEST_ARGS, tmp_path / f"run{i}.log")
        rc = kill_after(proc, delay, t0)
        point, detail = (store_state(path, before) if rc == KILLED else
                         (f"ended before the kill (exit {rc})", ""))
        if rc not in (KILLED, 0):
            pytest.fail(f"run {i} failed (exit {rc}): {(tmp_path / f'run{i}.log').read_text()}")
        if path.exists():
            done = check_store(path, reference)
            detail = detail or f"{len(done)} days complete"
        records.append(KillRecord(delay, delay / timing.total, rc, point, detail))

    assert run_to_end(sets(root), INGEST_ARGS, tmp_path / "final.log") == 0, \
        (tmp_path / "final.log").read_text()
    check_store(path, reference)
    store = DailyStore(path)
    assert store.complete_days() == DailyStore(ref_root / "store.zarr").complete_days()
    got = store.open().load()
    assert list(got.data_vars) == list(reference.data_vars)
    for name in reference.data_vars:  # every variable, the complete flags and statics included
        np.testing.assert_array_equal(got[name].values, reference[name].values, err_msg=name)
    np.testing.assert_array_equal(got["time"].values, reference["time"].values)
    assert_not_vacuous(report("ingest", records, timing, record_property))


def test_append_killed_while_writing_the_time_axis_is_repaired(tmp_path, demo_cache):
    """A window too narrow for random kills (found by killing at each file replacement): an
    append killed after the time coordinate was resized but before all its entries were written
    leaves entries that read as 1970-01-01. Readers still see the old axis and its complete
    days; the next ingest cuts the axis back and completes the days."""
    sets = [f"data_dir={tmp_path}", f"source.demo.cache_dir={demo_cache}", *INGEST_SETS]
    cfg = load_config(None, sets, environ={})
    ingest(cfg, date(2021, 1, 1), date(2021, 1, 20), store_path=tmp_path / "reference.zarr")
    reference = DailyStore(tmp_path / "reference.zarr").open().load()
    ingest(cfg, date(2021, 1, 1), date(2021, 1, 10))
    group = zarr.open_group(str(cfg.store_path), mode="r+", use_consolidated=False)
    for name in ("time", "complete", *TIME_VARIABLES[:5]):  # as xarray's append left them
        group[name].resize((14, *group[name].shape[1:]))
    group["time"][10:12] = [18638, 18639]  # 2021-01-11 and -12 written, -13 and -14 not
    assert store_state(cfg.store_path, {})[0] == "mid-append (time axis partly written)"
    assert check_store(cfg.store_path, reference) == [date(2021, 1, d) for d in range(1, 11)]

    ingest(cfg, date(2021, 1, 1), date(2021, 1, 20))
    store = DailyStore(cfg.store_path)
    assert store.days() == store.complete_days() == pd_days(reference)
    check_store(cfg.store_path, reference)


# -- 2. training ----------------------------------------------------------------------------------
TRAIN_SETS = ["grid.area=[48,4,44,10]", "source.demo.epoch=2021-01-01", "model.hidden_size=8",
              "model.leads=[1,2]", "train.test_days=10", "train.iterations_per_epoch=10",
              "train.validate_every=1", "train.patience=1000", "train.batch_size=32",
              "train.validation_cell_stride=3", "train.device=cpu"]
# the paper profile with --set overrides: ``--profile quick`` would override iterations,
# validation interval and patience; here every epoch (~30 ms) ends with a checkpoint. On the CPU
# a resumed training is bit-exact (the checkpoint holds the CPU generator's state, not CUDA's)
TRAIN_ARGS = ["retrain", "--variant", "phys", "--epochs", "60"]


def packages(models: Path) -> dict[str, Path]:
    """Visible package folders (not the hidden staging folders of ``save_package``)."""
    if not models.exists():
        return {}
    return {p.name: p for p in models.iterdir() if p.is_dir() and not p.name.startswith(".")}


def check_models(cfg: Config) -> dict[str, str]:
    """What a kill may leave of the registry: every visible package (and every one
    ``smcast models`` lists) loads with its sha256 checked and is a PHYs model of leads 1, 2;
    CURRENT is absent or names one of them; a checkpoint left for resuming loads. Returns
    name → weights sha256."""
    models = cfg.data_dir / "models"
    found = {}
    for name, folder in packages(models).items():
        assert (folder / "manifest.json").is_file(), f"half a package: {folder}"
        model = load_package(folder)
        assert (model.variant.name, list(model.leads)) == ("phys", [1, 2])
        found[name] = model.manifest["weights_sha256"]
    # ``smcast models`` lists exactly these (not a staging folder a kill left behind)
    assert sorted(e.name for e in list_models(cfg) if not e.bundled) == sorted(found)
    pointer = models / CURRENT
    if pointer.exists():
        assert pointer.read_text().strip() in found, "CURRENT names no loadable package"
    for ckpt in (cfg.data_dir / "runs").glob(f"*/{CHECKPOINT}"):
        torch.load(ckpt, weights_only=True, map_location="cpu")
    return found


def checkpoint_epoch(root: Path) -> int | None:
    found = list((root / "runs").glob(f"*/{CHECKPOINT}"))
    if not found:
        return None
    return int(torch.load(found[0], weights_only=True, map_location="cpu")["epoch"])


def training_state(root: Path, before: dict, row: str | None) -> tuple[str, str]:
    """Where a retrain was killed, read from the registry, the run folder and the ledger."""
    models = root / "models"
    new = set(packages(models)) - set(before["packages"])
    staging = [p for p in models.glob(".*.tmp-*")] if models.exists() else []
    epoch = checkpoint_epoch(root)
    detail = f"checkpoint epoch {epoch}" if epoch is not None else "no checkpoint"
    if row == "ok":
        return "finished (ledger ok), before exit", detail
    if new:
        current = (models / CURRENT).read_text().strip() if (models / CURRENT).exists() else ""
        return ("package saved and promoted" if current in new else
                "package saved, not promoted"), detail
    if len(staging) > len(before["staging"]):
        return "writing the package (staging folder)", detail
    if list((root / "runs").glob("*/checkpoint.tmp")):
        return "writing a checkpoint", detail
    if row is None:
        return "start-up: no ledger row yet", detail
    if epoch == int(TRAIN_ARGS[-1]):
        return "trained: evaluating, before the package", detail
    if epoch is not None and epoch != before["epoch"]:
        return "training (checkpoint written by this run)", f"{detail} (was {before['epoch']})"
    return "before a checkpoint of its own (data, optimizer)", detail


@pytest.mark.timeout(600)
def test_training_killed_at_random_points_recovers(tmp_path, demo_cache, record_property):
    rng = random.Random(SEED + 1)

    def sets(root: Path) -> list[str]:
        return [f"data_dir={root}", f"source.demo.cache_dir={demo_cache}", *TRAIN_SETS]

    ref_root, root = tmp_path / "reference", tmp_path / "killed"
    ref_cfg = load_config(None, sets(ref_root), environ={})
    ingest(ref_cfg, date(2021, 1, 1), date(2021, 3, 31))
    shutil.copytree(ref_root, root)
    cfg = load_config(None, sets(root), environ={})

    rc, timing = timed_run(sets(ref_root), TRAIN_ARGS, tmp_path / "reference.log",
                           lambda: ref_cfg.database_path.exists())
    assert rc == 0, (tmp_path / "reference.log").read_text()
    [ref_sha] = check_models(ref_cfg).values()
    assert not list((ref_root / "runs").glob("*/*")), "the run folder outlived its run"

    records = []
    for i, delay in enumerate(kill_delays(rng, LOOPS, timing)):
        models = root / "models"
        before = {"packages": packages(models), "epoch": checkpoint_epoch(root),
                  "staging": list(models.glob(".*.tmp-*")) if models.exists() else []}
        t0 = time.monotonic()
        proc = spawn(sets(root), TRAIN_ARGS, tmp_path / f"run{i}.log")
        rc = kill_after(proc, delay, t0)
        if rc not in (KILLED, 0):
            pytest.fail(f"run {i} failed (exit {rc}): {(tmp_path / f'run{i}.log').read_text()}")
        row = ledger_after_kill(cfg.database_path, proc.pid, rc)
        point, detail = (training_state(root, before, row) if rc == KILLED else
                         (f"ended before the kill (exit {rc})", ""))
        found = check_models(cfg)
        # resuming from a checkpoint is bit-exact: every package made so far has the reference's
        # weights, whichever kills its training went through
        assert set(found.values()) <= {ref_sha}, "a package differs from the reference"
        records.append(KillRecord(delay, delay / timing.total, rc, point,
                                  f"{detail}; ledger {row}; {len(found)} package(s)"))

    before = set(packages(root / "models"))
    assert run_to_end(sets(root), TRAIN_ARGS, tmp_path / "final.log") == 0, \
        (tmp_path / "final.log").read_text()
    found = check_models(cfg)
    [new] = set(found) - before
    assert found[new] == ref_sha, "the recovered training differs from the uninterrupted one"
    assert not list((root / "runs").glob("*/*")), "the run folder outlived its run"
    assert (root / "models" / CURRENT).read_text().strip() in found
    Ledger(cfg.database_path).reap()
    assert Ledger(cfg.database_path).runs(1)[0].status == "ok"
    assert_not_vacuous(report("training", records, timing, record_property))


# -- 3. forecast ----------------------------------------------------------------------------------
FIRST_ISSUE = date(2021, 4, 10)  # the tiny setup: store to 2021-03-20, demo latency 5 days


def issue_paths(cfg: Config, issue: date) -> tuple[Path, Path]:
    folder = cfg.data_dir / "forecasts" / f"{issue:%Y%m%d}"
    return folder, folder / f"smcast_tiny_{issue:%Y%m%d}.json"


def check_issue(cfg: Config, issue: date) -> tuple[bool, list[Path]]:
    """What a kill may leave of an issue's folder: a manifest whose every file exists with its
    sha256; or no manifest and nothing, or (killed while moving the staged products into place,
    before the manifest was written) only whole products that the next run redoes. Files with a
    temporary name are never products. Returns (done, product files)."""
    folder, manifest = issue_paths(cfg, issue)
    files = sorted(p for p in folder.glob("*") if p.is_file() and not p.name.startswith(".")
                   and p != manifest) if folder.exists() else []
    if manifest.exists():
        doc = json.loads(manifest.read_text())
        listed = {folder / f["path"] for f in doc["files"]}
        for item in doc["files"]:
            assert sha256(folder / item["path"]) == item["sha256"], item["path"]
        assert {p for p in files if p.suffix != ".qml"} == listed
        return True, files
    for p in files:  # whole files only: each was moved into place with os.replace
        if p.suffix == ".nc":
            xr.open_dataset(p).close()
        elif p.suffix != ".qml":
            assert p.stat().st_size > 0
    return False, files


def leftovers(out: Path) -> set[Path]:
    """Staging folders and temporary files in the output directory."""
    return {*out.glob(".staging-*"), *out.rglob(".*.tmp-*")} if out.exists() else set()


def forecast_state(cfg: Config, issue: date, pid: int, row: str | None, days_before: int,
                   before: set[Path]) -> tuple[str, str]:
    """Where a forecast was killed, read from its outputs, its lock, the store and the ledger.
    A run that got past taking the lock has removed the leftovers of the runs killed before."""
    out = cfg.data_dir / "forecasts"
    done, files = check_issue(cfg, issue)
    own = out / f".staging-{issue}-{pid}"
    lock = out / ".smcast-forecast.lock"
    locked = lock.exists() and lock.read_text().startswith(f"pid {pid} ")
    store = DailyStore(cfg.store_path)
    days = store.complete_days()
    need = issue - timedelta(days=5)  # the demo source's latency
    ingesting = len(days) != len(store.days()) or (len(days) != days_before and days[-1] < need)
    stale = before & leftovers(out)
    detail = f"store {len(days)} complete days (to {days[-1]})" + (
        f", {len(stale)} older leftover(s)" if stale else "")
    if done or own.exists() or len(days) != days_before:
        assert not stale, f"leftovers of killed runs survived a run past its lock: {stale}"
    if done:
        return "manifest written, before exit", detail
    if files:
        return "publishing: products in place, no manifest", f"{len(files)} file(s); {detail}"
    if own.exists():
        return "writing products (staging folder)", detail
    if row is None:
        return "start-up: no ledger row yet", detail
    if not locked:
        return "ledger row written, before the lock", detail
    if ingesting:
        return "updating the store (ingest)", detail
    if days[-1] < need:
        return "lock taken, before the store update", detail
    return "model run (store up to date, nothing staged)", detail


def assert_same_products(cfg: Config, ref_cfg: Config, issue: date) -> None:
    """The issue's products equal the uninterrupted reference's: byte-identical GeoTIFFs, QGIS
    styles and quicklook; equal NetCDF data (its global attributes hold the creation time)."""
    folder, manifest = issue_paths(cfg, issue)
    ref_folder, ref_manifest = issue_paths(ref_cfg, issue)
    doc, ref = json.loads(manifest.read_text()), json.loads(ref_manifest.read_text())
    for key in ("last_forcing_day", "valid_days", "leads", "model_sha256", "input_days",
                "land_cells", "products"):
        assert doc[key] == ref[key], key
    assert [f["path"] for f in doc["files"]] == [f["path"] for f in ref["files"]]
    for item, want in zip(doc["files"], ref["files"]):
        if item["path"].endswith(".nc"):
            with xr.open_dataset(folder / item["path"]) as a, \
                    xr.open_dataset(ref_folder / item["path"]) as b:
                xr.testing.assert_identical(a.drop_attrs(deep=False), b.drop_attrs(deep=False))
        else:
            assert item["sha256"] == want["sha256"], item["path"]
    assert sorted(p.name for p in folder.glob("*.qml")) == sorted(
        p.name for p in ref_folder.glob("*.qml"))
    for p in folder.glob("*.qml"):
        assert p.read_bytes() == (ref_folder / p.name).read_bytes()


@pytest.mark.timeout(600)
def test_forecast_killed_at_random_points_recovers(tmp_path, demo_cache, record_property):
    """Like the daily job: each run forecasts the current issue date; once a run has left its
    manifest the loop moves on to the next date."""
    rng = random.Random(SEED + 2)
    ref_cfg, ref_sets = tiny_forecast_setup(tmp_path / "reference", demo_cache)
    cfg, sets = tiny_forecast_setup(tmp_path / "killed", demo_cache)
    args = ["forecast", "--date"]

    rc, timing = timed_run(ref_sets, [*args, str(FIRST_ISSUE)], tmp_path / "reference.log",
                           lambda: ref_cfg.database_path.exists())
    assert rc == 0, (tmp_path / "reference.log").read_text()
    referenced = {FIRST_ISSUE}

    def reference_until(issue: date) -> xr.Dataset:
        for day in (FIRST_ISSUE + timedelta(days=k) for k in range((issue - FIRST_ISSUE).days + 1)):
            if day not in referenced:
                assert run_forecast(ref_cfg, day).status == "done"
                referenced.add(day)
        return DailyStore(ref_cfg.store_path).open().load()

    issue, records = FIRST_ISSUE, []
    for i, delay in enumerate(kill_delays(rng, LOOPS, timing)):
        reference = reference_until(issue)  # before the run: nothing else competes for the CPU
        days_before = len(DailyStore(cfg.store_path).complete_days())
        before = leftovers(cfg.data_dir / "forecasts")
        t0 = time.monotonic()
        proc = spawn(sets, [*args, str(issue)], tmp_path / f"run{i}.log")
        rc = kill_after(proc, delay, t0)
        if rc not in (KILLED, 0):
            pytest.fail(f"run {i} failed (exit {rc}): {(tmp_path / f'run{i}.log').read_text()}")
        row = ledger_after_kill(cfg.database_path, proc.pid, rc)
        point, detail = (forecast_state(cfg, issue, proc.pid, row, days_before, before)
                         if rc == KILLED else (f"ended before the kill (exit {rc})", ""))
        if rc == 0:
            assert not leftovers(cfg.data_dir / "forecasts")
        check_store(cfg.store_path, reference)
        for day in sorted(referenced | {issue}):
            done, _ = check_issue(cfg, day)
            assert done or day >= issue, f"{day} lost its manifest"
        done, _ = check_issue(cfg, issue)
        if rc == KILLED and not done:
            assert row in (None, "abandoned"), row
        records.append(KillRecord(delay, delay / timing.total, rc, point,
                                  f"{issue:%m-%d}; {detail}; ledger {row}"))
        if done:
            issue += timedelta(days=1)

    # the final run without a kill: the pending issue date is produced, done ones are no-ops
    reference_until(issue)
    assert run_to_end(sets, [*args, str(issue)], tmp_path / "final.log") == 0, \
        (tmp_path / "final.log").read_text()
    out = cfg.data_dir / "forecasts"
    assert not leftovers(out)
    check_store(cfg.store_path, DailyStore(ref_cfg.store_path).open().load())
    for day in sorted(referenced):
        folder, manifest = issue_paths(cfg, day)
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        again = CliRunner().invoke(main, [*args, str(day), *[x for s in sets for x in
                                                              ("--set", s)]],
                                   env={"SMCAST_CONFIG": ""}, catch_exceptions=False)
        assert again.exit_code == 7 and "nothing to do" in again.stdout, again.output
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing overwritten
        assert_same_products(cfg, ref_cfg, day)
    ledger = Ledger(cfg.database_path)
    ledger.reap()
    runs = ledger.runs(1000)
    assert {r.status for r in runs} <= {"ok", "nothing-to-do", "abandoned"}, runs
    assert [r.status for r in runs if r.trigger == TRIGGER][0] == "ok"  # the final run
    assert_not_vacuous(report("forecast", records, timing, record_property))


# -- 4. a download that stopped halfway -----------------------------------------------------------
START = date(2024, 1, 30)


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def drop_last_hours(path: Path) -> None:
    ds = xr.load_dataset(path)
    path.unlink()
    ds.isel(valid_time=slice(0, 13)).to_netcdf(path)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("damage, code, words", [
    # a truncated file is bad input (3), named
    (cut_in_half, 3, ["corrupt or truncated", "era5land_20240202.nc"]),
    # the newest day's last hours not there yet: not yet available (4), like a mirror that lags
    (drop_last_hours, 4, ["2024-02-02: ", "missing 11 hours (13:00…23:00 UTC)",
                          "newest complete day is 2024-02-01"]),
], ids=["file-cut-in-half", "last-hours-missing"])
def test_newest_day_from_a_download_stopped_halfway(tmp_path, damage, code, words):
    """The newest day's file is what a download that stopped halfway left: the ingest fails with
    a clear error and its exit code, the earlier days stay as they were and complete, the store
    is not locked; once the file is whole a re-run completes the day."""
    mirror = tmp_path / "mirror"
    hourly_mirror(mirror, START, 4)  # files for 01-30 … 02-03 (the last only for its 00 UTC)
    sets = [f"data_dir={tmp_path / 'data'}", f"grid.area={list(AREA)}",
            f"source.directory.path={mirror}", "source.name=directory"]
    cfg = load_config(None, sets, environ={})
    newest = START + timedelta(days=3)
    reference = tmp_path / "reference.zarr"
    ingest(cfg, START, newest, store_path=reference)
    ingest(cfg, START, newest - timedelta(days=1))  # the store before today's download
    kept = DailyStore(cfg.store_path).open().load()

    bad = mirror / f"era5land_{newest:%Y%m%d}.nc"
    good = bad.read_bytes()
    damage(bad)
    args = ["ingest", "--start", str(START), "--end", str(newest)]
    proc = subprocess.run(command(sets, *args), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "SMCAST_CONFIG": ""}, timeout=300)
    assert proc.returncode == code, proc.stderr
    message = proc.stderr[proc.stderr.index("smcast: error:"):]
    for word in words:
        assert word in message, message
    store = DailyStore(cfg.store_path)
    assert store.complete_days() == [START + timedelta(days=k) for k in range(3)]
    ds = store.open().load()
    for name in TIME_VARIABLES:  # the earlier days as they were
        np.testing.assert_array_equal(ds[name].sel(time=kept["time"]).values, kept[name].values)
    with store_lock(cfg.store_path):
        pass

    bad.write_bytes(good)  # the download completed
    proc = subprocess.run(command(sets, *args), cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "SMCAST_CONFIG": ""}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert store.complete_days() == [START + timedelta(days=k) for k in range(4)]
    check_store(cfg.store_path, DailyStore(reference).open().load())
