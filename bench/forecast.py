"""Forecast benchmark on the global 0.5° demo grid (all land cells); prints its figures.

    python bench/forecast.py

1. Prepares (untimed) a global demo store up to the issue date's forcing day, with the
   bundled demo model, in ``bench/out/forecast``.
2. Times the whole ``smcast forecast --force`` process (wall) against a bare import of its
   dependencies in the same run — cold (first run: thirty recent days to predict for the
   consistency layer) and warm (a daily run: the recent days' predictions are cached) — with
   each process's peak RSS.
3. Inference throughput: the network's forward pass over all land cells in GFLOP/s against a
   float32 matrix product measured on the same machine in the same run.

With ``--fine`` (``--no-coarse`` skips the 0.5° part), the global 0.1° grid (~1.6 million land
cells, about an hour on 2 CPU cores; ``--area N,W,S,E`` restricts it to a box):

4. Prepares a 0.1° demo store of the forecast window (the demo world starts ``FINE_EPOCH``, 45
   days before the issue date, to keep its simulation short; timed, with its peak RSS and size)
   and an **untrained** PHYs network of the bundled model's shape (LSTM 1 x 128, leads 1…6)
   whose scalers are fitted on the store: right for time and memory, not for skill.
5. Times ``smcast forecast`` in a child process: cold with the default ``forecast.band_cells``
   (all 30 consistency days predicted), warm (cached days: the daily run), and cold with a
   smaller band; total and inference seconds (manifest ``timings_s``), cells/s, peak RSS against
   the stated bound.
6. Precision: one band's forward pass in fp32 and bf16 on this CPU (and fp32/bf16/fp16 on
   CUDA when there is one): seconds and the bf16/fp16 − fp32 difference in m3 m-3.
7. Each writer on the 3600 x 1800 forecast (NetCDF, soil-moisture and flag COG, quicklook) in its
   own process: seconds and peak RSS above the loaded dataset.
8. ``smcast verify`` of the forecast once its valid days are ingested: seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out" / "forecast"
ISSUE = "2024-03-15"
IMPORTS = ("import torch, numpy, pandas, xarray, zarr, netCDF4, rasterio, rioxarray, pyproj, "
           "matplotlib, scipy, yaml, pydantic, click, safetensors, tqdm")


def run(cmd: list[str], prelude: str = "") -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process (see ``run_full``)."""
    wall, rss, _ = run_full(cmd, prelude)
    return wall, rss


def run_full(cmd: list[str], prelude: str = "") -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stderr of one child process: its own peak (``VmHWM``,
    reported by a wrapper just before exiting; ``ru_maxrss`` would include the parent's peak,
    which Linux carries over an exec after the fork). ``cmd[1]``: a module, a ``.py`` file or
    ``-c``; ``prelude``: code the wrapper runs first."""
    wrapper = ("import runpy, sys, atexit\n"
               "def _hwm():\n"
               "    with open('/proc/self/status') as f:\n"
               "        return next(int(l.split()[1]) for l in f if l.startswith('VmHWM:'))\n"
               "atexit.register(lambda: sys.stderr.write('RSS %d\\n' % _hwm()))\n"
               + prelude +
               "sys.argv = sys.argv[1:]\n"
               "if sys.argv[0] == '-c': exec(sys.argv[1])\n"
               "elif sys.argv[0].endswith('.py'):\n"
               "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
               "else: runpy.run_module(sys.argv[0], run_name='__main__')\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("RSS ")]
    if proc.returncode not in (0,) or not rss:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    return wall, rss[-1] / 1024, proc.stderr


def smcast(*args: str) -> list[str]:
    return [sys.executable, "smcast.cli", *args, "--set", f"data_dir={OUT}",
            "--set", "source.demo.epoch=2023-06-01"]


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def lstm_gflops() -> tuple[float, int, int]:
    """GFLOP/s of the forecast's own inference path (``SoilMoistureModel.predict`` with the
    forecast's batch size) over all land cells, counting the LSTM and head FLOPs."""
    from smcast.config import load_config
    from smcast.forecast import batch_size
    from smcast.model.package import load_package
    from smcast.model.registry import BUNDLED_DEMO, BUNDLED_DIR

    model = load_package(BUNDLED_DIR / BUNDLED_DEMO)
    bs = batch_size(load_config(None, environ={}), model)
    n, seq, f, h = model.n_cells, model.seq_len, model.n_features, model.hidden_size
    rng = np.random.default_rng(0)
    dyn = rng.normal(size=(n, seq, len(model.dynamic_inputs))).astype(np.float32)
    statics = rng.normal(size=(n, len(model.static_inputs))).astype(np.float32)
    cells = np.arange(n)
    model.predict(dyn, statics, cells, batch_size=bs, device="cpu")
    t0 = time.perf_counter()
    model.predict(dyn, statics, cells, batch_size=bs, device="cpu")
    sec = time.perf_counter() - t0
    flops = n * seq * 2 * 4 * h * (f + h) + n * 2 * h * len(model.leads)
    return flops / sec / 1e9, n, bs


