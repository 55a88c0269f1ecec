"""The model variants: plain LSTM, PHY-LSTM and PHYs-LSTM (Geng et al. 2024, Eq. 8–14).

The total loss is ``λ1 · RMSE + λ2 · L_phy`` (Eq. 8), computed in normalised units:

* ``lstm`` — λ1:λ2 = 1:0, the plain RMSE baseline.
* ``phy`` — the surface-water physics term (water input W1 = P + E − RO ± ΔSD, Eq. 10) with
  λ1:λ2 = 0.5:0.5: the paper's weight study found 5:5 best for the surface-water loss (group D).
* ``phys`` — the deep-soil physics term (W2 = W1 − ΔS23, Eq. 11, the deep layers' storage change
  subtracted) with λ1:λ2 = 0.1:0.9: 1:9 was best for the deep-soil loss (group C), and it is also
  the default of the authors' code.

``snow_sign`` chooses the sign of the snow-storage change in W1: ``"paper"`` (+ΔSD, as Eq. 10 is
printed; the default) or ``"mass"`` (−ΔSD, mass balance: snow build-up takes water away). The
choice is recorded in every model package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

from smcast.errors import ConfigError

SNOW_SIGNS: tuple[str, ...] = ("paper", "mass")


@dataclass(frozen=True)
class Variant:
    """One loss configuration.

    Attributes:
        name: registry name (``lstm``, ``phy``, ``phys``).
        weights: (λ1, λ2): weight of the data RMSE and of the physics term.
        deep: PHYs: subtract the deep-layer (swvl2 + swvl3) storage change from the water
            input (Eq. 11).
        snow_sign: ``"paper"`` (+ΔSD) or ``"mass"`` (−ΔSD) in the water input (Eq. 10).
        description: one line for logs and ``describe()``.
    """

    name: str
    weights: tuple[float, float]
    deep: bool
    snow_sign: str = "paper"
    description: str = ""

    @property
    def physics(self) -> bool:
        """True when the physics term has a non-zero weight."""
        return self.weights[1] > 0.0


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("lstm", (1.0, 0.0), False, description="plain LSTM, RMSE loss"),
        Variant("phy", (0.5, 0.5), False,
                description="PHY-LSTM: RMSE + surface water-balance direction term (5:5)"),
        Variant("phys", (0.1, 0.9), True,
                description="PHYs-LSTM: RMSE + water-balance term with deep-soil storage (1:9)"),
    )
}


def get_variant(name: str, weights: Sequence[float] | None = None,
                snow_sign: str | None = None) -> Variant:
    """The registered variant ``name``, with optional overrides.

    Args:
        name: one of ``VARIANTS``.
        weights: (λ1, λ2), two finite non-negative numbers, not both zero.
        snow_sign: ``"paper"`` or ``"mass"``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones) or invalid override.
    """
    if name not in VARIANTS:
        raise ConfigError(f"unknown model variant {name!r}; valid variants: "
                          f"{', '.join(VARIANTS)}")
    variant = VARIANTS[name]
    if weights is not None:
        variant = replace(variant, weights=check_weights(weights))
    if snow_sign is not None:
        variant = replace(variant, snow_sign=check_snow_sign(snow_sign))
    return variant


def check_weights(weights: Sequence[float]) -> tuple[float, float]:
    """Validate (λ1, λ2) and return them as a tuple of floats; ConfigError otherwise."""
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        raise ConfigError(f"loss weights must be two numbers (λ1, λ2), not {weights!r}") from None
    if len(values) != 2 or not all(math.isfinite(w) and w >= 0.0 for w in values):
        raise ConfigError(f"loss weights must be two finite non-negative numbers (λ1, λ2), "
                          f"not {weights!r}")
    if values[0] == 0.0 and values[1] == 0.0:
        raise ConfigError("loss weights (λ1, λ2) must not both be zero")
    return values[0], values[1]


def check_snow_sign(snow_sign: str) -> str:
    """Validate the snow sign; ConfigError naming the valid values otherwise."""
    if snow_sign not in SNOW_SIGNS:
        raise ConfigError(f"snow_sign must be one of {', '.join(SNOW_SIGNS)}, not {snow_sign!r}")
    return snow_sign
