"""The variable vocabulary: every ERA5-Land field smcast reads, in one table.

Each source maps its own names and units onto these short names at its boundary; the daily store,
the trainer and the writers only ever see the names and units below.

Units are those **in the daily store** (one value per cell and UTC day):

* accumulated fields (``kind="accumulated"``) are daily totals (00–24 UTC) — metres of water per
  day for the water fluxes, and daily-mean W m-2 for the radiation fluxes (the J m-2 daily total
  divided by 86 400 s);
* instantaneous fields are the mean of the 24 hourly values 00…23 UTC;
* derived fields are computed from the daily means of their inputs (so that hourly and daily
  sources give the same definition).

ERA5 sign convention: downward fluxes are positive, so evaporation ``e`` is negative when water
leaves the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["accumulated", "instantaneous", "derived"]
Role = Literal["input", "physics", "target"]

SECONDS_PER_DAY = 86_400.0


@dataclass(frozen=True)
class Variable:
    """One row of the vocabulary.

    Attributes:
        name: ERA5-Land short name, the variable's name in the store.
        cds_name: the CDS request name (``variable`` key); empty for derived fields.
        long_name: human-readable name.
        units: units in the store (UDUNITS spelling).
        native_units: units in ERA5-Land files (accepted spellings, first is canonical).
        scale: factor from a native *daily* value to store units (e.g. J m-2 d-1 → W m-2).
        kind: accumulated, instantaneous or derived.
        roles: model input, physics term (water balance), target.
        standard_name: CF standard name.
        valid_range: physically plausible range in store units; values outside are rejected.
        aliases: other names the variable has in files (GRIB shortNames, old layouts).
    """

    name: str
    cds_name: str
    long_name: str
    units: str
    native_units: tuple[str, ...]
    kind: Kind
    roles: tuple[Role, ...]
    standard_name: str
    valid_range: tuple[float, float]
    scale: float = 1.0
    aliases: tuple[str, ...] = field(default_factory=tuple)


_M = ("m", "m of water equivalent", "m of water")

VARIABLES: dict[str, Variable] = {
    v.name: v
    for v in (
        Variable("tp", "total_precipitation", "Total precipitation", "m", _M, "accumulated",
                 ("input", "physics"), "precipitation_amount", (0.0, 1.0)),
        Variable("e", "total_evaporation", "Total evaporation", "m", _M, "accumulated",
                 ("physics",), "lwe_thickness_of_water_evaporation_amount", (-0.05, 0.02)),
        Variable("ro", "runoff", "Runoff", "m", _M, "accumulated",
                 ("physics",), "runoff_amount", (0.0, 1.0)),
        Variable("sro", "surface_runoff", "Surface runoff", "m", _M, "accumulated",
                 ("physics",), "surface_runoff_amount", (0.0, 1.0)),
        Variable("sd", "snow_depth_water_equivalent", "Snow depth water equivalent", "m", _M,
                 "instantaneous", ("physics",), "lwe_thickness_of_surface_snow_amount",
                 (0.0, 15.0)),
        Variable("t2m", "2m_temperature", "2 metre temperature", "K", ("K",), "instantaneous",
                 ("input",), "air_temperature", (170.0, 340.0), aliases=("2t",)),
        Variable("d2m", "2m_dewpoint_temperature", "2 metre dewpoint temperature", "K", ("K",),
                 "instantaneous", (), "dew_point_temperature", (150.0, 320.0), aliases=("2d",)),
        Variable("sp", "surface_pressure", "Surface pressure", "Pa", ("Pa",), "instantaneous",
                 ("input",), "surface_air_pressure", (40_000.0, 110_000.0)),
        Variable("u10", "10m_u_component_of_wind", "10 metre U wind component", "m s-1",
                 ("m s-1", "m s**-1"), "instantaneous", ("input",), "eastward_wind",
                 (-60.0, 60.0), aliases=("10u",)),
        Variable("v10", "10m_v_component_of_wind", "10 metre V wind component", "m s-1",
                 ("m s-1", "m s**-1"), "instantaneous", ("input",), "northward_wind",
                 (-60.0, 60.0), aliases=("10v",)),
        Variable("ssrd", "surface_solar_radiation_downwards", "Surface solar radiation downwards",
                 "W m-2", ("J m-2", "J m**-2"), "accumulated", ("input",),
                 "surface_downwelling_shortwave_flux_in_air", (0.0, 500.0),
                 scale=1.0 / SECONDS_PER_DAY),
        Variable("strd", "surface_thermal_radiation_downwards",
                 "Surface thermal radiation downwards", "W m-2", ("J m-2", "J m**-2"),
                 "accumulated", ("input",), "surface_downwelling_longwave_flux_in_air",
                 (40.0, 600.0), scale=1.0 / SECONDS_PER_DAY),
        Variable("swvl1", "volumetric_soil_water_layer_1", "Volumetric soil water layer 1 (0-7 cm)",
                 "m3 m-3", ("m3 m-3", "m**3 m**-3"), "instantaneous", ("target", "physics"),
                 "volume_fraction_of_condensed_water_in_soil", (0.0, 0.8)),
        Variable("swvl2", "volumetric_soil_water_layer_2",
                 "Volumetric soil water layer 2 (7-28 cm)", "m3 m-3", ("m3 m-3", "m**3 m**-3"),
                 "instantaneous", ("physics",), "volume_fraction_of_condensed_water_in_soil",
                 (0.0, 0.8)),
        Variable("swvl3", "volumetric_soil_water_layer_3",
                 "Volumetric soil water layer 3 (28-100 cm)", "m3 m-3", ("m3 m-3", "m**3 m**-3"),
                 "instantaneous", ("physics",), "volume_fraction_of_condensed_water_in_soil",
                 (0.0, 0.8)),
        Variable("q", "", "2 metre specific humidity (from d2m and sp)", "kg kg-1", (), "derived",
                 ("input",), "specific_humidity", (0.0, 0.05)),
        Variable("wind", "", "10 metre wind speed (from daily mean u10 and v10)", "m s-1", (),
                 "derived", (), "wind_speed", (0.0, 85.0)),
    )
}

#: Variables a source must deliver (everything that is not derived).
SOURCE_VARIABLES: tuple[str, ...] = tuple(n for n, v in VARIABLES.items() if v.kind != "derived")
#: Variables the ingest derives from the source variables.
DERIVED_VARIABLES: tuple[str, ...] = tuple(n for n, v in VARIABLES.items() if v.kind == "derived")
#: Soil layer thickness in metres, top to bottom (swvl1 0–7 cm, swvl2 7–28 cm, swvl3 28–100 cm).
LAYER_THICKNESS_M: dict[str, float] = {"swvl1": 0.07, "swvl2": 0.21, "swvl3": 0.72}
#: Soil layer bounds in metres below the surface.
LAYER_BOUNDS_M: dict[str, tuple[float, float]] = {
    "swvl1": (0.0, 0.07), "swvl2": (0.07, 0.28), "swvl3": (0.28, 1.0)}


def lookup(name: str) -> Variable:
    """Return the vocabulary entry for a short name or alias; unknown names raise ``KeyError``
    with the list of valid names."""
    if name in VARIABLES:
        return VARIABLES[name]
    for var in VARIABLES.values():
        if name in var.aliases:
            return var
    raise KeyError(f"unknown variable {name!r}; valid names: {', '.join(VARIABLES)}")


def canonical_name(name: str) -> str | None:
    """Map a file's variable name (short name or alias) to the vocabulary name, or None."""
    try:
        return lookup(name).name
    except KeyError:
        return None


def table_markdown() -> str:
    """The vocabulary as a Markdown table (used by the README and ``smcast info``)."""
    rows = ["| name | CDS name | units (store) | kind | roles | CF standard name |",
            "|---|---|---|---|---|---|"]
    for v in VARIABLES.values():
        rows.append(f"| `{v.name}` | {v.cds_name or '(derived)'} | {v.units} | {v.kind} | "
                    f"{', '.join(v.roles) or '-'} | {v.standard_name} |")
    return "\n".join(rows)
