"""The physics of the guided loss (paper Eq. 8–14) on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from smcast.physics import (deep_storage, direction, physics_guided_loss,
                            physics_guided_loss_terms, water_input)

nan = float("nan")

# four days of one cell, metres of water per day (e negative = evaporation)
P = [0.010, 0.000, 0.005, 0.002]
E = [-0.002, -0.003, -0.001, -0.002]
RO = [0.001, 0.000, 0.000, 0.001]
SD = [0.000, 0.004, 0.001, 0.001]
DEEP = [0.300, 0.310, 0.300, 0.330]
# by hand: day1 0 − .003 − 0 ± .004; day2 .005 − .001 − 0 ∓ .003; day3 .002 − .002 − .001 ± 0
W_PAPER = [nan, 0.001, 0.001, -0.001]
W_MASS = [nan, -0.007, 0.007, -0.001]
W_DEEP = [nan, 0.001 - 0.010, 0.001 + 0.010, -0.001 - 0.030]


# --- water input ------------------------------------------------------------------------------

@pytest.mark.parametrize("sign, expected", [("paper", W_PAPER), ("mass", W_MASS)])
def test_water_input_by_hand(sign, expected):
    w = water_input(np.array(P), np.array(E), np.array(RO), np.array(SD), snow_sign=sign)
    assert isinstance(w, np.ndarray)
    assert np.isnan(w[0])
    np.testing.assert_allclose(w[1:], expected[1:], atol=1e-15)


def test_water_input_default_is_the_papers_sign():
    np.testing.assert_allclose(water_input(P, E, RO, SD)[1:], W_PAPER[1:], atol=1e-15)


def test_water_input_with_deep_storage_subtracts_its_change():
    w = water_input(np.array(P), np.array(E), np.array(RO), np.array(SD), deep=np.array(DEEP))
    assert np.isnan(w[0])
    np.testing.assert_allclose(w[1:], W_DEEP[1:], atol=1e-15)


def test_deep_storage_uses_layer_thicknesses():
    assert deep_storage(0.5, 0.25) == pytest.approx(0.21 * 0.5 + 0.72 * 0.25)
    assert deep_storage(0.5, 0.25) == pytest.approx(0.285)


def test_water_input_torch_matches_numpy_and_keeps_time_last():
    p = np.array([P, P[::-1]])  # two cells, 4 days
    e, ro, sd, deep = (np.array([x, x]) for x in (E, RO, SD, DEEP))
    w_np = water_input(p, e, ro, sd, deep=deep, snow_sign="mass")
    w_t = water_input(*(torch.tensor(x) for x in (p, e, ro, sd)), deep=torch.tensor(deep),
                      snow_sign="mass")
    assert isinstance(w_t, torch.Tensor) and w_t.shape == (2, 4)
    assert torch.isnan(w_t[:, 0]).all()
    np.testing.assert_allclose(w_t.numpy(), w_np, atol=1e-15)


def test_water_input_rejects_unknown_snow_sign():
    with pytest.raises(ValueError, match="'paper'.*'mass'"):
        water_input(P, E, RO, SD, snow_sign="plus")


# --- direction --------------------------------------------------------------------------------

#        day: 0    1     2     3     4     5     6     7     8     9    10
DIR_W = [0.0, 1.0, 3.0, 2.0, 2.0, 5.0, nan, 4.0, 6.0, 1.0, 0.0]
DIR_SM = [0.20, 0.25, 0.22, 0.20, 0.18, 0.18, 0.30, 0.35, nan, 0.30, 0.20]
# 1: both up → +1; 2: W up, SM down → 0; 3: both down → −1; 4: W unchanged → 0;
# 5: SM unchanged → 0; 6, 7: W NaN today / yesterday → 0; 8, 9: SM NaN → 0; 10: both down → −1
DIR_EXPECTED = [0, 1, 0, -1, 0, 0, 0, 0, 0, 0, -1]


def test_direction_by_hand():
    d = direction(np.array(DIR_W), np.array(DIR_SM))
    assert isinstance(d, np.ndarray)
    assert d.tolist() == DIR_EXPECTED


def test_direction_torch_matches_numpy_on_a_batch():
    w = np.array([DIR_W, DIR_W[::-1]])
    sm = np.array([DIR_SM, DIR_SM[::-1]])
    d_np = direction(w, sm)
    d_t = direction(torch.tensor(w), torch.tensor(sm))
    assert isinstance(d_t, torch.Tensor) and d_t.is_floating_point() and d_t.shape == (2, 11)
    assert d_np[0].tolist() == DIR_EXPECTED
    np.testing.assert_array_equal(d_t.numpy(), d_np)
    assert d_np[:, 0].tolist() == [0, 0]


def test_direction_filter_keeps_only_agreeing_moves():
    w = np.array([0.0, 1.0, 0.0, 1.0])            # up, down, up
    sm_agree = np.array([0.1, 0.2, 0.1, 0.2])     # up, down, up
    sm_against = np.array([0.2, 0.1, 0.2, 0.1])   # down, up, down
    assert direction(w, sm_agree).tolist() == [0, 1, -1, 1]
    assert direction(w, sm_against).tolist() == [0, 0, 0, 0]


def test_direction_after_water_input_is_zero_on_the_first_two_days():
    w = water_input(P, E, RO, SD)
    d = direction(w, np.array([0.2, 0.3, 0.25, 0.2]))
    assert d[:2].tolist() == [0, 0]
    assert d[2:].tolist() == [0, -1]  # W 0.001→0.001 unchanged; 0.001→−0.001 down with SM down


# --- loss -------------------------------------------------------------------------------------

# five samples; sample 3 has no observation; sample 4 has D = 0
PRED = [0.30, 0.50, 0.20, 0.40, 0.60]
OBS = [0.25, 0.50, 0.30, nan, 0.40]
PREV = [0.35, 0.40, 0.10, 0.90, 0.70]
D = [1.0, -1.0, 1.0, 1.0, 0.0]
# errors on the 4 valid samples: .05, 0, −.1, .2 → MSE = (.0025 + .01 + .04) / 4
MSE = (0.05 ** 2 + 0.1 ** 2 + 0.2 ** 2) / 4
# hinges: s0 = 1·(.35 − .30) = .05, s1 = −1·(.40 − .50) = .10, s2 = 1·(.1 − .2) < 0 → 0, s4: D=0
HINGE = [0.05, 0.10, 0.0, 0.0, 0.0]
PHY = (0.05 ** 2 + 0.10 ** 2) / 4


def _terms(weights=(0.1, 0.9), dtype=torch.float64):
    pred = torch.tensor(PRED, dtype=dtype, requires_grad=True)
    terms = physics_guided_loss_terms(pred, torch.tensor(OBS, dtype=dtype),
                                      torch.tensor(PREV, dtype=dtype),
                                      torch.tensor(D, dtype=dtype), weights=weights)
    return pred, terms


def test_loss_value_by_hand():
    _, terms = _terms()
    assert terms["rmse"].item() == pytest.approx(math.sqrt(MSE), rel=1e-12)
    assert terms["phy"].item() == pytest.approx(PHY, rel=1e-12)
    assert terms["total"].item() == pytest.approx(0.1 * math.sqrt(MSE) + 0.9 * PHY, rel=1e-12)
    pred = torch.tensor(PRED, dtype=torch.float64)
    loss = physics_guided_loss(pred, torch.tensor(OBS, dtype=torch.float64), PREV, D,
                               weights=(0.5, 0.5))
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.5 * math.sqrt(MSE) + 0.5 * PHY, rel=1e-12)


def test_loss_gradient_by_hand():
    pred, terms = _terms(weights=(0.3, 0.7))
    terms["total"].backward()
    rmse = math.sqrt(MSE)
    errors = [p - o for p, o in zip(PRED, OBS)]
    expected = []
    for i in range(5):
        if i == 3:  # NaN observation: no gradient at all
            expected.append(0.0)
            continue
        d_rmse = errors[i] / (4 * rmse)
        d_phy = -2.0 * D[i] * HINGE[i] / 4
        expected.append(0.3 * d_rmse + 0.7 * d_phy)
    np.testing.assert_allclose(pred.grad.numpy(), expected, rtol=1e-10, atol=1e-15)


def test_loss_gradcheck_float64_with_nan_obs():
    gen = torch.Generator().manual_seed(0)
    obs = torch.rand(6, 3, generator=gen, dtype=torch.float64)
    obs[1, 2] = nan
    obs[4, 0] = nan
    prev = torch.rand(6, 1, generator=gen, dtype=torch.float64)  # broadcast over leads
    d = torch.tensor([1.0, -1.0, 0.0, 1.0, -1.0, 1.0], dtype=torch.float64)[:, None]
    pred = (obs.nan_to_num(0.5) + 0.3 * torch.randn(6, 3, generator=gen, dtype=torch.float64))
    pred.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: physics_guided_loss(x, obs, prev, d, weights=(0.4, 0.6)), (pred,))


def test_nan_obs_are_masked_from_both_terms():
    pred = torch.tensor(PRED, dtype=torch.float64, requires_grad=True)
    pred_nan = pred.detach().clone()
    pred_nan[3] = nan  # even a NaN prediction at a masked sample must not leak
    pred_nan.requires_grad_(True)
    full = physics_guided_loss(pred_nan, torch.tensor(OBS, dtype=torch.float64), PREV, D)
    keep = [0, 1, 2, 4]
    sub = physics_guided_loss(pred[keep], torch.tensor(OBS, dtype=torch.float64)[keep],
                              torch.tensor(PREV, dtype=torch.float64)[keep],
                              torch.tensor(D, dtype=torch.float64)[keep])
    assert full.item() == pytest.approx(sub.item(), rel=1e-12)
    full.backward()
    assert torch.isfinite(pred_nan.grad).all()
    assert pred_nan.grad[3].item() == 0.0
    assert (pred_nan.grad[keep] != 0).any()


def test_all_nan_obs_give_a_connected_zero():
    pred = torch.tensor([0.1, 0.2], requires_grad=True)
    loss = physics_guided_loss(pred, torch.tensor([nan, nan]), torch.tensor([0.3, 0.0]),
                               torch.tensor([1.0, -1.0]))
    assert loss.item() == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert pred.grad.tolist() == [0.0, 0.0]


def test_lambda2_zero_is_plain_rmse():
    pred, terms = _terms(weights=(1.0, 0.0))
    assert terms["total"].item() == pytest.approx(math.sqrt(MSE), rel=1e-12)
    assert terms["total"].item() == pytest.approx(terms["rmse"].item(), rel=1e-15)


def test_perfect_fit_has_finite_zero_gradient():
    obs = torch.tensor([0.2, 0.3, 0.4])
    pred = obs.clone().requires_grad_(True)
    loss = physics_guided_loss(pred, obs, torch.tensor([0.1, 0.4, 0.3]),
                               torch.tensor([1.0, -1.0, 1.0]))
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad.tolist() == [0.0, 0.0, 0.0]


def test_nan_prev_obs_or_direction_only_drop_the_physics_term():
    pred = torch.tensor([0.3, 0.5], dtype=torch.float64, requires_grad=True)
    obs = torch.tensor([0.3, 0.5], dtype=torch.float64)
    terms = physics_guided_loss_terms(pred, obs, torch.tensor([nan, 0.9]),
                                      torch.tensor([1.0, nan]))
    assert terms["phy"].item() == 0.0
    terms["total"].backward()
    assert torch.isfinite(pred.grad).all()


def test_loss_broadcasts_batch_by_leads():
    pred = torch.tensor([[0.3, 0.5], [0.2, 0.4]], dtype=torch.float64)
    obs = torch.tensor([[0.2, 0.5], [0.2, 0.1]], dtype=torch.float64)
    prev = torch.tensor([[0.4], [0.3]], dtype=torch.float64)
    d = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    terms = physics_guided_loss_terms(pred, obs, prev, d)
    # errors .1, 0, 0, .3; hinges: 1·(.4−.3)=.1, 1·(.4−.5)<0, −1·(.3−.2)<0, −1·(.3−.4)=.1
    assert terms["rmse"].item() == pytest.approx(math.sqrt((0.01 + 0.09) / 4))
    assert terms["phy"].item() == pytest.approx((0.01 + 0.01) / 4)


def test_finite_fast_path_equals_the_masked_loss():
    import torch

    from smcast.physics import physics_guided_loss_terms

    g = torch.Generator().manual_seed(0)
    pred = torch.rand(64, 3, generator=g, dtype=torch.float64, requires_grad=True)
    obs, prev = torch.rand(64, 3, generator=g, dtype=torch.float64), torch.rand(
        64, 3, generator=g, dtype=torch.float64)
    d = torch.randint(-1, 2, (64, 3), generator=g).to(torch.float64)
    slow = physics_guided_loss_terms(pred, obs, prev, d, (0.3, 0.7))
    fast = physics_guided_loss_terms(pred, obs, prev, d, (0.3, 0.7), assume_finite=True)
    for key in ("total", "rmse", "phy"):
        torch.testing.assert_close(fast[key], slow[key])
    g_slow, = torch.autograd.grad(slow["total"], pred)
    g_fast, = torch.autograd.grad(fast["total"], pred)
    torch.testing.assert_close(g_fast, g_slow)
