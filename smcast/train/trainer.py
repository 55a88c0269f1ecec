"""The trainer: Adam on point-sampled batches, the variant's physics-guided loss, validation
every ``validate_every`` epochs on a spatial subset, early stopping with patience, the best model
kept, resumable from a checkpoint, seeded (optionally deterministic).

Under torchrun (``dist`` from :mod:`smcast.train.distributed`) every rank trains on its own share
of the cells with its own sampling generator (``seed + rank``) and draws ``batch_size / world``
cells per step; DistributedDataParallel averages the gradients, so the ranks keep identical
weights. The validation RMSE is summed over the ranks' validation cells, so every rank sees the
same value and early stopping stops them together. Only rank 0 writes the checkpoint (with every
rank's generator states) and shows a progress bar.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from smcast.config import TrainConfig
from smcast.errors import ConfigError
from smcast.model.wrapper import SoilMoistureModel
from smcast.physics import physics_guided_loss_terms
from smcast.train.data import CellData
from smcast.train.distributed import SINGLE, Dist
from smcast.train.sampler import PointSampler

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainResult:
    """What a training run did. ``history``: one dict per validation (epoch, losses, val RMSE)."""

    best_epoch: int
    best_val_rmse: float
    epochs: int
    stopped_early: bool
    seconds: float
    samples_per_second: float
    history: list[dict[str, float]] = field(default_factory=list)


def pick_device(choice: str) -> torch.device:
    """auto → CUDA when available, else CPU; cuda without a GPU is an error."""
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is usable; use auto or cpu")
    if choice == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def seed_everything(seed: int, deterministic: bool) -> np.random.Generator:
    """Seed torch (CPU and CUDA) and return the numpy generator used for sampling."""
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    return np.random.default_rng(seed)


def train(model: SoilMoistureModel, train_data: CellData, val_data: CellData,
          cfg: TrainConfig, run_dir: Path | None = None, resume: bool = False,
          dist: Dist = SINGLE) -> TrainResult:
    """Train ``model`` in place; on return it holds the best weights seen in validation.

    ``train_data``/``val_data``: this rank's cells (all of them for a single process);
    validation uses every ``validation_cell_stride``-th of them. ``dist``: this process's place
    in a torchrun job (default: the only process)."""
    per_rank = dist.batch_share(cfg.batch_size)
    device = dist.device(pick_device(cfg.device))
    rng = seed_everything(cfg.seed + dist.rank, cfg.deterministic)
    net = model.network.to(device)
    step_net = _ddp(net, device) if dist.distributed else net
    optim = make_optimizer(net, cfg.learning_rate)
    sampler = PointSampler(model, train_data, device)
    val_cells = np.arange(0, val_data.target.shape[0], cfg.validation_cell_stride)
    validator = PointSampler(model, val_data.subset(val_cells), device)
    state = _State(best=float("inf"), best_weights=copy.deepcopy(net.state_dict()))
    ck = _read_checkpoint(run_dir / CHECKPOINT, dist) if resume and run_dir is not None else None
    if ck is not None:
        state = _restore(ck, run_dir, net, optim, rng, dist)
        log.info("resumed at epoch %d (best validation RMSE %.4f)", state.epoch, state.best)
    t0, samples = time.perf_counter(), 0
    weights = model.variant.weights
    bar = tqdm(total=cfg.max_epochs, initial=state.epoch, desc=f"train {model.variant.name}",
               unit="epoch", disable=None if dist.is_main else True)
    while state.epoch < cfg.max_epochs and state.bad < cfg.patience:
        terms = dist.mean(_epoch(step_net, optim, sampler, rng, cfg.iterations_per_epoch,
                                 per_rank, weights))
        samples += cfg.iterations_per_epoch * cfg.batch_size
        state.epoch += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in terms.items()} | {"val": f"{state.best:.4f}"})
        if state.epoch % cfg.validate_every == 0 or state.epoch == cfg.max_epochs:
            _validate(net, validator, state, terms, dist)
            if run_dir is not None:
                _save_checkpoint(run_dir / CHECKPOINT, net, optim, rng, state, dist)
    bar.close()
    net.load_state_dict(state.best_weights)
    net.eval()
    seconds = time.perf_counter() - t0
    return TrainResult(state.best_epoch, state.best, state.epoch, state.bad >= cfg.patience,
                       seconds, samples / max(seconds, 1e-9), state.history)


def _ddp(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``net`` in DistributedDataParallel: rank 0's weights broadcast at the start, gradients
    averaged over the ranks in every backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=ids)


def make_optimizer(net: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam (the paper's optimiser), with the fused kernel (CPU and CUDA in torch ≥ 2.4)."""
    return torch.optim.Adam(net.parameters(), lr=lr, fused=True)


