"""Training end to end on a tiny demo store: retrain, promotion, models, resume, early stop."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from smcast.cli import main
from smcast.ingest.pipeline import ingest
from smcast.model.registry import current_name
from smcast.store import DailyStore
from smcast.train.data import load_cells
from smcast.train.retrain import build_model
from smcast.train.trainer import train

TINY = ["model.hidden_size=8", "model.leads=[1,2]", "train.test_days=40",
        "train.iterations_per_epoch=5", "train.max_epochs=6", "train.validate_every=2",
        "train.patience=2", "train.batch_size=32", "train.validation_cell_stride=3"]


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory, demo_cache):
    from smcast.config import load_config

    root = tmp_path_factory.mktemp("retrain")
    args = [f"data_dir={root}", "grid.area=[48,4,44,10]", f"source.demo.cache_dir={demo_cache}",
            "source.demo.epoch=2021-01-01", *TINY]
    cfg = load_config(None, args, environ={})
    ingest(cfg, date(2021, 1, 1), date(2021, 6, 30))
    return cfg, args


def cli(args, *extra):
    sets = [x for a in args for x in ("--set", a)]
    return CliRunner().invoke(main, [*extra, *sets], env={"SMCAST_CONFIG": ""},
                              catch_exceptions=False)


def test_retrain_promotes_then_respects_never(tiny_store):
    cfg, args = tiny_store
    first = cli(args, "retrain", "--variant", "phys")
    assert first.exit_code == 0, first.output
    assert "promoted (no current model to beat)" in first.stdout
    name = current_name(cfg)
    assert name and name.startswith("phys-")
    manifest = json.loads((cfg.data_dir / "models" / name / "manifest.json").read_text())
    per = manifest["periods"]
    assert per["train"][0] == "2021-01-01" and per["test"][1] == "2021-06-30"
    assert per["train"][1] < per["validation"][0] <= per["validation"][1] < per["test"][0]
    rows = {(r["predictor"], r["lead"]) for r in manifest["metrics"]["test"]}
    assert {("candidate", 1), ("persistence", 2), ("climatology", 1)} <= rows
    second = cli(args, "retrain", "--variant", "lstm", "--promote", "never")
    assert second.exit_code == 0 and "not promoted (--promote never)" in second.stdout
    assert current_name(cfg) == name
    listing = cli(args, "models")
    assert f"* {name}" in listing.stdout and "lstm" in listing.stdout
    assert "3 model(s)" in listing.stdout and "demo-phys" in listing.stdout  # + the bundled one


def test_bad_retrain_requests(tiny_store):
    _, args = tiny_store
    too_short = cli(args, "retrain", "--start", "2021-06-01")
    assert too_short.exit_code == 2 and "too short" in too_short.stderr
    bad = cli(args, "retrain", "--set", "model.variant=physics")
    assert bad.exit_code == 2 and "lstm, phy, phys" in bad.stderr


def _setup(cfg):
    store = DailyStore(cfg.store_path)
    data = load_cells(store, date(2021, 1, 1), date(2021, 4, 30), cfg.model.dynamic_inputs,
                      cfg.model.static_inputs, deep=True)
    fit, val = data.span(date(2021, 1, 1), date(2021, 3, 31)), data.span(date(2021, 4, 1),
                                                                          date(2021, 4, 30))
    return store, fit, val


def test_resume_continues_where_it_stopped(tiny_store, tmp_path):
    cfg, _ = tiny_store
    store, fit, val = _setup(cfg)
    tc = cfg.train.model_copy(update={"max_epochs": 4, "patience": 100, "deterministic": True})
    model = build_model(cfg, "phys", fit, store)
    part = train(model, fit, val, tc, run_dir=tmp_path, resume=True)
    assert part.epochs == 4 and (tmp_path / "checkpoint.pt").exists()
    longer = tc.model_copy(update={"max_epochs": 8})
    resumed = build_model(cfg, "phys", fit, store)
    res = train(resumed, fit, val, longer, run_dir=tmp_path, resume=True)
    assert res.epochs == 8 and [h["epoch"] for h in res.history] == [2, 4, 6, 8]
    # the same 8 epochs in one go give the same weights (seeded, deterministic)
    straight = build_model(cfg, "phys", fit, store)
    train(straight, fit, val, longer, run_dir=None)
    for a, b in zip(resumed.network.state_dict().values(),
                    straight.network.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_early_stopping_keeps_the_best(tiny_store):
    cfg, _ = tiny_store
    store, fit, val = _setup(cfg)
    tc = cfg.train.model_copy(update={"max_epochs": 50, "patience": 2, "validate_every": 1,
                                      "learning_rate": 1e-12})
    res = train(build_model(cfg, "lstm", fit, store), fit, val, tc)
    assert res.stopped_early and res.epochs < 50
    assert res.best_val_rmse == min(h["val_rmse"] for h in res.history)


def test_training_reduces_the_loss(tiny_store):
    cfg, _ = tiny_store
    store, fit, val = _setup(cfg)
    tc = cfg.train.model_copy(update={"max_epochs": 20, "patience": 100, "validate_every": 2,
                                      "iterations_per_epoch": 10, "learning_rate": 3e-3})
    res = train(build_model(cfg, "phy", fit, store), fit, val, tc)
    assert res.history[-1]["total"] < res.history[0]["total"]
    assert np.isfinite(res.best_val_rmse)
