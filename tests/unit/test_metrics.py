"""Skill metrics (paper Eq. 15–19) and the land median on hand-computed cases."""

import math

import numpy as np
import pytest

from smcast.metrics import (consistency_rate, kge, land_median, pearson_r, r2, rmse,
                            summarise)

nan = float("nan")
OBS = np.array([1.0, 2.0, 3.0, 4.0])
# sim = [1, 3, 2, 4]: both means 2.5; deviations (−1.5, .5, −.5, 1.5) and (−1.5, −.5, .5, 1.5):
# Σ products 4, Σ squares 5 each → R = .8; SSE = 2 → RMSE = √.5, R² = 1 − 2/5;
# σ and μ equal → KGE = 1 − |R − 1| = .8
SIM = np.array([1.0, 3.0, 2.0, 4.0])


def test_perfect_simulation():
    assert pearson_r(OBS, OBS) == pytest.approx(1.0)
    assert rmse(OBS, OBS) == 0.0
    assert r2(OBS, OBS) == pytest.approx(1.0)
    assert kge(OBS, OBS) == pytest.approx(1.0)


def test_metrics_by_hand():
    assert pearson_r(SIM, OBS) == pytest.approx(0.8)
    assert rmse(SIM, OBS) == pytest.approx(math.sqrt(0.5))
    assert r2(SIM, OBS) == pytest.approx(0.6)
    assert kge(SIM, OBS) == pytest.approx(0.8)


def test_doubled_simulation():
    sim = 2 * OBS
    assert pearson_r(sim, OBS) == pytest.approx(1.0)
    assert rmse(sim, OBS) == pytest.approx(math.sqrt((1 + 4 + 9 + 16) / 4))
    assert r2(sim, OBS) == pytest.approx(1 - 30 / 5)  # SSE = Σ obs² = 30, SST = 5
    # R = 1, σ ratio 2, μ ratio 2 → 1 − √2; swapped (LandBench's bug) it would be 1 − √.5
    assert kge(sim, OBS) == pytest.approx(1 - math.sqrt(2))
    assert kge(OBS, sim) == pytest.approx(1 - math.sqrt(0.5))


def test_kge_uses_population_std_ratio_and_mean_ratio():
    obs = np.array([2.0, 4.0, 6.0])      # μ 4, σ (ddof 0) √(8/3)
    sim = np.array([3.0, 4.0, 8.0])      # μ 5, σ √(14/3)
    r = np.corrcoef(sim, obs)[0, 1]
    expected = 1 - math.sqrt((r - 1) ** 2 + (math.sqrt(14 / 8) - 1) ** 2 + (5 / 4 - 1) ** 2)
    assert kge(sim, obs) == pytest.approx(expected)


def test_nan_pairs_are_dropped():
    sim = np.array([1.0, 3.0, nan, 2.0, 4.0, 9.0])
    obs = np.array([1.0, 2.0, 7.0, 3.0, 4.0, nan])
    assert pearson_r(sim, obs) == pytest.approx(0.8)
    assert rmse(sim, obs) == pytest.approx(math.sqrt(0.5))
    assert r2(sim, obs) == pytest.approx(0.6)
    assert kge(sim, obs) == pytest.approx(0.8)


def test_nan_for_too_few_pairs_or_zero_variance():
    few_sim, few_obs = np.array([1.0, nan, 3.0]), np.array([1.0, 2.0, nan])
    for f in (pearson_r, rmse, r2, kge):
        assert np.isnan(f(few_sim, few_obs))
    flat = np.full(4, 0.1)  # constant observation: R, R², KGE undefined; RMSE fine
    assert np.isnan(pearson_r(SIM, flat)) and np.isnan(r2(SIM, flat)) and np.isnan(kge(SIM, flat))
    assert rmse(flat, flat) == 0.0
    assert np.isnan(pearson_r(flat, OBS)) and np.isnan(kge(flat, OBS))
    assert r2(flat, OBS) == pytest.approx(1 - ((OBS - 0.1) ** 2).sum() / 5)


