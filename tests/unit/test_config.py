"""The typed config: defaults, files, environment, overrides, and clear errors."""

from pathlib import Path

import pytest

from smcast.config import Config, load_config
from smcast.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_defaults_run_the_offline_demo():
    cfg = load_config(None, environ={})
    assert cfg.source.name == "demo"
    assert cfg.grid.resolution == 0.5
    assert cfg.store_path == Path("smcast-data/store.zarr")


def test_unknown_key_names_path_and_valid_names(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("store:\n  pth: /x\n")
    with pytest.raises(ConfigError) as err:
        load_config(f, environ={})
    assert "unknown key 'store.pth'" in str(err.value)
    assert "path" in str(err.value) and "compression_level" in str(err.value)


def test_nested_unknown_key_lists_that_sections_names():
    with pytest.raises(ConfigError, match=r"source\.cds\.moed.*mode, split"):
        load_config(None, ["source.cds.moed=daily"], environ={})


def test_wrong_type_is_reported_with_its_path():
    with pytest.raises(ConfigError, match=r"grid\.resolution: .*'fine'"):
        load_config(None, ["grid.resolution=fine"], environ={})


def test_set_overrides_are_typed_and_win_over_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("grid:\n  resolution: 1.0\ningest:\n  batch_days: 4\n")
    cfg = load_config(f, ["grid.resolution=0.25", "grid.area=[50, 0, 40, 10]"], environ={})
    assert cfg.grid.resolution == 0.25 and cfg.ingest.batch_days == 4
    assert cfg.grid.area == (50.0, 0.0, 40.0, 10.0)


def test_environment_variable_names_the_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data_dir: /srv/smcast\n")
    assert load_config(None, environ={"SMCAST_CONFIG": str(f)}).data_dir == Path("/srv/smcast")


def test_missing_file_and_bad_yaml_and_bad_override(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["grid.resolution"], environ={})


def test_area_must_be_ordered():
    with pytest.raises(ConfigError, match="north, west, south, east"):
        load_config(None, ["grid.area=[40, 0, 50, 10]"], environ={})


def test_every_field_is_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and issubclass(ann, Config.__mro__[1]):
                yield from walk(ann)
            else:
                yield f"{model.__name__}.{name}", field.description
    missing = [name for name, doc in walk(Config) if not doc]
    assert not missing, f"undocumented config fields: {missing}"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    cfg = load_config(path, environ={})
    assert isinstance(cfg, Config)
