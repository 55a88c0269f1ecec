"""Normalisation of inputs and target, as in the authors' code (LandBench).

* Dynamic inputs and the target: min–max **per land cell and per feature**, fitted over the
  training period only (the caller passes only that period): ``(x − min) / (max − min)``.
* Static inputs: z-scored **over space** (one mean and standard deviation per static field).

Degenerate cases, so that scaling never produces NaN or inf from finite inputs:

* a zero range (``max == min``, e.g. a cell whose soil moisture never changes) is treated as a
  range of 1, so the cell's training values scale to 0;
* a cell whose training values of a feature (or of the target) are all NaN gets min 0 and max 1
  (an identity scaling); such cells have no training samples, so the choice only matters for
  inference on them;
* a static field with zero or undefined spread over space gets std 1; an all-NaN one mean 0.

Every function works on numpy arrays and on torch tensors, returns the kind it was given, and
keeps float32. ``cells`` is always an integer index array (n,) into the per-cell scalers (land
cells numbered in C order of the land mask).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


@dataclass
class Scalers:
    """Fitted scalers.

    Attributes:
        dyn_min, dyn_max: (ncell, n_dyn) float32, per cell and dynamic feature, store units.
        target_min, target_max: (ncell,) float32, swvl1 in m3 m-3.
        static_mean, static_std: (n_static,) float32, over land cells, store units.
    """

    dyn_min: np.ndarray
    dyn_max: np.ndarray
    target_min: np.ndarray
    target_max: np.ndarray
    static_mean: np.ndarray
    static_std: np.ndarray

    def __post_init__(self) -> None:
        for f in fields(self):
            setattr(self, f.name, np.ascontiguousarray(getattr(self, f.name), np.float32))
        ncell, n_dyn = self.dyn_min.shape
        expected = {"dyn_max": (ncell, n_dyn), "target_min": (ncell,), "target_max": (ncell,),
                    "static_std": self.static_mean.shape}
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                raise ValueError(f"Scalers.{name} has shape {getattr(self, name).shape}, "
                                 f"expected {shape}")
        if self.static_mean.ndim != 1:
            raise ValueError(f"Scalers.static_mean must be 1-D, not {self.static_mean.shape}")

    # -- sizes ------------------------------------------------------------------------------
    @property
    def n_cells(self) -> int:
        return int(self.dyn_min.shape[0])

    @property
    def n_dynamic(self) -> int:
        return int(self.dyn_min.shape[1])

    @property
    def n_static(self) -> int:
        return int(self.static_mean.shape[0])

    # -- fitting ----------------------------------------------------------------------------
    @classmethod
    def fit(cls, dynamic: np.ndarray, target: np.ndarray, statics: np.ndarray) -> "Scalers":
        """Fit on the training period (NaN-aware).

        Args:
            dynamic: (ncell, ntime, n_dyn) dynamic inputs in store units.
            target: (ncell, ntime) swvl1 in m3 m-3.
            statics: (ncell, n_static) static fields in store units.
        """
        dynamic, target, statics = (np.asarray(a) for a in (dynamic, target, statics))
        if dynamic.ndim != 3 or target.shape != dynamic.shape[:2] or statics.ndim != 2 \
                or statics.shape[0] != dynamic.shape[0]:
            raise ValueError(f"Scalers.fit expects dynamic (ncell, ntime, n_dyn), target "
                             f"(ncell, ntime), statics (ncell, n_static); got {dynamic.shape}, "
                             f"{target.shape}, {statics.shape}")
        dyn_min, dyn_max = _nan_min_max(dynamic, axis=1)
        target_min, target_max = _nan_min_max(target, axis=1)
        mean, std = _nan_mean_std(statics)
        return cls(dyn_min, dyn_max, target_min, target_max, mean, std)

    @classmethod
    def from_ranges(cls, ranges: "CellRanges", statics: np.ndarray) -> "Scalers":
        """Scalers from per-cell ranges of every land cell (fitted band by band, see
        :class:`CellRanges`) and the static fields (ncell, n_static) of every land cell; the
        same as ``fit`` on all cells at once."""
        statics = np.asarray(statics)
        if statics.ndim != 2 or statics.shape[0] != ranges.n_cells:
            raise ValueError(f"statics must be (ncell={ranges.n_cells}, n_static), not "
                             f"{statics.shape}")
        mean, std = _nan_mean_std(statics)
        return cls(ranges.dyn_min, ranges.dyn_max, ranges.target_min, ranges.target_max, mean,
                   std)

    # -- scaling ----------------------------------------------------------------------------
    def scale_dynamic(self, x: Array, cells: np.ndarray | torch.Tensor) -> Array:
        """Dynamic inputs (n, ..., n_dyn) in store units → min–max scaled."""
        lo, rng = self._min_range(self.dyn_min, self.dyn_max, cells, x, trailing=1)
        return (_float32(x) - lo) / rng

    def scale_target(self, y: Array, cells: np.ndarray | torch.Tensor) -> Array:
        """swvl1 (n, ...) in m3 m-3 → min–max scaled."""
        lo, rng = self._min_range(self.target_min, self.target_max, cells, y, trailing=0)
        return (_float32(y) - lo) / rng

    def unscale_target(self, y_scaled: Array, cells: np.ndarray | torch.Tensor) -> Array:
        """Scaled swvl1 (n, ...) → m3 m-3 (inverse of ``scale_target``)."""
        lo, rng = self._min_range(self.target_min, self.target_max, cells, y_scaled, trailing=0)
        return _float32(y_scaled) * rng + lo

    def scale_static(self, s: Array) -> Array:
        """Static fields (..., n_static) in store units → z-scores."""
        mean, std = _like(self.static_mean, s), _like(self.static_std, s)
        return (_float32(s) - mean) / std

    def _min_range(self, lo: np.ndarray, hi: np.ndarray, cells, like, trailing: int):
        """Per-cell min and range (zero → 1) for ``cells``, shaped to broadcast against
        ``like`` (n, ..., [k]): (n, 1, …, 1, [k])."""
        idx = _index(cells)
        if like.shape[0] != idx.shape[0]:
            raise ValueError(f"{like.shape[0]} samples but {idx.shape[0]} cell indices")
        sel_lo, sel_hi = lo[idx], hi[idx]
        rng = sel_hi - sel_lo
        rng[rng == 0] = 1.0
        shape = (idx.shape[0],) + (1,) * (like.ndim - 1 - trailing) + sel_lo.shape[1:]
        return _like(sel_lo.reshape(shape), like), _like(rng.reshape(shape), like)

    # -- persistence ------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The scalers as named float32 arrays (for ``save_package``)."""
        return {f.name: getattr(self, f.name).copy() for f in fields(self)}

    @classmethod
    def from_arrays(cls, d: dict[str, np.ndarray]) -> "Scalers":
        """Inverse of ``to_arrays`` (extra keys are an error, missing ones too)."""
        names = [f.name for f in fields(cls)]
        if sorted(d) != sorted(names):
            raise ValueError(f"scaler arrays {sorted(d)} do not match the expected {names}")
        return cls(**{n: np.asarray(d[n]) for n in names})


