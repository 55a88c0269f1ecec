"""Categorical region maps (e.g. Köppen-Geiger) and per-region land medians of an evaluation.

A region map is a whitespace-separated text file with one cell centre per line: ``lat lon class``
(degrees north, degrees east in −180…180 or 0…360, any class string without spaces). Lines that
are empty or start with ``#`` are skipped, and so is a header line whose coordinates are not
numbers. Each store cell takes the class of the map cell whose centre is nearest on the map's own
regular lattice; cells the map does not cover are ``"unassigned"``.

When every class looks like a Köppen code (alphabetic, first letter in A–E), cells are grouped by
the first letter: the main climate groups the paper breaks its skill down by (Figure 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smcast import metrics
from smcast.errors import InputDataError

UNASSIGNED = "unassigned"
KOPPEN_GROUPS = {"A": "equatorial", "B": "arid", "C": "warm temperate", "D": "snow",
                 "E": "polar"}


@dataclass
class RegionMap:
    """Map cell centres: lat, lon (m,) in degrees (lon in −180…180) and class strings (m,)."""

    lat: np.ndarray
    lon: np.ndarray
    classes: np.ndarray
    path: Path

    @property
    def koppen(self) -> bool:
        """True when every class is alphabetic and starts with A…E (Köppen codes)."""
        return all(c.isalpha() and c[0] in KOPPEN_GROUPS for c in set(self.classes.tolist()))


def read_region_map(path: str | Path) -> RegionMap:
    """Read a ``lat lon class`` text map; InputDataError naming the line if one is malformed."""
    path = Path(path)
    lat, lon, cls = [], [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputDataError(f"cannot read the region map {path}: {exc}") from None
    for no, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            if len(parts) != 3:
                raise ValueError
            la, lo = float(parts[0]), float(parts[1])
        except ValueError:
            if not lat and len(parts) == 3:  # a header such as "lat lon class"
                continue
            raise InputDataError(f"{path}:{no}: expected 'lat lon class', got {line.strip()!r}; "
                                 "a region map has one cell centre per line") from None
        lat.append(la), lon.append(((lo + 180.0) % 360.0) - 180.0), cls.append(parts[2])
    if not lat:
        raise InputDataError(f"the region map {path} holds no 'lat lon class' line")
    return RegionMap(np.array(lat), np.array(lon), np.array(cls, dtype=object), path)


def _spacing(values: np.ndarray) -> float:
    steps = np.diff(np.unique(np.round(values, 6)))
    return float(steps.min()) if steps.size else 1.0


def assign(rmap: RegionMap, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Region label (n,) of each cell centre (lat, lon in degrees): the Köppen main group or the
    full class of the nearest map centre on the map's lattice; ``"unassigned"`` where none."""
    dlat, dlon = _spacing(rmap.lat), _spacing(rmap.lon)
    lat0, lon0 = rmap.lat.min(), rmap.lon.min()

    def key(la: np.ndarray, lo: np.ndarray) -> np.ndarray:
        i = np.floor((np.asarray(la) - lat0) / dlat + 0.5).astype(np.int64)
        j = np.floor((((np.asarray(lo) + 180.0) % 360.0 - 180.0) - lon0) / dlon + 0.5)
        return i * 1_000_003 + j.astype(np.int64)

    labels = [c[0] for c in rmap.classes] if rmap.koppen else list(rmap.classes)
    table = dict(zip(key(rmap.lat, rmap.lon).tolist(), labels))
    return np.array([table.get(k, UNASSIGNED) for k in key(lat, lon).tolist()], dtype=object)


def region_order(labels: np.ndarray) -> list[str]:
    """Regions present, sorted, with ``"unassigned"`` last."""
    names = sorted(set(labels.tolist()) - {UNASSIGNED})
    return names + ([UNASSIGNED] if UNASSIGNED in set(labels.tolist()) else [])


def region_table(per_cell: dict[str, dict[str, np.ndarray]], labels: np.ndarray,
                 lat: np.ndarray, obs: np.ndarray, leads: tuple[int, ...]) -> list[dict]:
    """Rows (region, cells, predictor, lead, metrics…) of land medians per region.

    Args:
        per_cell: predictor → metric → (n, n_leads) per-cell values.
        labels: region label per cell (n,).
        lat: cell latitudes (n,) in degrees.
        obs: observed series (n, n_starts), for the constant-cell filter of ``land_median``.
        leads: the lead days.
    """
    rows = []
    for region in region_order(labels):
        idx = np.flatnonzero(labels == region)
        for name, scores in per_cell.items():
            med = {m: np.atleast_1d(metrics.land_median(v[idx], lat[idx], sm_obs=obs[idx],
                                                        cell_ndim=1))
                   for m, v in scores.items()}
            for i, lead in enumerate(leads):
                rows.append({"region": region, "cells": int(idx.size), "predictor": name,
                             "lead": lead, **{m: float(v[i]) for m, v in med.items()}})
    return rows


def describe(region: str) -> str:
    """A readable label: ``"C warm temperate"`` for Köppen groups, else the name itself."""
    return f"{region} {KOPPEN_GROUPS[region]}" if region in KOPPEN_GROUPS else region
