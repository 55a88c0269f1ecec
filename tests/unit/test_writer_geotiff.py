"""GeoTIFF (COG) writer, QGIS styles and quicklooks.

Overviews: GDAL's COG driver with OVERVIEWS=AUTO makes none for a raster that fits into one
256 × 256 tile (the 24 × 36 European box here); the writer then asks for one level
(OVERVIEW_COUNT=1), so every product has internal overviews. The 360 × 720 global raster gets
GDAL's own two levels (×2, ×4).
"""

from __future__ import annotations

import math
import os
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.enums import Compression

from smcast.writers import geotiff
from smcast.writers.geotiff import FLAG_MEANINGS, validate_cog, write_cog
from smcast.writers.quicklook import SEA_COLOUR, flag_classes, quicklook, sm_colour_stops

pytest.importorskip("rio_cogeo", reason="validate_cog needs rio-cogeo (pip install rio-cogeo)")

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
TAGS = {"units": "m3 m-3", "forecast_reference_time": "2024-05-01T00:00:00Z",
        "valid_time": "2024-05-03T00:00:00Z", "model": "demo-phys", "variant": "PHYs"}


def _grid(south: float, north: float, west: float, east: float, res: float = 0.5):
    lat = np.arange(south + res / 2, north, res)  # ascending centres, like the store
    lon = np.arange(west + res / 2, east, res)
    return lat, lon


def _sm(lat: np.ndarray, lon: np.ndarray, sea: np.ndarray) -> xr.DataArray:
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    v = (0.25 + 0.2 * np.sin(np.radians(3 * lo)) * np.cos(np.radians(4 * la))).astype(np.float32)
    v[sea] = np.nan
    return xr.DataArray(v, dims=("lat", "lon"), coords={"lat": lat, "lon": lon},
                        attrs={"units": "m3 m-3", "long_name": "ignored"})


def _flags(lat: np.ndarray, lon: np.ndarray, sea: np.ndarray, values: list[int]) -> xr.DataArray:
    i, j = np.meshgrid(np.arange(lat.size), np.arange(lon.size), indexing="ij")
    f = np.asarray(values, dtype=np.uint8)[(i + j) % len(values)]  # a checkerboard of the values
    f[sea] = 255
    return xr.DataArray(f, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})


@pytest.fixture(scope="module")
def europe():
    """0.5° cells over 40–52°N, 4°W–14°E (24 × 36) with a sea corner in the south-west."""
    lat, lon = _grid(40, 52, -4, 14)
    sea = (lat[:, None] < 43) & (lon[None, :] < 1)
    return lat, lon, sea


@pytest.fixture(scope="module")
def world():
    """The global 0.5° grid (360 × 720) with sea bands."""
    lat, lon = _grid(-90, 90, -180, 180)
    sea = (np.sin(np.radians(2 * lon))[None, :] + np.cos(np.radians(3 * lat))[:, None]) < -0.3
    return lat, lon, sea


def _structure(src) -> dict[str, str]:
    return src.tags(ns="IMAGE_STRUCTURE")


def _check_georeferencing(src, lat, lon, res=0.5):
    t = src.transform
    assert t.e < 0 and t.b == 0 and t.d == 0  # north-up
    assert t.a == res and t.e == -res  # pixel size = resolution
    assert t.c == lon[0] - res / 2  # west edge
    assert t.f == lat[-1] + res / 2  # north edge
    assert (src.height, src.width) == (lat.size, lon.size)
    assert src.crs.to_epsg() == 4326


