"""``smcast evaluate``: score a model (and optionally a second one) with the persistence and
climatology baselines over a period, and write tables, maps and per-region box plots.

Outputs (in ``<data_dir>/evaluations/<model>_<start>_<end>/`` unless told otherwise):

* ``summary.json`` / ``summary.csv``: land medians per predictor and lead (R, RMSE, R2, KGE,
  consistency), plus ``regions.csv`` with a region map;
* ``maps/<metric>_lead<k>.png``: the model's per-cell metric on the store grid, every lead;
* with a comparison model: ``improvement_consistency.png``, ``improvement_KGE.png`` (model −
  comparison at the first lead, as the paper's Figure 4);
* with a region map: ``boxplot_<metric>_by_region.png`` (first lead, every predictor).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from smcast import regions as reg
from smcast.config import Config
from smcast.errors import ConfigError
from smcast.evaluate import METRICS, Evaluation, evaluate, targets
from smcast.model.package import ModelError, check_compatible, load_package
from smcast.model.registry import current_name, list_models, model_path
from smcast.model.wrapper import SoilMoistureModel
from smcast.store import DailyStore
from smcast.train.data import CellData, load_cells

log = logging.getLogger(__name__)

UNITS = {"R": "R (1)", "RMSE": "RMSE (m³ m⁻³)", "R2": "R² (1)", "KGE": "KGE (1)",
         "consistency": "consistency rate (fraction of days)"}
BASELINES = ("persistence", "climatology")
GREY = {False: "#dddddd", True: "#888888"}  # no value: light on sequential maps, dark on diverging


def run_evaluation(cfg: Config, model_name: str | None, start: date, end: date,
                   regions_path: Path | None = None, compare_name: str | None = None,
                   output: Path | None = None) -> str:
    """Evaluate a model over start…end (inclusive) and write the report; return a summary line.

    Every forecast window lies inside the period: inputs s … s+seq_len−1 and targets up to
    s+seq_len−1+max(lead) are all days of start…end, so the period needs at least
    seq_len + max(lead) complete days. Climatology comes from the model's training period
    (``manifest["periods"]["train"]``) when those days are complete in the store.
    """
    if start > end:
        raise ConfigError(f"start {start} is after end {end}; swap them")
    name, model = _resolve(cfg, model_name)
    compare = _compare(cfg, compare_name, name, model) if compare_name else None
    store = DailyStore(cfg.store_path)
    for m in (model, compare) if compare is not None else (model,):
        check_compatible(m, store)
    need = model.seq_len + max(model.leads)
    if (end - start).days + 1 < need:
        raise ConfigError(f"{start}…{end} is too short: model {name} needs at least {need} days "
                          f"({model.seq_len}-day window + lead {max(model.leads)}); widen it")
    data = load_cells(store, start, end, list(model.dynamic_inputs), list(model.static_inputs),
                      model.variant.deep, model.variant.snow_sign)
    train = _training_target(store, model, start, end)
    ev = evaluate(model, data, train, cfg.train.device, name=name)
    if compare is not None:
        other = evaluate(compare, _inputs_for(compare, model, data, store), None,
                         cfg.train.device, name=compare_name)
        ev.scores[compare_name] = other.scores[compare_name]
    out = Path(output) if output else cfg.data_dir / "evaluations" / f"{name}_{start}_{end}"
    (out / "maps").mkdir(parents=True, exist_ok=True)
    lat, lon = _cell_coords(store, data)
    region_rows, labels, koppen = None, None, False
    if regions_path is not None:
        rmap = reg.read_region_map(regions_path)
        labels, koppen = reg.assign(rmap, lat, lon), rmap.koppen
        obs = targets(data, model.seq_len, model.leads).obs[:, 0, :]
        region_rows = reg.region_table({k: s.per_cell for k, s in ev.scores.items()}, labels,
                                       data.lat, obs, ev.leads)
    _write_tables(out, _summary(name, model, ev, train, compare, compare_name, region_rows,
                                labels, regions_path, koppen), ev.table(), region_rows)
    _write_figures(out, store, name, compare_name, ev, lat, lon, labels)
    return _summary_line(name, model.variant.name, ev, compare_name, out)


# -- models and data ----------------------------------------------------------------------------
def _resolve(cfg: Config, model_name: str | None) -> tuple[str, SoilMoistureModel]:
    """The named (else the current) model, loaded; ModelError naming the known ones."""
    name = model_name or current_name(cfg)
    if name is None:
        known = ", ".join(e.name for e in list_models(cfg)) or "none"
        raise ModelError(f"no current model to evaluate; pass --model NAME (known models: "
                         f"{known}) or train and promote one with `smcast retrain`")
    return name, load_package(model_path(cfg, name))


def _compare(cfg: Config, compare_name: str, name: str, model: SoilMoistureModel
             ) -> SoilMoistureModel:
    """The comparison model: another compatible model with the same window and leads."""
    if compare_name in (name, *BASELINES):
        raise ConfigError(f"--compare {compare_name!r} must name another model than {name!r}")
    _, other = _resolve(cfg, compare_name)
    if (other.seq_len, other.leads) != (model.seq_len, model.leads):
        raise ModelError(f"model {compare_name} has a {other.seq_len}-day window and leads "
                         f"{list(other.leads)}, {name} {model.seq_len} and {list(model.leads)}; "
                         "compare models with the same window and leads")
    return other


def _inputs_for(other: SoilMoistureModel, model: SoilMoistureModel, data: CellData,
                store: DailyStore) -> CellData:
    """``data`` with the inputs of ``other`` (targets and the scoring direction unchanged)."""
    if (other.dynamic_inputs, other.static_inputs) == (model.dynamic_inputs,
                                                       model.static_inputs):
        return data
    own = load_cells(store, data.days[0], data.days[-1], list(other.dynamic_inputs),
                     list(other.static_inputs), other.variant.deep, other.variant.snow_sign)
    return dataclasses.replace(data, dynamic=own.dynamic, statics=own.statics,
                               direction=own.direction)


def _training_target(store: DailyStore, model: SoilMoistureModel, start: date, end: date
                     ) -> CellData | None:
    """Observed swvl1 over the model's training period for the climatology, or None (warned).

    Only ``days``, ``cells``, ``lat`` and ``target`` (n, T) are filled: climatology needs no
    inputs, and reading a multi-year global span of every input would cost gigabytes.
    """
    span = (model.manifest.get("periods") or {}).get("train")
    try:
        first, last = date.fromisoformat(span[0]), date.fromisoformat(span[1])
    except (TypeError, IndexError, ValueError):
        log.warning("the model's manifest has no training period; skipping climatology")
        return None
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    if not days or not set(days) <= set(store.complete_days()):
        log.warning("the training period %s…%s is not complete in the store; skipping "
                    "climatology", first, last)
        return None
    if first <= end and start <= last:
        log.warning("the evaluation period %s…%s overlaps the training period %s…%s: the scores "
                    "are partly in-sample", start, end, first, last)
    mask = store.land_mask
    da = store.open()["swvl1"].sel(time=slice(str(first), str(last)))
    sm = np.concatenate([da[i:i + 64].values[:, mask]  # 64 days at a time bounds the memory
                         for i in range(0, da.sizes["time"], 64)]).T
    n = sm.shape[0]
    lat = np.broadcast_to(store.grid.lat[:, None], mask.shape)[mask].astype(np.float32)
    empty = np.empty((n, 0), np.int8)
    return CellData(days, np.arange(n), lat, np.empty((n, 0, 0), np.float32),
                    np.empty((n, 0), np.float32), sm.astype(np.float32), empty, empty)


def _cell_coords(store: DailyStore, data: CellData) -> tuple[np.ndarray, np.ndarray]:
    """Centre latitude and longitude (n,) in degrees of the evaluated cells."""
    rows, cols = np.nonzero(store.land_mask)
    return store.grid.lat[rows[data.cells]], store.grid.lon[cols[data.cells]]


# -- tables -------------------------------------------------------------------------------------
def _write_tables(out: Path, summary: dict[str, Any], table: list[dict],
                  region_rows: list[dict] | None) -> None:
    _atomic_write(out / "summary.json", json.dumps(_clean(summary), indent=2,
                                                   ensure_ascii=False) + "\n")
    _atomic_write(out / "summary.csv", _csv(table, ["predictor", "lead", *METRICS]))
    if region_rows is not None:
        _atomic_write(out / "regions.csv",
                      _csv(region_rows, ["region", "cells", "predictor", "lead", *METRICS]))


def _summary(name: str, model: SoilMoistureModel, ev: Evaluation, train: CellData | None,
             compare: SoilMoistureModel | None, compare_name: str | None,
             region_rows: list[dict] | None, labels: np.ndarray | None,
             regions_path: Path | None, koppen: bool) -> dict[str, Any]:
    """What summary.json holds (NaN → null)."""
    regions = None
    if labels is not None:
        regions = {"map": str(regions_path),
                   "grouping": "Köppen main group (first letter)" if koppen else "class",
                   "cells": {r: int((labels == r).sum()) for r in reg.region_order(labels)},
                   "table": region_rows}
    return {"model": name, "variant": model.variant.name,
            "period": [str(ev.first), str(ev.last)], "seq_len": model.seq_len,
            "leads": list(ev.leads), "cells": int(len(ev.cells)),
            "climatology_period": [str(train.days[0]), str(train.days[-1])] if train else None,
            "compare": ({"name": compare_name, "variant": compare.variant.name}
                        if compare is not None else None),
            "table": ev.table(), "regions": regions}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN and infinities become None."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _csv(rows: list[dict], columns: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -- figures ------------------------------------------------------------------------------------
def _write_figures(out: Path, store: DailyStore, name: str, compare_name: str | None,
                   ev: Evaluation, lat: np.ndarray, lon: np.ndarray,
                   labels: np.ndarray | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    period = f"{ev.first}…{ev.last}"
    for i, lead in enumerate(ev.leads):
        for m in METRICS:
            _map(out / "maps" / f"{m}_lead{lead}.png", store, lat, lon,
                 ev.scores[name].per_cell[m][:, i], f"{name}: {m}, lead {lead} d, {period}",
                 UNITS[m])
    if compare_name:
        for m in ("consistency", "KGE"):
            diff = ev.scores[name].per_cell[m][:, 0] - ev.scores[compare_name].per_cell[m][:, 0]
            _map(out / f"improvement_{m}.png", store, lat, lon, diff,
                 f"{m} improvement {name} − {compare_name}, lead {ev.leads[0]} d, {period}",
                 f"Δ {UNITS[m]}", centred=True)
    if labels is not None:
        for m in METRICS:
            _boxplot(out / f"boxplot_{m}_by_region.png", ev, name, compare_name, labels, m)


def _map(path: Path, store: DailyStore, lat: np.ndarray, lon: np.ndarray, values: np.ndarray,
         title: str, label: str, centred: bool = False) -> None:
    """North-up map of per-cell ``values`` (n,) scattered onto the store grid (NaN elsewhere)."""
    import matplotlib
    from matplotlib.figure import Figure

    grid = store.grid
    field = np.full(grid.shape, np.nan)
    field[np.rint((lat - grid.lat[0]) / grid.resolution).astype(int),
          np.rint((lon - grid.lon[0]) / grid.resolution).astype(int)] = values
    finite = values[np.isfinite(values)]
    if centred:
        lim = float(np.percentile(np.abs(finite), 98)) if finite.size else 1.0
        vmin, vmax, cmap = -(lim or 1e-6), lim or 1e-6, "RdBu"
    else:
        vmin, vmax = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        vmax = vmax if vmax > vmin else vmin + 1e-6
        cmap = "viridis_r" if label.startswith("RMSE") else "viridis"
    squash = 1 / max(np.cos(np.deg2rad((grid.south + grid.north) / 2)), 0.2)
    ratio = grid.shape[0] / grid.shape[1] * squash
    fig = Figure(figsize=(8, min(max(7 * ratio + 1.2, 3.5), 9)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(field, origin="lower", extent=[grid.west, grid.east, grid.south, grid.north],
                   cmap=matplotlib.colormaps[cmap].with_extremes(bad=GREY[centred]), vmin=vmin,
                   vmax=vmax, interpolation="nearest", aspect=squash)
    fig.colorbar(im, ax=ax, label=label, extend="both", shrink=0.9)
    note = (f"better at {np.mean(finite > 0):.0%}, worse at {np.mean(finite < 0):.0%} of "
            "cells" if centred else
            f"median {np.median(finite):.3f}") if finite.size else "no valid cells"
    ax.set_title(f"{title}\n{note} ({finite.size} cells)", fontsize=10)
    ax.set_xlabel("longitude (°E)")
    ax.set_ylabel("latitude (°N)")
    _save(fig, path)


def _boxplot(path: Path, ev: Evaluation, name: str, compare_name: str | None,
             labels: np.ndarray, metric: str) -> None:
    """Per-cell ``metric`` at the first lead: one group per region, one box per predictor."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    regions = reg.region_order(labels)
    preds = [p for p in (name, compare_name, *BASELINES) if p in ev.scores]
    width = 0.8 / len(preds)
    fig = Figure(figsize=(max(6.0, 0.45 * len(regions) * len(preds) + 2), 4.8),
                 layout="constrained")
    ax = fig.add_subplot()
    colours, names = [f"C{k}" for k in range(len(preds))], []
    for k, p in enumerate(preds):
        vals = ev.scores[p].per_cell[metric][:, 0]
        names.append(p if np.isfinite(vals).any() else f"{p} (no values)")
        groups = [v[np.isfinite(v)] for v in (vals[labels == r] for r in regions)]
        bp = ax.boxplot(groups, positions=np.arange(len(regions)) + (k - (len(preds) - 1) / 2)
                        * width, widths=width * 0.85, patch_artist=True, manage_ticks=False,
                        flierprops={"markersize": 2}, medianprops={"color": "black"})
        for box in bp["boxes"]:
            box.set(facecolor=colours[k], alpha=0.8)
    ax.set_xticks(np.arange(len(regions)),
                  [f"{reg.describe(r)}\n(n={int((labels == r).sum())})" for r in regions])
    ax.set_ylabel(UNITS[metric])
    ax.grid(axis="y", alpha=0.3)
    ax.legend([Patch(facecolor=c, alpha=0.8) for c in colours], names, fontsize=8, loc="best")
    ax.set_title(f"{metric} by region, lead {ev.leads[0]} d, {ev.first}…{ev.last}", fontsize=10)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, format="png", dpi=110)
    os.replace(tmp, path)


def _summary_line(name: str, variant: str, ev: Evaluation, compare_name: str | None,
                  out: Path) -> str:
    leads = list(ev.leads)
    span = (f"{leads[0]}-{leads[-1]}" if leads == list(range(leads[0], leads[-1] + 1))
            and len(leads) > 1 else ",".join(map(str, leads)))
    kge = {p: float(s.median["KGE"][0]) for p, s in ev.scores.items()}
    others = ", ".join(f"{p} {kge[p]:.2f}" for p in (*BASELINES, compare_name) if p in kge)
    return (f"evaluated {name} ({variant}) on {ev.first}…{ev.last} ({len(ev.cells)} cells, "
            f"leads {span}): lead {leads[0]} KGE {kge[name]:.2f} ({others}); outputs in {out}")
