"""Ingest benchmarks; prints its figures (not part of the test run).

    python bench/ingest.py                   # full: demo 1 year global, directory 20°x20°x31
                                             # days, scaling 40°x40°x40 days
    python bench/ingest.py --quick           # smaller sizes, for a smoke run
    python bench/ingest.py --only scaling    # one section: demo, directory or scaling

1. Demo generation for one year at global 0.5°: the world simulation alone, and the whole demo
   ingest into a store (cell-days per second, peak RSS).
2. Directory ingest of hourly 0.1° ERA5-Land files (new CDS NetCDF layout, one file per day)
   against a straightforward xarray ``open_mfdataset`` + ``resample`` + ``coarsen`` written to
   Zarr in the same run. Each case runs in its own process so its peak RSS is its own.
3. Scaling on dask.distributed: one directory ingest (hourly 0.1° files, 40° x 40° x 40 days,
   onto the 0.5° store) in-process and on LocalClusters of 1, 2 (and, with more cores,
   ``os.cpu_count()``) single-threaded worker processes set up as smcast sets up its own
   (``smcast.ingest.cluster.dask_client``; start-up timed apart), handed to the ingest as
   ``ingest.scheduler``: seconds, days/s, speed-up over 1 worker, peak RSS of the client (with
   the scheduler and nannies in it) and of the largest worker, and whether the store equals the
   in-process one array for array.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB): VmHWM where /proc has it (ru_maxrss on
    Linux carries over the peak of the parent that forked the process: the mirror's maker)."""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class DescendantsPeak:
    """Largest resident memory seen in any descendant process (the dask workers), MiB, sampled
    every ``interval`` s in a thread while the ``with`` body runs (short spikes can be missed)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak_mib = interval, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(self.interval):
            for child in me.children(recursive=True):
                try:
                    rss = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak_mib = max(self.peak_mib, rss)

    def __enter__(self) -> "DescendantsPeak":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- cases (each runs in a child process) ------------------------------------------------------
def case_demo_world(days: int) -> dict:
    from smcast.config import load_config
    from smcast.grid import Grid
    from smcast.ingest.landmask import globe_land_fraction, land_mask
    from smcast.sources.demo_world import DemoWorld

    cfg = load_config(None, environ={})
    grid = Grid.from_config(cfg.grid)
    mask = land_mask(globe_land_fraction(grid, OUT / "cache"), grid, cfg.grid)
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    world = DemoWorld(lat2[mask], lon2[mask], seed=42)
    state = world.initial_state()
    t0 = time.perf_counter()
    day = date(2021, 1, 1)
    for i in range(days):
        state, _ = world.step(state, day + timedelta(days=i))
    sec = time.perf_counter() - t0
    cells = int(mask.sum())
    return {"case": "demo world (simulation only)", "cells": cells, "days": days,
            "seconds": sec, "cell_days_per_s": cells * days / sec, "peak_rss_mib": peak_rss_mib()}


def case_demo_ingest(days: int) -> dict:
    from smcast.config import load_config
    from smcast.ingest.pipeline import ingest

    store = OUT / "demo-store.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cfg = load_config(None, [f"data_dir={OUT}", f"store.path={store}",
                             "source.demo.epoch=2021-01-01",
                             f"source.demo.cache_dir={OUT / 'cache'}"], environ={})
    t0 = time.perf_counter()
    summary = ingest(cfg, date(2021, 1, 1), date(2021, 1, 1) + timedelta(days=days - 1))
    sec = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20
    return {"case": "demo ingest into the store", "cells": summary.land_cells, "days": days,
            "seconds": sec, "cell_days_per_s": summary.land_cells * days / sec,
            "peak_rss_mib": peak_rss_mib(), "store_mib": size}


def mirror(span: float, days: int) -> Path:
    """Hourly 0.1° files over [40, 40+span]°N x [0, span]°E, one per day (cached)."""
    from smcast.testing.era5 import era5_grid, synthetic_hourly, write_cds_netcdf

    folder = OUT / f"mirror-{span:g}deg-{days}d"
    if (folder / "done").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    lat, lon = era5_grid(40.0, 40.0 + span, 0.0, span)
    sea = (lat[:, None] < 40.0 + span / 8) & (lon[None, :] < span / 8)
    start = date(2024, 1, 1)
    for i in range(days + 1):
        day = start + timedelta(days=i)
        hourly, _ = synthetic_hourly(lat, lon, day, 1, seed=i, sea=sea)
        write_cds_netcdf(hourly.isel(valid_time=slice(0, 24)), folder / f"era5land_{day:%Y%m%d}.nc")
    (folder / "done").touch()
    return folder


def case_directory_smcast(span: float, days: int) -> dict:
    from smcast.config import load_config
    from smcast.ingest.cluster import local_workers
    from smcast.ingest.pipeline import ingest

    folder = mirror(span, days)
    store = OUT / "dir-store.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cfg = load_config(None, [f"data_dir={OUT}", f"store.path={store}", "source.name=directory",
                             f"source.directory.path={folder}",
                             f"grid.area=[{40 + span}, 0, 40, {span}]"], environ={})
    t0 = time.perf_counter()
    with DescendantsPeak() as workers:
        summary = ingest(cfg, date(2024, 1, 1), date(2024, 1, 1) + timedelta(days=days - 1))
    sec = time.perf_counter() - t0
    return {"case": "directory ingest, smcast", "cells": summary.land_cells, "days": days,
            "seconds": sec, "peak_rss_mib": peak_rss_mib(), "worker_rss_mib": workers.peak_mib,
            "workers": local_workers(cfg.ingest)}


def case_directory_baseline(span: float, days: int) -> dict:
    """What a user would write: open_mfdataset, resample, coarsen, to_zarr."""
    import xarray as xr

    from smcast.variables import VARIABLES

    folder = mirror(span, days)
    store = OUT / "baseline.zarr"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    ds = xr.open_mfdataset(sorted(folder.glob("*.nc")), combine="by_coords")
    ds = ds.drop_vars(["expver", "number"], errors="ignore").rename(valid_time="time")
    ds = ds.sortby("latitude")
    acc = [n for n in ds.data_vars if VARIABLES[n].kind == "accumulated"]
    inst = [n for n in ds.data_vars if n not in acc]
    daily_inst = ds[inst].resample(time="1D").mean()
    at00 = ds[acc].sel(time=ds["time"].dt.hour == 0)
    daily_acc = at00.shift(time=-1).resample(time="1D").first()
    daily = xr.merge([daily_inst, daily_acc]).isel(time=slice(0, days))
    coarse = daily.coarsen(latitude=5, longitude=5, boundary="trim").mean()
    coarse.chunk({"time": 1}).to_zarr(store, mode="w", zarr_format=2)
    sec = time.perf_counter() - t0
    ds.close()
    return {"case": "directory ingest, xarray resample+coarsen", "days": days, "seconds": sec,
            "peak_rss_mib": peak_rss_mib()}


def scaling_store(workers: int) -> Path:
    return OUT / f"scale-{workers}w.zarr"


def case_scaling(span: float, days: int, workers: int) -> dict:
    """The mirror ingested onto the 0.5° grid in this process (``workers`` 0) or on a dask
    LocalCluster of ``workers`` processes started as smcast starts its own, whose start-up is
    timed apart and which the ingest reaches through ``ingest.scheduler``."""
    from smcast.config import load_config
    from smcast.ingest.cluster import dask_client
    from smcast.ingest.pipeline import ingest

    folder = mirror(span, days)
    store = scaling_store(workers)
    shutil.rmtree(store, ignore_errors=True)
    cfg = load_config(None, [f"data_dir={OUT}", f"store.path={store}", "source.name=directory",
                             f"source.directory.path={folder}", "ingest.workers=1",
                             f"grid.area=[{40 + span}, 0, 40, {span}]"], environ={})
    first = date(2024, 1, 1)
    last = first + timedelta(days=days - 1)
    out = {"workers": workers, "days": days, "startup": None, "worker_rss_mib": None}
    if workers == 0:
        t0 = time.perf_counter()
        ingest(cfg, first, last)
        return {**out, "seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()}
    t0 = time.perf_counter()
    with dask_client(cfg.ingest, workers) as client:
        out["startup"] = time.perf_counter() - t0
        cfg.ingest.scheduler = client.scheduler.address
        t1 = time.perf_counter()
        ingest(cfg, first, last)
        out["seconds"] = time.perf_counter() - t1
        out["worker_rss_mib"] = max(client.run(peak_rss_mib).values())
    return {**out, "peak_rss_mib": peak_rss_mib()}


def same_store(a: Path, b: Path) -> bool:
    """Every array of the two stores equal (NaN where NaN), the time axis included."""
    import xarray as xr

    x, y = xr.open_zarr(a), xr.open_zarr(b)
    if sorted(x.variables) != sorted(y.variables):
        return False
    return all(np.array_equal(x[n].values, y[n].values, equal_nan=x[n].dtype.kind == "f")
               for n in x.variables)


def scaling(span: float, days: int) -> None:
    cores = os.cpu_count() or 1
    counts = [0, 1, 2] + ([cores] if cores > 2 else [])
    print(f"## scaling on dask.distributed: directory source, hourly 0.1° files, {span:g}° x "
          f"{span:g}° x {days} days → 0.5° store ({cores} CPU cores)")
    t0 = time.perf_counter()
    folder = mirror(span, days)
    print(f"(mirror ready in {time.perf_counter() - t0:.0f} s)")
    for path in folder.glob("*.nc"):  # the same warm page cache for every row
        path.read_bytes()
    rows = [child("scaling", [span, days, n]) for n in counts]
    one = next(r for r in rows if r["workers"] == 1)["seconds"]
    print(f"{'engine':<18} {'workers':>7} {'start-up s':>10} {'seconds':>8} {'days/s':>7} "
          f"{'speed-up':>8} {'client peak MiB':>15} {'worker peak MiB':>15}  store = in-process")
    for r in rows:
        n = r["workers"]
        same = "(reference)" if n == 0 else str(same_store(scaling_store(n), scaling_store(0)))
        start = "–" if r["startup"] is None else f"{r['startup']:.1f}"
        worker = "–" if r["worker_rss_mib"] is None else f"{r['worker_rss_mib']:.0f}"
        print(f"{'in-process' if n == 0 else 'dask LocalCluster':<18} {max(n, 1):>7} "
              f"{start:>10} {r['seconds']:>8.1f} {days / r['seconds']:>7.2f} "
              f"{one / r['seconds']:>7.2f}x {r['peak_rss_mib']:>15.0f} {worker:>15}  {same}")


CASES = {"demo_world": case_demo_world, "demo_ingest": case_demo_ingest,
         "dir_smcast": case_directory_smcast, "dir_baseline": case_directory_baseline,
         "scaling": case_scaling}


def child(name: str, args: list) -> dict:
    cmd = [sys.executable, __file__, "--child", name, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def demo(year: int) -> None:
    print(f"## demo source, global 0.5°, {year} days")
    for name in ("demo_world", "demo_ingest"):
        r = child(name, [year])
        extra = f", store {r['store_mib']:.0f} MiB" if "store_mib" in r else ""
        print(f"{r['case']:<45} {r['cells']} land cells x {r['days']} days in {r['seconds']:.1f} s"
              f" = {r['cell_days_per_s'] / 1e6:.2f} M cell-days/s, peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB{extra}")


def directory(span: float, days: int) -> None:
    print(f"## directory source, hourly 0.1° files, {span:g}° x {span:g}° x {days} days")
    t0 = time.perf_counter()
    folder = mirror(span, days)
    print(f"(mirror ready in {time.perf_counter() - t0:.0f} s)")
    for path in folder.glob("*.nc"):  # same warm page cache for both cases
        path.read_bytes()
    ours = child("dir_smcast", [span, days])
    base = child("dir_baseline", [span, days])
    print(f"{ours['case']:<45} {ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mib']:.0f} MiB"
          f" + {ours['workers']} dask worker(s) of at most {ours['worker_rss_mib']:.0f} MiB each"
          " (sampled)")
    print(f"{base['case']:<45} {base['seconds']:.1f} s, peak RSS {base['peak_rss_mib']:.0f} MiB"
          " (dask threads)")
    print(f"speed-up of smcast over the baseline: {base['seconds'] / ours['seconds']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--only", choices=("demo", "directory", "scaling"), help="one section")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(CASES[a.child[0]](*json.loads(a.child[1]))), flush=True)
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown: netCDF4 + dask threads can crash there
    OUT.mkdir(exist_ok=True)
    print(f"# smcast ingest benchmark ({'quick' if a.quick else 'full'})")
    if a.only in (None, "demo"):
        demo(30 if a.quick else 365)
    if a.only in (None, "directory"):
        directory(*((5.0, 5) if a.quick else (20.0, 31)))
    if a.only in (None, "scaling"):
        scaling(*((5.0, 6) if a.quick else (40.0, 40)))


if __name__ == "__main__":
    main()