def coarse() -> None:
    """The global 0.5° figures (steps 1–3)."""
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# smcast forecast benchmark (global 0.5°, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'CPU'})")
    t0 = time.perf_counter()
    run(smcast("ingest", "--start", "2024-02-01", "--end", "2024-03-10"))
    print(f"(store prepared in {time.perf_counter() - t0:.0f} s)")
    imports, imp_rss = run([sys.executable, "-c", IMPORTS])
    shutil.rmtree(OUT / "cache" / "predictions", ignore_errors=True)
    cold, cold_rss = run(smcast("forecast", "--date", ISSUE, "--force"))
    warm, warm_rss = run(smcast("forecast", "--date", ISSUE, "--force"))
    print(f"bare imports of the dependencies      {imports:6.2f} s  (peak RSS {imp_rss:.0f} MiB)")
    print(f"smcast forecast, cold (30 days to predict for the consistency layer) "
          f"{cold:6.2f} s → {cold - imports:5.2f} s beyond the imports")
    print(f"smcast forecast, warm (daily run, cached recent days)                "
          f"{warm:6.2f} s → {warm - imports:5.2f} s beyond the imports")
    print(f"peak RSS of the forecast processes: {max(cold_rss, warm_rss):.0f} MiB")
    mm = matmul_gflops()
    lstm, n, bs = lstm_gflops()
    print(f"inference: {n} cells in batches of {bs}, {lstm:.1f} GFLOP/s vs float32 matmul "
          f"{mm:.1f} GFLOP/s → {100 * lstm / mm:.0f} %")


# -- the global 0.1° grid (--fine) -------------------------------------------------------------
FINE = OUT.parent / "forecast-0.1"
FINE_EPOCH = "2024-01-30"  # 45 days before ISSUE: the demo world is simulated from here
FINE_MODEL = "bench-untrained-0.1"
OTHER_BAND = 32768
WRITER_CHILD = FINE / "writer_child.py"


def fine_sets(area: str | None) -> list[str]:
    root = FINE / ("global" if area is None else "area-" + area.replace(",", "_"))
    sets = [f"data_dir={root}", "grid.resolution=0.1", f"source.demo.epoch={FINE_EPOCH}"]
    return sets + ([f"grid.area=[{area}]"] if area else [])


def fine_cli(sets: list[str], *args: str) -> list[str]:
    return [sys.executable, "smcast.cli", *args, *[x for s in sets for x in ("--set", s)]]


def fine_config(sets: list[str]):
    from smcast.config import load_config

    return load_config(None, sets, environ={})


def last_forcing() -> date:
    return date.fromisoformat(ISSUE) - timedelta(days=5)  # the demo's imitated latency


