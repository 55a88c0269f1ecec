"""``smcast retrain``: train a candidate with the trainer, score it and the current model on the
same held-out period, and promote the candidate only when it is better (or as told).

Under ``torchrun --nproc-per-node N`` every process runs ``retrain``: the training cells (every
land cell, or a seeded random ``train.max_cells`` of them) are dealt out ``cells[rank::world]``
and each rank loads only its share; the scalers are fitted over every land cell a band of cells
at a time, the bands split between the ranks; DistributedDataParallel trains. Rank 0 alone then
scores the candidate and the current model (on its own share of the cells), saves the package,
removes the run folder, promotes and records the run in the ledger, while the others wait.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import torch

from smcast.config import Config, TrainConfig
from smcast.errors import ConfigError, InputDataError
from smcast.evaluate import Evaluation, evaluate
from smcast.model.package import ModelError, check_compatible, load_package, save_package
from smcast.model.registry import current_name, model_path, new_name, set_current
from smcast.model.scaling import CellRanges, Scalers
from smcast.model.variants import get_variant
from smcast.model.wrapper import SoilMoistureModel
from smcast.store import DailyStore
from smcast.train.data import CellData, load_cells, load_inputs_target, load_statics
from smcast.train.distributed import SINGLE, Dist, session
from smcast.train.trainer import TrainResult, train

log = logging.getLogger(__name__)

PROFILES: dict[str, dict[str, object]] = {
    "paper": {},  # the config's defaults are the paper's set-up
    "quick": {"batch_size": 256, "iterations_per_epoch": 50, "max_epochs": 40,
              "validate_every": 5, "patience": 3},
}
LOWER_IS_BETTER = {"RMSE"}
#: bytes of store values (dynamic inputs and target) read at a time to fit the scalers band by band
SCALER_BAND_BYTES = 1 << 30
#: the random stream of the training-cell subset (train.max_cells), apart from the sampling's
CELL_STREAM = 0x5EED_CE11


@dataclass
class Periods:
    """Training (incl. validation), validation and test spans (inclusive)."""

    train: tuple[date, date]
    validation: tuple[date, date]
    test: tuple[date, date]


@dataclass
class RetrainSummary:
    """What ``smcast retrain`` did."""

    name: str
    path: Path
    variant: str
    promoted: bool
    reason: str
    metric: str
    candidate: float
    current: float | None
    result: TrainResult

    def line(self) -> str:
        """The summary line printed at the end."""
        cur = "none" if self.current is None else f"{self.current:.4f}"
        return (f"trained {self.name} ({self.variant}, {self.result.epochs} epochs, best "
                f"{self.result.best_epoch}, {self.result.seconds:.0f} s): test {self.metric} "
                f"{self.candidate:.4f} vs current {cur} → "
                f"{'promoted' if self.promoted else 'not promoted'} ({self.reason})")


def train_config(cfg: Config, profile: str | None, epochs: int | None) -> TrainConfig:
    """The training settings after ``--profile`` and ``--epochs``."""
    if profile is not None and profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; valid: {', '.join(PROFILES)}")
    tc = cfg.train.model_copy(update=PROFILES.get(profile or "paper", {}))
    return tc.model_copy(update={"max_epochs": epochs}) if epochs else tc


def periods(store: DailyStore, tc: TrainConfig, start: date | None, end: date | None,
            need: int) -> Periods:
    """Chronological train/validation split and the held-out test period after it."""
    done = store.complete_days()
    if not done:
        raise InputDataError(f"the store {store.path} has no complete day; run `smcast ingest`")
    first = start or tc.start or done[0]
    last_train = end or tc.end or done[-1] - timedelta(days=tc.test_days)
    test_end = min(last_train + timedelta(days=tc.test_days), done[-1])
    n_train = (last_train - first).days + 1
    n_val = round(n_train * tc.validation_fraction)
    if n_train - n_val < need or n_val < need:
        raise ConfigError(f"{first}…{last_train} is too short to train and validate (needs at "
                          f"least {2 * need} days for a {need}-day window with leads); ingest "
                          "more days or move --start/--end")
    if (test_end - last_train).days < need:
        raise ConfigError(f"no held-out test period after {last_train} (store ends {done[-1]}, "
                          f"needs {need} days): end training earlier with --end")
    val_first = last_train - timedelta(days=n_val - 1)
    return Periods((first, last_train), (val_first, last_train),
                   (last_train + timedelta(days=1), test_end))


def build_model(cfg: Config, variant: str, data: CellData, store: DailyStore,
                scalers: Scalers | None = None) -> SoilMoistureModel:
    """A fresh model with ``scalers`` (default: fitted on ``data``, which must then hold every
    land cell over the training span only); the network's initial weights come from
    ``train.seed``."""
    mc = cfg.model
    torch.manual_seed(cfg.train.seed)
    if scalers is None:
        scalers = Scalers.fit(data.dynamic, data.target, data.statics)
    return SoilMoistureModel(get_variant(variant, mc.weights, mc.snow_sign), scalers,
                             store.land_mask, store.grid, mc.dynamic_inputs, mc.static_inputs,
                             mc.seq_len, mc.leads, mc.hidden_size, mc.num_layers, mc.dropout)


def training_cells(n_land: int, max_cells: int | None, seed: int) -> np.ndarray:
    """Ascending land-cell numbers (n,) to train on: all ``n_land``, or a random ``max_cells``
    of them drawn from ``seed`` (the same on every rank)."""
    if max_cells is None or max_cells >= n_land:
        return np.arange(n_land)
    rng = np.random.default_rng([seed, CELL_STREAM])
    return np.sort(rng.choice(n_land, size=max_cells, replace=False))


def fit_scalers(cfg: Config, store: DailyStore, fit: CellData, dist: Dist = SINGLE) -> Scalers:
    """Scalers over every land cell for the days of ``fit`` (the training span): straight from
    ``fit`` when it holds every land cell (one process, no ``train.max_cells``), else read
    band by band from the store (:func:`fit_scalers_banded`)."""
    if len(fit.cells) == store.land_cells:
        return Scalers.fit(fit.dynamic, fit.target, fit.statics)
    return fit_scalers_banded(store, fit.days[0], fit.days[-1], cfg.model.dynamic_inputs,
                              cfg.model.static_inputs, dist)


def fit_scalers_banded(store: DailyStore, first: date, last: date, dynamic: list[str],
                       statics: list[str], dist: Dist = SINGLE,
                       band_cells: int | None = None) -> Scalers:
    """``Scalers.fit`` over every land cell and days first…last without holding them all:
    per-cell ranges are fitted a band of contiguous cell numbers at a time (``band_cells``;
    default ``SCALER_BAND_BYTES`` of dynamic inputs and target per band), rank r fitting bands
    r, r + world, …, and gathered; the static means and deviations come from every land cell.
    The result is identical to ``Scalers.fit`` on all cells, on every rank."""
    n_land, n_days = store.land_cells, (last - first).days + 1
    band = band_cells or max(1, SCALER_BAND_BYTES // (n_days * (len(dynamic) + 1) * 4))
    bands = [np.arange(lo, min(lo + band, n_land)) for lo in range(0, n_land, band)]
    mine = [CellRanges.fit(*load_inputs_target(store, first, last, dynamic, cells))
            for cells in bands[dist.rank::dist.world]]
    log.info("scalers: %d land cells in %d band(s) of %d, %d on this process", n_land,
             len(bands), band, len(mine))
    gathered = dist.all_gather(mine)
    ordered = [gathered[i % dist.world][i // dist.world] for i in range(len(bands))]
    return Scalers.from_ranges(CellRanges.concat(ordered), load_statics(store, statics))


def retrain(cfg: Config, variant: str | None = None, start: date | None = None,
            end: date | None = None, epochs: int | None = None, profile: str | None = None,
            promote: str | None = None) -> RetrainSummary | None:
    """Train, score, save and (maybe) promote a candidate model, recorded in the run ledger.

    Under torchrun every process calls this; rank 0 records the run and returns the summary,
    the other ranks return None once rank 0 is done."""
    from smcast.ledger import Ledger

    with session(cfg.train.device) as dist:
        if not dist.is_main:
            return _retrain(cfg, variant, start, end, epochs, profile, promote, dist)
        with Ledger.for_config(cfg).record("retrain") as rec:
            summary = _retrain(cfg, variant, start, end, epochs, profile, promote, dist)
            assert summary is not None  # rank 0 always has one
            rec.summary = summary.line()
            rec.outputs = [str(summary.path)]
        dist.wait_for_main()
        return summary


def _retrain(cfg: Config, variant: str | None, start: date | None, end: date | None,
             epochs: int | None, profile: str | None, promote: str | None,
             dist: Dist = SINGLE) -> RetrainSummary | None:
    variant = variant or cfg.model.variant
    tc = train_config(cfg, profile, epochs)
    dist.batch_share(tc.batch_size)  # refuse an uneven batch split before reading anything
    store = DailyStore(cfg.store_path)
    need = cfg.model.seq_len + max(cfg.model.leads)
    per = periods(store, tc, start, end, need)
    deep = get_variant(variant).deep
    cells = training_cells(store.land_cells, tc.max_cells, tc.seed)
    share = dist.share(cells)
    log.info("training on %d of %d land cells, %d on this process", len(cells),
             store.land_cells, len(share))
    data = load_cells(store, per.train[0], per.test[1], cfg.model.dynamic_inputs,
                      cfg.model.static_inputs, deep, cfg.model.snow_sign, cells=share)
    fit_span = data.span(per.train[0], per.validation[0] - timedelta(days=1))
    model = build_model(cfg, variant, fit_span, store, fit_scalers(cfg, store, fit_span, dist))
    run_dir = cfg.data_dir / "runs" / _run_key(cfg, variant, tc, per, dist.world)
    result = train(model, fit_span, data.span(*per.validation), tc, run_dir, resume=True,
                   dist=dist)
    if not dist.is_main:
        dist.wait_for_main()
        return None
    test = data.span(*per.test)
    cand = evaluate(model, test, fit_span, tc.device, name="candidate")
    name = new_name(variant)
    path = save_package(model, cfg.data_dir / "models" / name,
                        _info(per, tc, result, cand, profile, dist.world, len(cells)))
    shutil.rmtree(run_dir, ignore_errors=True)
    current_score = _current_score(cfg, store, test, tc)
    metric = tc.promote_metric
    decision, reason = _decide(promote or tc.promote, metric, _lead1(cand, "candidate", metric),
                               current_score)
    if decision:
        set_current(cfg, name)
    return RetrainSummary(name, path, variant, decision, reason, metric,
                          _lead1(cand, "candidate", metric), current_score, result)


def _lead1(ev: Evaluation, name: str, metric: str) -> float:
    return float(ev.scores[name].median[metric][0])


def _current_score(cfg: Config, store: DailyStore, test: CellData, tc: TrainConfig
                   ) -> float | None:
    name = current_name(cfg)
    if name is None:
        return None
    try:
        current = load_package(model_path(cfg, name))
        check_compatible(current, store)
    except ModelError as exc:
        log.warning("the current model %s cannot be scored on this store: %s", name, exc)
        return None
    if (current.dynamic_inputs, current.static_inputs) != (tuple(cfg.model.dynamic_inputs),
                                                            tuple(cfg.model.static_inputs)):
        test = load_cells(store, test.days[0], test.days[-1], list(current.dynamic_inputs),
                          list(current.static_inputs), current.variant.deep,
                          current.variant.snow_sign, cells=test.cells)
    return _lead1(evaluate(current, test, None, tc.device, name="current"), "current",
                  tc.promote_metric)


def _decide(policy: str, metric: str, candidate: float, current: float | None
            ) -> tuple[bool, str]:
    if policy == "always":
        return True, "--promote always"
    if policy == "never":
        return False, "--promote never"
    if current is None:
        return True, "no current model to beat"
    better = candidate < current if metric in LOWER_IS_BETTER else candidate > current
    return better, f"{'better' if better else 'not better'} on {metric}"


def _info(per: Periods, tc: TrainConfig, result: TrainResult, ev: Evaluation,
          profile: str | None, processes: int = 1, cells: int | None = None) -> dict:
    return {"periods": {"train": [str(per.train[0]), str(per.validation[0] - timedelta(days=1))],
                        "validation": [str(d) for d in per.validation],
                        "test": [str(d) for d in per.test]},
            "metrics": {"test": ev.table()},
            "training": {"profile": profile or "paper", "seed": tc.seed,
                         "epochs": result.epochs, "best_epoch": result.best_epoch,
                         "best_validation_rmse": result.best_val_rmse,
                         "stopped_early": result.stopped_early, "seconds": result.seconds,
                         "processes": processes, "cells": cells,
                         "test_cells": int(len(ev.cells)),
                         "settings": tc.model_dump(mode="json")},
            "seed": tc.seed}


def _run_key(cfg: Config, variant: str, tc: TrainConfig, per: Periods, world: int = 1) -> str:
    """The run folder's name: the settings that a resumed training must share (the number of
    processes too, when there are several: each rank resumes its own sampling generator)."""
    parts: list = [variant, cfg.model.model_dump(mode="json"), tc.model_dump(mode="json"),
                   [str(d) for d in (*per.train, *per.test)]]
    if world > 1:
        parts.append({"processes": world})
    blob = json.dumps(parts, sort_keys=True)
    return f"{variant}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"
