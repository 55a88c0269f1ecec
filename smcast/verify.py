"""``smcast verify``: score forecasts once the store holds their valid days.

For every forecast in the output inventory and every valid day v not yet verified whose truth
the store now holds (v−2 … v and the last forcing day L, all complete):

1. the Eq. 19 flag of each land cell on v — with ``s = D_v·(SM_{v−1} − ŜM_v)``: consistent
   (s < 0), inconsistent (s > 0), no water-balance signal (s = 0, D = 0 or no data);
2. per-lead skill over the land cells (spatial R, RMSE, KGE, the consistency rate) beside the
   persistence baseline (SM_L held constant) on the same cells, into the verification table;
3. the flags are written into the forecast's NetCDF and its verification-flag GeoTIFF (each a
   full copy moved into place), then the manifest records the day as verified — last, so a run
   killed part-way is simply redone.

Verify shares the forecast's lock, so it never rewrites a file a forecast is writing.

Memory: the truth (observed swvl1 and D of the ≤ max lead + 3 days concerned) is read a band of
``forecast.band_cells`` land cells at a time and kept as (n_land, T) arrays, 5 B per cell and
day (0.1°, 9 days: 72 MB); the products are handled one (lat, lon) layer at a time.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import rasterio
import xarray as xr

from smcast import metrics
from smcast.config import Config
from smcast.errors import InputDataError
from smcast.inventory import ForecastEntry, forecasts
from smcast.ledger import Ledger, now_iso
from smcast.outputs import filenames, run_lock, sha256
from smcast.store import DailyStore
from smcast.train.data import load_truth
from smcast.writers.atomic import atomic_path

log = logging.getLogger(__name__)
CONSISTENT, INCONSISTENT, NO_SIGNAL, SEA = 0, 1, 2, 255


@dataclass
class VerifySummary:
    """What a verify run did."""

    forecasts: int = 0
    days: int = 0
    pending: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        """The summary line."""
        return (f"verify: {self.days} valid day(s) of {self.forecasts} forecast(s) verified, "
                f"{self.pending} still waiting for ERA5-Land [{self.seconds:.1f} s]")


def run_verify(cfg: Config, output: Path | None = None) -> VerifySummary:
    """Verify every forecast under the output directory whose valid days the store reached,
    recorded in the run ledger."""
    ledger = Ledger.for_config(cfg)
    with ledger.record("verify") as rec:
        summary = _verify(cfg, Path(output or cfg.output_dir).resolve(), ledger)
        rec.summary = summary.line()
        rec.outputs = [str(p) for p in summary.files]
    return summary


def _verify(cfg: Config, out: Path, ledger: Ledger) -> VerifySummary:
    t0 = time.perf_counter()
    summary = VerifySummary()
    if not cfg.store_path.exists():
        log.warning("no store at %s yet: nothing can be verified", cfg.store_path)
        return summary
    with run_lock(out):
        store = DailyStore(cfg.store_path)
        complete = set(store.complete_days())
        for entry in forecasts(out, filenames(cfg)["manifest"]):
            todo = [v for v in entry.valid if v not in entry.verified]
            ready = [v for v in todo if verifiable(v, entry.last_forcing, complete)]
            summary.pending += len(todo) - len(ready)
            if ready:
                summary.files += verify_forecast(entry, ready, store, ledger,
                                                 cfg.forecast.band_cells)
                summary.forecasts += 1
                summary.days += len(ready)
    summary.seconds = time.perf_counter() - t0
    return summary


def verifiable(valid: date, last_forcing: date, complete: set[date]) -> bool:
    """Whether the store holds what day ``valid`` is scored with: v−2 … v (D needs ΔW, W needs
    ΔSD and Δdeep) and L (persistence)."""
    need = [valid - timedelta(days=k) for k in range(3)] + [last_forcing]
    return all(d in complete for d in need)


def verify_forecast(entry: ForecastEntry, days: list[date], store: DailyStore,
                    ledger: Ledger, band_cells: int) -> list[Path]:
    """Flags and skill of ``days`` of one forecast; returns the files rewritten."""
    products = entry.doc.get("products")
    if not products:
        raise InputDataError(f"{entry.path} lists no products (written by an older smcast); "
                             "redo that forecast with `smcast forecast --date "
                             f"{entry.issue} --force` to verify it")
    nc_path = entry.folder / products["netcdf"]
    first, last = min(entry.last_forcing, min(days) - timedelta(days=2)), max(days)
    obs, direction = truth(store, first, last, entry.doc.get("snow_sign", "paper"), band_cells)
    col = {first + timedelta(days=i): i for i in range((last - first).days + 1)}
    pred = read_predictions(nc_path, days, store)
    mask = store.land_mask
    flags, rows = {}, []
    for v in days:
        i = col[v]
        flags[v] = eq19_flags(pred[v], obs[:, i - 1], direction[:, i])
        rows.append(skill_row(entry, v, pred[v], obs[:, i], obs[:, i - 1], direction[:, i],
                              obs[:, col[entry.last_forcing]]))
    write_netcdf_flags(nc_path, {v: _to_grid(f, mask) for v, f in flags.items()})
    tifs = [write_tif_flags(entry.folder / products["verification_flag"][str(v)],
                            _to_grid(flags[v], mask), store) for v in days]
    ledger.save_verification(rows)
    mark_verified(entry, days, [nc_path, *tifs])
    log.info("verified %s: %s", entry.issue, ", ".join(map(str, days)))
    return [nc_path, *tifs]


def truth(store: DailyStore, first: date, last: date, snow_sign: str, band_cells: int
          ) -> tuple[np.ndarray, np.ndarray]:
    """Observed swvl1 (n_land, T) float32 in m3 m-3 and the Eq. 11 direction D (n_land, T) int8
    of days first…last, read in bands of at most ``band_cells`` land cells (the same values as
    one ``load_truth`` of all cells, in bounded memory)."""
    from smcast.forecast import cell_bands

    n, n_days = store.land_cells, (last - first).days + 1
    obs, direction = np.empty((n, n_days), np.float32), np.empty((n, n_days), np.int8)
    for lo, hi in cell_bands(store, band_cells):
        obs[lo:hi], direction[lo:hi] = load_truth(store, first, last, snow_sign,
                                                  cells=np.arange(lo, hi))
    return obs, direction


def read_predictions(nc_path: Path, days: list[date], store: DailyStore
                     ) -> dict[date, np.ndarray]:
    """swvl1 of each valid day over the store's land cells (n,), from the forecast NetCDF."""
    with netCDF4.Dataset(nc_path) as nc:
        lat, lon = nc["lat"][:].data, nc["lon"][:].data
        if lat.shape != store.grid.lat.shape or not np.allclose(lat, store.grid.lat) or \
                not np.allclose(lon, store.grid.lon):
            raise InputDataError(f"{nc_path} is on another grid than the store {store.path}; "
                                 "verify it against a store on its grid")
        index = _time_index(nc)
        out = {}
        for v in days:
            grid = nc["swvl1"][index[v]].filled(np.nan)
            out[v] = grid[store.land_mask].astype(np.float64)
    return out