def test_metrics_run_per_cell_over_leading_axes():
    sim = np.stack([np.stack([SIM, 2 * OBS, OBS]), np.stack([OBS, SIM, 2 * OBS])])  # (2, 3, 4)
    obs = np.broadcast_to(OBS, sim.shape)
    for f in (pearson_r, rmse, r2, kge):
        out = f(sim, obs)
        assert out.shape == (2, 3)
        expected = [[f(sim[i, j], OBS) for j in range(3)] for i in range(2)]
        np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(kge(sim, OBS)[0], [0.8, 1 - math.sqrt(2), 1.0])


def test_consistency_rate_by_hand():
    d = np.array([[0, 1, 1, -1, -1, 1], [0, 0, 0, 0, 0, 0]], dtype=np.int8)
    prev = np.array([0.2, 0.2, 0.3, 0.3, 0.3, nan])
    pred = np.array([0.5, 0.3, 0.2, 0.2, 0.3, 0.5])
    # s = D·(prev − pred): 0 (D=0), −.1 ✓, +.1 ✗, −.1 ✓, 0 (not counted), NaN (not counted)
    rate = consistency_rate(pred, prev, d)
    assert rate.shape == (2,)
    assert rate[0] == pytest.approx(2 / 3)
    assert np.isnan(rate[1])  # nothing counts


def test_land_median_excludes_antarctica_mask_constant_and_nan():
    lat = np.array([-65.0, 0.0, 45.0])  # 1-D latitude of a (3, 2) grid
    values = np.array([[100.0, 100.0], [1.0, 2.0], [3.0, nan]])
    assert land_median(values, lat) == pytest.approx(2.0)          # median of 1, 2, 3
    mask = np.array([[True, True], [False, True], [True, True]])
    assert land_median(values, lat, mask=mask) == pytest.approx(2.5)  # 2, 3
    sm = np.tile(np.linspace(0.1, 0.2, 5), (3, 2, 1))
    sm[2, 0] = 0.3             # never changes
    sm[1, 0] = nan             # no observation at all
    assert land_median(values, lat, sm_obs=sm) == pytest.approx(2.0)  # only cell (1, 1) left
    assert np.isnan(land_median(values, lat, mask=np.zeros((3, 2), dtype=bool)))
    assert land_median(values, lat, south_limit=-90.0) == pytest.approx(3.0)  # 1,2,3,100,100


def test_land_median_south_limit_boundary_and_flat_cells():
    lat = np.array([-60.25, -59.75, 10.0])
    assert land_median(np.array([5.0, 1.0, 3.0]), lat) == pytest.approx(2.0)
    assert land_median(np.array([5.0, 1.0, 3.0]), None) == pytest.approx(3.0)


def test_land_median_with_extra_axes_gives_one_median_each():
    values = np.array([[1.0, 10.0], [2.0, 20.0], [9.0, 90.0]])  # (ncell, lead)
    lat = np.array([10.0, 20.0, -80.0])
    out = land_median(values, lat, cell_ndim=1)
    np.testing.assert_allclose(out, [1.5, 15.0])


def test_summarise_gives_land_medians():
    obs = np.stack([OBS, OBS + 1, np.full(4, 0.3), OBS])        # cell 2 never changes
    sim = np.stack([SIM, 2 * OBS, np.full(4, 0.2), 2 * OBS])
    lat = np.array([10.0, 20.0, 30.0, -70.0])                     # cell 3 in Antarctica
    out = summarise(sim, obs, lat=lat)
    assert set(out) == {"R", "RMSE", "R2", "KGE"}
    assert out["KGE"] == pytest.approx(np.median([0.8, kge(2 * OBS, OBS + 1)]))
    assert out["RMSE"] == pytest.approx(np.median([math.sqrt(0.5), rmse(2 * OBS, OBS + 1)]))
    prev = np.concatenate([np.full((4, 1), nan), obs[:, :-1]], axis=1)
    d = np.ones_like(obs)
    d[0, 3] = -1
    out = summarise(sim, obs, prev, d, lat=lat)
    # cell 0: s = D·(prev − sim) = (nan, 1−3, 2−2, −(3−4)) → 1 consistent, 1 inconsistent;
    # cell 1: (nan, 2−4, 3−6, 4−8) → 3 of 3
    assert out["consistency"] == pytest.approx(0.75)
    with pytest.raises(ValueError):
        summarise(sim, obs, prev_obs=prev, lat=lat)
