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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parent / "out" / "forecast"
ISSUE = "2024-03-15"
IMPORTS = ("import torch, numpy, pandas, xarray, zarr, netCDF4, rasterio, rioxarray, pyproj, "
           "matplotlib, scipy, yaml, pydantic, click, safetensors, tqdm")


def run(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one child process (its own, via a wrapper that
    reports ``RUSAGE_SELF`` just before exiting)."""
    wrapper = ("import resource, runpy, sys, atexit\n"
               "atexit.register(lambda: sys.stderr.write('RSS %d\\n' % "
               "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
               "sys.argv = sys.argv[1:]\n"
               "runpy.run_module(sys.argv[0], run_name='__main__') if sys.argv[0] != '-c' "
               "else exec(sys.argv[1])\n")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", wrapper, *cmd[1:]], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - t0
    rss = [int(line.split()[1]) for line in proc.stderr.splitlines() if line.startswith("RSS ")]
    if proc.returncode not in (0,) or not rss:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-2000:]}")
    return wall, rss[-1] / 1024


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


def main() -> None:
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


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
