"""``smcast evaluate`` end to end: a six-month demo store, two untrained models, the report's
tables, maps and region box plots, the CLI and its exit codes."""

from __future__ import annotations

import csv
import json
import logging
import struct
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
import xarray as xr
from click.testing import CliRunner

from smcast.cli import main
from smcast.config import Config, load_config
from smcast.errors import InputDataError
from smcast.evaluate import METRICS
from smcast.evaluation_report import run_evaluation
from smcast.ingest.pipeline import ingest
from smcast.model.package import save_package
from smcast.regions import assign, read_region_map, region_order
from smcast.store import DailyStore
from smcast.train.data import CellData, load_cells
from smcast.train.retrain import build_model

KOPPEN = Path(__file__).resolve().parents[3] / "shared" / "data" / "koeppen-geiger-0p5deg.txt"
STORE_SPAN = (date(2021, 1, 1), date(2021, 6, 30))
TRAIN = ("2021-01-01", "2021-03-31")
START, END = date(2021, 4, 1), date(2021, 6, 30)
SEQ_LEN, LEADS = 7, (1, 2)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def demo_overrides(data_dir: Path, cache: Path) -> list[str]:
    """The ``--set`` overrides that reproduce the ``demo_cfg`` fixture (tests/conftest.py)."""
    return [f"data_dir={data_dir}", "grid.area=[48,4,44,10]", f"source.demo.cache_dir={cache}",
            "source.demo.epoch=2021-01-01"]


@dataclass
class World:
    cfg: Config
    cache: Path
    line: str
    out: Path
    regions: bool


def _save_model(cfg: Config, store: DailyStore, fit: CellData, name: str, variant: str,
                seed: int, train: tuple[str, str]) -> None:
    """An untrained model (scalers fitted on ``fit``) saved as a package."""
    mcfg = cfg.model_copy(deep=True)
    mcfg.model.hidden_size, mcfg.model.leads, mcfg.train.seed = 8, list(LEADS), seed
    save_package(build_model(mcfg, variant, fit, store), cfg.data_dir / "models" / name,
                 {"periods": {"train": list(train), "validation": ["2021-03-01", "2021-03-31"],
                              "test": [str(START), str(END)]}, "metrics": {}, "seed": seed})


