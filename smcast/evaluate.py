"""Scoring a model on a period: per cell and lead, against the persistence and day-of-year
climatology baselines on the same cells, days and leads.

For every window start s of the period (inputs s … s+seq_len−1) and lead k, the target day is
t = s+seq_len−1+k. Arrays are (n_cells, n_leads, n_starts) with time on the last axis, as
``smcast.metrics`` expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import torch

from smcast import metrics
from smcast.model.wrapper import SoilMoistureModel
from smcast.train.data import CellData
from smcast.train.sampler import PointSampler
from smcast.train.trainer import pick_device

METRICS = ("R", "RMSE", "R2", "KGE", "consistency")


@dataclass
class Scores:
    """Per-cell scores and their land medians for one predictor (model or baseline).

    Attributes:
        per_cell: metric → (n_cells, n_leads).
        median: metric → (n_leads,) median over land cells (see ``metrics.land_median``).
    """

    per_cell: dict[str, np.ndarray]
    median: dict[str, np.ndarray]


@dataclass
class Evaluation:
    """Scores of a model and the baselines over a period."""

    leads: tuple[int, ...]
    first: date
    last: date
    lat: np.ndarray
    cells: np.ndarray
    scores: dict[str, Scores] = field(default_factory=dict)

    def table(self) -> list[dict[str, float | int | str]]:
        """Rows (predictor, lead, metrics…) of the land medians."""
        rows = []
        for name, sc in self.scores.items():
            for i, lead in enumerate(self.leads):
                rows.append({"predictor": name, "lead": lead,
                             **{m: float(sc.median[m][i]) for m in METRICS}})
        return rows


@dataclass
class Targets:
    """Observed arrays (n, n_leads, n_starts) aligned with the predictions."""

    obs: np.ndarray
    prev: np.ndarray
    direction: np.ndarray
    last_input: np.ndarray  # the observed soil moisture of the last input day, per start
    target_days: np.ndarray  # (n_leads, n_starts) day index of each target


def targets(data: CellData, seq_len: int, leads: tuple[int, ...]) -> Targets:
    """Observations for every window of ``data``."""
    n_starts = data.target.shape[1] - seq_len - max(leads) + 1
    starts = np.arange(n_starts)
    t = starts[None, :] + seq_len - 1 + np.asarray(leads)[:, None]  # (n_leads, n_starts)
    last = data.target[:, starts + seq_len - 1]
    return Targets(data.target[:, t], data.target[:, t - 1], data.direction_eval[:, t],
                   np.broadcast_to(last[:, None, :], (data.target.shape[0], len(leads),
                                                      n_starts)), t)


@torch.inference_mode()
def predict_windows(model: SoilMoistureModel, data: CellData, device: str = "auto",
                    cells_per_batch: int = 65536) -> np.ndarray:
    """Predictions (n, n_leads, n_starts) in m3 m-3 for every window of ``data``."""
    dev = pick_device(device)
    net = model.network.to(dev).eval()
    sampler = PointSampler(model, data, dev)
    out = np.empty((sampler.n_cells, len(model.leads), sampler.n_starts), np.float32)
    for lo in range(0, sampler.n_cells, cells_per_batch):
        idx = torch.arange(lo, min(lo + cells_per_batch, sampler.n_cells), device=dev)
        cells = data.cells[lo:lo + len(idx)]
        for s in range(sampler.n_starts):
            scaled = net(sampler.windows(idx, s).x).cpu().numpy()
            out[lo:lo + len(idx), :, s] = model.scalers.unscale_target(scaled, cells)
    return out


def climatology(train: CellData, window: int = 15) -> np.ndarray:
    """Day-of-year mean of observed swvl1 per cell, (n, 366), smoothed over ±``window`` days."""
    doy = np.array([d.timetuple().tm_yday - 1 for d in train.days])
    sums = np.zeros((train.target.shape[0], 366))
    counts = np.zeros(366)
    np.add.at(sums.T, doy, train.target.T)
    np.add.at(counts, doy, 1)
    kernel = np.ones(2 * window + 1)
    wrap = lambda a: np.concatenate([a[..., -window:], a, a[..., :window]], axis=-1)  # noqa: E731
    smooth_sum = np.apply_along_axis(lambda r: np.convolve(wrap(r), kernel, "valid"), 1, sums)
    smooth_cnt = np.convolve(wrap(counts), kernel, "valid")
    with np.errstate(invalid="ignore", divide="ignore"):
        return (smooth_sum / smooth_cnt).astype(np.float32)


def score(sim: np.ndarray, tg: Targets, lat: np.ndarray) -> Scores:
    """Per-cell metrics and land medians of predictions ``sim`` (n, n_leads, n_starts)."""
    per_cell = {"R": metrics.pearson_r(sim, tg.obs), "RMSE": metrics.rmse(sim, tg.obs),
                "R2": metrics.r2(sim, tg.obs), "KGE": metrics.kge(sim, tg.obs),
                "consistency": metrics.consistency_rate(sim, tg.prev, tg.direction)}
    obs_series = tg.obs[:, 0, :]
    median = {m: np.atleast_1d(metrics.land_median(v, lat, sm_obs=obs_series, cell_ndim=1))
              for m, v in per_cell.items()}
    return Scores(per_cell, median)


def evaluate(model: SoilMoistureModel, data: CellData, train: CellData | None = None,
             device: str = "auto", name: str = "model") -> Evaluation:
    """Score ``model`` on ``data`` (the test period) with persistence and, when the training
    period ``train`` is given, day-of-year climatology baselines."""
    tg = targets(data, model.seq_len, model.leads)
    ev = Evaluation(model.leads, data.days[0], data.days[-1], data.lat, data.cells)
    ev.scores[name] = score(predict_windows(model, data, device), tg, data.lat)
    ev.scores["persistence"] = score(tg.last_input, tg, data.lat)
    if train is not None:
        clim = climatology(train.subset(np.searchsorted(train.cells, data.cells)))
        doy = np.array([d.timetuple().tm_yday - 1 for d in data.days])[tg.target_days]
        ev.scores["climatology"] = score(clim[:, doy], tg, data.lat)
    return ev
