"""Point sampling after Fang & Shen (2020), on tensors prepared once.

Each iteration draws ``batch_size`` random land cells and ONE random window start shared by the
batch: inputs are days s … s+seq_len−1, the target of lead k is day s+seq_len−1+k, with the
observed previous day and the direction D of that day for the physics term. All arrays are
scaled once up front and kept on the training device, so a batch is a few tensor gathers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smcast.model.wrapper import SoilMoistureModel
from smcast.train.data import CellData


@dataclass
class Batch:
    """One training batch on the device.

    Attributes:
        x: (B, seq_len, n_features) scaled inputs.
        y: (B, n_leads) scaled observed target.
        prev: (B, n_leads) scaled observed target of the day before each target day.
        direction: (B, n_leads) D ∈ {−1, 0, 1} of each target day (float).
    """

    x: torch.Tensor
    y: torch.Tensor
    prev: torch.Tensor
    direction: torch.Tensor


class PointSampler:
    """Scaled arrays of one period on the device, and batches drawn from them."""

    def __init__(self, model: SoilMoistureModel, data: CellData, device: torch.device) -> None:
        sc = model.scalers
        self.seq_len, self.leads = model.seq_len, np.asarray(model.leads)
        self.dyn = torch.as_tensor(np.nan_to_num(sc.scale_dynamic(data.dynamic, data.cells)),
                                   device=device)
        self.stat = torch.as_tensor(np.nan_to_num(sc.scale_static(data.statics)), device=device)
        self.y = torch.as_tensor(sc.scale_target(data.target, data.cells), device=device)
        self.d = torch.as_tensor(data.direction.astype(np.float32), device=device)
        self.n_cells, self.n_days = data.target.shape
        self.n_starts = self.n_days - self.seq_len - int(self.leads.max()) + 1
        if self.n_starts < 1:
            raise ValueError(f"{self.n_days} days are too few for a {self.seq_len}-day window "
                             f"and leads up to {int(self.leads.max())}")
        self.device = device
        self.finite = bool(torch.isfinite(self.y).all() and torch.isfinite(self.dyn).all())

    def batch(self, rng: np.random.Generator, size: int) -> Batch:
        """A random batch: ``size`` cells, one shared window start."""
        cells = rng.choice(self.n_cells, size=min(size, self.n_cells), replace=False)
        start = int(rng.integers(self.n_starts))
        return self.windows(torch.as_tensor(cells, device=self.device), start)

    def windows(self, cells: torch.Tensor, start: int) -> Batch:
        """The samples of ``cells`` (n,) for the window starting at day index ``start``."""
        x_dyn = self.dyn[cells, start:start + self.seq_len]
        x_stat = self.stat[cells].unsqueeze(1).expand(-1, self.seq_len, -1)
        t = torch.as_tensor(start + self.seq_len - 1 + self.leads, device=self.device)
        rows, cols = cells[:, None], t[None, :]
        return Batch(torch.cat([x_dyn, x_stat], dim=-1), self.y[rows, cols],
                     self.y[rows, cols - 1], self.d[rows, cols])
