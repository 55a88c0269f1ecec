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
from smcast.writers.geotiff import FLAG_NODATA, _grid, _spatial_dims, style_path

#: sea (no data) in quicklooks: a light neutral blue-grey, distinct from every ramp/flag colour
SEA_COLOUR = "#e6ecf2"
#: colour-bar label
SM_UNITS_LABEL = "m³ m⁻³"


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
    values = values.astype(np.float64)
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
    im = ax.imshow(np.ma.masked_invalid(values), extent=extent, origin="upper", cmap=cmap,
                   norm=Normalize(vmin, vmax), interpolation="nearest", aspect=aspect)
    _axes_labels(ax)
    ax.set_title("Soil moisture")
    fig.colorbar(im, ax=ax, extend="max", label=SM_UNITS_LABEL, shrink=0.9)

    if flags is not None:
        fvalues, fextent = _north_up(flags)
        present = set(np.unique(fvalues).tolist())
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
    layer = da.transpose(lat_name, lon_name).sortby(lat_name, ascending=False).sortby(lon_name)
    return np.asarray(layer.values), (west, east, south, north)


def _axes_labels(ax) -> None:
    ax.set_xlabel("Longitude (°E)")
    ax.set_ylabel("Latitude (°N)")
    ax.grid(color="0.5", linewidth=0.3, alpha=0.5)


__all__ = ["FLAG_NODATA", "FlagClass", "SEA_COLOUR", "flag_classes", "quicklook",
           "sm_colour_stops"]
