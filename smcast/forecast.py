"""``smcast forecast``: the daily operational run, reading like the design card.

1. bring the store up to date from the source up to the issue date;
2. find the latest complete forcing day L and check the input window L−6…L;
3. run the model over every land cell for every lead (valid days L+1 … L+N), a band of
   ``forecast.band_cells`` contiguous land cells at a time (read, predict, keep the results);
4. consistency layers: the model re-run on the most recent verifiable days gives each cell's
   share of physically consistent predictions (Eq. 19) and a flag; per valid day an Eq. 19 flag
   that stays "not yet verifiable" until the store holds that day;
5. write NetCDF, Cloud-Optimized GeoTIFFs (+ QGIS styles) and a quicklook, each atomically;
6. write the run manifest last: its presence means the issue date is done (re-runs are no-ops
   unless ``--force``).

Memory (float32 = 4 B; W = seq_len + consistency_days window days, 37 by default; n_dyn dynamic
inputs, 8 by default; G = nlat x nlon cells):

* per band, the land-cell arrays ``load_cells`` returns, band_cells x W x (n_dyn + 8) x 4 B
  (131 072 cells: 310 MB), about twice that while they are assembled, plus one store read
  block (≤ ``smcast.train.data.READ_BLOCK_BYTES``, 256 MB; a 0.1° band of ~120 rows x 37 days
  reads ~65 MB); only one band is held at a time;
* the land-cell results, N_land x (n_leads + 2) x 4 B (0.1°: 1.6 M cells, 52 MB);
* the full-grid dataset, at most (n_leads x 2 + 3) x G x 4 B (0.1°, 6 leads: 389 MB; the
  flags take 1 B a cell, so 227 MB in fact), and, one writer at a time, the writers' own
  memory (measured at 0.1° with 6 leads: NetCDF ~1.7 x the dataset, +363 MiB; a soil-moisture
  COG +206 MiB, a flag COG +85 MiB, both mostly GDAL's; the quicklook +89 MiB, as it draws a
  grid of at most ``smcast.writers.quicklook.QUICKLOOK_MAX_EDGE`` cells a side).

So the peak does not grow with the number of land cells beyond the full-grid terms
(``bench/forecast.py --fine`` measures it on the global 0.1° grid).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

import smcast
from smcast import metrics
from smcast.clock import utc_today
from smcast.config import Config
from smcast.errors import ConfigError, DataUnavailableError
from smcast.grid import Grid
from smcast.ingest.pipeline import IngestSummary, ingest
from smcast.ledger import Ledger
from smcast.model.package import ModelError, check_compatible, load_package
from smcast.model.registry import current_name, model_path
from smcast.model.wrapper import SoilMoistureModel, autocast_context
from smcast.outputs import filenames, product_path, run_lock, sha256
from smcast.sources.base import make_source
from smcast.store import DailyStore, date_range
from smcast.train.data import CellData, load_cells

log = logging.getLogger(__name__)
SEA = 255
CONSISTENT, INCONSISTENT, NO_SIGNAL, NOT_YET = 0, 1, 2, 3


@dataclass
class ForecastResult:
    """What a forecast run did (``status``: done or nothing-to-do)."""

    status: str
    issue: date
    last_forcing: date | None = None
    valid: list[date] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    seconds: float = 0.0

    def line(self) -> str:
        """The summary line."""
        if self.status != "done":
            return f"forecast {self.issue}: nothing to do, {self.manifest} exists (--force redoes it)"
        return (f"forecast {self.issue}: forcing to {self.last_forcing}, valid {self.valid[0]}…"
                f"{self.valid[-1]}, {len(self.files)} file(s) in {self.manifest.parent} "
                f"[{self.seconds:.1f} s]")


# -- 1. the store ----------------------------------------------------------------------------
def window_days(cfg: Config) -> int:
    """Days of forcing a run needs up to L: the input window plus the verification days."""
    return cfg.model.seq_len + cfg.forecast.consistency_days


def update_store(cfg: Config, issue: date) -> tuple[date, IngestSummary | None]:
    """Ingest what the source has up to ``issue`` that the store lacks in the run's window.

    Returns (newest, summary): the newest day the source can deliver for this issue date and what
    was ingested (None when the store was already up to date).
    """
    grid = Grid.from_config(cfg.grid)
    source = make_source(cfg, grid)
    newest = source.available_until(issue)
    if newest is None:
        raise DataUnavailableError(f"the {source.name} source has no complete day up to {issue}")
    first = newest - timedelta(days=window_days(cfg) - 1)
    done: set[date] = set()
    if cfg.store_path.exists():
        store = DailyStore(cfg.store_path)
        done = set(store.complete_days())
        first = max(first, store.days()[0])
    todo = [d for d in date_range(first, newest) if d not in done]
    if not todo:
        log.info("store already holds every day up to %s", newest)
        return newest, None
    return newest, ingest(cfg, todo[0], todo[-1], source=source)


def latest_window(store: DailyStore, newest: date, need: int) -> date:
    """L: the newest complete day ≤ ``newest`` whose ``need`` days up to it are all complete."""
    done = set(store.complete_days())
    last = max((d for d in done if d <= newest), default=None)
    if last is None:
        since = f" (its first complete day is {min(done)})" if done else ""
        raise DataUnavailableError(f"the store {store.path} has no complete day up to {newest}"
                                   f"{since}; ingest the days up to {newest} with `smcast "
                                   "ingest`, or forecast a later issue date (--date)")
    lacking = [d for d in date_range(last - timedelta(days=need - 1), last) if d not in done]
    if lacking:
        raise DataUnavailableError(
            f"the store lacks {len(lacking)} day(s) of the {need}-day window ending {last}: "
            f"{', '.join(map(str, lacking[:10]))}{' …' if len(lacking) > 10 else ''}; ingest "
            f"them with `smcast ingest --start {lacking[0]} --end {lacking[-1]}`")
    return last


# -- 3./4. model runs ------------------------------------------------------------------------
def batch_size(cfg: Config, model: SoilMoistureModel) -> int:
    """Configured, or chosen: on the GPU from free memory; on the CPU 4096 cells, which keep a
    batch's activations in cache (1.5x faster than one batch of all 62 000 cells, measured)."""
    import torch

    if cfg.forecast.batch_size:
        return cfg.forecast.batch_size
    if torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(max(4096, min(1 << 20, free // (4 * model.hidden_size * model.seq_len * 64))))
    return 4096


def forecast_cells(model: SoilMoistureModel, data: CellData, bs: int,
                   precision: str = "fp32") -> np.ndarray:
    """Predictions (n, n_leads) from the window ending on the last day of ``data``."""
    dyn = data.dynamic[:, -model.seq_len:]
    return model.predict(dyn, data.statics, data.cells, batch_size=bs, precision=precision)


def cell_bands(store: DailyStore, band_cells: int) -> list[tuple[int, int]]:
    """Bands [lo, hi) of contiguous land-cell numbers covering every land cell, each of at
    most ``band_cells`` cells, aligned to the store's row chunks: whole chunks are grouped while
    they fit, a chunk holding more cells is split into equal parts, so no band reads a chunk
    it shares with a neighbour unless the chunk alone exceeds ``band_cells``."""
    mask = store.land_mask
    chunk = mask.ravel().nonzero()[0] // mask.shape[1] // store.row_chunk  # (n_land,)
    edges = [0, *(np.flatnonzero(np.diff(chunk)) + 1).tolist(), len(chunk)]
    bands: list[tuple[int, int]] = []
    lo = 0
    for a, b in zip(edges[:-1], edges[1:]):
        if b - lo <= band_cells:
            continue  # the chunk joins the open band
        if lo < a:
            bands.append((lo, a))
        parts = -(-(b - a) // band_cells)
        cuts = [a + (b - a) * k // parts for k in range(parts + 1)]
        bands += list(zip(cuts[:-2], cuts[1:-1]))
        lo = cuts[-2]
    if lo < len(chunk):
        bands.append((lo, len(chunk)))
    return bands


@dataclass
class LandForecast:
    """The model's results over all land cells, assembled band by band.

    Attributes:
        pred: (n_land, n_leads) float32 swvl1 forecasts in m3 m-3 (clipped to 0…1).
        rate: (n_land,) float64 recent consistency rate (Eq. 19), NaN without a signal.
        bands: number of bands.
        read_s, inference_s: seconds spent reading the store and running the model.
    """

    pred: np.ndarray
    rate: np.ndarray
    bands: int
    read_s: float
    inference_s: float


def forecast_land(cfg: Config, model: SoilMoistureModel, store: DailyStore, first: date,
                  last: date, bs: int) -> LandForecast:
    """Forecast and consistency rate of every land cell from days first…last, one band of
    ``forecast.band_cells`` cells at a time (memory: see the module docstring)."""
    bands = cell_bands(store, cfg.forecast.band_cells)
    pred = np.empty((store.land_cells, model.n_leads), np.float32)
    rate = np.empty(store.land_cells, np.float64)
    cache = cfg.data_dir / "cache" / "predictions"
    precision = cfg.forecast.precision
    read_s = inference_s = 0.0
    for k, (lo, hi) in enumerate(tqdm(bands, desc="forecast", unit="band", leave=False,
                                      disable=None if len(bands) > 1 else True)):
        t0 = time.perf_counter()
        data = load_cells(store, first, last, list(model.dynamic_inputs),
                          list(model.static_inputs), model.variant.deep,
                          model.variant.snow_sign, cells=np.arange(lo, hi))
        t1 = time.perf_counter()
        pred[lo:hi] = forecast_cells(model, data, bs, precision)
        rate[lo:hi] = recent_consistency(model, data, bs, cache, precision)
        t2 = time.perf_counter()
        read_s, inference_s = read_s + t1 - t0, inference_s + t2 - t1
        log.debug("band %d/%d: cells %d…%d read in %.1f s, predicted in %.1f s", k + 1,
                  len(bands), lo, hi - 1, t1 - t0, t2 - t1)
        del data
    return LandForecast(clip_physical(pred), rate, len(bands), read_s, inference_s)


def clip_physical(pred: np.ndarray) -> np.ndarray:
    """Volumetric water content lies in 0…1: values outside (a network can overshoot in deserts)
    are clipped, and how many is logged."""
    outside = int(((pred < 0) | (pred > 1)).sum())
    if outside:
        log.warning("clipped %d prediction(s) outside 0…1 m3 m-3", outside)
    return np.clip(pred, 0.0, 1.0)


def recent_consistency(model: SoilMoistureModel, data: CellData, bs: int,
                       cache: Path | None = None, precision: str = "fp32") -> np.ndarray:
    """Per cell (n,), the Eq. 19 consistency rate of lead-1 predictions of the recent days.

    Each day's prediction depends only on the model, its 7-day input window (of the cells of
    ``data``: one band) and the precision, so it is cached under ``cache`` keyed by a hash of
    them: a daily run computes one new day, not thirty.
    """
    seq = model.seq_len
    n_days = data.target.shape[1]
    days = _day_digests(model, data) if cache is not None else None
    preds = [_lead1(model, data.dynamic[:, end - seq:end], data, bs,
                    None if days is None else _window_key(cache, days[end - seq:end], precision),
                    precision)
             for end in range(seq, n_days)]  # target day ``end``, inputs end−seq … end−1
    pred = np.stack(preds, axis=-1)
    t = np.arange(seq, n_days)
    return metrics.consistency_rate(pred, data.target[:, t - 1], data.direction_eval[:, t])


def _day_digests(model: SoilMoistureModel, data: CellData) -> list[bytes]:
    """One digest per day of ``data``: the model's weights, the cells' statics and that day's
    inputs (n, n_dyn). A window's cache key combines the digests of its days, so every day is
    hashed once per run, not once per window it falls in (7x less hashing at 0.1°)."""
    base = hashlib.blake2b(digest_size=16)
    base.update(model.manifest.get("weights_sha256", "").encode())
    base.update(data.cells.tobytes())
    base.update(data.statics.tobytes())
    out = []
    for day in range(data.dynamic.shape[1]):
        h = base.copy()
        h.update(np.ascontiguousarray(data.dynamic[:, day]).tobytes())
        out.append(h.digest())
    return out


def _window_key(cache: Path, days: list[bytes], precision: str) -> Path:
    """The cache file of the window made of ``days`` (digests) at ``precision``."""
    h = hashlib.blake2b(b"".join(days), digest_size=16)
    if precision != "fp32":
        h.update(precision.encode())
    return cache / f"{h.hexdigest()}.npy"


def _lead1(model: SoilMoistureModel, dyn: np.ndarray, data: CellData, bs: int,
           key: Path | None, precision: str = "fp32") -> np.ndarray:
    """Lead-1 predictions (n,) of the window ``dyn``, from the cache file ``key`` when there."""
    if key is not None and key.exists():
        return np.load(key)
    pred = model.predict(dyn, data.statics, data.cells, batch_size=bs,
                         precision=precision)[:, 0]
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(f".{key.stem}.{os.getpid()}.npy")
        np.save(tmp, pred)
        os.replace(tmp, key)
    return pred


def consistency_flag(rate: np.ndarray, threshold: float) -> np.ndarray:
    """Flag per cell: consistent (rate ≥ threshold), inconsistent, or no water-balance signal."""
    flag = np.full(rate.shape, NO_SIGNAL, np.uint8)
    flag[rate >= threshold] = CONSISTENT
    flag[rate < threshold] = INCONSISTENT
    return flag


# -- 5. the dataset and the products -----------------------------------------------------------
def to_grid(values: np.ndarray, mask: np.ndarray, fill: float | int) -> np.ndarray:
    """Land-cell values (n, ...) → (..., nlat, nlon) with ``fill`` over the sea."""
    extra = values.shape[1:]
    out = np.full((*mask.shape, *extra), fill, dtype=values.dtype)
    out[mask] = values
    return np.moveaxis(out, (0, 1), (-2, -1)) if extra else out


def forecast_dataset(model: SoilMoistureModel, name: str, sha: str, store: DailyStore,
                     issue: date, last: date, pred: np.ndarray, rate: np.ndarray,
                     cfg: Config) -> xr.Dataset:
    """The forecast as an xarray Dataset (the writers' input contract)."""
    mask, grid = store.land_mask, store.grid
    valid = [last + timedelta(days=k) for k in model.leads]
    ref = pd.Timestamp(last + timedelta(days=1))
    times = pd.DatetimeIndex([pd.Timestamp(d) for d in valid])
    verification = np.full((len(valid), *mask.shape), SEA, np.uint8)
    verification[:, mask] = NOT_YET
    ds = xr.Dataset(
        {"swvl1": (("time", "lat", "lon"), to_grid(pred, mask, np.nan).astype(np.float32,
                                                                               copy=False)),
         "consistency_rate": (("lat", "lon"), to_grid(rate.astype(np.float32), mask, np.nan)),
         "consistency_flag": (("lat", "lon"), to_grid(
             consistency_flag(rate, cfg.forecast.consistency_threshold), mask, SEA)),
         "verification_flag": (("time", "lat", "lon"), verification)},
        coords={"time": times, "lat": grid.lat, "lon": grid.lon,
                "forecast_reference_time": ref,
                "forecast_period": ("time", ((times - ref) / pd.Timedelta(hours=1)).values
                                    .astype(np.float64)),
                "lead": ("time", np.asarray(model.leads, np.int32))})
    ds.attrs = {"smcast_model": name, "smcast_variant": model.variant.name,
                "smcast_version": smcast.__version__, "smcast_model_sha256": sha,
                "issue_date": str(issue), "last_forcing_day": str(last),
                "consistency_threshold": cfg.forecast.consistency_threshold,
                "consistency_days": cfg.forecast.consistency_days,
                "grid_resolution": grid.resolution}
    if cfg.forecast.precision != "fp32":  # fp32 products stay as they were before precisions
        ds.attrs["smcast_precision"] = cfg.forecast.precision
    return ds


def write_products(ds: xr.Dataset, out: Path, names: dict[str, str]) -> list[Path]:
    """NetCDF, one soil-moisture and one verification-flag COG per valid day, the consistency
    flag COG, and the quicklook; each written atomically."""
    from smcast.writers.geotiff import write_cog
    from smcast.writers.netcdf import write_netcdf
    from smcast.writers.quicklook import quicklook

    fmt = {"issue": ds.attrs["issue_date"].replace("-", ""), "model": ds.attrs["smcast_model"]}
    tags = {k: str(v) for k, v in ds.attrs.items()}
    files = [write_netcdf(ds, _mk(product_path(out, names["netcdf"], **fmt)))]
    for i, t in enumerate(pd.DatetimeIndex(ds["time"].values)):
        valid = {**fmt, "valid": t.strftime("%Y%m%d")}
        day_tags = {**tags, "valid_date": t.strftime("%Y-%m-%d"), "lead_days": str(
            int(ds["lead"][i]))}
        sm = ds["swvl1"].isel(time=i)
        files.append(write_cog(sm, _mk(product_path(out, names["geotiff"], variable="swvl1",
                                                    **valid)), "soil_moisture",
                               {**day_tags, "units": "m3 m-3"},
                               f"volumetric soil water 0-7 cm, valid {t:%Y-%m-%d}"))
        files.append(write_cog(ds["verification_flag"].isel(time=i), _mk(product_path(
            out, names["geotiff"], variable="verification_flag", **valid)), "verification_flag",
            day_tags, f"Eq. 19 physical consistency, valid {t:%Y-%m-%d}"))
    files.append(write_cog(ds["consistency_flag"], _mk(product_path(
        out, names["consistency_geotiff"], **fmt)), "consistency_flag", tags,
        "recent physical-consistency flag"))
    files.append(quicklook(ds["swvl1"].isel(time=-1), _mk(product_path(
        out, names["quicklook"], **fmt)), _title(ds), flags=ds["consistency_flag"]))
    return files


def publish(ds: xr.Dataset, out: Path, names: dict[str, str]) -> list[Path]:
    """Write every product into a staging folder, then move each into place (``os.replace``):
    a failure while writing leaves nothing in the output directory."""
    staging = out / f".staging-{ds.attrs['issue_date']}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        written = write_products(ds, staging, names)
        final = []
        for path in written:
            target = out / path.relative_to(staging.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            final.append(target)
            qml = path.with_suffix(".qml")
            if qml.exists():
                os.replace(qml, target.with_suffix(".qml"))
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _title(ds: xr.Dataset) -> str:
    t = pd.Timestamp(ds["time"].values[-1])
    return (f"smcast {ds.attrs['smcast_model']} — soil moisture 0–7 cm, valid {t:%Y-%m-%d} "
            f"(issued {ds.attrs['issue_date']})")


# -- the run ---------------------------------------------------------------------------------
def run_forecast(cfg: Config, issue: date, model_name: str | None = None,
                 output: Path | None = None, force: bool = False) -> ForecastResult:
    """The forecast for one issue date (see the module docstring for the steps), recorded in
    the run ledger."""
    with Ledger.for_config(cfg).record("forecast", issue) as rec:
        result = _forecast(cfg, issue, model_name, output, force)
        rec.status = "ok" if result.status == "done" else "nothing-to-do"
        rec.summary = result.line()
        rec.outputs = [str(p) for p in result.files]
    return result


def _forecast(cfg: Config, issue: date, model_name: str | None, output: Path | None,
              force: bool) -> ForecastResult:
    t0 = time.perf_counter()
    if issue > utc_today() + timedelta(days=1):
        raise ConfigError(f"issue date {issue} is in the future; use today or earlier")
    check_precision(cfg)
    out = Path(output or cfg.output_dir).resolve()
    name = model_name or cfg.forecast.model or current_name(cfg)
    if name is None:
        raise ConfigError("no model: train one with `smcast retrain` or name one with --model")
    names = filenames(cfg)
    fmt = {"issue": issue.strftime("%Y%m%d"), "model": name}
    manifest_path = product_path(out, names["manifest"], **fmt)
    with run_lock(out):
        if manifest_path.exists() and not force:
            return ForecastResult("nothing-to-do", issue, manifest=manifest_path)
        newest, _ = update_store(cfg, issue)
        store = DailyStore(cfg.store_path)
        model = load_package(model_path(cfg, name))
        try:
            check_compatible(model, store)
        except ModelError as exc:
            raise ModelError(f"cannot forecast with model {name!r}: {exc}") from None
        last = latest_window(store, newest, model.seq_len + cfg.forecast.consistency_days)
        first = last - timedelta(days=window_days(cfg) - 1)
        land = forecast_land(cfg, model, store, first, last, batch_size(cfg, model))
        ds = forecast_dataset(model, name, model.manifest.get("weights_sha256", ""), store,
                              issue, last, land.pred, land.rate, cfg)
        files = publish(ds, out, names)
        valid = [last + timedelta(days=k) for k in model.leads]
        result = ForecastResult("done", issue, last, valid, files, manifest_path,
                                time.perf_counter() - t0)
        products = {"netcdf": product_path(out, names["netcdf"], **fmt),
                    "verification_flag": {str(v): product_path(
                        out, names["geotiff"], variable="verification_flag",
                        valid=v.strftime("%Y%m%d"), **fmt) for v in valid}}
        _write_manifest(result, ds, (first, last), store, land, products,
                        model.variant.snow_sign)
    return result


def check_precision(cfg: Config) -> None:
    """ConfigError before any work when ``forecast.precision`` does not fit the device."""
    import torch

    autocast_context(cfg.forecast.precision,
                     torch.device("cuda" if torch.cuda.is_available() else "cpu"))


def _write_manifest(result: ForecastResult, ds: xr.Dataset, window: tuple[date, date],
                    store: DailyStore, land: LandForecast, products: dict,
                    snow_sign: str) -> None:
    from smcast.writers.atomic import atomic_path

    doc = {"issue_date": str(result.issue), "last_forcing_day": str(result.last_forcing),
           "valid_days": [str(d) for d in result.valid],
           "leads": [int(v) for v in ds["lead"].values],
           "model": ds.attrs["smcast_model"], "variant": ds.attrs["smcast_variant"],
           "model_sha256": ds.attrs["smcast_model_sha256"],
           "input_days": [str(window[0]), str(window[1])],
           "land_cells": int(store.land_cells), "snow_sign": snow_sign,
           "smcast_version": smcast.__version__,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "timings_s": {"total": round(result.seconds, 3),
                         "inference": round(land.inference_s, 3), "read": round(land.read_s, 3)},
           "bands": land.bands, "precision": ds.attrs.get("smcast_precision", "fp32"),
           "files": [{"path": str(p.relative_to(result.manifest.parent)), "sha256": sha256(p)}
                     for p in result.files],
           "products": {"netcdf": _rel(products["netcdf"], result.manifest),
                        "verification_flag": {k: _rel(v, result.manifest) for k, v in
                                              products["verification_flag"].items()}},
           "verified": {}}
    with atomic_path(result.manifest) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def _rel(path: Path, manifest: Path) -> str:
    """A product's path relative to its manifest's folder."""
    return os.path.relpath(path, manifest.parent)