def prepare_fine(sets: list[str]) -> None:
    """Ingest the forecast window (timed) and build the untrained model package (untimed)."""
    cfg = fine_config(sets)
    last = last_forcing()
    first = last - timedelta(days=cfg.model.seq_len + cfg.forecast.consistency_days - 1)
    if not cfg.store_path.exists():
        wall, rss = run(fine_cli(sets, "ingest", "--start", str(first), "--end", str(last)))
        size = sum(p.stat().st_size for p in cfg.store_path.rglob("*") if p.is_file())
        print(f"store: {(last - first).days + 1} days {first}…{last} ingested in {wall:.0f} s "
              f"(demo world simulated from {FINE_EPOCH}), peak RSS {rss:.0f} MiB, "
              f"{size / 2**30:.2f} GiB on disk")
    from smcast.model.registry import models_dir, set_current

    if not (models_dir(cfg) / FINE_MODEL).exists():
        build_fine_model(cfg, last - timedelta(days=7), last)
    set_current(cfg, FINE_MODEL)


def build_fine_model(cfg, first: date, last: date) -> None:
    """An untrained PHYs network of the bundled model's shape, scalers fitted on the store's
    days first…last (enough for throughput and memory; its forecasts have no skill)."""
    from smcast.model.package import save_package
    from smcast.model.registry import models_dir
    from smcast.store import DailyStore
    from smcast.train.data import load_cells
    from smcast.train.retrain import build_model

    store = DailyStore(cfg.store_path)
    fit = load_cells(store, first, last, cfg.model.dynamic_inputs, cfg.model.static_inputs,
                     deep=True)
    save_package(build_model(cfg, "phys", fit, store), models_dir(cfg) / FINE_MODEL,
                 {"periods": {}, "metrics": {}, "seed": cfg.train.seed,
                  "note": "untrained: bench/forecast.py --fine (throughput and memory only)"})


def fine_forecast(sets: list[str], band_cells: int, cold: bool) -> dict:
    """One ``smcast forecast --force`` in a child process: wall, peak RSS, the manifest."""
    cfg = fine_config(sets)
    if cold:
        shutil.rmtree(cfg.data_dir / "cache" / "predictions", ignore_errors=True)
    wall, rss = run(fine_cli([*sets, f"forecast.band_cells={band_cells}"], "forecast",
                             "--date", ISSUE, "--force"))
    doc = json.loads(next((cfg.output_dir / ISSUE.replace("-", "")).glob("*.json")).read_text())
    return {"wall": wall, "rss": rss, "doc": doc, "band_cells": band_cells, "cold": cold,
            "recomputed": cfg.forecast.consistency_days if cold else 0}


def band_bound_mib(cfg, band_cells: int, n_land: int) -> tuple[float, float]:
    """(band working set, full-grid outputs) in MiB, as stated in ``smcast.forecast``."""
    from smcast.grid import Grid

    window = cfg.model.seq_len + cfg.forecast.consistency_days
    band = min(band_cells, n_land) * window * (len(cfg.model.dynamic_inputs) + 8) * 4
    nlat, nlon = Grid.from_config(cfg.grid).shape
    grid = (len(cfg.model.leads) * 2 + 3) * nlat * nlon * 4
    return band / 2**20, grid / 2**20


def print_forecast(r: dict, cfg, imports_mib: float) -> None:
    doc, t = r["doc"], r["doc"]["timings_s"]
    cells = doc["land_cells"]
    rate = cells * (1 + r["recomputed"]) / t["inference"]
    band, grid = band_bound_mib(cfg, r["band_cells"], cells)
    kind = (f"cold: {r['recomputed']} consistency days predicted" if r["cold"]
            else "warm: consistency days cached, the daily run")
    print(f"smcast forecast, band_cells={r['band_cells']} ({doc['bands']} bands), {kind}\n"
          f"    total {r['wall']:.1f} s (manifest {t['total']:.1f} s: store reads {t['read']:.1f}"
          f" s, inference {t['inference']:.1f} s); {cells} land cells → "
          f"{rate:,.0f} cells/s = {cells} x (1 + {r['recomputed']}) / {t['inference']:.1f} s; "
          f"load average {os.getloadavg()[0]:.1f} after it\n"
          f"    peak RSS {r['rss']:.0f} MiB; stated: imports {imports_mib:.0f} + band "
          f"{band:.0f} (x2 while assembled) + read block ≤ 256 + full-grid outputs {grid:.0f} "
          f"MiB + one writer (below)")


