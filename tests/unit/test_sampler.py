"""Point sampling: the windows, targets, previous days and directions line up with the days."""

from datetime import date, timedelta

import numpy as np
import torch

from smcast.grid import Grid
from smcast.model.scaling import Scalers
from smcast.model.variants import get_variant
from smcast.model.wrapper import SoilMoistureModel
from smcast.train.data import CellData
from smcast.train.sampler import PointSampler


def toy(n_cells=5, n_days=30, leads=(1, 3)):
    days = [date(2021, 1, 1) + timedelta(days=i) for i in range(n_days)]
    t = np.arange(n_days, dtype=np.float32)
    cell = np.arange(n_cells, dtype=np.float32)[:, None]
    dyn = np.stack([cell * 100 + t, -(cell * 100 + t)], axis=-1)  # (n, T, 2), encodes cell, day
    target = (cell * 1000 + t).astype(np.float32)  # swvl1 "value" = cell*1000 + day index
    direction = (np.sign(np.sin(t))[None, :] * np.ones((n_cells, 1))).astype(np.int8)
    statics = np.stack([cell[:, 0], cell[:, 0] * 2], axis=-1).astype(np.float32)
    data = CellData(days, np.arange(n_cells), np.zeros(n_cells, np.float32), dyn, statics, target,
                    direction, direction)
    # identity-like scalers: min 0, max 1 → scaled == raw
    sc = Scalers(np.zeros((n_cells, 2), np.float32), np.ones((n_cells, 2), np.float32),
                 np.zeros(n_cells, np.float32), np.ones(n_cells, np.float32),
                 np.zeros(2, np.float32), np.ones(2, np.float32))
    mask = np.zeros((2, 3), bool)
    mask.ravel()[:n_cells] = True
    model = SoilMoistureModel(get_variant("phys"), sc, mask, Grid(0.5, 0.0, 1.0, 0.0, 1.5),
                              dynamic_inputs=("t2m", "tp"), static_inputs=("clay", "sand"),
                              seq_len=7, leads=leads, hidden_size=4)
    return model, data


def test_window_targets_previous_days_and_directions_align():
    model, data = toy()
    s = PointSampler(model, data, torch.device("cpu"))
    assert s.n_starts == 30 - 7 - 3 + 1
    b = s.windows(torch.tensor([2, 4]), start=5)
    # inputs: days 5…11 of cells 2 and 4, then the statics repeated
    np.testing.assert_array_equal(b.x[0, :, 0].numpy(), 200 + np.arange(5, 12))
    np.testing.assert_array_equal(b.x[1, :, 2].numpy(), np.full(7, 4.0))
    # lead 1 → day 12 (last input day 11 + 1), lead 3 → day 14; prev = the day before
    np.testing.assert_array_equal(b.y.numpy(), [[2012, 2014], [4012, 4014]])
    np.testing.assert_array_equal(b.prev.numpy(), [[2011, 2013], [4011, 4013]])
    np.testing.assert_array_equal(b.direction[0].numpy(), np.sign(np.sin([12.0, 14.0])))


def test_random_batches_share_one_start_and_stay_in_range():
    model, data = toy()
    s = PointSampler(model, data, torch.device("cpu"))
    rng = np.random.default_rng(0)
    for _ in range(50):
        b = s.batch(rng, 3)
        days_in = (b.x[:, :, 0] % 100).numpy()
        assert (days_in == days_in[0]).all()  # one window start for the batch
        assert b.y.shape == (3, 2) and (b.y % 1000).max() <= 29
        assert len(set((b.x[:, 0, 0] // 100).tolist())) == 3  # distinct cells