def test_soil_moisture_cog_small(tmp_path, europe):
    lat, lon, sea = europe
    sm = _sm(lat, lon, sea)
    path = write_cog(sm, tmp_path / "sm_20240503.tif", "soil_moisture", TAGS,
                     "volumetric soil water, layer 1 (0-7 cm)")
    assert path == tmp_path / "sm_20240503.tif"
    assert validate_cog(path) == []
    with rasterio.open(path) as src:
        assert src.driver == "GTiff"
        ims = _structure(src)
        assert ims["LAYOUT"] == "COG"
        assert src.compression == Compression.deflate and ims["COMPRESSION"] == "DEFLATE"
        assert ims["PREDICTOR"] == "3"
        assert src.block_shapes == [(256, 256)]
        _check_georeferencing(src, lat, lon)
        assert src.dtypes == ("float32",)
        assert math.isnan(src.nodata)
        data = src.read(1)
        np.testing.assert_array_equal(data, sm.values[::-1, :])  # exact, NaN where sea
        assert np.isnan(data[-1, 0]) and not np.isnan(data[0, 0])  # sea is in the south-west
        assert src.descriptions == ("volumetric soil water, layer 1 (0-7 cm)",)
        tags = src.tags()
        for key, value in TAGS.items():
            assert tags[key] == value
        assert tags["AREA_OR_POINT"] == "Area"
        assert src.tags(1)["units"] == "m3 m-3"
        assert src.read_masks(1)[-1, 0] == 0 and src.read_masks(1)[0, 0] == 255
        # AUTO makes no overview for a raster within one tile; the writer forces one level
        assert src.overviews(1) == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sm_20240503.qml", "sm_20240503.tif"]


def test_soil_moisture_cog_global_overviews_average(tmp_path, world):
    lat, lon, sea = world
    sm = _sm(lat, lon, sea)
    path = write_cog(sm, tmp_path / "global.tif", "soil_moisture", TAGS, "soil moisture")
    assert validate_cog(path) == []
    with rasterio.open(path) as src:
        assert _structure(src)["LAYOUT"] == "COG"
        assert src.overviews(1) == [2, 4]  # GDAL's AUTO: halve until it fits in a 256 tile
        _check_georeferencing(src, lat, lon)
        np.testing.assert_array_equal(src.read(1), sm.values[::-1, :])
    with rasterio.open(path, overview_level=0) as ovr:
        assert (ovr.height, ovr.width) == (180, 360)
        got = ovr.read(1)
    # average resampling over 2 × 2 blocks, sea (NaN) skipped
    blocks = sm.values[::-1, :].reshape(180, 2, 360, 2).astype(np.float64)
    with np.errstate(invalid="ignore"), pytest.warns(RuntimeWarning):
        expected = np.nanmean(blocks, axis=(1, 3))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    coast = np.isfinite(blocks).any(axis=(1, 3)) & ~np.isfinite(blocks).all(axis=(1, 3))
    assert coast.any() and np.isfinite(got[coast]).all()


def test_ascending_or_descending_input_give_the_same_raster(tmp_path, europe):
    lat, lon, sea = europe
    sm = _sm(lat, lon, sea)
    a = write_cog(sm, tmp_path / "a.tif", "soil_moisture", TAGS, "sm")
    b = write_cog(sm.isel(lat=slice(None, None, -1)), tmp_path / "b.tif", "soil_moisture", TAGS,
                  "sm")
    with rasterio.open(a) as ra, rasterio.open(b) as rb:
        assert ra.transform == rb.transform
        np.testing.assert_array_equal(ra.read(1), rb.read(1))


def test_tenth_degree_grid_has_an_exact_transform(tmp_path):
    lat, lon = _grid(40, 42, -4, 14, res=0.1)
    lat, lon = np.round(lat, 2), np.round(lon, 2)  # as read from a file: 40.05, 40.15, …
    sm = _sm(lat, lon, np.zeros((lat.size, lon.size), bool))
    path = write_cog(sm, tmp_path / "tenth.tif", "soil_moisture", TAGS, "sm")
    with rasterio.open(path) as src:
        assert tuple(src.transform)[:6] == (0.1, 0.0, -4.0, 0.0, -0.1, 42.0)