def precision_figures(cfg) -> None:
    """fp32 vs bf16 (and fp16 on CUDA) over the first 0.1° band with the untrained model, and
    over the 0.5° store's land cells with the trained bundled demo model (when prepared)."""
    from smcast.model.package import load_package
    from smcast.model.registry import BUNDLED_DEMO, BUNDLED_DIR, model_path
    from smcast.store import DailyStore

    compare_precisions(load_package(model_path(cfg, FINE_MODEL)), DailyStore(cfg.store_path),
                       min(cfg.forecast.band_cells, DailyStore(cfg.store_path).land_cells),
                       "0.1°, untrained")
    if (OUT / "store.zarr").exists():
        store = DailyStore(OUT / "store.zarr")
        compare_precisions(load_package(BUNDLED_DIR / BUNDLED_DEMO), store, store.land_cells,
                           "0.5°, trained bundled demo model")
    if not torch.cuda.is_available():
        print("no CUDA device here: the GPU figures (fp16/bf16 vs fp32) were not measured")


def compare_precisions(model, store, n: int, label: str) -> None:
    """Forward passes of the first ``n`` land cells (window ending on the last forcing day) in
    each precision on each device: best of two runs, and the difference from fp32."""
    from smcast.train.data import load_cells

    last = last_forcing()
    data = load_cells(store, last - timedelta(days=model.seq_len - 1), last,
                      list(model.dynamic_inputs), list(model.static_inputs), True,
                      cells=np.arange(n))
    for device in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        bs = 4096 if device == "cpu" else 1 << 18
        kinds = ["fp32", "bf16"] + (["fp16"] if device == "cuda" else [])
        out, sec = {}, {}
        for precision in kinds:
            runs = []
            for _ in range(2):
                t0 = time.perf_counter()
                out[precision] = model.predict(data.dynamic, data.statics, data.cells, bs,
                                               device, precision)
                if device == "cuda":
                    torch.cuda.synchronize()
                runs.append(time.perf_counter() - t0)
            sec[precision] = min(runs)
        for precision in kinds:
            d = out[precision].astype(np.float64) - out["fp32"]
            diff = ("" if precision == "fp32" else f"; Δ vs fp32: max |Δ| {np.abs(d).max():.2e}"
                    f", RMSE {np.sqrt(np.mean(d ** 2)):.2e} m3 m-3")
            print(f"{label}, {device} {precision}: {n} cells x {model.n_leads} leads in "
                  f"{sec[precision]:.2f} s ({n / sec[precision]:,.0f} cells/s, "
                  f"x{sec['fp32'] / sec[precision]:.2f} vs fp32){diff}")


WRITER_CODE = '''"""One writer on a forecast NetCDF's content: seconds, peak RSS above the data."""
import sys, time
from pathlib import Path
import numpy as np, xarray as xr
import smcast.writers.geotiff as geotiff
from smcast.writers.netcdf import REQUIRED_ATTRS, write_netcdf
from smcast.writers.quicklook import quicklook

def mib(key):
    return int(next(l for l in open("/proc/self/status") if l.startswith(key)).split()[1]) / 1024

which, nc, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
dec, raw = xr.load_dataset(nc), xr.load_dataset(nc, mask_and_scale=False)
t, frt = dec["time"].values, dec["forecast_reference_time"].values
ds = xr.Dataset({"swvl1": (("time", "lat", "lon"), dec["swvl1"].values),
                 "consistency_rate": (("lat", "lon"), dec["consistency_rate"].values),
                 "consistency_flag": (("lat", "lon"), raw["consistency_flag"].values),
                 "verification_flag": (("time", "lat", "lon"), raw["verification_flag"].values)},
                coords={"time": t, "lat": dec["lat"].values, "lon": dec["lon"].values,
                        "forecast_reference_time": frt,
                        "forecast_period": ("time", (t - frt) / np.timedelta64(1, "h")),
                        "lead": ("time", dec["lead"].values.astype(np.int32))},
                attrs={k: dec.attrs[k] for k in REQUIRED_ATTRS})
del dec, raw
open("/proc/self/clear_refs", "w").write("5")  # peak RSS := current RSS
base = mib("VmRSS:")
t0 = time.perf_counter()
if which == "NetCDF (all leads)":
    path = write_netcdf(ds, out / "f.nc")
elif which == "COG soil moisture":
    path = geotiff.write_cog(ds["swvl1"].isel(time=0), out / "sm.tif", "soil_moisture",
                             {"units": "m3 m-3"}, "sm")
elif which == "COG flag":
    path = geotiff.write_cog(ds["verification_flag"].isel(time=0), out / "vf.tif",
                             "verification_flag", {}, "flag")
else:
    path = quicklook(ds["swvl1"].isel(time=-1), out / "q.png", "quicklook",
                     flags=ds["consistency_flag"])
sec = time.perf_counter() - t0
extra = ""
if path.suffix == ".tif":
    with __import__("rasterio").open(path) as src:
        extra = f", overviews {src.overviews(1)}, COG errors {geotiff.validate_cog(path)}"
print(f"WRITER {which}: {sec:.2f} s, peak RSS +{mib('VmHWM:') - base:.0f} MiB above the "
      f"{base:.0f} MiB process with the dataset, {path.stat().st_size / 2**20:.1f} MiB{extra}",
      file=sys.stderr)
'''