def eq19_flags(pred: np.ndarray, prev_obs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Per cell (n,) uint8: 0 consistent, 1 inconsistent, 2 no water-balance signal."""
    with np.errstate(invalid="ignore"):
        s = direction * (prev_obs - pred)
    flag = np.full(pred.shape, NO_SIGNAL, np.uint8)
    flag[s < 0] = CONSISTENT
    flag[s > 0] = INCONSISTENT
    return flag


def skill_row(entry: ForecastEntry, valid: date, pred: np.ndarray, obs: np.ndarray,
              prev: np.ndarray, direction: np.ndarray, persistence: np.ndarray
              ) -> dict[str, Any]:
    """One verification-table row: skill over the land cells on ``valid`` (m3 m-3)."""
    ok = np.isfinite(pred) & np.isfinite(obs)
    p, o, base = pred[ok], obs[ok], persistence[ok]
    s = direction[ok] * (prev[ok] - p)
    return {"model": entry.doc["model"], "issue_date": str(entry.issue),
            "lead": (valid - entry.last_forcing).days, "valid_date": str(valid),
            "last_forcing_day": str(entry.last_forcing), "n_cells": int(ok.sum()),
            "r": metrics.pearson_r(p, o), "rmse": metrics.rmse(p, o), "kge": metrics.kge(p, o),
            "consistency": metrics.consistency_rate(p, prev[ok], direction[ok]),
            "n_consistent": int((s < 0).sum()), "n_inconsistent": int((s > 0).sum()),
            "persistence_r": metrics.pearson_r(base, o),
            "persistence_rmse": metrics.rmse(base, o),
            "persistence_kge": metrics.kge(base, o), "verified_at": now_iso()}


def write_netcdf_flags(nc_path: Path, flags: dict[date, np.ndarray]) -> None:
    """Write (lat, lon) flag grids into ``verification_flag`` of a copy of the file, then move
    the copy into place."""
    with atomic_path(nc_path) as tmp:
        shutil.copyfile(nc_path, tmp)
        with netCDF4.Dataset(tmp, "a") as nc:
            index = _time_index(nc)
            for v, grid in flags.items():
                nc["verification_flag"][index[v]] = grid
            stamp = now_iso().replace("+00:00", "Z")
            nc.date_modified = stamp
            nc.history = f"{nc.history}\n{stamp} verification_flag filled for " \
                         f"{', '.join(map(str, sorted(flags)))} by smcast verify"


def write_tif_flags(tif: Path, grid: np.ndarray, store: DailyStore) -> Path:
    """Rewrite a verification-flag COG with ``grid`` (lat, lon), keeping its tags."""
    from smcast.writers.geotiff import write_cog

    with rasterio.open(tif) as src:
        tags, description = src.tags(), src.descriptions[0] or "verification flag"
    tags["verified"] = now_iso()
    da = xr.DataArray(grid, dims=("lat", "lon"),
                      coords={"lat": store.grid.lat, "lon": store.grid.lon})
    return write_cog(da, tif, "verification_flag", tags, description)


def mark_verified(entry: ForecastEntry, days: list[date], rewritten: list[Path]) -> None:
    """Record the verified days and the rewritten files' new checksums in the manifest."""
    doc = entry.doc
    stamp = now_iso()
    doc.setdefault("verified", {}).update({str(v): stamp for v in days})
    sums = {str(p.resolve()): sha256(p) for p in rewritten}
    for item in doc["files"]:
        key = str((entry.folder / item["path"]).resolve())
        item["sha256"] = sums.get(key, item["sha256"])
    with atomic_path(entry.path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


def _time_index(nc: netCDF4.Dataset) -> dict[date, int]:
    days = nc["time"][:].data  # days since 1970-01-01 (smcast.writers.netcdf)
    return {date(1970, 1, 1) + timedelta(days=int(round(float(t)))): i
            for i, t in enumerate(days)}


def _to_grid(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.full(mask.shape, SEA, np.uint8)
    out[mask] = values
    return out
