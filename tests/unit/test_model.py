"""The model core: network, variants, scalers and the SoilMoistureModel wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smcast.errors import ConfigError
from smcast.grid import Grid
from smcast.model import (DEFAULT_DYNAMIC_INPUTS, DEFAULT_STATIC_INPUTS, VARIANTS, Scalers,
                          SoilMoistureLSTM, SoilMoistureModel, get_variant)

GRID = Grid(0.5, 40.0, 41.0, 10.0, 11.0)
MASK = np.array([[True, False], [True, True]])  # 3 land cells
N_DYN, N_STAT = len(DEFAULT_DYNAMIC_INPUTS), len(DEFAULT_STATIC_INPUTS)


def synthetic_scalers(ncell: int = 3) -> Scalers:
    rng = np.random.default_rng(0)
    dyn_min = rng.uniform(-1, 1, (ncell, N_DYN))
    return Scalers(dyn_min, dyn_min + rng.uniform(1, 3, (ncell, N_DYN)),
                   np.linspace(0.05, 0.15, ncell), np.linspace(0.35, 0.45, ncell),
                   rng.uniform(0, 10, N_STAT), rng.uniform(1, 2, N_STAT))


def tiny_model(**kw) -> SoilMoistureModel:
    torch.manual_seed(0)
    args = dict(variant=get_variant("phys"), scalers=synthetic_scalers(), land_mask=MASK,
                grid=GRID, hidden_size=8)
    return SoilMoistureModel(**{**args, **kw})


def inputs(n: int, seq_len: int = 7, seed: int = 1):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, seq_len, N_DYN)).astype(np.float32),
            rng.normal(5, 2, size=(n, N_STAT)).astype(np.float32),
            rng.integers(0, 3, n))


# -- network ------------------------------------------------------------------------------------
def test_network_output_shape_and_gradients():
    net = SoilMoistureLSTM(14, n_leads=3, hidden_size=8, num_layers=2, dropout=0.15)
    x = torch.randn(5, 7, 14)
    y = net(x)
    assert y.shape == (5, 3) and y.dtype == torch.float32
    y.pow(2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_network_uses_the_last_step_and_eval_is_deterministic():
    net = SoilMoistureLSTM(4, hidden_size=8).eval()
    x = torch.randn(2, 5, 4)
    x2 = x.clone()
    x2[:, -1] += 1.0  # the last step changes the output
    assert not torch.allclose(net(x), net(x2))
    assert torch.equal(net(x), net(x))


def test_network_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_features"):
        SoilMoistureLSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        SoilMoistureLSTM(3, dropout=1.0)


# -- variants -----------------------------------------------------------------------------------
def test_variant_registry_values():
    assert set(VARIANTS) == {"lstm", "phy", "phys"}
    lstm, phy, phys = (VARIANTS[n] for n in ("lstm", "phy", "phys"))
    assert (lstm.weights, lstm.deep, lstm.physics) == ((1.0, 0.0), False, False)
    assert (phy.weights, phy.deep) == ((0.5, 0.5), False)
    assert (phys.weights, phys.deep) == ((0.1, 0.9), True)
    assert all(v.snow_sign == "paper" and v.description for v in VARIANTS.values())


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ConfigError, match="lstm, phy, phys"):
        get_variant("phys-lstm")


def test_variant_overrides():
    v = get_variant("phys", weights=[1, 9], snow_sign="mass")
    assert v.weights == (1.0, 9.0) and v.snow_sign == "mass" and v.deep
    assert VARIANTS["phys"].weights == (0.1, 0.9)  # registry untouched


@pytest.mark.parametrize("weights", [(0, 0), (-0.1, 1), (1,), (1, 2, 3), (float("nan"), 1),
                                     ("a", 1)])
def test_invalid_weights_refused(weights):
    with pytest.raises(ConfigError, match="weights"):
        get_variant("phy", weights=weights)


def test_invalid_snow_sign_refused():
    with pytest.raises(ConfigError, match="paper, mass"):
        get_variant("phy", snow_sign="minus")


# -- scalers ------------------------------------------------------------------------------------
def fit_data():
    rng = np.random.default_rng(3)
    dyn = rng.normal(10, 3, (4, 20, 2)).astype(np.float32)
    target = rng.uniform(0.1, 0.4, (4, 20)).astype(np.float32)
    dyn[0, :5, 0] = np.nan
    target[1, ::2] = np.nan
    target[2] = np.nan  # all-NaN target cell
    dyn[3, :, 1] = 7.0  # zero range
    statics = rng.normal(0, 1, (4, 3)).astype(np.float32)
    statics[0, 0] = np.nan
    statics[:, 2] = 4.0  # no spread over space
    return dyn, target, statics


def test_fit_is_nan_aware_and_handles_degenerate_cases():
    dyn, target, statics = fit_data()
    s = Scalers.fit(dyn, target, statics)
    assert s.dyn_min.shape == (4, 2) and s.target_min.shape == (4,) and s.static_mean.shape == (3,)
    assert all(a.dtype == np.float32 for a in s.to_arrays().values())
    assert s.dyn_min[0, 0] == np.min(dyn[0, 5:, 0])
    assert s.target_max[1] == np.max(target[1, 1::2])
    assert (s.target_min[2], s.target_max[2]) == (0.0, 1.0)
    assert s.static_mean[0] == pytest.approx(np.mean(statics[1:, 0]))
    assert s.static_std[2] == 1.0
    scaled = s.scale_dynamic(dyn, np.arange(4))
    assert np.all(scaled[3, :, 1] == 0.0)
    finite = np.isfinite(dyn)
    assert np.all(np.isfinite(scaled[finite]))
    assert np.nanmin(scaled) == 0.0 and np.nanmax(scaled) == pytest.approx(1.0)
    assert np.all(np.isfinite(s.scale_static(np.nan_to_num(statics))))


def test_target_round_trip_and_broadcasting():
    s = Scalers.fit(*fit_data())
    cells = np.array([0, 1, 1, 3, 2])
    y = np.random.default_rng(0).uniform(0.05, 0.5, (5, 7, 2)).astype(np.float32)
    scaled = s.scale_target(y, cells)
    assert scaled.shape == y.shape and scaled.dtype == np.float32
    np.testing.assert_allclose(s.unscale_target(scaled, cells), y, rtol=1e-6, atol=1e-7)
    lo, hi = s.target_min[3], s.target_max[3]
    np.testing.assert_allclose(scaled[3], (y[3] - lo) / (hi - lo), rtol=1e-6)


def test_numpy_torch_parity():
    s = Scalers.fit(*fit_data())
    cells = np.array([2, 0, 3])
    x = np.random.default_rng(1).normal(10, 3, (3, 5, 2)).astype(np.float32)
    y = np.random.default_rng(2).uniform(0, 1, (3, 2)).astype(np.float32)
    st = np.random.default_rng(3).normal(size=(3, 3)).astype(np.float32)
    for fn, arg in [(s.scale_dynamic, x), (s.scale_target, y), (s.unscale_target, y)]:
        out_t = fn(torch.from_numpy(arg), torch.from_numpy(cells))
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
        np.testing.assert_allclose(out_t.numpy(), fn(arg, cells), rtol=1e-6)
    np.testing.assert_allclose(s.scale_static(torch.from_numpy(st)).numpy(), s.scale_static(st))


def test_scalers_array_round_trip_and_shape_checks():
    s = synthetic_scalers()
    back = Scalers.from_arrays(s.to_arrays())
    for k, v in s.to_arrays().items():
        np.testing.assert_array_equal(getattr(back, k), v)
    with pytest.raises(ValueError, match="target_max"):
        Scalers(s.dyn_min, s.dyn_max, s.target_min, s.target_max[:2], s.static_mean,
                s.static_std)
    with pytest.raises(ValueError, match="do not match"):
        Scalers.from_arrays({**s.to_arrays(), "extra": np.zeros(1)})


# -- wrapper ------------------------------------------------------------------------------------
def test_model_defaults():
    m = tiny_model()
    assert m.dynamic_inputs == ("t2m", "u10", "v10", "tp", "sp", "q", "ssrd", "strd")
    assert m.static_inputs == ("elevation", "clay", "sand", "silt", "storage_capacity",
                               "land_cover")
    assert m.n_features == 14 and m.seq_len == 7 and m.leads == (1,) and m.n_cells == 3
    assert m.cell_index.tolist() == [0, 2, 3]
    assert "phys" in m.describe() and "14 features" in m.describe()


def test_build_features_shape_and_static_repetition():
    m = tiny_model()
    dyn, stat, cells = inputs(4)
    x = m.build_features(dyn, stat, cells)
    assert x.shape == (4, 7, 14) and x.dtype == torch.float32
    expected_static = m.scalers.scale_static(stat)
    for t in range(7):
        np.testing.assert_allclose(x[:, t, N_DYN:].numpy(), expected_static, rtol=1e-6)
    np.testing.assert_allclose(x[:, :, :N_DYN].numpy(), m.scalers.scale_dynamic(dyn, cells),
                               rtol=1e-6)


def test_build_features_replaces_nan_with_zero():
    m = tiny_model()
    dyn, stat, cells = inputs(2)
    dyn[0, 3, 2] = np.nan
    stat[1, 4] = np.nan
    x = m.build_features(dyn, stat, cells)
    assert torch.isfinite(x).all()
    assert x[0, 3, 2] == 0.0 and torch.all(x[1, :, N_DYN + 4] == 0.0)


def test_build_features_rejects_wrong_shapes():
    m = tiny_model()
    dyn, stat, cells = inputs(2, seq_len=5)
    with pytest.raises(ValueError, match="expected dyn"):
        m.build_features(dyn, stat, cells)


def test_predict_is_in_physical_units():
    m = tiny_model(leads=(1, 3))
    with torch.no_grad():
        m.network.head.weight.zero_()
        m.network.head.bias.copy_(torch.tensor([0.5, 1.0]))
    dyn, stat, _ = inputs(3)
    cells = np.array([0, 1, 2])
    pred = m.predict(dyn, stat, cells, batch_size=2, device="cpu")
    lo, hi = m.scalers.target_min, m.scalers.target_max
    assert pred.shape == (3, 2) and pred.dtype == np.float32
    np.testing.assert_allclose(pred[:, 0], lo + 0.5 * (hi - lo), rtol=1e-6)
    np.testing.assert_allclose(pred[:, 1], hi, rtol=1e-6)


def test_predict_batches_agree_and_restore_training_mode():
    m = tiny_model()
    m.network.train()
    dyn, stat, cells = inputs(10)
    a = m.predict(dyn, stat, cells, batch_size=3, device="cpu")
    b = m.predict(dyn, stat, cells, batch_size=100, device="cpu")
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert m.network.training


def test_inconsistent_model_parts_refused():
    with pytest.raises(ConfigError, match="scalers have 4 cells"):
        tiny_model(scalers=synthetic_scalers(4))
    with pytest.raises(ConfigError, match="leads"):
        tiny_model(leads=(0,))
    with pytest.raises(ConfigError, match="network"):
        tiny_model(network=SoilMoistureLSTM(14, 2, 8))