def writer_figures(nc: Path) -> None:
    """Each writer in its own process on the content of the forecast NetCDF ``nc``."""
    WRITER_CHILD.write_text(WRITER_CODE)
    out = nc.parent.parent.parent / "writers"
    out.mkdir(parents=True, exist_ok=True)
    for which in ("NetCDF (all leads)", "COG soil moisture", "COG flag", "quicklook"):
        _, _, err = run_full([sys.executable, str(WRITER_CHILD), which, str(nc), str(out)])
        print(next(line for line in err.splitlines() if line.startswith("WRITER "))[7:])


def verify_figures(sets: list[str]) -> None:
    """Ingest the forecast's valid days, then time ``smcast verify``."""
    cfg = fine_config(sets)
    last = last_forcing()
    valid = [last + timedelta(days=k) for k in cfg.model.leads]
    wall, rss = run(fine_cli(sets, "ingest", "--start", str(valid[0]), "--end", str(valid[-1])))
    print(f"(valid days {valid[0]}…{valid[-1]} ingested in {wall:.0f} s, peak RSS {rss:.0f} MiB)")
    wall, rss = run(fine_cli(sets, "verify"))
    print(f"smcast verify of {len(valid)} valid days: {wall:.1f} s, peak RSS {rss:.0f} MiB")


def fine(area: str | None) -> None:
    """The global 0.1° figures (steps 4–8)."""
    from smcast.grid import Grid

    sets = fine_sets(area)
    cfg = fine_config(sets)
    grid = Grid.from_config(cfg.grid)
    FINE.mkdir(parents=True, exist_ok=True)
    print(f"\n# 0.1° ({grid.describe()}; {'box ' + area if area else 'global'}), "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    prepare_fine(sets)
    print(f"model {FINE_MODEL}: UNTRAINED PHYs network (LSTM 1 x 128, leads 1…6), scalers "
          "fitted on the store — figures of time and memory, not of skill")
    imports, imp_rss = run([sys.executable, "-c", IMPORTS])
    print(f"bare imports of the dependencies: {imports:.1f} s, peak RSS {imp_rss:.0f} MiB")
    default = cfg.forecast.band_cells
    for band_cells, cold in ((default, True), (default, False)):
        print_forecast(fine_forecast(sets, band_cells, cold), cfg, imp_rss)
    writer_figures(next((cfg.output_dir / ISSUE.replace("-", "")).glob("*.nc")))
    precision_figures(cfg)
    print_forecast(fine_forecast(sets, OTHER_BAND, True), cfg, imp_rss)  # another band size
    verify_figures(sets)
    print(f"load average at the end {os.getloadavg()[0]:.1f} (other jobs share the CPUs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fine", action="store_true", help="add the global 0.1° figures")
    parser.add_argument("--no-coarse", action="store_true", help="skip the 0.5° figures")
    parser.add_argument("--area", help="N,W,S,E: the 0.1° part on this box, not the globe")
    args = parser.parse_args()
    if not args.no_coarse:
        coarse()
    if args.fine:
        fine(args.area)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
