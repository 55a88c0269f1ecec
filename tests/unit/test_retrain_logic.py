"""Retrain's pure logic: periods, profiles, promotion decisions, the registry pointer."""

from datetime import date, timedelta

import numpy as np
import pytest

from smcast.config import load_config
from smcast.errors import ConfigError
from smcast.grid import Grid
from smcast.model.package import ModelError
from smcast.model.registry import current_name, model_path, set_current
from smcast.store import DailyStore, store_lock
from smcast.train.retrain import _decide, periods, train_config
from smcast.variables import VARIABLES


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("store")
    grid = Grid(0.5, 40.0, 41.0, 10.0, 11.0)
    mask = np.ones(grid.shape, bool)
    s = DailyStore.create(tmp_path / "s.zarr", grid, mask.astype(float), mask, None,
                          date(2021, 1, 1), "test")
    days = [date(2021, 1, 1) + timedelta(days=i) for i in range(400)]
    with store_lock(s.path):
        s.write_days(days, [{n: np.zeros(grid.shape, np.float32) for n in VARIABLES}] * 400)
    return s


def test_periods_split_chronologically(store):
    tc = load_config(None, ["train.test_days=100"], environ={}).train
    per = periods(store, tc, None, None, need=13)
    assert per.train == (date(2021, 1, 1), date(2021, 1, 1) + timedelta(days=299))
    n_val = round(300 * 0.25)
    assert per.validation == (per.train[1] - timedelta(days=n_val - 1), per.train[1])
    assert per.test == (per.train[1] + timedelta(days=1), date(2021, 1, 1) + timedelta(days=399))


def test_periods_refuse_what_cannot_work(store):
    tc = load_config(None, [], environ={}).train
    with pytest.raises(ConfigError, match="too short"):
        periods(store, tc, date(2021, 12, 1), date(2021, 12, 20), need=13)
    with pytest.raises(ConfigError, match="no held-out test period"):
        periods(store, tc, None, date(2022, 2, 1), need=13)


def test_profiles_and_epochs():
    cfg = load_config(None, [], environ={})
    assert train_config(cfg, "paper", None).iterations_per_epoch == 300
    quick = train_config(cfg, "quick", 7)
    assert quick.max_epochs == 7 and quick.iterations_per_epoch == 50
    with pytest.raises(ConfigError, match="quick, paper|paper, quick"):
        train_config(cfg, "fast", None)


@pytest.mark.parametrize("policy, metric, cand, cur, promoted", [
    ("if-better", "KGE", 0.7, 0.6, True), ("if-better", "KGE", 0.5, 0.6, False),
    ("if-better", "RMSE", 0.02, 0.03, True), ("if-better", "RMSE", 0.04, 0.03, False),
    ("if-better", "KGE", 0.1, None, True), ("always", "KGE", 0.1, 0.9, True),
    ("never", "KGE", 0.9, 0.1, False)])
def test_promotion_decision(policy, metric, cand, cur, promoted):
    assert _decide(policy, metric, cand, cur)[0] is promoted


def test_registry_pointer(tmp_path):
    cfg = load_config(None, [f"data_dir={tmp_path}", "source.name=directory"], environ={})
    assert current_name(cfg) is None
    with pytest.raises(ModelError, match="no model named 'x'"):
        set_current(cfg, "x")
    folder = tmp_path / "models" / "m1"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text('{"format": "smcast-model", "format_version": 1}')
    assert model_path(cfg, "m1") == folder
    set_current(cfg, "m1")
    assert current_name(cfg) == "m1"