@pytest.fixture(scope="module")
def world(tmp_path_factory, demo_cache) -> Iterator[World]:
    """Store 2021-01…06, models m1 (phys), m2 (lstm) and m3 (training period not in the store),
    and one evaluation of m1 against m2 with the Köppen map (when the shared file exists).

    Torch runs single-threaded here: these tiny networks gain nothing from threads, and on a
    busy two-core machine OpenMP's spinning made them a hundred times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("evaluation")
    cfg = load_config(None, demo_overrides(root / "data", demo_cache), environ={})
    ingest(cfg, *STORE_SPAN)
    store = DailyStore(cfg.store_path)
    fit = load_cells(store, date.fromisoformat(TRAIN[0]), date.fromisoformat(TRAIN[1]),
                     cfg.model.dynamic_inputs, cfg.model.static_inputs, True)
    _save_model(cfg, store, fit, "m1", "phys", 1, TRAIN)
    _save_model(cfg, store, fit, "m2", "lstm", 2, TRAIN)
    _save_model(cfg, store, fit, "m3", "phys", 3, ("2020-01-01", "2020-12-31"))
    regions = KOPPEN.is_file()
    line = run_evaluation(cfg, "m1", START, END, KOPPEN if regions else None, "m2", None)
    yield World(cfg, demo_cache, line, cfg.data_dir / "evaluations" / f"m1_{START}_{END}",
                regions)
    torch.set_num_threads(threads)


def run_cli(world: World, *args: str):
    return CliRunner().invoke(main, [*args, *(a for o in demo_overrides(
        world.cfg.data_dir, world.cache) for a in ("--set", o))], env={"SMCAST_CONFIG": ""})


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    assert len(data) > 5000 and width >= 300 and height >= 300, (path, len(data), width, height)


def test_cli_overrides_reproduce_demo_cfg(demo_cfg, demo_cache):
    assert load_config(None, demo_overrides(demo_cfg.data_dir, demo_cache), environ={}) == demo_cfg


def test_summary_line(world):
    assert world.line.startswith(f"evaluated m1 (phys) on {START}…{END} (")
    assert "leads 1-2): lead 1 KGE" in world.line and "persistence" in world.line
    assert "climatology" in world.line and "m2" in world.line
    assert world.line.endswith(f"outputs in {world.out}")


def test_files_and_pngs(world):
    names = ["summary.json", "summary.csv", "improvement_consistency.png", "improvement_KGE.png",
             *(f"maps/{m}_lead{k}.png" for m in METRICS for k in LEADS)]
    if world.regions:
        names += ["regions.csv", *(f"boxplot_{m}_by_region.png" for m in METRICS)]
    for name in names:
        assert (world.out / name).is_file(), name
        if name.endswith(".png"):
            assert_png(world.out / name)
    assert not [p for p in world.out.rglob("*") if ".tmp" in p.name]


def test_summary_json_and_csv(world):
    summary = json.loads((world.out / "summary.json").read_text())
    n_cells = DailyStore(world.cfg.store_path).land_cells
    assert summary["model"] == "m1" and summary["variant"] == "phys"
    assert summary["period"] == [str(START), str(END)] and summary["leads"] == list(LEADS)
    assert summary["cells"] == n_cells and summary["climatology_period"] == list(TRAIN)
    assert summary["compare"] == {"name": "m2", "variant": "lstm"}
    table = summary["table"]
    assert {(r["predictor"], r["lead"]) for r in table} == {
        (p, k) for p in ("m1", "m2", "persistence", "climatology") for k in LEADS}
    for row in table:
        assert -1 <= row["R"] <= 1 and row["RMSE"] >= 0 and row["KGE"] <= 1 and row["R2"] <= 1
        # persistence never changes the state at lead 1: no consistency rate there (None)
        assert row["consistency"] is None if (row["predictor"], row["lead"]) == (
            "persistence", 1) else 0 <= row["consistency"] <= 1
    with open(world.out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(table) and list(rows[0]) == ["predictor", "lead", *METRICS]
    for got, want in zip(rows, table):
        assert got["predictor"] == want["predictor"] and int(got["lead"]) == want["lead"]
        assert float(got["RMSE"]) == pytest.approx(want["RMSE"])


def test_regions(world):
    if not world.regions:
        pytest.skip(f"{KOPPEN} is absent")
    regions = json.loads((world.out / "summary.json").read_text())["regions"]
    cells = regions["cells"]
    assert {"C", "D"} & set(cells) and set(cells) <= {"A", "B", "C", "D", "E", "unassigned"}
    assert sum(cells.values()) == DailyStore(world.cfg.store_path).land_cells
    assert regions["grouping"].startswith("Köppen")
    with open(world.out / "regions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["region"], r["predictor"], int(r["lead"])) for r in rows} == {
        (g, p, k) for g in cells for p in ("m1", "m2", "persistence", "climatology")
        for k in LEADS}
    assert all(int(r["cells"]) == cells[r["region"]] for r in rows)
    assert all(float(r["RMSE"]) >= 0 for r in rows if r["RMSE"] != "nan")


def test_persistence_rmse_matches_store(world):
    ds = xr.open_zarr(world.cfg.store_path)
    mask = ds["land_mask"].values.astype(bool)
    obs = ds["swvl1"].sel(time=slice(str(START), str(END))).values[:, mask].astype(np.float64)
    n_starts = obs.shape[0] - SEQ_LEN - max(LEADS) + 1
    t = np.arange(n_starts) + SEQ_LEN - 1 + 1  # lead-1 target days of every window
    rmse = np.sqrt(np.mean((obs[t - 1] - obs[t]) ** 2, axis=0))
    varying = obs[t].max(axis=0) > obs[t].min(axis=0)
    table = json.loads((world.out / "summary.json").read_text())["table"]
    got = next(r["RMSE"] for r in table if r["predictor"] == "persistence" and r["lead"] == 1)
    assert abs(got - float(np.median(rmse[varying]))) < 1e-6


def test_cli_evaluate(world, tmp_path):
    args = ["evaluate", "--model", "m1", "--start", str(START), "--end", str(END),
            "--compare", "m2", "--output", str(tmp_path / "cli")]
    result = run_cli(world, *args, *(["--regions", str(KOPPEN)] if world.regions else []))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("evaluated m1 (phys)")
    assert f"outputs in {tmp_path / 'cli'}" in result.stdout
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    api = json.loads((world.out / "summary.json").read_text())
    assert cli["table"] == api["table"]  # same numbers from the CLI as from the API
    if world.regions:
        assert cli["regions"]["cells"] == api["regions"]["cells"]
    assert_png(tmp_path / "cli" / "maps" / "KGE_lead1.png")


@pytest.mark.parametrize("args, code, words", [
    (["--model", "nope", "--start", "2021-04-01", "--end", "2021-06-30"], 6,
     "known models: m1, m2, m3"),
    (["--model", "m1", "--start", "2021-06-30", "--end", "2021-04-01"], 2, "is after end"),
    (["--model", "m1", "--start", "2021-06-20", "--end", "2021-06-25"], 2, "too short"),
    (["--model", "m1", "--start", "2021-06-01", "--end", "2021-07-30"], 3, "lacks"),
    (["--model", "m1", "--compare", "m1", "--start", "2021-06-01", "--end", "2021-06-30"], 2,
     "another model"),
])
def test_cli_errors(world, args, code, words):
    result = run_cli(world, "evaluate", *args)
    assert result.exit_code == code, result.output
    assert words in result.stderr


def test_climatology_skipped_without_training_days(world, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="smcast.evaluation_report"):
        line = run_evaluation(world.cfg, "m3", date(2021, 6, 1), END, None, None, tmp_path)
    assert "not complete in the store; skipping climatology" in caplog.text
    assert "climatology" not in line.split("; outputs in")[0]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {r["predictor"] for r in summary["table"]} == {"m3", "persistence"}
    assert summary["climatology_period"] is None and summary["regions"] is None
    assert not list(tmp_path.glob("improvement_*")) and not list(tmp_path.glob("boxplot_*"))


def test_region_map_reader(tmp_path):
    path = tmp_path / "regions.txt"
    path.write_text("lat lon class\n# a comment\n45.25 5.25 north\n44.75 365.25 south\n"
                    "\n45.25 5.75 north\n")
    rmap = read_region_map(path)
    assert not rmap.koppen and rmap.lon.tolist() == [5.25, 5.25, 5.75]
    labels = assign(rmap, np.array([45.25, 44.75, 45.25, 40.25]),
                    np.array([5.25, 5.25, 5.75, 5.25]))
    assert labels.tolist() == ["north", "south", "north", "unassigned"]
    assert region_order(labels) == ["north", "south", "unassigned"]
    koppen = tmp_path / "k.txt"
    koppen.write_text("45.25 5.25 Cfb\n44.75 5.25 Dfc\n")
    assert assign(read_region_map(koppen), np.array([45.25, 44.75]),
                  np.array([5.25, 5.25])).tolist() == ["C", "D"]
    path.write_text("45.25 5.25 north\n45.75 oops north\n")
    with pytest.raises(InputDataError, match=":2: expected 'lat lon class'"):
        read_region_map(path)
