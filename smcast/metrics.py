"""Skill metrics of the paper (§2.5, Eq. 15–19) and the land-cell median it reports.

Every per-cell metric takes numpy arrays with **time on the last axis** and any number of leading
axes (cells, leads, …) and returns one value per leading index (shape ``broadcast.shape[:-1]``).
They are NaN-aware: a time step where the simulation or the observation is NaN is dropped for that
cell. Standard deviations are population ones (``ddof=0``) throughout; R and the KGE's σ ratio do
not depend on the choice as long as it is the same for both series.

A cell gets NaN when it has fewer than 2 valid pairs, or where a statistic needs a variance that is
zero (all valid values equal): R and KGE for a constant simulation or observation, R² for a
constant observation, KGE's bias ratio for a zero observed mean.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

ArrayLike = Any


# --- plumbing -----------------------------------------------------------------------------------

def _pairs(sim: ArrayLike, obs: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Broadcast to float64, drop pairs with a NaN: (sim, obs, valid mask, count per cell).
    Invalid entries are set to 0 so that masked sums need no further care."""
    sim, obs = np.broadcast_arrays(np.asarray(sim, dtype=np.float64),
                                   np.asarray(obs, dtype=np.float64))
    if sim.ndim == 0:
        raise ValueError("metrics need a time axis (the last axis); got scalars")
    valid = ~(np.isnan(sim) | np.isnan(obs))
    n = valid.sum(axis=-1)
    return np.where(valid, sim, 0.0), np.where(valid, obs, 0.0), valid, n


def _mean(x: np.ndarray, valid: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid, x, 0.0).sum(axis=-1) / n