@pytest.mark.parametrize("kind, values", [("consistency_flag", [0, 1, 2]),
                                          ("verification_flag", [0, 2, 3])])
def test_flag_cogs(tmp_path, europe, world, kind, values):
    for name, (lat, lon, sea) in {"europe": europe, "world": world}.items():
        flags = _flags(lat, lon, sea, values)
        path = write_cog(flags, tmp_path / f"{kind}_{name}.tif", kind, {"model": "demo-phys"},
                         kind.replace("_", " "))
        assert validate_cog(path) == []
        with rasterio.open(path) as src:
            assert _structure(src)["LAYOUT"] == "COG"
            assert _structure(src)["PREDICTOR"] == "2"
            assert src.compression == Compression.deflate
            assert src.dtypes == ("uint8",) and src.nodata == 255
            _check_georeferencing(src, lat, lon)
            np.testing.assert_array_equal(src.read(1), flags.values[::-1, :])
            assert src.tags(1)["flag_values"] == " ".join(map(str, FLAG_MEANINGS[kind]))
            assert src.tags(1)["flag_meanings"].split()[:3] == [
                "consistent", "inconsistent", "no_water_balance_signal"]
            assert src.tags()["model"] == "demo-phys"
            levels = src.overviews(1)
            assert levels == ([2] if name == "europe" else [2, 4])
        for level in range(len(levels)):
            with rasterio.open(path, overview_level=level) as ovr:
                found = set(np.unique(ovr.read(1)).tolist())
            # nearest, not average: a checkerboard of 0 and 2 must not turn into 1
            assert found <= set(values) | {255}, (name, level, found)


def test_qml_next_to_raster(tmp_path, europe):
    lat, lon, sea = europe
    sm_path = write_cog(_sm(lat, lon, sea), tmp_path / "sm.tif", "soil_moisture", TAGS, "sm")
    fl_path = write_cog(_flags(lat, lon, sea, [0, 1, 2, 3]), tmp_path / "flag.tif",
                        "verification_flag", TAGS, "flag")
    sm_qml, fl_qml = sm_path.with_suffix(".qml"), fl_path.with_suffix(".qml")
    assert sm_qml.read_bytes() == (TEMPLATES / "soil_moisture.qml").read_bytes()
    assert fl_qml.read_bytes() == (TEMPLATES / "verification_flag.qml").read_bytes()
    renderer = ET.parse(sm_qml).getroot().find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor"
    renderer = ET.parse(fl_qml).getroot().find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted"


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def test_soil_moisture_template():
    root = ET.parse(TEMPLATES / "soil_moisture.qml").getroot()
    assert root.tag == "qgis" and root.get("version").startswith("3.28")
    assert root.get("styleCategories") == "AllStyleCategories"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "singlebandpseudocolor" and renderer.get("band") == "1"
    assert float(renderer.get("classificationMin")) == 0
    assert float(renderer.get("classificationMax")) == 0.5
    assert renderer.find("minMaxOrigin/limits").text == "None"  # QGIS must not restretch
    shader = renderer.find("rastershader/colorrampshader")
    assert shader.get("colorRampType") == "INTERPOLATED"
    assert float(shader.get("minimumValue")) == 0 and float(shader.get("maximumValue")) == 0.5
    items = shader.findall("item")
    assert len(items) >= 4 and all(i.get("label") for i in items)
    values = [float(i.get("value")) for i in items]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 0.5
    dry, wet = _rgb(items[0].get("color")), _rgb(items[-1].get("color"))
    assert dry[0] > dry[2]  # brown: more red than blue
    assert wet[2] > wet[0] and wet[2] > wet[1]  # blue
    # the gradient (used by QGIS's style dialog) has the same stops as the items (used to draw)
    ramp = {o.get("name"): o.get("value") for o in shader.iter("Option") if o.get("name")}
    gradient = [(0.0, ramp["color1"])] + [
        (float(pos), col) for pos, col in (s.split(";") for s in ramp["stops"].split(":"))
    ] + [(1.0, ramp["color2"])]
    assert [(p * 0.5, tuple(int(x) for x in c.split(",")[:3])) for p, c in gradient] == [
        (pytest.approx(v), _rgb(i.get("color"))) for v, i in zip(values, items)]
    # the quicklook uses the same ramp
    assert sm_colour_stops() == (0.0, 0.5, [(v, i.get("color")) for v, i in zip(values, items)])


