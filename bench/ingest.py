"""Ingest benchmarks; prints its figures (not part of the test run).

    python bench/ingest.py            # full: demo 1 year global, directory 20°x20°x31 days
    python bench/ingest.py --quick    # smaller sizes, for a smoke run

1. Demo generation for one year at global 0.5°: the world simulation alone, and the whole demo
   ingest into a store (cell-days per second, peak RSS).
2. Directory ingest of hourly 0.1° ERA5-Land files (new CDS NetCDF layout, one file per day)
   against a straightforward xarray ``open_mfdataset`` + ``resample`` + ``coarsen`` written to
   Zarr in the same run. Each case runs in its own process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_rss_mib() -> float:
    """Peak resident memory of the largest finished child process (the ingest workers), MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


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
    from smcast.ingest.pipeline import ingest

    folder = mirror(span, days)
    store = OUT / "dir-store.zarr"
    shutil.rmtree(store, ignore_errors=True)
    cfg = load_config(None, [f"data_dir={OUT}", f"store.path={store}", "source.name=directory",
                             f"source.directory.path={folder}",
                             f"grid.area=[{40 + span}, 0, 40, {span}]"], environ={})
    t0 = time.perf_counter()
    summary = ingest(cfg, date(2024, 1, 1), date(2024, 1, 1) + timedelta(days=days - 1))
    sec = time.perf_counter() - t0
    return {"case": "directory ingest, smcast", "cells": summary.land_cells, "days": days,
            "seconds": sec, "peak_rss_mib": peak_rss_mib(), "worker_rss_mib": worker_rss_mib(),
            "workers": cfg.ingest.workers or min(os.cpu_count() or 1, 8)}


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


CASES = {"demo_world": case_demo_world, "demo_ingest": case_demo_ingest,
         "dir_smcast": case_directory_smcast, "dir_baseline": case_directory_baseline}


def child(name: str, args: list) -> dict:
    cmd = [sys.executable, __file__, "--child", name, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(CASES[a.child[0]](*json.loads(a.child[1]))), flush=True)
        sys.stderr.flush()
        os._exit(0)  # skip interpreter teardown: netCDF4 + dask threads can crash there
    OUT.mkdir(exist_ok=True)
    year = 30 if a.quick else 365
    span, days = (5.0, 5) if a.quick else (20.0, 31)
    print(f"# smcast ingest benchmark ({'quick' if a.quick else 'full'})")
    print(f"## demo source, global 0.5°, {year} days")
    for name in ("demo_world", "demo_ingest"):
        r = child(name, [year])
        extra = f", store {r['store_mib']:.0f} MiB" if "store_mib" in r else ""
        print(f"{r['case']:<45} {r['cells']} land cells x {r['days']} days in {r['seconds']:.1f} s"
              f" = {r['cell_days_per_s'] / 1e6:.2f} M cell-days/s, peak RSS "
              f"{r['peak_rss_mib']:.0f} MiB{extra}")
    print(f"## directory source, hourly 0.1° files, {span:g}° x {span:g}° x {days} days")
    t0 = time.perf_counter()
    folder = mirror(span, days)
    print(f"(mirror ready in {time.perf_counter() - t0:.0f} s)")
    for path in folder.glob("*.nc"):  # same warm page cache for both cases
        path.read_bytes()
    ours = child("dir_smcast", [span, days])
    base = child("dir_baseline", [span, days])
    print(f"{ours['case']:<45} {ours['seconds']:.1f} s, peak RSS {ours['peak_rss_mib']:.0f} MiB"
          f" + {ours['workers']} worker(s) of at most {ours['worker_rss_mib']:.0f} MiB each")
    print(f"{base['case']:<45} {base['seconds']:.1f} s, peak RSS {base['peak_rss_mib']:.0f} MiB"
          " (dask threads)")
    print(f"speed-up of smcast over the baseline: {base['seconds'] / ours['seconds']:.1f}x")


if __name__ == "__main__":
    main()