@dataclass
class _State:
    best: float
    best_weights: dict[str, torch.Tensor]
    epoch: int = 0
    best_epoch: int = 0
    bad: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def train_step(net: torch.nn.Module, optim: torch.optim.Optimizer, batch: Any,
               weights: tuple[float, float], finite: bool = False) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch; returns the loss terms (total, rmse, phy), detached.
    ``finite``: the batch is known to hold no NaN (the sampler checked its data once)."""
    optim.zero_grad(set_to_none=True)
    pred = net(batch.x)
    terms = physics_guided_loss_terms(pred, batch.y, batch.prev, batch.direction,
                                      weights=weights, assume_finite=finite)
    terms["total"].backward()
    optim.step()
    return {k: v.detach() for k, v in terms.items()}


def _epoch(net: torch.nn.Module, optim: torch.optim.Optimizer, sampler: PointSampler,
           rng: np.random.Generator, iterations: int, batch_size: int,
           weights: tuple[float, float]) -> dict[str, float]:
    """``iterations`` steps on batches of ``batch_size`` cells; the mean loss terms."""
    net.train()
    sums: dict[str, torch.Tensor] = {}
    for _ in range(iterations):
        batch = sampler.batch(rng, batch_size)
        for k, v in train_step(net, optim, batch, weights, sampler.finite).items():
            sums[k] = sums.get(k, 0.0) + v
    return {k: float(v) / iterations for k, v in sums.items()}


@torch.inference_mode()
def validation_sse(net: torch.nn.Module, sampler: PointSampler) -> tuple[float, int]:
    """Sum of squared errors (scaled units²) and the number of finite targets over every
    window of the validation period and the sampler's cells."""
    net.eval()
    sse, count = 0.0, 0
    if sampler.n_cells == 0:
        return sse, count
    cells = torch.arange(sampler.n_cells, device=sampler.device)
    for start in range(sampler.n_starts):
        b = sampler.windows(cells, start)
        ok = torch.isfinite(b.y)
        err = (net(b.x) - b.y)[ok]
        sse += float((err ** 2).sum())
        count += int(ok.sum())
    return sse, count


def validation_rmse(net: torch.nn.Module, sampler: PointSampler, dist: Dist = SINGLE) -> float:
    """RMSE (scaled units) over every window of the validation period and the validation
    cells of all ranks (the same value on every rank)."""
    sse, count = validation_sse(net, sampler)
    if dist.distributed:
        sse, count = dist.all_reduce_sum([sse, count])
    return float(np.sqrt(sse / count)) if count else float("nan")


def _validate(net: torch.nn.Module, validator: PointSampler, state: _State,
              terms: dict[str, float], dist: Dist = SINGLE) -> None:
    rmse = validation_rmse(net, validator, dist)
    state.history.append({"epoch": state.epoch, **terms, "val_rmse": rmse})
    if rmse < state.best:
        state.best, state.best_epoch, state.bad = rmse, state.epoch, 0
        state.best_weights = copy.deepcopy(net.state_dict())
    else:
        state.bad += 1
    level = logging.INFO if dist.is_main else logging.DEBUG  # the same line on every rank
    log.log(level, "epoch %d: loss %.4f (rmse %.4f, phy %.5f), validation RMSE %.4f%s",
            state.epoch, terms["total"], terms["rmse"], terms["phy"], rmse,
            " (best)" if state.best_epoch == state.epoch else "")


def _save_checkpoint(path: Path, net: torch.nn.Module, optim: torch.optim.Optimizer,
                     rng: np.random.Generator, state: _State, dist: Dist = SINGLE) -> None:
    """Rank 0 writes the checkpoint (atomically), with the sampling generator and torch CPU
    generator states of every rank, in rank order; every rank must call this."""
    rngs = dist.all_gather(rng.bit_generator.state)
    torch_rngs = dist.all_gather(torch.get_rng_state())
    if not dist.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"net": net.state_dict(), "optim": optim.state_dict(), "world": dist.world,
                "rng": rngs, "torch_rng": torch_rngs,
                "best": state.best, "best_weights": state.best_weights, "epoch": state.epoch,
                "best_epoch": state.best_epoch, "bad": state.bad, "history": state.history},
               tmp)
    tmp.replace(path)


def _read_checkpoint(path: Path, dist: Dist = SINGLE) -> dict[str, Any] | None:
    """The checkpoint at ``path`` as rank 0 reads it (None when there is none), on every
    rank: the other ranks need not see rank 0's file system."""
    ck = torch.load(path, weights_only=True, map_location="cpu") \
        if dist.is_main and path.exists() else None
    return dist.broadcast(ck)


def _restore(ck: dict[str, Any], run_dir: Path, net: torch.nn.Module,
             optim: torch.optim.Optimizer, rng: np.random.Generator,
             dist: Dist = SINGLE) -> _State:
    """Put a checkpoint's weights, optimiser and this rank's generator states in place."""
    if ck["world"] != dist.world:
        raise ConfigError(f"the checkpoint in {run_dir} was written by {ck['world']} "
                          f"process(es), this run has {dist.world}: start as many or delete "
                          "that folder to train from the start")
    net.load_state_dict(ck["net"])
    optim.load_state_dict(ck["optim"])
    rng.bit_generator.state = ck["rng"][dist.rank]
    torch.set_rng_state(ck["torch_rng"][dist.rank])
    return _State(ck["best"], ck["best_weights"], ck["epoch"], ck["best_epoch"], ck["bad"],
                  ck["history"])
