"""Training benchmarks; prints its figures (not part of the test run).

    python bench/train.py                          # throughput only
    python bench/train.py --store smcast-data/store.zarr --start 2021-01-01 --end 2022-12-31
    python bench/train.py --processes 2            # + 1 vs N processes (DDP, gloo, CPU)

1. Throughput (samples/s) of smcast's real training step — point sampling from the prepared
   tensors, the physics-guided loss, backward, Adam — against a bare ``nn.LSTM`` → dropout →
   linear head forward + MSE + backward + Adam step on random tensors of the same batch shape
   (the same network, without smcast's machinery), in the same run. Target: the real step at ≥ 80 % of the bare figure.
2. With ``--store``: peak memory and time of preparing a two-year global 0.5° training run
   (load the land cells, fit scalers, put the tensors in place) and one epoch of training.
3. With ``--processes N``: samples/s of DistributedDataParallel training steps (gloo, CPU, one
   thread per process) on N processes sharing a global batch, against one process with one
   thread and with N threads — what ``torchrun --nproc-per-node N smcast retrain`` gains.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import time
from datetime import date, timedelta

import numpy as np
import torch
from torch import nn

from smcast.config import load_config
from smcast.grid import Grid
from smcast.model.scaling import Scalers
from smcast.model.variants import get_variant
from smcast.model.wrapper import SoilMoistureModel
from smcast.train.data import CellData
from smcast.train.sampler import PointSampler
from smcast.train.trainer import make_optimizer, train_step


def synthetic(n_cells: int, n_days: int, seed: int = 0) -> CellData:
    rng = np.random.default_rng(seed)
    days = [date(2021, 1, 1) + timedelta(days=i) for i in range(n_days)]
    dyn = rng.normal(size=(n_cells, n_days, 8)).astype(np.float32)
    target = rng.uniform(0.1, 0.4, size=(n_cells, n_days)).astype(np.float32)
    d = rng.integers(-1, 2, size=(n_cells, n_days)).astype(np.int8)
    return CellData(days, np.arange(n_cells), np.zeros(n_cells, np.float32), dyn,
                    rng.normal(size=(n_cells, 6)).astype(np.float32), target, d, d)


def model_for(data: CellData, variant: str = "phys") -> SoilMoistureModel:
    n = data.target.shape[0]
    mask = np.zeros(Grid(0.5).shape, bool)
    mask.ravel()[:n] = True
    return SoilMoistureModel(get_variant(variant),
                             Scalers.fit(data.dynamic, data.target, data.statics), mask,
                             Grid(0.5), leads=(1,))


def time_steps(fn, steps: int) -> float:
    for _ in range(10):
        fn()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return time.perf_counter() - t0


def throughput(batch: int, steps: int, rounds: int = 5) -> tuple[float, float]:
    """Best of ``rounds`` alternating measurements of each (robust to a busy machine)."""
    data = synthetic(5000, 400)
    model = model_for(data)
    sampler = PointSampler(model, data, torch.device("cpu"))
    net = model.network.train()
    opt = make_optimizer(net, 1e-3)
    rng = np.random.default_rng(0)

    def real() -> None:
        train_step(net, opt, sampler.batch(rng, batch), (0.1, 0.9), sampler.finite)

    lstm, head = nn.LSTM(14, 128, batch_first=True), nn.Linear(128, 1)
    drop = nn.Dropout(0.15)  # the same network as smcast's: LSTM → dropout → linear
    bare_opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=1e-3, fused=True)
    x, y = torch.randn(batch, 7, 14), torch.randn(batch, 1)

    def bare() -> None:
        bare_opt.zero_grad(set_to_none=True)
        out, _ = lstm(x)
        loss = ((head(drop(out[:, -1])) - y) ** 2).mean()
        loss.backward()
        bare_opt.step()

    real_s = bare_s = float("inf")
    for _ in range(rounds):  # alternate, so a slow spell hits both
        real_s = min(real_s, time_steps(real, steps))
        bare_s = min(bare_s, time_steps(bare, steps))
    return batch * steps / real_s, batch * steps / bare_s


def _ddp_worker(rank: int, world: int, port: int, batch: int, steps: int, threads: int,
                out) -> None:
    """One rank of the multi-process measurement; rank 0 puts samples/s (global) in ``out``."""
    from smcast.train.distributed import session
    from smcast.train.trainer import _ddp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(threads)
    with session("cpu") as d:
        data = synthetic(5000 // world, 400, seed=rank)  # this rank's share of 5000 cells
        model = model_for(data)
        sampler = PointSampler(model, data, torch.device("cpu"))
        net = _ddp(model.network.train(), torch.device("cpu")) if d.distributed \
            else model.network.train()
        opt = make_optimizer(model.network, 1e-3)
        rng, size = np.random.default_rng(rank), d.batch_share(batch)

        def step() -> None:
            train_step(net, opt, sampler.batch(rng, size), (0.1, 0.9), sampler.finite)

        best = float("inf")
        for _ in range(3):
            d.barrier()
            best = min(best, time_steps(step, steps))
        if d.is_main:
            out.put(batch * steps / best)


def processes_run(world: int, batch: int, steps: int, threads: int = 1) -> float:
    """Global samples/s of ``world`` processes (``threads`` each) sharing batches of ``batch``."""
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.SimpleQueue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(world, port, batch, steps, threads, out), nprocs=world,
                       start_method="spawn")
    return out.get()


def global_run(store_path: str, start: date, end: date) -> None:
    from smcast.store import DailyStore
    from smcast.train.data import load_cells
    from smcast.train.retrain import build_model
    from smcast.train.trainer import train

    cfg = load_config(None, ["train.max_epochs=1", "train.validate_every=1"], environ={})
    store = DailyStore(store_path)
    t0 = time.perf_counter()
    data = load_cells(store, start, end, cfg.model.dynamic_inputs, cfg.model.static_inputs,
                      deep=True)
    split = data.days[int(len(data.days) * 0.75)]
    fit = data.span(start, split - timedelta(days=1))
    val = data.span(split, end)
    model = build_model(cfg, "phys", fit, store)
    t_load = time.perf_counter() - t0
    res = train(model, fit, val, cfg.train)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"global run: {data.target.shape[0]} cells x {len(data.days)} days loaded and prepared "
          f"in {t_load:.0f} s; 1 epoch ({cfg.train.iterations_per_epoch} iterations of "
          f"{cfg.train.batch_size}) + validation in {res.seconds:.0f} s; peak RSS {rss:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--store")
    ap.add_argument("--start", default="2021-01-01")
    ap.add_argument("--end", default="2022-12-31")
    ap.add_argument("--processes", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"# smcast training benchmark (torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, CPU)")
    for batch in (64, 256, 1024):
        real, bare = throughput(batch, a.steps)
        print(f"batch {batch:>5}: smcast step {real:>9.0f} samples/s, bare nn.LSTM step "
              f"{bare:>9.0f} samples/s → {100 * real / bare:.0f} %")
    if a.processes > 1:
        for batch in (64, 256):
            one = processes_run(1, batch, a.steps)
            threads = processes_run(1, batch, a.steps, a.processes)
            many = processes_run(a.processes, batch, a.steps)
            print(f"batch {batch:>5}: 1 process x 1 thread {one:>7.0f} samples/s, x "
                  f"{a.processes} threads {threads:>7.0f}; {a.processes} processes (DDP, gloo) "
                  f"x 1 thread {many:>7.0f} samples/s → x{many / one:.2f}")
    if a.store:
        global_run(a.store, date.fromisoformat(a.start), date.fromisoformat(a.end))


if __name__ == "__main__":
    main()
