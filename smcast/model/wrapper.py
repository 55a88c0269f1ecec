"""``SoilMoistureModel``: the network together with everything needed to use it.

A model owns its core network, its loss variant, the names of its inputs (store short names),
the window length, the forecast leads, the fitted scalers, and the grid and land mask it was
trained on. Land cells are numbered in C order of the land mask
(``land_mask.ravel().nonzero()[0]``); that number is the ``cells`` index used everywhere.

Features (paper §2): the scaled dynamic window (days t−seq_len … t−1) concatenated with the
scaled statics repeated along time → (n, seq_len, n_dyn + n_static). Lead k predicts day
t−1+k, i.e. ``leads=(1,)`` is the paper's next-day forecast.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np
import torch

from smcast.errors import ConfigError
from smcast.grid import Grid
from smcast.model.network import SoilMoistureLSTM
from smcast.model.scaling import Scalers
from smcast.model.variants import Variant

#: The paper's 8 dynamic inputs, in its order (store short names).
DEFAULT_DYNAMIC_INPUTS: tuple[str, ...] = ("t2m", "u10", "v10", "tp", "sp", "q", "ssrd", "strd")
#: The paper's 6 static inputs (names of the store's static fields).
DEFAULT_STATIC_INPUTS: tuple[str, ...] = ("elevation", "clay", "sand", "silt",
                                          "storage_capacity", "land_cover")
#: The target variable.
TARGET = "swvl1"


class SoilMoistureModel:
    """A trained (or trainable) soil-moisture model.

    Args:
        variant: the loss variant it is (or was) trained with.
        scalers: fitted scalers, one row per land cell.
        land_mask: (nlat, nlon) bool, the training store's land mask.
        grid: the training store's grid.
        dynamic_inputs, static_inputs: store variable names, in feature order.
        seq_len: input window length in days.
        leads: days ahead of the last input day, one network output each.
        hidden_size, num_layers, dropout: network shape (see ``SoilMoistureLSTM``).
        network: an existing network (e.g. when loading); a fresh one is built when None.
        manifest: the package manifest when loaded from disk (periods, metrics, …), else {}.
    """

    def __init__(self, variant: Variant, scalers: Scalers, land_mask: np.ndarray, grid: Grid,
                 dynamic_inputs: Sequence[str] = DEFAULT_DYNAMIC_INPUTS,
                 static_inputs: Sequence[str] = DEFAULT_STATIC_INPUTS, seq_len: int = 7,
                 leads: Sequence[int] = (1,), hidden_size: int = 128, num_layers: int = 1,
                 dropout: float = 0.15, network: SoilMoistureLSTM | None = None,
                 manifest: dict[str, Any] | None = None) -> None:
        self.variant = variant
        self.scalers = scalers
        self.land_mask = np.asarray(land_mask, dtype=bool)
        self.grid = grid
        self.dynamic_inputs = tuple(dynamic_inputs)
        self.static_inputs = tuple(static_inputs)
        self.seq_len = int(seq_len)
        self.leads = tuple(int(k) for k in leads)
        self.hidden_size, self.num_layers = int(hidden_size), int(num_layers)
        self.dropout = float(dropout)
        self.manifest: dict[str, Any] = dict(manifest or {})
        self._check()
        self.network = network if network is not None else SoilMoistureLSTM(
            self.n_features, len(self.leads), self.hidden_size, self.num_layers, self.dropout)
        self._check_network()

    # -- consistency --------------------------------------------------------------------------
    def _check(self) -> None:
        if self.land_mask.shape != self.grid.shape:
            raise ConfigError(f"land mask shape {self.land_mask.shape} does not match the grid "
                              f"{self.grid.shape}")
        if self.scalers.n_cells != self.n_cells:
            raise ConfigError(f"scalers have {self.scalers.n_cells} cells, the land mask "
                              f"{self.n_cells}")
        if self.scalers.n_dynamic != len(self.dynamic_inputs) or \
                self.scalers.n_static != len(self.static_inputs):
            raise ConfigError(f"scalers are for {self.scalers.n_dynamic} dynamic and "
                              f"{self.scalers.n_static} static inputs, the model has "
                              f"{len(self.dynamic_inputs)} and {len(self.static_inputs)}")
        if self.seq_len < 1:
            raise ConfigError(f"seq_len must be at least 1, not {self.seq_len}")
        if not self.leads or min(self.leads) < 1 or len(set(self.leads)) != len(self.leads):
            raise ConfigError(f"leads must be distinct positive day counts, not {self.leads}")

    def _check_network(self) -> None:
        net = self.network
        if net.n_features != self.n_features or net.n_leads != len(self.leads):
            raise ConfigError(f"network takes {net.n_features} features and gives "
                              f"{net.n_leads} leads; the model needs {self.n_features} and "
                              f"{len(self.leads)}")

    # -- sizes --------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Features per time step: dynamic + static."""
        return len(self.dynamic_inputs) + len(self.static_inputs)

    @property
    def n_leads(self) -> int:
        return len(self.leads)

    @property
    def n_cells(self) -> int:
        """Number of land cells."""
        return int(self.land_mask.sum())

    @property
    def cell_index(self) -> np.ndarray:
        """Flat (C-order) grid index of every land cell, shape (n_cells,)."""
        return self.land_mask.ravel().nonzero()[0]

    @property
    def device(self) -> torch.device:
        """Where the network's parameters are."""
        return next(self.network.parameters()).device

    # -- features and prediction ----------------------------------------------------------------
    def build_features(self, dyn: np.ndarray | torch.Tensor, statics: np.ndarray | torch.Tensor,
                       cells: np.ndarray | torch.Tensor,
                       device: torch.device | str | None = None) -> torch.Tensor:
        """Network input for n samples.

        Args:
            dyn: (n, seq_len, n_dyn) dynamic inputs in store units, days t−seq_len … t−1.
            statics: (n, n_static) static fields in store units.
            cells: (n,) land-cell numbers of the samples.
            device: where to build the tensor (default: CPU, or the inputs' device).

        Returns:
            (n, seq_len, n_dyn + n_static) float32 tensor. NaN inputs become 0 after scaling
            (the cell's training minimum for dynamic inputs, the spatial mean for statics), so
            inference is total; the trainer never feeds windows with NaN.
        """
        dyn_t, stat_t = _tensor(dyn, device), _tensor(statics, device)
        n = dyn_t.shape[0]
        if dyn_t.shape != (n, self.seq_len, len(self.dynamic_inputs)) or \
                stat_t.shape != (n, len(self.static_inputs)):
            raise ValueError(f"expected dyn (n, {self.seq_len}, {len(self.dynamic_inputs)}) and "
                             f"statics (n, {len(self.static_inputs)}), got "
                             f"{tuple(dyn_t.shape)} and {tuple(stat_t.shape)}")
        x_dyn = self.scalers.scale_dynamic(dyn_t, cells)
        x_stat = self.scalers.scale_static(stat_t)[:, None, :].expand(n, self.seq_len, -1)
        return torch.nan_to_num(torch.cat([x_dyn, x_stat], dim=-1), nan=0.0)

    def predict(self, dyn: np.ndarray, statics: np.ndarray, cells: np.ndarray,
                batch_size: int = 65536, device: torch.device | str | None = None,
                precision: str = "fp32") -> np.ndarray:
        """Soil moisture forecasts in m3 m-3.

        Args: as ``build_features``; ``batch_size`` samples per forward pass; ``device``
            defaults to CUDA when available, else CPU (the network is moved there);
            ``precision``: the network's arithmetic — ``fp32`` (exact), ``bf16`` (CPU or
            CUDA) or ``fp16`` (CUDA only), by ``torch.autocast``; features and the unscaling
            stay float32.

        Returns:
            (n, n_leads) float32 swvl1 in m3 m-3 (unscaled), column j for ``leads[j]``.

        Raises:
            ConfigError: an unknown precision, or fp16 on a device other than CUDA.
        """
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        autocast = autocast_context(precision, device)
        self.network.to(device)
        was_training = self.network.training
        self.network.eval()
        cells = np.asarray(cells.cpu() if isinstance(cells, torch.Tensor) else cells)
        out = np.empty((len(cells), self.n_leads), np.float32)
        try:
            with torch.inference_mode():
                for lo in range(0, len(cells), batch_size):
                    sl = slice(lo, lo + batch_size)
                    x = self.build_features(dyn[sl], statics[sl], cells[sl], device)
                    with autocast:
                        y = self.network(x)
                    y = self.scalers.unscale_target(y.float(), cells[sl])
                    out[sl] = y.cpu().numpy()
        finally:
            self.network.train(was_training)
        return out

    def describe(self) -> str:
        """One line: variant, inputs, window, leads, network, cells."""
        l1, l2 = self.variant.weights
        return (f"{self.variant.name} (λ1={l1:g}, λ2={l2:g}, snow sign {self.variant.snow_sign}"
                f"{', deep soil' if self.variant.deep else ''}): {self.n_features} features x "
                f"{self.seq_len} days → leads {','.join(map(str, self.leads))} d; LSTM "
                f"{self.num_layers}x{self.hidden_size}, dropout {self.dropout:g}; "
                f"{self.n_cells} land cells on a {self.grid.describe()}")


#: forward-pass precisions of ``SoilMoistureModel.predict`` (torch.autocast dtypes; None: off)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16,
                                             "fp16": torch.float16}


def autocast_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context of a precision on a device (a no-op context for fp32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; use one of "
                          f"{', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"forecast.precision=fp16 needs a CUDA device, this run uses "
                          f"{device.type}; use bf16 (CPU or CUDA) or fp32")
    return torch.autocast(device_type=device.type, dtype=dtype)


def _tensor(a: np.ndarray | torch.Tensor, device: torch.device | str | None) -> torch.Tensor:
    """float32 tensor on ``device`` (None: keep a tensor's device, CPU for numpy)."""
    if isinstance(a, torch.Tensor):
        return a.to(device=device or a.device, dtype=torch.float32)
    return torch.as_tensor(np.asarray(a, np.float32), device=device)
