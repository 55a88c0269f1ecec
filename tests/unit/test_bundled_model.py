"""The demo model shipped inside smcast still fits the demo source: variables, grid, land mask."""

from smcast.config import load_config
from smcast.grid import Grid, mask_hash
from smcast.ingest.landmask import globe_land_fraction, land_mask
from smcast.model.package import load_package
from smcast.model.registry import BUNDLED_DEMO, BUNDLED_DIR, current_name, list_models
from smcast.sources.demo_world import STATIC_VARIABLES
from smcast.variables import VARIABLES


def test_bundled_demo_model_matches_the_demo_source(demo_cache, tmp_path):
    model = load_package(BUNDLED_DIR / BUNDLED_DEMO)  # verifies the weights' checksum
    cfg = load_config(None, [f"data_dir={tmp_path}"], environ={})  # the defaults: demo, 0.5°
    grid = Grid.from_config(cfg.grid)
    assert model.grid == grid
    mask = land_mask(globe_land_fraction(grid, demo_cache), grid, cfg.grid)
    assert model.manifest["land_mask_hash"] == mask_hash(mask)
    assert set(model.dynamic_inputs) <= set(VARIABLES)
    assert set(model.static_inputs) <= set(STATIC_VARIABLES)
    assert tuple(model.leads) == tuple(cfg.model.leads)
    assert model.variant.name == "phys"
    # with no model of one's own, the demo source uses it
    assert current_name(cfg) == BUNDLED_DEMO
    assert [e.name for e in list_models(cfg) if e.bundled] == [BUNDLED_DEMO]
