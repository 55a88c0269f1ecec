"""Cloud-Optimized GeoTIFFs of soil moisture and flag layers, with a QGIS style beside each.

What a GIS user gets for ``<name>.tif``:

* a COG (GDAL ``COG`` driver): 256 × 256 tiles, DEFLATE with a predictor (3, floating point, for
  soil moisture; 2, horizontal differencing, for flags), internal overviews, ``LAYOUT=COG``;
* north-up: latitude is sorted descending, the geotransform is ``(west, res, 0, north, 0, -res)``
  with the origin at the north-west corner of the north-west cell (``AREA_OR_POINT=Area``);
* CRS EPSG:4326;
* no-data: **NaN** for soil moisture, **255** for flags (sea);
* the band description (shown by QGIS in the layer properties and by ``gdalinfo``), dataset tags
  (units, reference/valid time, model, variant, …, as given) and band tags (``units`` for soil
  moisture; ``flag_values``/``flag_meanings`` for flags);
* ``<name>.qml`` beside it: QGIS applies a same-named style automatically when the layer is added.

Why NaN and not −9999 for soil moisture: GDAL (``nodata=nan``) and everything built on it
(QGIS 3, rasterio, rioxarray, ``gdalinfo``) treat a NaN no-data as no-data, and GDAL's
``average`` overviews skip NaN cells exactly as they skip −9999 ones (checked with GDAL 3.10: a
coastal overview cell is the mean of its land cells). The difference is what happens when a
reader *ignores* the no-data metadata (``rioxarray.open_rasterio`` without ``masked=True``,
``rasterio.read()``, a CSV export): NaN stays "not a number" and propagates, whereas −9999
would silently drag means down while looking like a number. NaN is also what the arrays hold in
memory and in the NetCDF product, so values round-trip bit for bit without a sentinel rewrite.
(ArcGIS reads GDAL's NaN no-data as NoData as far as we know; not tested here.) Flags are uint8,
so NaN is impossible there: 255 is the no-data value.

Overviews: the COG driver's ``OVERVIEWS=AUTO`` halves the raster until it fits into one tile,
so it makes **none** for a raster of at most 256 × 256 cells (a 0.5° European box, 24 × 36, is
one tile) and, e.g., two (×2, ×4) for the 720 × 360 global 0.5° grid. Such a small raster is
read in a single request anyway, but GIS tools report "no pyramids" and a product's structure
would depend on the size of its region; so for a raster that fits in one tile we ask for one
overview level (``OVERVIEW_COUNT=1``), which the strict COG validator accepts and which costs a
few hundred bytes. The exception is a single-row or single-column raster within one tile: its
×2 overview keeps a decimation of 1 on that axis, which the validator rejects, so it gets none.
Soil-moisture overviews average (NaN skipped); flag overviews take the nearest cell, so they
only ever hold valid flag values.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from smcast.grid import ascending
from smcast.templates import templates_dir
from smcast.writers.atomic import atomic_path

Kind = Literal["soil_moisture", "consistency_flag", "verification_flag"]

#: tile size of the COGs (pixels)
BLOCKSIZE = 256
#: no-data of the soil-moisture rasters (see the module docstring)
SM_NODATA = float("nan")
#: no-data (sea) of the flag rasters
FLAG_NODATA = 255
#: flag values and their meanings (CF ``flag_meanings`` words), per flag kind
FLAG_MEANINGS: dict[str, dict[int, str]] = {
    "consistency_flag": {0: "consistent", 1: "inconsistent", 2: "no_water_balance_signal"},
    "verification_flag": {0: "consistent", 1: "inconsistent", 2: "no_water_balance_signal",
                          3: "not_yet_verifiable"},
}
KINDS: tuple[str, ...] = ("soil_moisture", "consistency_flag", "verification_flag")

_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "longitude")


def style_path(kind: str) -> Path:
    """The QGIS style (``.qml``) of a product kind; FileNotFoundError when it is missing."""
    if kind not in KINDS:
        raise ValueError(f"unknown GeoTIFF kind {kind!r}; expected one of {', '.join(KINDS)}")
    path = templates_dir() / f"{kind}.qml"
    if not path.is_file():
        raise FileNotFoundError(
            f"QGIS style template {path} not found: the GeoTIFF writer copies templates/{kind}.qml "
            f"next to each raster. Run smcast from a complete checkout (templates/ beside smcast/) "
            f"or restore the file.")
    return path


def write_cog(da: xr.DataArray, path: Path, kind: Kind, tags: dict[str, str],
              description: str) -> Path:
    """Write a 2-D (lat, lon) layer as a north-up Cloud-Optimized GeoTIFF plus its QGIS style.

    Args:
        da: the layer on a regular lat/lon grid (cell centres, either latitude order): float
            soil moisture in m3 m-3 with NaN over sea, or integer flags (values of the kind's
            ``FLAG_MEANINGS``, 255 over sea).
        path: the raster to write (``.tif``); ``<stem>.qml`` is written beside it.
        kind: ``soil_moisture``, ``consistency_flag`` or ``verification_flag``.
        tags: dataset tags (str → str), e.g. units, forecast_reference_time, valid_time, model.
        description: the band description.

    Returns:
        ``path``. Both files are written to temporary siblings and moved into place only when
        both are complete: a failure leaves no partial file and any existing product untouched.

    Raises:
        ValueError: wrong kind, dims, grid, dtype or flag values.
        FileNotFoundError: the style template is missing.
    """
    path = Path(path)
    qml_src = style_path(kind)
    lat_name, lon_name = _spatial_dims(da)
    res_x, res_y, (west, east, south, north) = _grid(da, lat_name, lon_name)
    if west < -180 - 1e-9 or east > 180 + 1e-9:
        raise ValueError(f"longitudes must lie in -180…180 (cell edges {west}…{east}); "
                         "normalise the longitude before writing a GeoTIFF")

    layer = north_up(da, lat_name, lon_name)
    values = np.asarray(layer.values)
    band_tags: dict[str, str]
    if kind == "soil_moisture":
        if not np.issubdtype(values.dtype, np.floating):
            raise ValueError(f"soil moisture must be a float array, got {values.dtype}")
        values = values.astype(np.float32, copy=False)
        nodata: float | int = SM_NODATA
        predictor, resampling = 3, "average"
        band_tags = {"units": str(tags.get("units", "m3 m-3"))}
    else:
        values = _flag_values(values, kind)
        nodata = FLAG_NODATA
        predictor, resampling = 2, "nearest"
        meanings = FLAG_MEANINGS[kind]
        band_tags = {"flag_values": " ".join(str(v) for v in meanings),
                     "flag_meanings": " ".join(meanings.values())}

    out = xr.DataArray(values, dims=("y", "x"),
                       coords={"y": layer[lat_name].values, "x": layer[lon_name].values},
                       attrs={"long_name": str(description)})
    out = out.rio.set_spatial_dims(x_dim="x", y_dim="y")
    out = out.rio.write_crs("EPSG:4326")
    # Explicit transform: rioxarray's inference from coordinates is off by float noise on 0.1°
    # grids and impossible for a single row or column.
    out = out.rio.write_transform(Affine(res_x, 0.0, west, 0.0, -res_y, north))
    out = out.rio.write_nodata(nodata, encoded=kind == "soil_moisture")

    options: dict[str, object] = dict(
        driver="COG", compress="DEFLATE", predictor=predictor, blocksize=BLOCKSIZE,
        overview_resampling=resampling, overviews="AUTO")
    ny, nx = values.shape
    if max(ny, nx) <= BLOCKSIZE and min(ny, nx) >= 2:
        options["overview_count"] = 1  # AUTO would make none: see the module docstring
    all_tags = {**{_tag_key(k): str(v) for k, v in tags.items()}, "band_tags": [band_tags]}

    path.parent.mkdir(parents=True, exist_ok=True)
    qml = path.with_suffix(".qml")
    with atomic_path(path) as tmp_tif, atomic_path(qml) as tmp_qml:
        out.rio.to_raster(tmp_tif, tags=all_tags, recalc_transform=False, **options)
        _drop_sidecars(tmp_tif)
        shutil.copyfile(qml_src, tmp_qml)
    return path


def validate_cog(path: Path) -> list[str]:
    """Errors and warnings of ``rio_cogeo``'s strict COG validation; empty when valid.

    (``rio cogeo validate`` on the command line exits 0 even for invalid files: use this.)
    """
    try:
        from rio_cogeo.cogeo import cog_validate
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("validate_cog needs rio-cogeo: pip install rio-cogeo") from exc
    valid, errors, warnings = cog_validate(str(path), strict=True, quiet=True)
    problems = [*errors, *warnings]
    if not valid and not problems:
        problems = [f"{path} is not a valid Cloud-Optimized GeoTIFF"]
    return problems


def north_up(da: xr.DataArray, lat_name: str, lon_name: str) -> xr.DataArray:
    """``da`` as (lat, lon) with latitude descending and longitude ascending; a monotonic axis
    is flipped by a view (no copy of a 3600 x 1800 layer), any other order is sorted."""
    layer = ascending(ascending(da.transpose(lat_name, lon_name), lon_name), lat_name)
    return layer.isel({lat_name: slice(None, None, -1)})


def _spatial_dims(da: xr.DataArray) -> tuple[str, str]:
    if da.ndim != 2:
        raise ValueError(f"a GeoTIFF layer must be 2-D (lat, lon), got dims {da.dims}")
    lat = next((d for d in da.dims if d in _LAT_NAMES), None)
    lon = next((d for d in da.dims if d in _LON_NAMES), None)
    if lat is None or lon is None:
        raise ValueError(f"a GeoTIFF layer needs dims (lat, lon), got {da.dims}")
    return str(lat), str(lon)


def _grid(da: xr.DataArray, lat_name: str, lon_name: str
          ) -> tuple[float, float, tuple[float, float, float, float]]:
    """(lon resolution, lat resolution, (west, east, south, north)) from the cell centres."""
    lat = np.asarray(da[lat_name].values, dtype=np.float64)
    lon = np.asarray(da[lon_name].values, dtype=np.float64)
    if lat.size < 2 and lon.size < 2:
        raise ValueError("a layer needs at least two cells along lat or lon to define the grid "
                         "resolution")
    # smcast grids have square cells: a single row (column) takes the resolution of the other axis
    res_y, south, north = _axis(lat, lat_name, None if lat.size > 1 else _axis(lon, lon_name)[0])
    res_x, west, east = _axis(lon, lon_name, None if lon.size > 1 else res_y)
    return res_x, res_y, (west, east, south, north)


def _axis(centres: np.ndarray, name: str, res: float | None = None
          ) -> tuple[float, float, float]:
    """(resolution, low edge, high edge) of a regular axis of cell centres (``res`` given for
    an axis of one cell)."""
    c = np.sort(centres)
    if c.size < 2:
        assert res is not None
        return res, _clean(c[0] - res / 2), _clean(c[0] + res / 2)
    step = np.diff(c)
    res = (c[-1] - c[0]) / (c.size - 1)
    if res <= 0 or not np.allclose(step, res, rtol=0, atol=1e-6 * max(res, 1e-12) + 1e-9):
        raise ValueError(f"{name} must be a regular axis without duplicates (steps "
                         f"{step.min()}…{step.max()})")
    res = _clean(res)
    return res, _clean(c[0] - res / 2), _clean(c[-1] + res / 2)


def _clean(x: float) -> float:
    """Round away float noise (0.1° grids: -3.9999999999999996 → -4.0)."""
    return float(round(float(x), 10)) + 0.0


def _flag_values(values: np.ndarray, kind: str) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{kind} must be an integer (uint8) array, got {values.dtype}")
    allowed = set(FLAG_MEANINGS[kind]) | {FLAG_NODATA}
    found = set(np.unique(values).tolist())
    if not found <= allowed:
        raise ValueError(f"{kind} holds values {sorted(found - allowed)}; allowed are "
                         f"{sorted(allowed)} (255 = sea)")
    return values.astype(np.uint8, copy=False)


def _tag_key(key: object) -> str:
    key = str(key)
    if not key or "=" in key or any(ch.isspace() for ch in key):
        raise ValueError(f"GeoTIFF tag names must be non-empty without '=' or blanks: {key!r}")
    return key


def _drop_sidecars(tif: Path) -> None:
    """Remove an ``.aux.xml`` GDAL may leave beside the temporary raster (it would be orphaned)."""
    aux = Path(os.fspath(tif) + ".aux.xml")
    aux.unlink(missing_ok=True)
