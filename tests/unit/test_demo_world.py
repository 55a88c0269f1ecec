"""Tests of the offline ERA5-Land-like world behind the ``demo`` source."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from smcast.sources.demo_world import LAND_COVER_CLASSES, STATIC_VARIABLES, DemoWorld
from smcast.variables import LAYER_THICKNESS_M, SOURCE_VARIABLES, VARIABLES

N_CELLS = 1500
START = date(2001, 1, 1)


def _cells(n: int = N_CELLS, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(-55.0, 75.0, n), rng.uniform(-180.0, 180.0, n)


def _run(world: DemoWorld, state: dict, start: date, days: int
         ) -> tuple[dict, dict[str, np.ndarray]]:
    """Step ``days`` days; returns the final state and the fields stacked to (days, n)."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in SOURCE_VARIABLES}
    for i in range(days):
        state, fields = world.step(state, start + timedelta(days=i))
        for k, v in fields.items():
            out[k].append(v)
    return state, {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def world() -> DemoWorld:
    return DemoWorld(*_cells(), seed=42)


@pytest.fixture(scope="module")
def year2(world: DemoWorld) -> dict[str, np.ndarray]:
    """Fields of the second simulated year (2002), after one year of spin-up."""
    state, _ = _run(world, world.initial_state(), START, 365)
    _, fields = _run(world, state, START + timedelta(days=365), 365)
    return fields


def _doy_slice(first: date, last: date, year: int = 2002) -> slice:
    base = date(year, 1, 1)
    return slice((first - base).days, (last - base).days + 1)


# ------------------------------------------------------------------ statics


def test_statics_complete_and_consistent(world: DemoWorld) -> None:
    assert set(world.statics) == set(STATIC_VARIABLES)
    for name, values in world.statics.items():
        assert values.shape == (N_CELLS,) and values.dtype == np.float32, name
        assert np.all(np.isfinite(values)), name
    st, h = world.statics, world.hydraulics
    for part in ("clay", "sand", "silt"):
        assert np.all((st[part] > 0) & (st[part] < 1))
    np.testing.assert_allclose(st["clay"] + st["sand"] + st["silt"], 1.0, atol=1e-6)
    assert np.all(h["theta_res"] < h["theta_wp"])
    assert np.all(h["theta_wp"] < h["theta_fc"]) and np.all(h["theta_fc"] < h["theta_sat"])
    assert 0.37 < h["theta_sat"].min() and h["theta_sat"].max() < 0.56
    assert 0.14 < h["theta_fc"].min() and h["theta_fc"].max() < 0.42
    assert 0.03 < h["theta_wp"].min() and h["theta_wp"].max() < 0.27
    np.testing.assert_allclose(st["storage_capacity"], h["theta_fc"] - h["theta_wp"], rtol=1e-6)
    assert set(np.unique(st["land_cover"]).astype(int)) <= set(LAND_COVER_CLASSES)
    assert len(np.unique(st["land_cover"])) >= 5  # the climate produces a variety of covers
    assert st["elevation"].min() >= 0 and 2500 < st["elevation"].max() < 5500
    assert np.median(st["elevation"]) < 1000


def test_statics_spatially_coherent() -> None:
    lat, lon = _cells(2000, seed=9)
    lat = np.clip(lat, -55, 74)
    here, north = DemoWorld(lat, lon), DemoWorld(lat + 0.5, lon)
    far = DemoWorld(np.random.default_rng(1).permutation(lat), lon)
    for name in ("elevation", "clay", "sand"):
        a, b, c = here.statics[name], north.statics[name], far.statics[name]
        assert np.corrcoef(a, b)[0, 1] > 0.9, name  # neighbours 0.5° apart are alike
        assert abs(np.corrcoef(a, c)[0, 1]) < 0.5, name  # but it is not one constant pattern
        assert a.std() > 0


def test_statics_do_not_depend_on_the_other_cells(world: DemoWorld) -> None:
    sub = DemoWorld(world.lat[:50], world.lon[:50], seed=42)
    for name in STATIC_VARIABLES:
        np.testing.assert_array_equal(sub.statics[name], world.statics[name][:50])
    _, f_sub = _run(sub, sub.initial_state(), START, 5)
    _, f_all = _run(world, world.initial_state(), START, 5)
    for name in ("tp", "t2m", "swvl1"):
        np.testing.assert_allclose(f_sub[name], f_all[name][:, :50], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ determinism


def test_same_seed_same_world() -> None:
    a, b = DemoWorld(*_cells(300), seed=5), DemoWorld(*_cells(300), seed=5)
    _, fa = _run(a, a.initial_state(), START, 20)
    _, fb = _run(b, b.initial_state(), START, 20)
    for name in SOURCE_VARIABLES:
        np.testing.assert_array_equal(fa[name], fb[name])


def test_restart_from_saved_state_reproduces(tmp_path) -> None:
    w = DemoWorld(*_cells(300), seed=5)
    mid, first = _run(w, w.initial_state(), START, 15)
    _, rest = _run(w, mid, START + timedelta(days=15), 15)
    np.savez(tmp_path / "state.npz", **mid)
    with np.load(tmp_path / "state.npz") as saved:
        loaded = {k: saved[k] for k in saved.files}
    restarted = DemoWorld(*_cells(300), seed=5)
    _, again = _run(restarted, loaded, START + timedelta(days=15), 15)
    for name in SOURCE_VARIABLES:
        np.testing.assert_array_equal(rest[name], again[name])


def test_step_does_not_mutate_state() -> None:
    w = DemoWorld(*_cells(200), seed=5)
    state, _ = _run(w, w.initial_state(), START, 10)
    before = {k: v.copy() for k, v in state.items()}
    w.step(state, START + timedelta(days=10))
    for k, v in before.items():
        np.testing.assert_array_equal(state[k], v)


def test_different_seed_different_world() -> None:
    a, b = DemoWorld(*_cells(300), seed=1), DemoWorld(*_cells(300), seed=2)
    assert not np.allclose(a.statics["elevation"], b.statics["elevation"])
    _, fa = _run(a, a.initial_state(), START, 10)
    _, fb = _run(b, b.initial_state(), START, 10)
    assert not np.allclose(fa["tp"], fb["tp"]) and not np.allclose(fa["t2m"], fb["t2m"])


# ------------------------------------------------------------------ physics


def test_initial_state(world: DemoWorld) -> None:
    s, h = world.initial_state(), world.hydraulics
    theta = s["soil_water"] / np.array(list(LAYER_THICKNESS_M.values()))[:, None]
    assert np.all(theta >= h["theta_wp"] - 1e-12) and np.all(theta <= h["theta_fc"] + 1e-12)
    assert np.all(s["swe"][world.t_ann > 275.0] == 0.0)
    assert all(np.all(s[k] == 0) for k in ("anom_coarse", "anom_fine"))


def test_exact_mass_balance_over_a_year(world: DemoWorld) -> None:
    state = world.initial_state()
    worst = 0.0
    for i in range(365):
        new, f = world.advance(state, START + timedelta(days=i))
        change = world.column_water(new) - world.column_water(state)
        worst = max(worst, float(np.abs(change - (f["tp"] + f["e"] - f["ro"])).max()))
        assert np.all(f["ro"] >= f["sro"]) and np.all(f["sro"] >= 0) and np.all(f["e"] <= 0)
        state = new
    assert worst < 1e-9


def test_outputs_within_valid_range(year2: dict[str, np.ndarray]) -> None:
    for name in SOURCE_VARIABLES:
        values = year2[name]
        assert values.dtype == np.float32 and values.shape == (365, N_CELLS), name
        lo, hi = VARIABLES[name].valid_range
        assert np.all(np.isfinite(values)), name
        assert lo <= values.min() and values.max() <= hi, (name, values.min(), values.max())
    assert np.all(year2["d2m"] <= year2["t2m"])
    assert np.all(year2["ro"] >= year2["sro"])


def test_seasonality(world: DemoWorld, year2: dict[str, np.ndarray]) -> None:
    jan = year2["t2m"][_doy_slice(date(2002, 1, 1), date(2002, 1, 31))].mean(0)
    jul = year2["t2m"][_doy_slice(date(2002, 7, 1), date(2002, 7, 31))].mean(0)
    north, south = (world.lat > 35) & (world.lat < 65), (world.lat < -30)
    assert np.mean(jul[north] > jan[north] + 5.0) > 0.95
    assert np.mean(jan[south] > jul[south]) > 0.95
    p = year2["tp"].mean(0)
    alat = np.abs(world.lat)
    tropics, subtropics = alat < 10, (alat > 20) & (alat < 30)
    assert p[tropics].mean() > 1.5 * p[subtropics].mean()
    # the ITCZ migrates: 5-15°N is wetter in July than in January
    band = (world.lat > 5) & (world.lat < 15)
    jul_p = year2["tp"][_doy_slice(date(2002, 7, 1), date(2002, 7, 31))][:, band].mean()
    jan_p = year2["tp"][_doy_slice(date(2002, 1, 1), date(2002, 1, 31))][:, band].mean()
    assert jul_p > 1.5 * jan_p


def test_weather_persistence(year2: dict[str, np.ndarray]) -> None:
    t = year2["t2m"].astype(np.float64)
    running = np.lib.stride_tricks.sliding_window_view(t, 31, axis=0).mean(-1)
    anom = t[15:-15] - running
    lag1 = (anom[1:] * anom[:-1]).mean(0) / (anom * anom).mean(0)
    assert lag1.mean() > 0.4
    wet = year2["tp"] > 1e-3
    p_wet = wet.mean()
    p_wet_after_wet = (wet[1:] & wet[:-1]).sum() / wet[:-1].sum()
    assert 0.05 < p_wet < 0.6 and p_wet_after_wet > p_wet + 0.15


def test_snow_accumulates_in_winter_and_melts_in_summer(world: DemoWorld,
                                                        year2: dict[str, np.ndarray]) -> None:
    cold = (world.lat > 55) & (world.statics["elevation"] < 1000) & (world.t_ann < 272.0)
    assert cold.sum() >= 10
    sd = year2["sd"][:, cold]
    march = sd[_doy_slice(date(2002, 3, 15), date(2002, 3, 15))][0]
    late_summer = sd[_doy_slice(date(2002, 9, 1), date(2002, 9, 1))][0]
    assert np.mean(march > 0.005) > 0.9 and np.median(march) > 0.03
    assert np.mean(late_summer < 1e-3) > 0.9
    warm = world.t_ann > 296.0  # tropical lowlands
    assert np.all(year2["sd"][:, warm] == 0.0)


def test_soil_moisture_responds_to_rain(year2: dict[str, np.ndarray]) -> None:
    sm, tp, t2m = year2["swvl1"].astype(np.float64), year2["tp"], year2["t2m"]
    change = sm[1:] - sm[:-1]
    warm = (t2m[1:] > 278.0) & (year2["sd"][1:] == 0)
    heavy = (tp[1:] > 0.015) & warm
    assert heavy.sum() > 100
    assert change[heavy].mean() > 0.005 and np.mean(change[heavy] > 0) > 0.8
    dry_spell = (tp[1:] == 0) & (tp[:-1] == 0) & warm
    dry_spell[1:] &= tp[:-2] == 0
    assert dry_spell.sum() > 1000
    assert change[dry_spell].mean() < 0 and np.mean(change[dry_spell] <= 0) > 0.9


def test_radiation_follows_the_sun(world: DemoWorld, year2: dict[str, np.ndarray]) -> None:
    arctic = world.lat > 68
    assert arctic.sum() > 0
    dec21 = _doy_slice(date(2002, 12, 21), date(2002, 12, 21))
    assert np.all(year2["ssrd"][dec21][:, arctic] < 1.0)  # polar night
    strd, t2m = year2["strd"].ravel(), year2["t2m"].ravel()
    assert np.corrcoef(strd, t2m)[0, 1] > 0.8