@pytest.mark.parametrize("name, expected", [
    ("consistency_flag", {0: "consistent", 1: "inconsistent", 2: "no water-balance signal"}),
    ("verification_flag", {0: "consistent", 1: "inconsistent", 2: "no water-balance signal",
                           3: "not yet verifiable"}),
])
def test_flag_templates(name, expected):
    root = ET.parse(TEMPLATES / f"{name}.qml").getroot()
    assert root.tag == "qgis" and root.get("version").startswith("3.28")
    assert root.get("styleCategories") == "AllStyleCategories"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    assert renderer.get("nodataColor") == ""  # no data drawn transparent
    entries = {int(e.get("value")): e for e in renderer.findall("colorPalette/paletteEntry")}
    assert {v: entries[v].get("label") for v in expected} == expected
    assert set(entries) == set(expected) | {255}
    assert entries[255].get("alpha") == "0"  # sea transparent even if no-data is switched off
    colours = {v: _rgb(entries[v].get("color")) for v in expected}
    r, g, b = colours[0]
    assert g > r and g > b  # green
    r, g, b = colours[1]
    assert r > 150 and g < 80 and b < 80  # red
    r, g, b = colours[2]
    assert r == g == b and r > 150  # light grey
    if 3 in colours:
        r, g, b = colours[3]
        assert r > 200 and 120 < g < 220 and b < 80  # amber
    assert len({entries[v].get("color") for v in expected}) == len(expected)
    assert [(c.value, c.label) for c in flag_classes(name)] == sorted(expected.items())


def test_quicklook_png(tmp_path, europe):
    lat, lon, sea = europe
    sm = _sm(lat, lon, sea)
    flags = _flags(lat, lon, sea, [0, 1, 2, 3])
    out = quicklook(sm, tmp_path / "ql" / "sm.png", "Soil moisture 2024-05-03 (+2 d)", flags)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 800 and height > 250 and len(data) > 20_000
    from matplotlib.image import imread

    img = (imread(out)[..., :3] * 255).round().astype(int)
    colours = {tuple(c) for c in img.reshape(-1, 3)[::7]}
    assert _rgb(SEA_COLOUR) in colours  # sea drawn in the neutral colour
    assert _rgb("#1a9641") in colours and _rgb("#d7191c") in colours  # flag panel
    one = quicklook(sm, tmp_path / "sm_only.png", "sm")
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", one.read_bytes()[16:24])[0] < width
    assert sorted(p.name for p in (tmp_path / "ql").iterdir()) == ["sm.png"]