def _constant(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """True per cell where all valid values are equal (or there are none): zero variance."""
    hi = np.where(valid, x, -np.inf).max(axis=-1, initial=-np.inf)
    lo = np.where(valid, x, np.inf).min(axis=-1, initial=np.inf)
    return ~(hi > lo)


def _moments(sim: ArrayLike, obs: ArrayLike) -> dict[str, np.ndarray]:
    """Per-cell means, population std, correlation and validity flags of the valid pairs."""
    s, o, valid, n = _pairs(sim, obs)
    ms, mo = _mean(s, valid, n), _mean(o, valid, n)
    ds = np.where(valid, s - ms[..., None], 0.0)
    do = np.where(valid, o - mo[..., None], 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vs, vo = (ds * ds).sum(-1) / n, (do * do).sum(-1) / n
        cov = (ds * do).sum(-1) / n
        r = np.clip(cov / np.sqrt(vs * vo), -1.0, 1.0)
    few = n < 2
    const_s, const_o = _constant(s, valid), _constant(o, valid)
    r = np.where(few | const_s | const_o, np.nan, r)
    return {"s": s, "o": o, "valid": valid, "n": n, "few": few, "ms": ms, "mo": mo,
            "ss": np.sqrt(vs), "so": np.sqrt(vo), "r": r, "const_o": const_o}


# --- Eq. 15–18 ----------------------------------------------------------------------------------

def pearson_r(sim: ArrayLike, obs: ArrayLike) -> np.ndarray:
    """Pearson correlation per cell along the last axis (Eq. 15), dimensionless in [−1, 1].

    NaN with fewer than 2 valid pairs or a constant ``sim`` or ``obs``."""
    return _moments(sim, obs)["r"]


def rmse(sim: ArrayLike, obs: ArrayLike) -> np.ndarray:
    """Root mean square error per cell along the last axis (Eq. 16), in the data's units.

    NaN with fewer than 2 valid pairs."""
    s, o, valid, n = _pairs(sim, obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(((s - o) ** 2).sum(-1) / n)
    return np.where(n < 2, np.nan, out)


def r2(sim: ArrayLike, obs: ArrayLike) -> np.ndarray:
    """Coefficient of determination ``1 − SSE/SST`` per cell (Eq. 17), in (−∞, 1].

    ``SST = Σ(obs − mean(obs))²`` over the valid pairs. NaN with fewer than 2 valid pairs or a
    constant ``obs``."""
    s, o, valid, n = _pairs(sim, obs)
    mo = _mean(o, valid, n)
    sse = ((s - o) ** 2).sum(-1)
    sst = (np.where(valid, o - mo[..., None], 0.0) ** 2).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = 1.0 - sse / sst
    return np.where((n < 2) | _constant(o, valid), np.nan, out)


def kge(sim: ArrayLike, obs: ArrayLike) -> np.ndarray:
    """Kling–Gupta efficiency per cell (Eq. 18), in (−∞, 1].

    ``1 − sqrt((R − 1)² + (σ_sim/σ_obs − 1)² + (μ_sim/μ_obs − 1)²)`` with population σ; ``sim``
    is the prediction and ``obs`` the reference (not swapped as in LandBench). NaN where R is
    NaN or ``μ_obs = 0``."""
    m = _moments(sim, obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = m["ss"] / m["so"]
        beta = np.where(m["mo"] != 0, m["ms"] / np.where(m["mo"] != 0, m["mo"], 1.0), np.nan)
        return 1.0 - np.sqrt((m["r"] - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)


# --- Eq. 19 -------------------------------------------------------------------------------------

def consistency_rate(pred: ArrayLike, prev_obs: ArrayLike, direction: ArrayLike) -> np.ndarray:
    """Share of physically consistent predictions per cell along the last axis (Eq. 19).

    With ``s = D·(prev_obs − pred)``: consistent where ``s < 0``, inconsistent where ``s > 0``,
    not counted where ``s = 0`` (including ``D = 0``) or any input is NaN. Returns
    ``consistent / (consistent + inconsistent)`` in [0, 1]; NaN where nothing counts.

    Args:
        pred: predicted soil moisture ŜM_t.
        prev_obs: observed soil moisture of the previous day SM_{t−1} (same units as ``pred``).
        direction: D_t ∈ {−1, 0, +1} (:func:`smcast.physics.direction`).
    """
    pred, prev, d = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64)
                                          for x in (pred, prev_obs, direction)))
    s = d * (prev - pred)
    good, bad = (s < 0).sum(-1), (s > 0).sum(-1)
    counted = good + bad
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counted > 0, good / np.maximum(counted, 1), np.nan)


# --- land median --------------------------------------------------------------------------------

def land_median(values: ArrayLike, lat: ArrayLike | None, sm_obs: ArrayLike | None = None,
                mask: ArrayLike | None = None, south_limit: float = -60.0, *,
                cell_ndim: int | None = None) -> float | np.ndarray:
    """Median of a per-cell metric over land cells, as the paper reports it.

    Excluded: cells south of ``south_limit`` (``lat < south_limit``; −60° drops Antarctica),
    cells where ``mask`` is False, cells whose observations never change (``sm_obs`` max == min
    over time, or all NaN) and NaN values.

    Args:
        values: per-cell values; the first ``cell_ndim`` axes are cells (default: all axes, i.e.
            ``(ncell,)`` or ``(nlat, nlon)``); further axes (e.g. leads) get one median each.
        lat: latitude of the cells in degrees north: the cell shape, or 1-D along the first cell
            axis (e.g. a grid's latitude coordinate for ``(nlat, nlon)`` values); None skips the
            Antarctica filter.
        sm_obs: observations with time on the last axis: shape ``values.shape + (ntime,)``,
            or the cell shape ``+ (ntime,)`` (one series per cell, for all extra axes).
        mask: boolean, True = keep; broadcast-compatible with the cell shape (e.g. a land mask).
        south_limit: southern latitude limit in degrees.
        cell_ndim: number of leading cell axes of ``values``.

    Returns:
        A float (no extra axes) or an array over the extra axes; NaN where no cell is left.
    """
    values = np.asarray(values, dtype=np.float64)
    ncell_ax = values.ndim if cell_ndim is None else int(cell_ndim)
    cells = values.shape[:ncell_ax]
    keep = ~np.isnan(values)
    if lat is not None:
        keep &= _expand(_lat_grid(lat, cells) >= south_limit, values.ndim)
    if mask is not None:
        m = np.broadcast_to(np.asarray(mask, dtype=bool), cells)
        keep &= _expand(m, values.ndim)
    if sm_obs is not None:
        sm = np.asarray(sm_obs, dtype=np.float64)
        changing = ~_constant(sm, ~np.isnan(sm))
        keep &= _expand(changing, values.ndim) if changing.ndim < values.ndim else changing
    flat = np.where(keep, values, np.nan).reshape((-1,) + values.shape[ncell_ax:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices → NaN, on purpose
        out = np.nanmedian(flat, axis=0) if flat.shape[0] else np.full(flat.shape[1:], np.nan)
    return float(out) if np.ndim(out) == 0 else out


def _lat_grid(lat: ArrayLike, cells: tuple[int, ...]) -> np.ndarray:
    """Latitudes broadcast to the cell shape (1-D latitudes run along the first cell axis)."""
    lat = np.asarray(lat, dtype=np.float64)
    if lat.ndim == 1 and len(cells) > 1 and lat.shape[0] == cells[0]:
        lat = lat.reshape((-1,) + (1,) * (len(cells) - 1))
    try:
        return np.broadcast_to(lat, cells)
    except ValueError:
        raise ValueError(f"lat of shape {lat.shape} does not match the cells {cells}") from None


def _expand(x: np.ndarray, ndim: int) -> np.ndarray:
    """Append length-1 axes so that a cell-shaped array broadcasts against the values."""
    return x.reshape(x.shape + (1,) * (ndim - x.ndim))


def summarise(sim: ArrayLike, obs: ArrayLike, prev_obs: ArrayLike | None = None,
              direction: ArrayLike | None = None, lat: ArrayLike | None = None,
              mask: ArrayLike | None = None, *, cell_ndim: int | None = None
              ) -> dict[str, float | np.ndarray]:
    """Land medians of the per-cell metrics: ``{"R", "RMSE", "R2", "KGE"}`` and, when both
    ``prev_obs`` and ``direction`` are given, ``"consistency"``.

    ``sim``/``obs`` (and ``prev_obs``/``direction``) have time on the last axis and the cells on
    the leading axes; cells whose ``obs`` never change are dropped (``land_median`` with
    ``sm_obs=obs``). ``lat``, ``mask`` and ``cell_ndim`` as in :func:`land_median`.

    Raises:
        ValueError: only one of ``prev_obs`` and ``direction`` is given.
    """
    if (prev_obs is None) != (direction is None):
        raise ValueError("consistency needs both prev_obs and direction (or neither)")
    sim, obs = np.broadcast_arrays(np.asarray(sim, dtype=np.float64),
                                   np.asarray(obs, dtype=np.float64))
    per_cell = {"R": pearson_r(sim, obs), "RMSE": rmse(sim, obs), "R2": r2(sim, obs),
                "KGE": kge(sim, obs)}
    if prev_obs is not None:
        per_cell["consistency"] = consistency_rate(sim, prev_obs, direction)
    return {k: land_median(v, lat, sm_obs=obs, mask=mask, cell_ndim=cell_ndim)
            for k, v in per_cell.items()}
