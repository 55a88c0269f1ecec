"""The physics of PHY-LSTM / PHYs-LSTM (Geng et al., 2024, Eq. 8–14).

Three steps, all in metres of water per day and with **time on the last axis**:

1. :func:`water_input` — the daily water input to the surface layer, ``W1`` (Eq. 10) or, with the
   deep-layer storage from :func:`deep_storage`, ``W2`` (Eq. 11).
2. :func:`direction` — ``D_t = sign(W_t − W_{t−1})`` (Eq. 12), zeroed where the observed soil
   moisture did not move the same way (Eq. 13).
3. :func:`physics_guided_loss` — ``λ1·RMSE + λ2·mean(ReLU(D·(SM_{t−1} − ŜM_t))²)`` (Eq. 8, 9, 14),
   NaN targets masked out of both terms.

:func:`water_input` and :func:`direction` take numpy arrays or torch tensors and return the same
kind; the loss is torch only.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence, TypeVar

import numpy as np
import torch

from smcast.variables import LAYER_THICKNESS_M

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)
SnowSign = Literal["paper", "mass"]
SNOW_SIGNS: tuple[str, ...] = ("paper", "mass")
#: The public code's default weights λ1:λ2 (RMSE : physics).
DEFAULT_WEIGHTS: tuple[float, float] = (0.1, 0.9)


# --- numpy / torch plumbing -------------------------------------------------------------------

def _common_kind(*xs: Any) -> list[Any]:
    """Convert the inputs to one kind: torch tensors if any input is a tensor (on its device, in
    its float dtype), else float numpy arrays (at least float32). Broadcast to one shape."""
    ref = next((x for x in xs if isinstance(x, torch.Tensor)), None)
    if ref is None:
        arrays = [np.asarray(x) for x in xs]
        dtype = np.result_type(*arrays, np.float32)
        return [a.astype(dtype, copy=False) for a in np.broadcast_arrays(*arrays)]
    dtype = ref.dtype if ref.is_floating_point() else torch.get_default_dtype()
    tensors = [torch.as_tensor(x, dtype=dtype, device=ref.device) for x in xs]
    return list(torch.broadcast_tensors(*tensors))


def _diff_nan_first(x: ArrayOrTensor) -> ArrayOrTensor:
    """``x_t − x_{t−1}`` along the last axis, NaN on the first step (same shape as ``x``)."""
    if isinstance(x, torch.Tensor):
        first = torch.full_like(x[..., :1], float("nan"))
        return torch.cat([first, x[..., 1:] - x[..., :-1]], dim=-1)
    out = np.full_like(x, np.nan)
    out[..., 1:] = x[..., 1:] - x[..., :-1]
    return out


# --- Eq. 10–11: water input ---------------------------------------------------------------------

def deep_storage(swvl2: ArrayOrTensor, swvl3: ArrayOrTensor) -> ArrayOrTensor:
    """Water depth of soil layers 2 and 3 in metres: ``0.21·swvl2 + 0.72·swvl3``.

    Args:
        swvl2, swvl3: volumetric soil water of layers 2 (7–28 cm) and 3 (28–100 cm), m3 m-3,
            any (broadcast-compatible) shapes, numpy or torch.
    """
    return (LAYER_THICKNESS_M["swvl2"] * swvl2 + LAYER_THICKNESS_M["swvl3"] * swvl3)


def water_input(p: ArrayOrTensor, e: ArrayOrTensor, ro: ArrayOrTensor, sd: ArrayOrTensor,
                deep: ArrayOrTensor | None = None,
                snow_sign: SnowSign = "paper") -> ArrayOrTensor:
    """Daily water input to the surface soil layer, m of water per day (Eq. 10, 11).

    ``W1_t = P_t + E_t − RO_t ± ΔSD_t`` with ``ΔSD_t = SD_t − SD_{t−1}``; with ``deep``,
    ``W2_t = W1_t − (deep_t − deep_{t−1})``.

    Args:
        p: total precipitation, m per day (daily total).
        e: total evaporation, m per day, ERA5 sign convention (negative = water leaves), so it is
            *added*.
        ro: runoff (``ro`` or ``sro``), m per day.
        sd: snow depth water equivalent, m (daily mean).
        deep: water depth of layers 2+3 in m (:func:`deep_storage`), or None for ``W1``.
        snow_sign: ``"paper"`` adds ΔSD as the paper's Eq. 10 writes it; ``"mass"`` subtracts it
            (mass balance: snow build-up takes water away from the soil).

    All inputs broadcast together; time is the last axis. numpy arrays give a float numpy array
    (at least float32); if any input is a torch tensor the result is a tensor on its device.

    Returns:
        W, same shape as the broadcast inputs; NaN on the first day (no previous day for ΔSD /
        Δdeep) and wherever an input is NaN.

    Raises:
        ValueError: ``snow_sign`` is neither ``"paper"`` nor ``"mass"``.
    """
    if snow_sign not in SNOW_SIGNS:
        raise ValueError(f"snow_sign must be one of {', '.join(map(repr, SNOW_SIGNS))}, "
                         f"not {snow_sign!r}")
    inputs = (p, e, ro, sd) if deep is None else (p, e, ro, sd, deep)
    p, e, ro, sd, *rest = _common_kind(*inputs)
    d_sd = _diff_nan_first(sd)
    w = p + e - ro + (d_sd if snow_sign == "paper" else -d_sd)
    if rest:
        w = w - _diff_nan_first(rest[0])
    return w


# --- Eq. 12–13: direction -----------------------------------------------------------------------

def direction(w: ArrayOrTensor, sm_obs: ArrayOrTensor) -> ArrayOrTensor:
    """Filtered direction of the water-input change, ``D ∈ {−1, 0, +1}`` (Eq. 12, 13).

    ``D_t = sign(W_t − W_{t−1})``, then set to 0 where the observed soil moisture disagrees,
    ``D_t·(SM_{t−1} − SM_t) > 0``, or did not change, ``SM_t == SM_{t−1}`` (exact equality). So
    D is non-zero only where the observed soil moisture moved the same way as the water input.

    Args:
        w: daily water input (:func:`water_input`), any units, time on the last axis.
        sm_obs: observed soil moisture (any units: only the sign of its change matters), shape
            broadcast-compatible with ``w``, time on the last axis.

    Returns:
        D with the broadcast shape. 0 on the first day and wherever ``w_t``, ``w_{t−1}``,
        ``sm_t`` or ``sm_{t−1}`` is NaN (so also on the second day when ``w`` comes from
        :func:`water_input`, whose first day is NaN). numpy in → ``int8`` array; torch in →
        float tensor (the input's float dtype, else the default dtype) on the input's device.
    """
    w, sm = _common_kind(w, sm_obs)
    d = _sign(w[..., 1:] - w[..., :-1])
    agree = d * (sm[..., 1:] - sm[..., :-1]) > 0  # False for NaN and for no change
    if isinstance(d, torch.Tensor):
        d = torch.where(agree, d, torch.zeros_like(d))
        return torch.cat([torch.zeros_like(w[..., :1]), d], dim=-1)
    out = np.zeros(w.shape, dtype=np.int8)
    out[..., 1:] = np.where(agree, d, 0)
    return out


def _sign(x: ArrayOrTensor) -> ArrayOrTensor:
    return torch.sign(x) if isinstance(x, torch.Tensor) else np.sign(x)


# --- Eq. 8, 9, 14: the loss ---------------------------------------------------------------------

def physics_guided_loss_terms(pred: torch.Tensor, obs: Any, prev_obs: Any, direction: Any,
                              weights: Sequence[float] = DEFAULT_WEIGHTS, *,
                              assume_finite: bool = False) -> dict[str, torch.Tensor]:
    """The physics-guided loss and its two terms (Eq. 8, 9, 14).

    ``total = λ1·rmse + λ2·phy`` with ``rmse = sqrt(mean((pred − obs)²))`` and
    ``phy = mean(ReLU(D·(prev_obs − pred))²)`` (no square root). Both means run over the same
    samples: those whose ``obs`` is not NaN; samples with ``D = 0`` (or NaN ``D``/``prev_obs``)
    contribute zeros to the physics mean, as in the authors' code.

    Args:
        pred: predicted soil moisture ŜM_t, a torch tensor (any shape, gradients flow into it).
        obs: observed soil moisture SM_t (NaN = missing), tensor or array.
        prev_obs: observed soil moisture of the previous day SM_{t−1}, same units.
        direction: D_t from :func:`direction` (−1, 0, +1).
        weights: ``(λ1, λ2)``; the code's default is ``(0.1, 0.9)``; ``λ2 = 0`` gives plain RMSE.

    All four broadcast together (typically ``(batch,)`` or ``(batch, leads)``). Units are the
    caller's (the paper trains on normalised water depth); the loss has those units.

    ``assume_finite=True`` (keyword-only) skips the NaN masking for callers that guarantee
    finite tensors of one shape and device (the trainer checks its data once); same result.

    Returns:
        ``{"total", "rmse", "phy"}``: 0-d tensors in ``pred``'s dtype. NaN ``obs`` are masked
        before any arithmetic, so gradients are finite and exactly 0 at masked samples (even
        where ``pred`` is NaN there). If every ``obs`` is NaN all three are 0, still connected to
        ``pred`` (zero gradient). At a perfect fit the RMSE's gradient is 0, not NaN.
    """
    lam1, lam2 = (float(x) for x in weights)
    if assume_finite:
        return _finite_loss_terms(pred, obs, prev_obs, direction, lam1, lam2)
    kw = {"dtype": pred.dtype, "device": pred.device}
    obs, prev, d = (torch.as_tensor(x, **kw) for x in (obs, prev_obs, direction))
    pred, obs, prev, d = torch.broadcast_tensors(pred, obs, prev, d)
    valid = ~torch.isnan(obs)
    n = valid.sum().clamp_min(1).to(pred.dtype)
    zero = torch.zeros((), **kw)

    pred = torch.where(valid, pred, zero)  # mask before arithmetic: no NaN can reach backward
    err = pred - torch.where(valid, obs, zero)
    rmse = _safe_sqrt((err * err).sum() / n)

    active = valid & (d != 0) & ~torch.isnan(d) & ~torch.isnan(prev)
    gap = torch.where(active, d, zero) * (torch.where(active, prev, zero) - pred)
    hinge = torch.relu(gap)
    phy = (hinge * hinge).sum() / n
    return {"total": lam1 * rmse + lam2 * phy, "rmse": rmse, "phy": phy}


def _finite_loss_terms(pred: torch.Tensor, obs: torch.Tensor, prev: torch.Tensor,
                       d: torch.Tensor, lam1: float, lam2: float) -> dict[str, torch.Tensor]:
    """The same loss for inputs the caller guarantees finite (no masking: fewer kernels, the
    trainer's hot path). Gives the same values as the masked path on finite data."""
    err = pred - obs
    rmse = _safe_sqrt((err * err).mean())
    hinge = torch.relu(d * (prev - pred))
    phy = (hinge * hinge).mean()
    return {"total": lam1 * rmse + lam2 * phy, "rmse": rmse, "phy": phy}


def physics_guided_loss(pred: torch.Tensor, obs: Any, prev_obs: Any, direction: Any,
                        weights: Sequence[float] = DEFAULT_WEIGHTS) -> torch.Tensor:
    """``λ1·RMSE(pred, obs) + λ2·mean(ReLU(D·(prev_obs − pred))²)`` as a 0-d tensor.

    See :func:`physics_guided_loss_terms` for the arguments, masking and shapes.
    """
    return physics_guided_loss_terms(pred, obs, prev_obs, direction, weights)["total"]


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x ≥ 0`` whose gradient at 0 is 0 instead of inf (→ NaN downstream)."""
    tiny = torch.finfo(x.dtype).tiny
    return torch.where(x > 0, torch.sqrt(x.clamp_min(tiny)), torch.zeros_like(x))
