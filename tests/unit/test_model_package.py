"""Model packages: safe save/load, refusal of damaged or unsafe packages, store compatibility."""

from __future__ import annotations

import json
import pickle
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from smcast.grid import Grid
from smcast.model import (DEFAULT_STATIC_INPUTS, ModelError, check_compatible, get_variant,
                          load_package, read_manifest, save_package)
from smcast.model.package import _sha256
from smcast.store import DailyStore
from tests.unit.test_model import GRID, MASK, inputs, tiny_model

INFO = {"train_period": [date(2018, 1, 1), date(2019, 6, 30)], "seed": np.int64(42),
        "metrics": {"kge": np.float32(0.61)}}


@pytest.fixture
def package(tmp_path) -> Path:
    model = tiny_model(variant=get_variant("phys", snow_sign="mass"), leads=(1, 2))
    return save_package(model, tmp_path / "pkg", INFO)


class Payload:
    """A malicious pickle: unpickling it creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_bytes(marker: Path) -> bytes:
    return pickle.dumps(Payload(marker))


# -- save / load ----------------------------------------------------------------------------
def test_round_trip_gives_identical_predictions(tmp_path):
    model = tiny_model(leads=(1, 2))
    path = save_package(model, tmp_path / "m", INFO)
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    loaded = load_package(path)
    dyn, stat, cells = inputs(6)
    np.testing.assert_array_equal(loaded.predict(dyn, stat, cells, device="cpu"),
                                  model.predict(dyn, stat, cells, device="cpu"))
    assert not loaded.network.training
    assert loaded.leads == (1, 2) and loaded.grid == GRID
    np.testing.assert_array_equal(loaded.land_mask, MASK)
    assert loaded.dynamic_inputs == model.dynamic_inputs
    assert loaded.static_inputs == model.static_inputs


def test_manifest_contents(package):
    m = read_manifest(package)
    assert m["format"] == "smcast-model" and m["format_version"] == 1
    assert (m["variant"], m["weights"], m["deep"], m["snow_sign"]) == ("phys", [0.1, 0.9],
                                                                       True, "mass")
    assert m["seq_len"] == 7 and m["leads"] == [1, 2] and m["target"] == "swvl1"
    assert m["network"] == {"hidden_size": 8, "num_layers": 1, "dropout": 0.15,
                            "n_features": 14}
    assert Grid.from_attrs(m["grid"]) == GRID and m["land_cells"] == 3
    assert m["train_period"] == ["2018-01-01", "2019-06-30"] and m["seed"] == 42
    assert m["metrics"]["kge"] == pytest.approx(0.61)
    assert set(m["versions"]) == {"smcast", "torch", "numpy", "python"}
    assert m["created"].endswith("+00:00")
    assert m["weights_sha256"] == _sha256(package / "weights.safetensors")
    loaded = load_package(package)
    assert loaded.variant.snow_sign == "mass" and loaded.manifest["seed"] == 42


def test_existing_directory_is_not_overwritten(package):
    before = (package / "weights.safetensors").read_bytes()
    with pytest.raises(ModelError, match=f"{package} already exists"):
        save_package(tiny_model(), package, {})
    assert (package / "weights.safetensors").read_bytes() == before


def test_info_cannot_override_core_keys(tmp_path):
    with pytest.raises(ValueError, match="variant"):
        save_package(tiny_model(), tmp_path / "m", {"variant": "lstm"})
    assert not (tmp_path / "m").exists()


# -- refusals -------------------------------------------------------------------------------
def test_checksum_mismatch_refused(package):
    weights = package / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="weights checksum mismatch: the package at .*pkg is "
                                         "damaged or was modified; restore it or retrain"):
        load_package(package)


def test_payload_is_live(tmp_path):
    """Control: the malicious pickle really does create its file when unpickled."""
    marker = tmp_path / "control"
    pickle.loads(evil_bytes(marker))
    assert marker.exists()


@pytest.mark.parametrize("name", ["model.pt", "state.pth", "scalers.pkl"])
def test_package_with_pickle_refused_without_unpickling(package, tmp_path, name):
    marker = tmp_path / "pwned"
    (package / name).write_bytes(evil_bytes(marker))
    with pytest.raises(ModelError, match=f"pickle-based file.*{name}"):
        load_package(package)
    assert not marker.exists()


def test_pickle_posing_as_safetensors_refused(package, tmp_path):
    marker = tmp_path / "pwned"
    weights = package / "weights.safetensors"
    weights.write_bytes(evil_bytes(marker))
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["weights_sha256"] = _sha256(weights)  # checksum made to match
    (package / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not a safetensors file .*pickle"):
        load_package(package)
    assert not marker.exists()


def test_missing_or_wrong_manifest_refused(package, tmp_path):
    with pytest.raises(ModelError, match="not a directory"):
        load_package(tmp_path / "nowhere")
    manifest = package / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_package(package)
    manifest.write_text(json.dumps({**json.loads(good), "format": "something-else"}))
    with pytest.raises(ModelError, match="not an smcast model manifest"):
        read_manifest(package)
    manifest.write_text(json.dumps({**json.loads(good), "format_version": 99}))
    with pytest.raises(ModelError, match="format version 99"):
        load_package(package)
    d = json.loads(good)
    del d["leads"]
    manifest.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="lacks leads"):
        load_package(package)
    manifest.unlink()
    with pytest.raises(ModelError, match="manifest.json is missing"):
        load_package(package)


def test_manifest_inconsistent_with_weights_refused(package):
    manifest = package / "manifest.json"
    d = json.loads(manifest.read_text())
    d["network"]["hidden_size"] = 16
    manifest.write_text(json.dumps(d))
    with pytest.raises(ModelError, match="inconsistent"):
        load_package(package)


# -- compatibility with a store -------------------------------------------------------------
def make_store(path: Path, grid: Grid = GRID, mask: np.ndarray = MASK,
               statics: bool = True) -> DailyStore:
    ds = None
    if statics:
        ds = xr.Dataset({n: (("lat", "lon"), np.ones(grid.shape, np.float32))
                         for n in DEFAULT_STATIC_INPUTS})
    return DailyStore.create(path, grid, mask.astype(float), mask, ds, date(2024, 1, 1), "test")


def test_compatible_store_passes(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    check_compatible(tiny_model(leads=(1, 2)), store, leads=[2])


def test_grid_mismatch_refused(tmp_path):
    other = Grid(0.5, 40.0, 41.0, 11.0, 12.0)
    store = make_store(tmp_path / "s.zarr", grid=other)
    with pytest.raises(ModelError, match="grid mismatch") as err:
        check_compatible(tiny_model(), store)
    assert GRID.describe() in str(err.value) and other.describe() in str(err.value)
    assert "retrain" in str(err.value)


def test_mask_hash_mismatch_refused(tmp_path):
    mask = np.array([[True, True], [True, True]])
    store = make_store(tmp_path / "s.zarr", mask=mask)
    with pytest.raises(ModelError, match="land mask hash mismatch") as err:
        check_compatible(tiny_model(), store)
    assert store.attrs["land_mask_hash"] in str(err.value)


def test_missing_variable_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr", statics=False)
    with pytest.raises(ModelError, match="missing input variable.*elevation, clay"):
        check_compatible(tiny_model(), store)


def test_unavailable_leads_refused(tmp_path):
    store = make_store(tmp_path / "s.zarr")
    with pytest.raises(ModelError, match=r"leads \[3\] requested.*\[1\]"):
        check_compatible(tiny_model(), store, leads=[1, 3])


def test_safetensors_header_length_starting_with_0x80_accepted(tmp_path):
    """A header of 1152 (0x480) bytes begins with byte 0x80, like a pickle: the framing decides
    (a global 0.1° package hit this)."""
    from smcast.model.package import _check_safetensors

    header = json.dumps({"__metadata__": {"pad": ""}})
    header += " " * (0x480 - len(header))
    path = tmp_path / "weights.safetensors"
    path.write_bytes((0x480).to_bytes(8, "little") + header.encode())
    assert path.read_bytes()[:1] == b"\x80"
    _check_safetensors(path)  # no error
    path.write_bytes((0x480).to_bytes(8, "little") + b"[" + header[1:].encode())
    with pytest.raises(ModelError, match="not a safetensors file .*pickle"):
        _check_safetensors(path)
