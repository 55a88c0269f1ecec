"""Distributed training pieces: the cells of each rank, the batch split, banded scaler fitting,
and — in two processes spawned with the gloo backend — DistributedDataParallel steps that keep
the ranks' weights identical, rank 0's checkpoint of every rank's generators and an exact resume.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import xarray as xr

from smcast.config import TrainConfig
from smcast.errors import ConfigError
from smcast.grid import Grid
from smcast.model import DEFAULT_STATIC_INPUTS, get_variant
from smcast.model.scaling import CellRanges, Scalers
from smcast.model.wrapper import DEFAULT_DYNAMIC_INPUTS, SoilMoistureModel
from smcast.store import DailyStore, store_lock
from smcast.train.data import load_cells, load_inputs_target, load_statics
from smcast.train.distributed import SINGLE, Dist, session, world_size
from smcast.train.retrain import fit_scalers_banded, training_cells
from smcast.train.trainer import CHECKPOINT, train
from smcast.variables import VARIABLES

DYN, STAT = list(DEFAULT_DYNAMIC_INPUTS), list(DEFAULT_STATIC_INPUTS)
FIRST, N_DAYS = date(2021, 1, 1), 60
FIT_LAST = FIRST + timedelta(days=39)  # 40 days to fit and train on, 20 to validate
LAST = FIRST + timedelta(days=N_DAYS - 1)


def make_store(path: Path) -> DailyStore:
    """A 6 x 6 cell store (some sea) with random days, a cell whose t2m is all NaN and one
    whose swvl1 has gaps."""
    rng = np.random.default_rng(3)
    grid = Grid(0.5, 40.0, 43.0, 10.0, 13.0)
    mask = rng.random(grid.shape) > 0.2
    statics = xr.Dataset({n: (("lat", "lon"), rng.random(grid.shape).astype(np.float32))
                          for n in DEFAULT_STATIC_INPUTS})
    store = DailyStore.create(path, grid, mask.astype(float), mask, statics, FIRST, "test")
    land = np.argwhere(mask)
    days = [FIRST + timedelta(days=i) for i in range(N_DAYS)]
    fields = []
    for i in range(N_DAYS):
        day = {n: rng.random(grid.shape).astype(np.float32) for n in VARIABLES}
        day["swvl1"] = 0.1 + 0.3 * day["swvl1"]
        day["t2m"][tuple(land[2])] = np.nan
        if i % 3 == 0:
            day["swvl1"][tuple(land[5])] = np.nan
        fields.append(day)
    with store_lock(store.path):
        store.write_days(days, fields)
    return store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> DailyStore:
    return make_store(tmp_path_factory.mktemp("dist") / "s.zarr")


# -- one process ----------------------------------------------------------------------------
def test_training_cells_all_or_a_seeded_subset():
    np.testing.assert_array_equal(training_cells(50, None, 1), np.arange(50))
    np.testing.assert_array_equal(training_cells(50, 80, 1), np.arange(50))
    sub = training_cells(1000, 100, 7)
    assert len(sub) == 100 and np.all(np.diff(sub) > 0) and sub[-1] < 1000
    np.testing.assert_array_equal(sub, training_cells(1000, 100, 7))  # the same on every rank
    assert not np.array_equal(sub, training_cells(1000, 100, 8))


def test_shares_and_batch_split():
    cells = training_cells(1000, 101, 0)
    shares = [Dist(rank=r, world=3).share(cells) for r in range(3)]
    assert [len(s) for s in shares] == [34, 34, 33]
    np.testing.assert_array_equal(np.sort(np.concatenate(shares)), cells)
    assert all(np.all(np.diff(s) > 0) for s in shares)  # ascending, as load_cells wants
    np.testing.assert_array_equal(SINGLE.share(cells), cells)
    assert Dist(rank=0, world=4).batch_share(64) == 16 and SINGLE.batch_share(63) == 63
    with pytest.raises(ConfigError, match="not a multiple of the 3 processes"):
        Dist(rank=0, world=3).batch_share(64)
    with pytest.raises(ConfigError, match="2 training cells cannot be shared by 3"):
        Dist(rank=0, world=3).share(np.arange(2))


def test_single_process_collectives_are_identities():
    assert SINGLE.all_reduce_sum([1.5, 2.0]) == [1.5, 2.0]
    assert SINGLE.all_gather({"a": 1}) == [{"a": 1}]
    assert SINGLE.broadcast([3]) == [3]
    assert SINGLE.mean({"x": 2.0}) == {"x": 2.0}
    assert SINGLE.device(torch.device("cpu")) == torch.device("cpu")
    assert Dist(rank=1, world=2, local_rank=1).device(torch.device("cuda")) == \
        torch.device("cuda", 1)
    SINGLE.barrier()
    SINGLE.wait_for_main()


def test_launcher_environment(monkeypatch):
    assert world_size({}) == 1 and world_size({"WORLD_SIZE": "4"}) == 4
    with pytest.raises(ConfigError, match="not a number"):
        world_size({"WORLD_SIZE": "two"})
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with session("cpu") as d:  # no launcher: one process, no process group
        assert d is SINGLE and not torch.distributed.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ConfigError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT unset"):
        with session("cpu"):
            pass


def test_banded_fit_equals_fit_on_all_cells(store):
    everything = load_cells(store, FIRST, FIT_LAST, DYN, STAT, deep=True)
    full = Scalers.fit(everything.dynamic, everything.target, everything.statics)
    assert full.target_min[5] < full.target_max[5] and full.dyn_max[2, 0] == 1.0  # NaN cases
    for band in (1, 4, 7, 1000):
        banded = fit_scalers_banded(store, FIRST, FIT_LAST, DYN, STAT, band_cells=band)
        for name, a in full.to_arrays().items():
            np.testing.assert_array_equal(banded.to_arrays()[name], a, err_msg=name)
    dyn, target = load_inputs_target(store, FIRST, FIT_LAST, DYN, np.arange(3, 9))
    np.testing.assert_array_equal(dyn, everything.dynamic[3:9])
    np.testing.assert_array_equal(target, everything.target[3:9])
    np.testing.assert_array_equal(load_statics(store, STAT), everything.statics)
    ranges = CellRanges.concat([CellRanges.fit(dyn[:2], target[:2]),
                                CellRanges.fit(dyn[2:], target[2:])])
    np.testing.assert_array_equal(ranges.dyn_min, full.dyn_min[3:9])


# -- two processes, gloo ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(store: DailyStore, scalers: Scalers) -> SoilMoistureModel:
    torch.manual_seed(0)  # as build_model: the same initial weights on every rank
    return SoilMoistureModel(get_variant("phys"), scalers, store.land_mask, store.grid, DYN,
                             STAT, seq_len=5, leads=(1,), hidden_size=8)


def _flat(model: SoilMoistureModel) -> np.ndarray:
    return torch.cat([p.detach().ravel() for p in model.network.parameters()]).numpy()


def _worker(rank: int, world: int, port: int, store_path: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    store, run_dir = DailyStore(store_path), Path(out) / "run"
    with session("cpu") as d:
        assert (d.rank, d.world, d.backend) == (rank, world, "gloo")
        cells = training_cells(store.land_cells, None, 0)
        share = d.share(cells)
        scalers = fit_scalers_banded(store, FIRST, FIT_LAST, DYN, STAT, d, band_cells=4)
        data = load_cells(store, FIRST, LAST, DYN, STAT, deep=True, cells=share)
        fit, val = data.span(FIRST, FIT_LAST), data.span(FIT_LAST + timedelta(days=1), LAST)
        tc = TrainConfig(batch_size=8, iterations_per_epoch=5, max_epochs=4, validate_every=2,
                         patience=100, validation_cell_stride=3, device="cpu",
                         deterministic=True, learning_rate=0.01)
        model = _model(store, scalers)
        init = _flat(model)
        res = train(model, fit, val, tc, run_dir, resume=True, dist=d)
        ck = torch.load(run_dir / CHECKPOINT, weights_only=True) if d.is_main else None
        d.barrier()  # rank 0 has read the checkpoint before the next training rewrites it
        resumed = _model(store, scalers)
        longer = tc.model_copy(update={"max_epochs": 6})
        train(resumed, fit, val, longer, run_dir, resume=True, dist=d)
        straight = _model(store, scalers)
        train(straight, fit, val, longer, None, dist=d)
        gathered = d.all_gather({"share": share.tolist(), "params": _flat(model).tolist(),
                                 "history": res.history, "scalers_ok": _same(scalers, store),
                                 "moved": float(np.abs(_flat(model) - init).max()),
                                 "resume_exact": bool(np.array_equal(_flat(resumed),
                                                                     _flat(straight)))})
        if d.is_main:
            summary = {"n_land": store.land_cells, "ranks": gathered,
                       "ck_world": ck["world"], "ck_rngs": len(ck["rng"]),
                       "ck_rngs_differ": ck["rng"][0] != ck["rng"][1],
                       "ck_epoch": ck["epoch"]}
            (Path(out) / "summary.json").write_text(json.dumps(summary))


def _same(scalers: Scalers, store: DailyStore) -> bool:
    everything = load_cells(store, FIRST, FIT_LAST, DYN, STAT, deep=True)
    full = Scalers.fit(everything.dynamic, everything.target, everything.statics)
    return all(np.array_equal(scalers.to_arrays()[k], v) for k, v in full.to_arrays().items())


@pytest.mark.timeout(120)
def test_two_ranks_train_in_step(store, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(store.path), str(tmp_path)), nprocs=2,
             join=True)
    s = json.loads((tmp_path / "summary.json").read_text())
    r0, r1 = s["ranks"]
    # the shares are disjoint and together every training cell
    assert not set(r0["share"]) & set(r1["share"])
    assert sorted(r0["share"] + r1["share"]) == list(range(s["n_land"]))
    # different cells, averaged gradients: the same weights after the steps, and they moved
    assert r0["params"] == r1["params"] and r0["moved"] > 1e-3
    assert r0["history"] == r1["history"]  # the same (all-reduced) validation RMSE
    assert r0["scalers_ok"] and r1["scalers_ok"]  # banded over 2 ranks == Scalers.fit
    # rank 0's checkpoint holds both ranks' generators; resuming from it is exact
    assert (s["ck_world"], s["ck_rngs"], s["ck_epoch"]) == (2, 2, 4) and s["ck_rngs_differ"]
    assert r0["resume_exact"] and r1["resume_exact"]