@dataclass
class CellRanges:
    """Per-cell min and max of a block of cells over the training period: what the min–max
    scalers hold, fitted a band of cells at a time when all cells do not fit in memory.

    Attributes:
        dyn_min, dyn_max: (n, n_dyn) float32, dynamic inputs in store units.
        target_min, target_max: (n,) float32, swvl1 in m3 m-3.
    """

    dyn_min: np.ndarray
    dyn_max: np.ndarray
    target_min: np.ndarray
    target_max: np.ndarray

    @property
    def n_cells(self) -> int:
        return int(self.dyn_min.shape[0])

    @classmethod
    def fit(cls, dynamic: np.ndarray, target: np.ndarray) -> "CellRanges":
        """NaN-aware ranges, as ``Scalers.fit``, of dynamic (n, ntime, n_dyn) and target
        (n, ntime)."""
        dynamic, target = np.asarray(dynamic), np.asarray(target)
        if dynamic.ndim != 3 or target.shape != dynamic.shape[:2]:
            raise ValueError(f"CellRanges.fit expects dynamic (n, ntime, n_dyn) and target "
                             f"(n, ntime); got {dynamic.shape}, {target.shape}")
        return cls(*_nan_min_max(dynamic, axis=1), *_nan_min_max(target, axis=1))

    @classmethod
    def concat(cls, parts: list["CellRanges"]) -> "CellRanges":
        """The ranges of consecutive blocks of cells, in order."""
        if not parts:
            raise ValueError("CellRanges.concat needs at least one block")
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in fields(cls)))


def _nan_min_max(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware min and max along ``axis``; all-NaN slices → (0, 1)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanmin(a, axis=axis), np.nanmax(a, axis=axis)
    empty = ~np.isfinite(lo) | ~np.isfinite(hi)
    lo, hi = np.where(empty, 0.0, lo), np.where(empty, 1.0, hi)
    return lo.astype(np.float32), hi.astype(np.float32)


def _nan_mean_std(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """NaN-aware mean and std over axis 0; undefined mean → 0, zero/undefined std → 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(s.astype(np.float64), axis=0)
        std = np.nanstd(s.astype(np.float64), axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def _index(cells: np.ndarray | torch.Tensor) -> np.ndarray:
    """Cell indices as a 1-D numpy intp array."""
    if isinstance(cells, torch.Tensor):
        cells = cells.detach().cpu().numpy()
    idx = np.asarray(cells)
    if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"cells must be a 1-D integer index array, not {idx.dtype} "
                         f"{idx.shape}")
    return idx.astype(np.intp, copy=False)


def _float32(x: Array) -> Array:
    if isinstance(x, torch.Tensor):
        return x.to(torch.float32)
    return np.asarray(x, dtype=np.float32)


def _like(a: np.ndarray, like: Array) -> Array:
    """``a`` (float32 numpy) as the same kind as ``like`` (a tensor on its device)."""
    if isinstance(like, torch.Tensor):
        return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(like.device)
    return a