def test_quicklook_reduces_a_fine_grid_by_blocks_for_display(tmp_path):
    from smcast.writers.quicklook import coarsen_flags, coarsen_mean, display_factor

    assert display_factor((360, 720)) == 1 and display_factor((720, 1024)) == 1
    assert display_factor((1800, 3600)) == 4 and display_factor((1025, 10)) == 2
    v = np.array([[0.1, np.nan, 0.3], [0.3, np.nan, np.nan], [np.nan, np.nan, 0.2]], np.float32)
    np.testing.assert_allclose(coarsen_mean(v, 2), [[0.2, 0.3], [np.nan, 0.2]], rtol=1e-6)
    f = np.array([[0, 1, 255], [1, 1, 255], [255, 255, 3]], np.uint8)
    np.testing.assert_array_equal(coarsen_flags(f, 2), [[1, 255], [255, 3]])
    np.testing.assert_array_equal(coarsen_flags(np.array([[0, 1], [255, 255]], np.uint8), 2),
                                  [[0]])  # a tie takes the lower value
    # a global 0.1° layer (3600 x 1800) draws like a 0.5° one, with the flag panel
    lat, lon = _grid(-90, 90, -180, 180, res=0.1)
    lat, lon = np.round(lat, 2), np.round(lon, 2)
    sea = (np.sin(np.radians(2 * lon))[None, :] + np.cos(np.radians(3 * lat))[:, None]) < -0.3
    out = quicklook(_sm(lat, lon, sea), tmp_path / "fine.png", "global 0.1°",
                    _flags(lat, lon, sea, [0, 1]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _fail_midway(monkeypatch):
    """Make ``rio.to_raster`` write part of a file, then fail."""
    import rioxarray.raster_array

    def broken(self, raster_path, *args, **kwargs):
        Path(raster_path).write_bytes(b"II*\x00partial")
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(rioxarray.raster_array.RasterArray, "to_raster", broken)


def test_failed_write_leaves_nothing(tmp_path, europe, monkeypatch):
    lat, lon, sea = europe
    _fail_midway(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated"):
        write_cog(_sm(lat, lon, sea), tmp_path / "sm.tif", "soil_moisture", TAGS, "sm")
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_existing_product(tmp_path, europe, monkeypatch):
    lat, lon, sea = europe
    path = write_cog(_sm(lat, lon, sea), tmp_path / "sm.tif", "soil_moisture", TAGS, "sm")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    _fail_midway(monkeypatch)
    with pytest.raises(RuntimeError, match="simulated"):
        write_cog(_sm(lat, lon, sea) + 0.01, path, "soil_moisture", TAGS, "new")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_failed_quicklook_leaves_nothing(tmp_path, europe, monkeypatch):
    from matplotlib.figure import Figure

    lat, lon, sea = europe

    def broken(self, fname, *args, **kwargs):
        Path(fname).write_bytes(b"\x89PNG partial")
        raise OSError("simulated")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="simulated"):
        quicklook(_sm(lat, lon, sea), tmp_path / "sm.png", "sm")
    assert list(tmp_path.iterdir()) == []


def test_missing_template(tmp_path, europe, monkeypatch):
    lat, lon, sea = europe
    monkeypatch.setattr(geotiff, "templates_dir", lambda: tmp_path / "no-templates")
    with pytest.raises(FileNotFoundError, match="soil_moisture.qml"):
        write_cog(_sm(lat, lon, sea), tmp_path / "sm.tif", "soil_moisture", TAGS, "sm")
    assert not (tmp_path / "sm.tif").exists()


def test_bad_inputs(tmp_path, europe):
    lat, lon, sea = europe
    sm = _sm(lat, lon, sea)
    with pytest.raises(ValueError, match="kind"):
        write_cog(sm, tmp_path / "x.tif", "soil_temperature", TAGS, "x")
    with pytest.raises(ValueError, match="values"):
        write_cog(_flags(lat, lon, sea, [0, 3]), tmp_path / "x.tif", "consistency_flag", TAGS, "x")
    with pytest.raises(ValueError, match="integer"):
        write_cog(sm, tmp_path / "x.tif", "consistency_flag", TAGS, "x")
    with pytest.raises(ValueError, match="-180"):
        write_cog(sm.assign_coords(lon=sm.lon + 180), tmp_path / "x.tif", "soil_moisture", TAGS,
                  "x")
    with pytest.raises(ValueError, match="regular"):
        write_cog(sm.isel(lon=[0, 1, 3]), tmp_path / "x.tif", "soil_moisture", TAGS, "x")
    with pytest.raises(ValueError, match="2-D"):
        write_cog(sm.expand_dims(time=1), tmp_path / "x.tif", "soil_moisture", TAGS, "x")
    assert not any(tmp_path.iterdir())
    assert os.listdir(tmp_path) == []
