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
import resource
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
    """Wall seconds and peak RSS (MiB) of a child process."""
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    return wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def smcast(*args: str) -> list[str]:
    return [sys.executable, "-m", "smcast.cli", *args, "--set", f"data_dir={OUT}",
            "--set", "source.demo.epoch=2023-06-01"]


def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n ** 3 * reps / (time.perf_counter() - t0) / 1e9


def lstm_gflops() -> tuple[float, int]:
    from smcast.model.package import load_package
    from smcast.model.registry import BUNDLED_DEMO, BUNDLED_DIR

    model = load_package(BUNDLED_DIR / BUNDLED_DEMO)
    n, seq, f, h = model.n_cells, model.seq_len, model.n_features, model.hidden_size
    x = torch.randn(n, seq, f)
    net = model.network.eval()
    with torch.inference_mode():
        net(x)
        t0 = time.perf_counter()
        net(x)
        sec = time.perf_counter() - t0
    flops = n * seq * 2 * 4 * h * (f + h) + n * 2 * h * len(model.leads)
    return flops / sec / 1e9, n


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"# smcast forecast benchmark (global 0.5°, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {'CUDA' if torch.cuda.is_available() else 'CPU'})")
    t0 = time.perf_counter()
    subprocess.run(smcast("ingest", "--start", "2024-02-01", "--end", "2024-03-10"), check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
    lstm, n = lstm_gflops()
    print(f"inference: {n} cells, LSTM forward {lstm:.1f} GFLOP/s vs float32 matmul "
          f"{mm:.1f} GFLOP/s → {100 * lstm / mm:.0f} %")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
