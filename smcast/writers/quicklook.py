"""PNG quicklooks of a soil-moisture layer (and optionally its flag layer).

The colours are read from the QGIS styles in ``templates/`` (``soil_moisture.qml``,
``verification_flag.qml``), so a quicklook and the GeoTIFF opened in QGIS look the same. Drawing
uses matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so it is
safe in servers, schedulers and threads.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from smcast.writers.atomic import atomic_path
from smcast.writers.geotiff import FLAG_NODATA, _grid, _spatial_dims, north_up, style_path

#: sea (no data) in quicklooks: a light neutral blue-grey, distinct from every ramp/flag colour
SEA_COLOUR = "#e6ecf2"
#: colour-bar label
SM_UNITS_LABEL = "m³ m⁻³"
#: largest grid edge drawn as it is: a finer layer (e.g. global 0.1°, 3600 × 1800) is first
#: reduced by whole f × f blocks (soil moisture: mean of the land cells; flags: the majority
#: land class) to at most this many cells per edge. A map panel is about 500 px wide, so nothing
#: visible is lost, and the global 0.5° (720 × 360) and 0.25° grids of up to 1024 cells per
#: edge are drawn cell for cell as before.
QUICKLOOK_MAX_EDGE = 1024


@dataclass(frozen=True)
class FlagClass:
    """One category of a flag layer as styled in QGIS."""

    value: int
    colour: str
    label: str


def sm_colour_stops() -> tuple[float, float, list[tuple[float, str]]]:
    """(min, max, [(value, colour), …]) of the soil-moisture ramp in ``soil_moisture.qml``."""
    root = ET.parse(style_path("soil_moisture")).getroot()
    renderer = root.find(".//rasterrenderer[@type='singlebandpseudocolor']")
    if renderer is None:
        raise ValueError("soil_moisture.qml has no singlebandpseudocolor renderer")
    stops = [(float(item.get("value")), item.get("color"))
             for item in renderer.iter("item")]
    vmin = float(renderer.get("classificationMin", stops[0][0]))
    vmax = float(renderer.get("classificationMax", stops[-1][0]))
    return vmin, vmax, stops


def flag_classes(kind: str = "verification_flag") -> list[FlagClass]:
    """The visible categories (alpha > 0) of a flag style, in value order."""
    root = ET.parse(style_path(kind)).getroot()
    classes = [FlagClass(int(e.get("value")), e.get("color"), e.get("label"))
               for e in root.iter("paletteEntry") if int(e.get("alpha", "255")) > 0]
    return sorted(classes, key=lambda c: c.value)


def quicklook(sm: xr.DataArray, path: Path, title: str,
              flags: xr.DataArray | None = None) -> Path:
    """Draw ``sm`` (2-D lat/lon, m3 m-3, NaN over sea) as a north-up PNG map, written atomically.

    With ``flags`` (uint8, 255 over sea) a second panel shows the flag layer with a categorical
    legend. Returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import BoundaryNorm, LinearSegmentedColormap, ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    values, extent = _north_up(sm)
    factor = display_factor(values.shape)
    values, shown = coarsen_mean(values, factor), _padded_extent(extent, values.shape, factor)
    vmin, vmax, stops = sm_colour_stops()
    cmap = LinearSegmentedColormap.from_list(
        "smcast_soil_moisture", [((v - vmin) / (vmax - vmin), c) for v, c in stops]
    ).with_extremes(bad=SEA_COLOUR, over=stops[-1][1], under=stops[0][1])

    panels = 1 if flags is None else 2
    west, east, south, north = extent
    aspect = 1.0 / max(math.cos(math.radians((south + north) / 2)), 0.2)
    ratio = (north - south) * aspect / max(east - west, 1e-9)  # height / width of a map
    width = 6.4  # per panel; the map takes about 70 % of it, the rest is labels and colour bar
    extra = 1.1 if flags is None else 1.7  # titles, axis labels (and the flag legend)
    height = min(max(0.7 * width * ratio + extra, 3.0), 9.0)
    fig = Figure(figsize=(width * panels, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    fig.suptitle(title)

    ax = fig.add_subplot(1, panels, 1)
    im = ax.imshow(np.ma.masked_invalid(values), extent=shown, origin="upper", cmap=cmap,
                   norm=Normalize(vmin, vmax), interpolation="nearest", aspect=aspect)
    if factor > 1:  # the padding of the last block row/column stays outside the map
        ax.set_xlim(west, east)
        ax.set_ylim(south, north)
    _axes_labels(ax)
    ax.set_title("Soil moisture")
    fig.colorbar(im, ax=ax, extend="max", label=SM_UNITS_LABEL, shrink=0.9)

    if flags is not None:
        fvalues, fextent = _north_up(flags)
        present = set(np.unique(fvalues).tolist())
        f_factor = display_factor(fvalues.shape)
        fextent = _padded_extent(fextent, fvalues.shape, f_factor)
        fvalues = coarsen_flags(fvalues, f_factor)
        classes = [c for c in flag_classes("verification_flag")
                   if c.value <= 2 or c.value in present]
        index = np.full(fvalues.shape, -1, dtype=np.int16)
        for i, c in enumerate(classes):
            index[fvalues == c.value] = i
        fcmap = ListedColormap([c.colour for c in classes]).with_extremes(bad=SEA_COLOUR)
        ax2 = fig.add_subplot(1, panels, 2, sharex=ax, sharey=ax)
        ax2.imshow(np.ma.masked_less(index, 0), extent=fextent, origin="upper", cmap=fcmap,
                   norm=BoundaryNorm(np.arange(len(classes) + 1) - 0.5, len(classes)),
                   interpolation="nearest", aspect=aspect)
        _axes_labels(ax2)
        ax2.set_title("Flag")
        handles = [Patch(facecolor=c.colour, edgecolor="0.3", label=c.label) for c in classes]
        handles.append(Patch(facecolor=SEA_COLOUR, edgecolor="0.3", label="sea"))
        ax2.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12),
                   ncol=min(3, len(handles)), frameon=False, fontsize="small")

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _north_up(da: xr.DataArray) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Values with latitude descending, longitude ascending, and (west, east, south, north)."""
    lat_name, lon_name = _spatial_dims(da)
    _, _, (west, east, south, north) = _grid(da, lat_name, lon_name)
    return np.asarray(north_up(da, lat_name, lon_name).values), (west, east, south, north)


def display_factor(shape: tuple[int, ...]) -> int:
    """Block edge f by which a (ny, nx) layer is reduced for display (1: drawn as it is)."""
    return max(1, -(-max(shape) // QUICKLOOK_MAX_EDGE))


def _blocks(values: np.ndarray, factor: int, fill: float | int) -> np.ndarray:
    """(ny, nx) → (ceil(ny/f), f, ceil(nx/f), f) blocks, the last ones padded with ``fill``."""
    ny, nx = values.shape
    my, mx = -(-ny // factor), -(-nx // factor)
    padded = np.full((my * factor, mx * factor), fill, values.dtype)
    padded[:ny, :nx] = values
    return padded.reshape(my, factor, mx, factor)


def coarsen_mean(values: np.ndarray, factor: int) -> np.ndarray:
    """float64 mean of the finite cells of each f × f block (NaN where there is none), shape
    (ceil(ny/f), ceil(nx/f)); with f = 1 the values as float64."""
    if factor == 1:
        return values.astype(np.float64)
    blocks = _blocks(values.astype(np.float32, copy=False), factor, np.nan)
    ok = np.isfinite(blocks)
    total = np.where(ok, blocks, 0).sum(axis=(1, 3), dtype=np.float64)
    count = ok.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def coarsen_flags(values: np.ndarray, factor: int) -> np.ndarray:
    """uint8 flags: the most frequent non-sea value of each f × f block (the lower value on a
    tie), sea (``FLAG_NODATA``) where the block has no land; f = 1 returns ``values``."""
    if factor == 1:
        return values
    blocks = _blocks(values, factor, FLAG_NODATA)
    classes = sorted(set(np.unique(values).tolist()) - {FLAG_NODATA})
    if not classes:
        return np.full(blocks.shape[::2], FLAG_NODATA, np.uint8)
    counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in classes])
    out = np.asarray(classes, np.uint8)[counts.argmax(axis=0)]
    out[counts.sum(axis=0) == 0] = FLAG_NODATA
    return out


def _padded_extent(extent: tuple[float, float, float, float], shape: tuple[int, ...],
                   factor: int) -> tuple[float, float, float, float]:
    """(west, east, south, north) of the reduced grid: the padding of the last blocks extends
    it east and south (``extent`` itself for f = 1)."""
    if factor == 1:
        return extent
    west, east, south, north = extent
    ny, nx = shape
    rx, ry = (east - west) / nx, (north - south) / ny
    return (west, west + -(-nx // factor) * factor * rx,
            north - -(-ny // factor) * factor * ry, north)


def _axes_labels(ax) -> None:
    ax.set_xlabel("Longitude (°E)")
    ax.set_ylabel("Latitude (°N)")
    ax.grid(color="0.5", linewidth=0.3, alpha=0.5)


__all__ = ["FLAG_NODATA", "FlagClass", "QUICKLOOK_MAX_EDGE", "SEA_COLOUR", "coarsen_flags",
           "coarsen_mean", "display_factor", "flag_classes", "quicklook", "sm_colour_stops"]
