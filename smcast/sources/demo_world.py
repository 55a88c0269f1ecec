"""An offline, deterministic, ERA5-Land-like world simulated cell by cell (the ``demo`` source).

The world is a set of land cells (1-D arrays of centres).  Static fields are smooth random
functions of (lat, lon, seed) only, so a cell's values never depend on which other cells were
asked for.  Weather is a seasonal climatology plus spatially coherent AR(1) anomalies kept on two
global lat/lon lattices (15° and 4°) and interpolated bilinearly to the cells; each day's random
numbers come only from ``np.random.default_rng([seed, day.toordinal()])``.  A snow pack and a
three-layer soil (0-7, 7-28, 28-100 cm) close the water balance exactly:

    Δ(soil water, m) + ΔSWE (m) = tp + e - ro        (per cell and day, float64)

Internals are float64; :meth:`DemoWorld.step` returns float32 fields in store units (see
:mod:`smcast.variables`); :meth:`DemoWorld.advance` returns the same fields in float64.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from scipy import sparse, special

from smcast.errors import ConfigError, StoreError
from smcast.variables import LAYER_THICKNESS_M, SOURCE_VARIABLES

LAND_COVER_CLASSES: dict[int, str] = {
    1: "forest", 2: "grassland", 3: "cropland", 4: "shrubland", 5: "desert", 6: "tundra"}
"""Land-cover codes.  Tundra also covers ice caps (cells with a warmest month below 10 °C)."""

STATIC_VARIABLES: dict[str, tuple[str, str]] = {
    "elevation": ("m", "Surface elevation above sea level"),
    "clay": ("1", "Clay fraction of the 0-1 m soil"),
    "sand": ("1", "Sand fraction of the 0-1 m soil"),
    "silt": ("1", "Silt fraction of the 0-1 m soil"),
    "storage_capacity": ("m", "Plant-available water of the 0-1 m column, "
                               "(theta_fc - theta_wp) * 1 m"),
    "land_cover": ("1", "Land-cover class code (smcast.sources.demo_world.LAND_COVER_CLASSES)"),
}

# Per-class parameters, indexed by class code (index 0 unused): snow-free albedo, maximum
# vegetation cover, root fractions of the three layers, wind reduction by roughness.
_ALBEDO = np.array([0.2, 0.13, 0.20, 0.18, 0.22, 0.32, 0.18])
_VEG_MAX = np.array([0.0, 0.95, 0.80, 0.75, 0.45, 0.08, 0.50])
_ROOTS = np.array([[0, 0, 0], [0.15, 0.30, 0.55], [0.35, 0.40, 0.25], [0.30, 0.45, 0.25],
                   [0.20, 0.35, 0.45], [0.40, 0.40, 0.20], [0.50, 0.40, 0.10]])
_ROUGH = np.array([1.0, 0.65, 0.90, 0.90, 0.90, 1.00, 0.95])

# AR(1) anomaly fields: temperature, humidity, pressure, u, v, cloud (own part), storm.
_RHO_COARSE = np.array([0.92, 0.85, 0.90, 0.80, 0.80, 0.60, 0.80])
_RHO_FINE = np.array([0.75, 0.60, 0.70, 0.50, 0.50, 0.30, 0.55])
_W_COARSE = np.array([0.60, 0.50, 0.60, 0.50, 0.50, 0.30, 0.45])  # variance share of 15° scale
_COARSE_DEG, _FINE_DEG = 15.0, 4.0

_D = np.array([LAYER_THICKNESS_M[k] for k in ("swvl1", "swvl2", "swvl3")])  # (3,) m
_T0 = 273.15          # K
_SIGMA = 5.670374e-8  # W m-2 K-4
_LV_RHO = 2.45e6 * 1000.0 / 86_400.0  # W m-2 per (m of water per day)
_YEAR = 365.2425      # days; the seasonal phase runs continuously from 2000-01-01
_EPOCH = date(2000, 1, 1).toordinal()
_DDF = 0.0035         # degree-day melt factor, m K-1 d-1
_SWE_MAX = 10.0       # m; SWE above this leaves as (glacier) surface runoff
_NHARM = 3            # harmonics of the fitted seasonal climatologies


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _smooth(xyz: np.ndarray, seed: int, tag: int, kmin: float, kmax: float,
            n_waves: int = 32) -> np.ndarray:
    """Unit-variance smooth random field on the sphere: a sum of plane waves cos(k·x + φ) with
    random directions and wavenumbers log-uniform in [kmin, kmax] rad-1 (amplitude ∝ 1/k).
    xyz: (n, 3) unit vectors.  Returns (n,) float64, mean ~0, variance ~1."""
    rng = np.random.default_rng([seed, 7919, tag])
    d = rng.standard_normal((n_waves, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    k = kmin * (kmax / kmin) ** rng.random(n_waves)
    amp = 1.0 / k
    phase = rng.uniform(0.0, 2 * np.pi, n_waves)
    return np.cos(xyz @ (d * k[:, None]).T + phase) @ amp / np.sqrt(0.5 * np.sum(amp**2))


def _lattice_rows(lat: np.ndarray, lon: np.ndarray, step: float
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """Bilinear weights of a global lattice (spacing ``step`` degrees, periodic in longitude),
    normalised so that interpolated unit white noise has unit variance at every cell.
    Returns (index (n, 4), weight (n, 4), lattice size)."""
    nlat, nlon = int(round(180 / step)) + 1, int(round(360 / step))
    y, x = (lat + 90.0) / step, (lon + 180.0) / step
    i0 = np.clip(np.floor(y).astype(np.int64), 0, nlat - 2)
    fy = y - i0
    j0 = np.floor(x).astype(np.int64)
    fx = x - j0
    j0, j1 = j0 % nlon, (j0 + 1) % nlon
    idx = np.stack([i0 * nlon + j0, i0 * nlon + j1, (i0 + 1) * nlon + j0, (i0 + 1) * nlon + j1], 1)
    w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 1)
    return idx, w / np.sqrt(np.sum(w**2, axis=1, keepdims=True)), nlat * nlon


def _basis(phase: np.ndarray | float) -> np.ndarray:
    """Fourier basis [1, cos kθ (k=1..K), sin kθ (k=1..K)] for seasonal phases θ (rad):
    (2K+1, number of phases)."""
    ks = np.arange(1, _NHARM + 1)[:, None] * np.atleast_1d(phase)[None, :]
    return np.concatenate([np.ones((1, ks.shape[1])), np.cos(ks), np.sin(ks)])


def _phase(day: date) -> float:
    """Seasonal phase (rad), 0 on 1 January, continuous across years."""
    return 2 * np.pi * ((day.toordinal() - _EPOCH) % _YEAR) / _YEAR


def _toa_insolation(lat_rad: np.ndarray, phase: float) -> np.ndarray:
    """Daily-mean top-of-atmosphere insolation (W m-2) from latitude (rad) and the seasonal
    phase (FAO-56: solar declination, sunset hour angle, Earth-Sun distance)."""
    decl = 0.409 * np.sin(phase - 1.39 + 2 * np.pi / _YEAR)
    dr = 1.0 + 0.033 * np.cos(phase)
    ws = np.arccos(np.clip(-np.tan(lat_rad) * np.tan(decl), -1.0, 1.0))
    return 1361.0 / np.pi * dr * (ws * np.sin(lat_rad) * np.sin(decl)
                                  + np.cos(lat_rad) * np.cos(decl) * np.sin(ws))


class DemoWorld:
    """The simulated world for cells at ``lat``, ``lon`` (1-D, degrees; lon in -180..180).

    Attributes:
        statics: STATIC_VARIABLES as (n,) float32 arrays.
        hydraulics: soil parameters, (n,) float64: theta_res, theta_wp, theta_fc, theta_sat
            (m3 m-3), ksat (m d-1), b (Campbell exponent, 1).
        lat, lon (deg), elevation (m), land_cover (class code), t_ann (annual-mean 2 m
            temperature, K), t_amp (signed seasonal half-range, K), cont (continentality, 0-1),
            p_ann (mean precipitation, m d-1), aridity (P/PET, 1): (n,) float64 / int.
    """

    def __init__(self, lat: np.ndarray, lon: np.ndarray, seed: int = 42) -> None:
        lat = np.asarray(lat, dtype=np.float64).ravel()
        lon = np.asarray(lon, dtype=np.float64).ravel()
        if lat.shape != lon.shape or lat.size == 0:
            raise ConfigError(f"demo world: lat and lon must be non-empty 1-D arrays of equal "
                              f"length (got {lat.shape} and {lon.shape})")
        if not (np.all(np.abs(lat) <= 90) and np.all(np.isfinite(lon))):
            raise ConfigError("demo world: latitudes must lie in -90..90 and longitudes be finite")
        if int(seed) < 0:
            raise ConfigError(f"demo world: the seed must be a non-negative integer, not {seed}")
        self.seed, self.n = int(seed), lat.size
        self.lat, self.lon = lat, (lon + 180.0) % 360.0 - 180.0
        rlat, rlon = np.radians(self.lat), np.radians(self.lon)
        self._rlat_u, self._lat_inv = np.unique(rlat, return_inverse=True)
        xyz = np.stack([np.cos(rlat) * np.cos(rlon), np.cos(rlat) * np.sin(rlon), np.sin(rlat)], 1)
        # smooth unit-variance fields: name -> wavenumber range (rad-1; 2π/k is the wavelength)
        scales = {"belt": (3, 10), "belt_strength": (1.5, 6), "hills": (2, 20),
                  "continentality": (1.5, 6), "wetness": (2, 10), "sand": (3, 16),
                  "clay": (3, 16), "silt": (3, 16), "crops": (2, 10), "warmth": (2, 8)}
        self._g = {name: _smooth(xyz, self.seed, tag, *k)
                   for tag, (name, k) in enumerate(scales.items())}
        self._init_climate()
        self._init_surface()
        self._init_lattice()

    # ---------------------------------------------------------------- static fields

    def _init_climate(self) -> None:
        """Elevation, temperature and precipitation climatologies (see :meth:`_seasonal`),
        sampled on 24 days and fitted with _NHARM harmonics for a cheap daily evaluation.

        elevation (m): lowland hills (lognormal, median 110 m) + mountain belts 3300 m high
        along the zero line of a smooth field.  t_ann (K): 304 - 36 sin²φ (colder poleward of
        64°), lapse rate 6.5 K/km, continentality and a smooth ±1.5 K field.  t_amp (K): seasonal
        half-range growing with |lat| and continentality, smaller in the south, signed so that
        the southern hemisphere has the opposite phase."""
        g, s = self._g, np.sin(np.radians(self.lat))
        belt = np.exp(-(g["belt"] / 0.25) ** 2) * _sigmoid(2.5 * (g["belt_strength"] + 0.3))
        self.elevation = np.minimum(110.0 * np.exp(0.8 * g["hills"]), 1500.0) + 3300.0 * belt
        self.cont = _sigmoid(1.3 * g["continentality"])  # 0..1
        polar = np.clip((np.abs(s) - 0.9) / 0.1, 0.0, 1.0)
        self.t_ann = (304.0 - 36.0 * s**2 - 12.0 * polar - 0.0065 * self.elevation
                      - 3.0 * (self.cont - 0.5) + 1.5 * g["warmth"])
        amp = (1.0 + 16.0 * np.abs(s) ** 1.3) * (0.55 + 0.9 * self.cont)
        self.t_amp = amp * np.where(s < 0, 0.55, 1.0) * np.tanh(self.lat / 8.0)
        phases = 2 * np.pi * (np.arange(24) + 0.5) / 24
        samples, p = zip(*(self._seasonal(ph) for ph in phases))
        coef = np.linalg.lstsq(_basis(phases).T, np.reshape(samples, (24, -1)), rcond=None)[0]
        self._coef = coef.astype(np.float32)  # (2K+1, 5 n)
        self.p_ann = np.mean(p, axis=0)  # m d-1
        pet_ann = 1e-3 * np.clip(0.4 + 0.15 * (self.t_ann - _T0) + 0.05 * np.abs(self.t_amp),
                                 0.3, 7.0)
        self.aridity = self.p_ann / pet_ann  # P / PET, 1

    def _seasonal(self, phase: float) -> tuple[np.ndarray, np.ndarray]:
        """Climatology at a seasonal phase (rad).  Returns (5, n): t_clim (K), storm threshold
        tau (1), log of the precipitation per unit storm exceedance (log m d-1), cloud logit (1),
        log dewpoint depression (log K); and the mean precipitation (n,) m d-1.

        Precipitation (mm d-1) = ITCZ (12 exp(-((φ - φ_itcz)/8°)²), φ_itcz = 4° + 12° cos(...),
        northmost in July) + storm tracks (2.4 at 45°, narrow towards the dry subtropics) + 0.2,
        times a smooth regional field, less in continental interiors, more on mountains, less
        when cold.
        Wet-day frequency f = 0.75 (1 - exp(-P/3 mm)); tau = Φ⁻¹(1 - f) so that P(storm > tau)
        = f; the scale makes the mean of scale·max(storm - tau, 0) equal P."""
        t_clim = self.t_ann + self.t_amp * np.cos(phase - 2 * np.pi * (196 + 20 * (1 - self.cont))
                                                  / _YEAR)
        itcz = 4.0 + 12.0 * np.cos(phase - 2 * np.pi * 199 / _YEAR)
        alat = np.abs(self.lat)
        tracks = 2.4 * np.exp(-((alat - 45.0) / np.where(alat > 45.0, 22.0, 12.0)) ** 2)
        regional = np.exp(0.45 * self._g["wetness"] - 0.1) * (1.25 - 0.5 * self.cont) \
            * (1.0 + 0.25 * np.minimum(self.elevation / 1000.0, 2.0))
        p = 1e-3 * (12.0 * np.exp(-((self.lat - itcz) / 8.0) ** 2) + tracks + 0.2) * regional \
            * (0.5 + 0.5 * _sigmoid((t_clim - 268.0) / 6.0))
        f_wet = np.clip(0.75 * (1.0 - np.exp(-p / 3e-3)), 0.03, 0.75)
        tau = special.ndtri(1.0 - f_wet)
        mean_exceed = np.exp(-0.5 * tau**2) / np.sqrt(2 * np.pi) \
            - tau * 0.5 * special.erfc(tau / np.sqrt(2))
        dpd = (1.5 + 16.0 * (1.0 - f_wet / 0.75) ** 2) * np.clip((t_clim - 230.0) / 50.0, 0.25, 1)
        cloud_logit = special.logit(0.15 + 0.6 * f_wet / 0.75)
        return np.stack([t_clim, tau, np.log(p / mean_exceed), cloud_logit, np.log(dpd)]), p

    def _init_surface(self) -> None:
        """Land cover from climate (warmest month < 10 °C: tundra; P/PET < 0.15 desert, < 0.4
        shrubland, > 0.75 forest, else grassland; cropland in temperate moderately humid
        patches), texture (softmax of smooth fields; sandy where arid, clayey in the humid
        tropics) and hydraulic parameters from texture (linear pedotransfer functions)."""
        g, ai = self._g, self.aridity
        t_warm = self.t_ann + np.abs(self.t_amp)
        lc = np.where(ai > 0.75, 1, 2)
        lc = np.where(ai < 0.4, 4, lc)
        lc = np.where(ai < 0.15, 5, lc)
        crop = (g["crops"] > 0.5) & (ai > 0.4) & (ai < 1.5) & (self.t_ann > 278.0)
        lc = np.where(crop, 3, lc)
        self.land_cover = np.where(t_warm < 283.15, 6, lc)
        weathered = np.clip(ai - 0.8, 0, 1) * _sigmoid(self.t_ann - 290.0)  # humid tropics
        logits = np.stack([0.5 * g["sand"] + 1.5 * (0.5 - np.clip(ai, 0, 1.5)),  # deserts
                           0.5 * g["clay"] - 0.4 + 0.6 * weathered, 0.5 * g["silt"]])
        frac = np.exp(logits - logits.max(0))
        sand, clay, silt = frac / frac.sum(0)
        wp = 0.035 + 0.30 * clay + 0.03 * silt
        fc = 0.17 + 0.30 * clay + 0.08 * silt - 0.04 * sand
        sat = 0.42 + 0.13 * clay - 0.05 * sand
        self.hydraulics = {"theta_res": 0.4 * wp, "theta_wp": wp, "theta_fc": fc, "theta_sat": sat,
                           "ksat": 10.0 ** (-1.2 + 1.8 * sand - 1.0 * clay), "b": 3.0 + 11.0 * clay}
        self.statics = {k: v.astype(np.float32) for k, v in {
            "elevation": self.elevation, "clay": clay, "sand": sand, "silt": silt,
            "storage_capacity": (fc - wp) * 1.0, "land_cover": self.land_cover}.items()}
        self._init_surface_params()

    def _init_surface_params(self) -> None:
        """Per-layer water-depth bounds (3, n) in m and process rates used by :meth:`_land`."""
        h, d = self.hydraulics, _D[:, None]
        self._w = {k: h[f"theta_{k}"][None, :] * d for k in ("res", "wp", "fc", "sat")}
        self._fast = 1.0 - np.exp(-h["ksat"][None, :] / (d * (h["theta_sat"] - h["theta_fc"])))
        self._slow = (h["ksat"] * (h["theta_fc"] / h["theta_sat"]) ** (2 * h["b"] + 3))[None, :]
        self._roots = _ROOTS[self.land_cover].T  # (3, n)
        self._albedo, self._veg_max = _ALBEDO[self.land_cover], _VEG_MAX[self.land_cover]
        a = np.abs(self.lat)
        rough = _ROUGH[self.land_cover]
        # trades, westerlies, polar easterlies
        self._u_clim = rough * (-4.5 * np.exp(-(self.lat / 16) ** 2)
                                + 6.5 * np.exp(-((a - 47) / 12) ** 2)
                                - 1.5 * np.exp(-((a - 75) / 8) ** 2))
        self._v_clim = -2.5 * rough * np.tanh(self.lat / 10) * np.exp(-(self.lat / 22) ** 2)
        s = np.abs(np.sin(np.radians(self.lat)))
        self._sig_wind, self._sig_t = rough * (1.3 + 2.5 * s), 1.2 + 3.8 * s
        p_scale = np.exp(-self.elevation / 8400.0)
        self._sp0 = p_scale * (101_325.0 + 600.0 * np.exp(-((a - 30) / 10) ** 2)
                               - 700.0 * np.exp(-((a - 62) / 10) ** 2))
        self._sig_p = p_scale * (250.0 + 1200.0 * s)
        self._trans0 = 0.76 + 0.08 * np.minimum(self.elevation, 4000.0) / 4000.0

    def _init_lattice(self) -> None:
        """Sparse (n, Lc + Lf) interpolation matrix from the two anomaly lattices to the cells."""
        ic, wc, self._nc = _lattice_rows(self.lat, self.lon, _COARSE_DEG)
        jf, wf, self._nf = _lattice_rows(self.lat, self.lon, _FINE_DEG)
        idx, w = np.concatenate([ic, jf + self._nc], 1), np.concatenate([wc, wf], 1)
        self._interp = sparse.csr_matrix((w.ravel(), idx.ravel(), np.arange(0, idx.size + 1, 8)),
                                         shape=(self.n, self._nc + self._nf))

    # ---------------------------------------------------------------- state

    def initial_state(self) -> dict[str, np.ndarray]:
        """Zero weather anomalies; soil between wilting point and field capacity according to the
        aridity index P/PET (humid cells at field capacity); SWE only where the annual-mean
        temperature is below -8 °C.  Keys: anom_coarse (Lc, 7), anom_fine (Lf, 7) lattice AR
        states (1); swe (n,) m; soil_water (3, n) water depth of the layers in m."""
        h = self.hydraulics
        rel = np.clip(0.25 + 0.75 * self.aridity, 0.25, 1.0)
        theta = h["theta_wp"] + (h["theta_fc"] - h["theta_wp"]) * rel
        return {"anom_coarse": np.zeros((self._nc, 7)), "anom_fine": np.zeros((self._nf, 7)),
                "swe": 0.3 * np.clip((265.15 - self.t_ann) / 10.0, 0.0, 1.0),
                "soil_water": theta[None, :] * _D[:, None]}

    @staticmethod
    def column_water(state: dict[str, np.ndarray]) -> np.ndarray:
        """Total water of a cell, soil layers plus snow pack (n,) in m."""
        return state["soil_water"].sum(0) + state["swe"]

    def step(self, state: dict[str, np.ndarray], day: date
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Advance one UTC day.  Returns (new_state, fields): SOURCE_VARIABLES as (n,) float32 in
        store units.  ``state`` is not modified."""
        new_state, fields = self.advance(state, day)
        return new_state, {k: v.astype(np.float32) for k, v in fields.items()}

    def advance(self, state: dict[str, np.ndarray], day: date
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """As :meth:`step`, with float64 fields (exact water balance against ``state``)."""
        if state["soil_water"].shape != (3, self.n) or state["anom_fine"].shape != (self._nf, 7):
            raise StoreError(f"demo world: the state does not belong to this grid of {self.n} "
                             f"cells (soil_water {state['soil_water'].shape}); start afresh")
        rng = np.random.default_rng([self.seed, day.toordinal()])
        coarse = _RHO_COARSE * state["anom_coarse"] + np.sqrt(1 - _RHO_COARSE**2) \
            * rng.standard_normal((self._nc, 7))
        fine = _RHO_FINE * state["anom_fine"] + np.sqrt(1 - _RHO_FINE**2) \
            * rng.standard_normal((self._nf, 7))
        lattice = np.concatenate([coarse * np.sqrt(_W_COARSE), fine * np.sqrt(1 - _W_COARSE)])
        anom = np.ascontiguousarray((self._interp @ lattice).T)  # (7, n), unit variance
        phase = _phase(day)
        clim = (_basis(phase)[:, 0].astype(np.float32) @ self._coef).astype(np.float64)
        fields, drivers = self._weather(anom, clim.reshape(5, self.n), phase)
        soil, swe, fluxes = self._land(state["soil_water"], state["swe"], fields, drivers)
        theta0, theta1 = state["soil_water"] / _D[:, None], soil / _D[:, None]
        swvl = 0.5 * (theta0 + theta1)
        fields.update(fluxes, sd=swe, swvl1=swvl[0], swvl2=swvl[1], swvl3=swvl[2])
        new_state = {"anom_coarse": coarse, "anom_fine": fine, "swe": swe, "soil_water": soil}
        return new_state, {k: fields[k] for k in SOURCE_VARIABLES}

    # ---------------------------------------------------------------- weather

    def _weather(self, anom: np.ndarray, clim: np.ndarray, phase: float
                 ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Daily weather from anomalies (7, n) and climatology (5, n).  Returns store-unit fields
        (tp m d-1, t2m/d2m K, sp Pa, u10/v10 m s-1, ssrd/strd W m-2) and drivers for the land
        surface (dewpoint depression K, climatological temperature K)."""
        a_t, a_h, a_p, a_u, a_v, a_c, a_s = anom
        t_clim, tau, log_scale, c0, log_dpd = clim
        toa = _toa_insolation(self._rlat_u, phase)[self._lat_inv]
        cloud = _sigmoid(c0 + 1.8 * (0.7 * a_s + 0.714 * a_c))
        # clouds shade in sunny seasons and warm in the polar night
        t2m = t_clim + self._sig_t * a_t + (3.0 - 7.0 * toa / 450.0) * (cloud - _sigmoid(c0))
        t2m = np.clip(t2m, 180.0, 330.0)  # safety bound, not reached by the climatology
        exceed = a_s - tau
        tp = np.exp(log_scale) * np.maximum(exceed, 0.0)  # m d-1; mean = climatology
        rainy = np.clip(exceed, 0.0, 1.0)
        dpd = np.clip(np.exp(log_dpd + 0.35 * a_h) * (1.0 - 0.5 * rainy), 0.1, 30.0)
        excess = np.maximum(t2m - dpd - 300.0, 0.0)  # soft cap: dewpoints stay below ~306 K
        d2m = t2m - dpd - (excess - 6.0 * np.tanh(excess / 6.0))
        ea = 6.108 * np.exp(17.27 * (d2m - _T0) / (d2m - _T0 + 237.3))  # hPa
        eps = np.minimum(0.55 + 0.065 * np.sqrt(ea), 0.95)
        eps += (1.0 - eps) * 0.85 * cloud
        t2 = t2m * t2m
        fields = {"tp": tp, "t2m": t2m, "d2m": d2m,
                  "sp": self._sp0 + self._sig_p * (0.8 * a_p - 0.6 * a_s),
                  "u10": self._u_clim + self._sig_wind * a_u,
                  "v10": self._v_clim + self._sig_wind * a_v,
                  "ssrd": toa * self._trans0 * (1.0 - 0.68 * cloud),
                  "strd": eps * _SIGMA * t2 * t2}
        return fields, {"dpd": dpd, "t_clim": t_clim, "sigma_t4": _SIGMA * t2 * t2}

    def _pet(self, f: dict[str, np.ndarray], drv: dict[str, np.ndarray],
             snow_cov: np.ndarray) -> np.ndarray:
        """Priestley-Taylor potential evaporation (n,) in m d-1, with α rising from 1.0 to 1.5
        with the dewpoint depression (advection of dry air)."""
        tc = f["t2m"] - _T0
        es = 0.6108 * np.exp(17.27 * tc / (tc + 237.3))  # kPa
        delta = 4098.0 * es / (tc + 237.3) ** 2  # kPa K-1
        gamma = 0.665e-6 * f["sp"]  # kPa K-1
        albedo = self._albedo + (0.75 - self._albedo) * snow_cov
        rn = (1.0 - albedo) * f["ssrd"] + f["strd"] - 0.97 * drv["sigma_t4"]
        alpha = 1.0 + 0.025 * np.minimum(drv["dpd"], 20.0)
        return alpha * delta / (delta + gamma) * np.maximum(rn, 0.0) / _LV_RHO

    # ---------------------------------------------------------------- land surface

    def _land(self, soil0: np.ndarray, swe0: np.ndarray, f: dict[str, np.ndarray],
              drv: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Snow, infiltration/runoff, evapotranspiration, drainage and diffusion for one day.
        soil0: (3, n) layer water depth m; swe0: (n,) m.  Returns the new soil water, SWE and
        the fluxes e, ro, sro (m d-1; e <= 0)."""
        t, tp = f["t2m"], f["tp"]
        snow_cov = swe0 / (swe0 + 0.015)
        pet = self._pet(f, drv, snow_cov)
        snowfall = tp * np.clip((_T0 + 1.0 - t) / 2.0, 0.0, 1.0)
        swe = swe0 + snowfall
        melt = np.minimum(swe, _DDF * np.maximum(t - _T0, 0.0))
        swe = swe - melt
        subl = np.minimum(swe, 0.3 * pet * snow_cov)
        swe = swe - subl
        glacier = np.maximum(swe - _SWE_MAX, 0.0)
        swe = swe - glacier
        w, sro = self._infiltrate(soil0.copy(), tp - snowfall + melt, t)
        et = self._evapotranspire(w, pet * (1.0 - snow_cov), drv["t_clim"])
        ssro = self._drain(w)
        self._diffuse(w)
        return w, swe, {"e": -(et + subl), "sro": sro + glacier, "ro": sro + glacier + ssro}

    def _infiltrate(self, w: np.ndarray, water: np.ndarray, t: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Rain + melt (n,) m into the soil w (3, n), in place.  Surface runoff = the saturated
        contributing area (relative saturation of the top 28 cm to the 8th power) + excess over
        the infiltration capacity Ksat (1 + 3 (1 - s1)) (reduced on frozen ground) + what does
        not fit below saturation when filling the layers from the top."""
        ws, wr = self._w["sat"], self._w["res"]
        s1 = (w[0] - wr[0]) / (ws[0] - wr[0])
        s12 = (w[0] + w[1] - wr[0] - wr[1]) / (ws[0] + ws[1] - wr[0] - wr[1])
        frozen = np.clip(0.2 + 0.8 * (t - _T0 + 2.0) / 3.0, 0.2, 1.0)
        contrib = water * np.clip(s12, 0.0, 1.0) ** 8
        capacity = self.hydraulics["ksat"] * (1.0 + 3.0 * (1.0 - s1)) * frozen  # m d-1
        flow = np.minimum(water - contrib, capacity)
        sro = water - flow
        for i in range(3):  # fill from the top; what does not fit moves down
            w[i] += flow
            flow = np.maximum(w[i] - ws[i], 0.0)
            w[i] -= flow
        return w, sro + flow

    def _evapotranspire(self, w: np.ndarray, pet: np.ndarray, t_clim: np.ndarray) -> np.ndarray:
        """Bare-soil evaporation from layer 1 (down to theta_res) and transpiration from all
        layers by root fraction (down to theta_wp, unstressed above 75 % of the plant-available
        water), in place on w (3, n).  Vegetation cover follows a temperature phenology.
        Returns actual evapotranspiration (n,) m d-1 (>= 0)."""
        wr, wp, fc = self._w["res"], self._w["wp"], self._w["fc"]
        veg = self._veg_max * np.clip((t_clim - _T0 + 2.0) / 12.0, 0.1, 1.0)
        beta1 = np.clip((w[0] - wr[0]) / (fc[0] - wr[0]), 0.0, 1.0)
        et = np.clip(np.minimum(pet * (1.0 - veg) * beta1, w[0] - wr[0]), 0.0, None)
        w[0] -= et
        avail = np.maximum(w - wp, 0.0)
        beta = np.minimum(avail / (0.75 * (fc - wp)), 1.0)
        tr = np.minimum((pet * veg) * self._roots * beta, avail)
        w -= tr
        return et + tr.sum(0)

    def _drain(self, w: np.ndarray) -> np.ndarray:
        """Gravity drainage, bottom layer first, in place on w (3, n): the excess over field
        capacity relaxes with time scale d (theta_sat - theta_fc) / Ksat, plus a slow flux
        K(theta_fc) (Campbell) below it; a layer receives no more than its free pore space.
        Returns drainage out of layer 3 = subsurface runoff (n,) m d-1."""
        wp, fc, ws = self._w["wp"], self._w["fc"], self._w["sat"]
        q = np.maximum(w - fc, 0.0) * self._fast \
            + np.minimum(self._slow, 0.05 * np.maximum(w - wp, 0.0))
        out = q[2]
        w[2] -= out
        for i in (1, 0):
            qi = np.minimum(q[i], ws[i + 1] - w[i + 1])
            w[i] -= qi
            w[i + 1] += qi
        return out

    def _diffuse(self, w: np.ndarray) -> None:
        """Diffusive exchange between neighbouring layers (either direction: capillary rise),
        a fraction 1 - exp(-k s²) of the flux that would equalise theta, with s the mean
        relative saturation of the pair (k = 1.0 d-1 for 1-2, 0.15 d-1 for 2-3); in place."""
        wr, ws = self._w["res"], self._w["sat"]
        for i, k in ((0, 1.0), (1, 0.15)):
            s = 0.5 * sum((w[j] - wr[j]) / (ws[j] - wr[j]) for j in (i, i + 1))
            d_eq = _D[i] * _D[i + 1] / (_D[i] + _D[i + 1])
            flux = (w[i] / _D[i] - w[i + 1] / _D[i + 1]) * d_eq * (1.0 - np.exp(-k * s * s))
            w[i] -= flux
            w[i + 1] += flux
