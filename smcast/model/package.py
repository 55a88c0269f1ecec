"""Model packages: one directory per trained model, safe to load.

Layout::

    <directory>/
        manifest.json         what the model is: variant, inputs, leads, grid, mask hash,
                              periods, metrics, versions, the weights' sha256, …
        weights.safetensors   network state_dict tensors (``network.<name>``), the scaler
                              arrays (``scalers.<name>``) and the land mask (``land_mask``, uint8)

Weights are stored with safetensors, a format that holds only tensors and cannot execute code on
load. Pickle-based files (``torch.save``'s ``.pt``/``.pth``, ``.pkl``, …) are **never** loaded:
a package containing one is refused without reading it, and so is a weights file that is not a
safetensors file or whose sha256 differs from the manifest's.

Errors: ``ModelError`` (exit code 6, after the codes 0–5 of ``smcast.errors``): the package is
missing, damaged, unsafe, or does not fit the daily store it is used with. Its message names the
problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import uuid
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import smcast
from smcast.errors import ConfigError, SmcastError
from smcast.grid import Grid, mask_hash
from smcast.model.network import SoilMoistureLSTM
from smcast.model.scaling import Scalers
from smcast.model.variants import Variant, get_variant
from smcast.model.wrapper import TARGET, SoilMoistureModel

FORMAT = "smcast-model"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
WEIGHTS_FILE = "weights.safetensors"
#: File endings of pickle-based formats; a package containing any of them is refused.
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin", ".joblib")
#: Manifest keys written by ``save_package``; ``info`` may not override them.
CORE_KEYS = ("format", "format_version", "variant", "weights", "deep", "snow_sign",
             "dynamic_inputs", "static_inputs", "seq_len", "leads", "network", "grid",
             "land_mask_hash", "land_cells", "target", "versions", "created", "weights_sha256")
_MAX_HEADER = 100 * 2**20


class ModelError(SmcastError):
    """A model package is missing, damaged, unsafe, or incompatible with the store (exit 6)."""

    exit_code = 6


# -- saving -------------------------------------------------------------------------------------
def save_package(model: SoilMoistureModel, directory: str | Path,
                 info: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a new package at ``directory`` and return its path.

    ``info`` (periods, metrics, seed, …; JSON-serialisable, numpy scalars, dates and paths are
    converted) is merged into the manifest. The package is written into a temporary sibling
    directory and renamed, so it exists whole or not at all. An existing ``directory`` is never
    overwritten (ModelError).
    """
    directory = Path(directory)
    info = dict(info or {})
    clash = sorted(set(info) & set(CORE_KEYS))
    if clash:
        raise ValueError(f"info may not set the manifest's own keys {clash}")
    _refuse_existing(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        _write_weights(model, tmp / WEIGHTS_FILE)
        manifest = {**_manifest(model), **info, "versions": _versions(),
                    "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "weights_sha256": _sha256(tmp / WEIGHTS_FILE)}
        _write_json(tmp / MANIFEST_FILE, manifest)
        _refuse_existing(directory)
        os.rename(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _refuse_existing(directory: Path) -> None:
    if directory.exists():
        raise ModelError(f"{directory} already exists; a model package is never overwritten. "
                         "Choose a new directory or remove the old package first.")


def _write_weights(model: SoilMoistureModel, path: Path) -> None:
    tensors = {f"network.{k}": v.detach().cpu().contiguous().clone()
               for k, v in model.network.state_dict().items()}
    tensors.update({f"scalers.{k}": torch.from_numpy(v)
                    for k, v in model.scalers.to_arrays().items()})
    tensors["land_mask"] = torch.from_numpy(model.land_mask.astype(np.uint8))
    save_file(tensors, str(path), metadata={"format": FORMAT})
    _fsync(path)


def _manifest(model: SoilMoistureModel) -> dict[str, Any]:
    v = model.variant
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "variant": v.name,
            "weights": list(v.weights), "deep": v.deep, "snow_sign": v.snow_sign,
            "dynamic_inputs": list(model.dynamic_inputs),
            "static_inputs": list(model.static_inputs), "seq_len": model.seq_len,
            "leads": list(model.leads),
            "network": {"hidden_size": model.hidden_size, "num_layers": model.num_layers,
                        "dropout": model.dropout, "n_features": model.n_features},
            "grid": model.grid.attrs(), "land_mask_hash": mask_hash(model.land_mask),
            "land_cells": model.n_cells, "target": TARGET}


def _versions() -> dict[str, str]:
    return {"smcast": smcast.__version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    try:
        text = json.dumps(data, indent=2, ensure_ascii=False, default=_json_default)
    except TypeError as exc:
        raise ValueError(f"model package info is not JSON-serialisable: {exc}") from None
    path.write_text(text + "\n", encoding="utf-8")
    _fsync(path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (date, datetime)):
        return obj.isoformat()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} {obj!r}")


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


# -- loading ------------------------------------------------------------------------------------
def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The package's manifest, checked for format and version (no weights are read)."""
    directory = Path(directory)
    path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise ModelError(f"no model package at {directory} (not a directory); train one with "
                         "`smcast train` or pass the package directory")
    if not path.is_file():
        raise ModelError(f"{directory} is not a model package: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); the package is damaged: restore "
                         "it or retrain") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ModelError(f"{path} is not an smcast model manifest (format "
                         f"{manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                         f"expected {FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{directory} has model format version "
                         f"{manifest.get('format_version')!r}; this smcast reads version "
                         f"{FORMAT_VERSION}. Use the smcast version that wrote it or retrain.")
    missing = [k for k in CORE_KEYS if k not in manifest]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)}; the package is damaged: restore "
                         "it or retrain")
    return manifest


def load_package(directory: str | Path, device: torch.device | str = "cpu"
                 ) -> SoilMoistureModel:
    """Load a package written by ``save_package`` (network in eval mode, on ``device``).

    Refuses (ModelError) a missing or malformed manifest, a package containing a pickle-based
    file, a weights file whose sha256 differs from the manifest, or one that is not safetensors.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    _refuse_pickles(directory)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} lacks {WEIGHTS_FILE}; the package is incomplete: "
                         "restore it or retrain")
    if _sha256(weights) != manifest["weights_sha256"]:
        raise ModelError(f"weights checksum mismatch: the package at {directory} is damaged or "
                         "was modified; restore it or retrain")
    _check_safetensors(weights)
    try:
        tensors = load_file(str(weights), device="cpu")
    except SafetensorError as exc:
        raise ModelError(f"{weights} cannot be read ({exc}); restore the package or retrain"
                         ) from None
    try:
        model = _build(manifest, tensors)
    except (ConfigError, KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ModelError(f"the package at {directory} is inconsistent ({exc}); restore it or "
                         "retrain") from None
    model.network.to(device).eval()
    return model


def _refuse_pickles(directory: Path) -> None:
    """Refuse any pickle-based file in the package, without opening it."""
    found = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*")
                   if p.suffix.lower() in PICKLE_SUFFIXES)
    if found:
        raise ModelError(f"the package at {directory} contains pickle-based file(s) "
                         f"{', '.join(found)}; smcast never loads pickles (they can run code). "
                         f"Use a package written by smcast ({WEIGHTS_FILE} + {MANIFEST_FILE}).")


def _check_safetensors(path: Path) -> None:
    """Check the safetensors framing (8-byte little-endian header length, JSON header)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(9)
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else -1
    if 2 <= n <= min(size - 8, _MAX_HEADER) and head[8:9] == b"{":
        return  # the framing holds (a header length may well start with byte 0x80)
    kind = ("a pickle" if head[:1] == b"\x80" else
            "a zip / torch.save archive" if head[:4] == b"PK\x03\x04" else None)
    raise ModelError(f"{path} is not a safetensors file"
                     f"{f' (it looks like {kind})' if kind else ''}; smcast loads weights only "
                     "from safetensors. Restore the package or retrain.")


def _build(manifest: dict[str, Any], tensors: dict[str, torch.Tensor]) -> SoilMoistureModel:
    variant = _variant(manifest)
    mask = tensors["land_mask"].numpy().astype(bool)
    if mask_hash(mask) != manifest["land_mask_hash"] or int(mask.sum()) != manifest["land_cells"]:
        raise ValueError("the stored land mask does not match the manifest's hash")
    scalers = Scalers.from_arrays({k.removeprefix("scalers."): v.numpy()
                                   for k, v in tensors.items() if k.startswith("scalers.")})
    net_cfg = manifest["network"]
    leads = [int(k) for k in manifest["leads"]]
    network = SoilMoistureLSTM(int(net_cfg["n_features"]), len(leads),
                               int(net_cfg["hidden_size"]), int(net_cfg["num_layers"]),
                               float(net_cfg["dropout"]))
    network.load_state_dict({k.removeprefix("network."): v for k, v in tensors.items()
                             if k.startswith("network.")}, strict=True)
    return SoilMoistureModel(
        variant, scalers, mask, Grid.from_attrs(manifest["grid"]),
        dynamic_inputs=manifest["dynamic_inputs"], static_inputs=manifest["static_inputs"],
        seq_len=int(manifest["seq_len"]), leads=leads, hidden_size=int(net_cfg["hidden_size"]),
        num_layers=int(net_cfg["num_layers"]), dropout=float(net_cfg["dropout"]),
        network=network, manifest=manifest)


def _variant(manifest: dict[str, Any]) -> Variant:
    variant = get_variant(manifest["variant"], manifest["weights"], manifest["snow_sign"])
    if variant.deep != bool(manifest["deep"]):
        raise ValueError(f"variant {variant.name!r} has deep={variant.deep}, the manifest says "
                         f"{manifest['deep']}")
    return variant


# -- compatibility ------------------------------------------------------------------------------
def check_compatible(model: SoilMoistureModel, store: Any,
                     leads: Sequence[int] | None = None) -> None:
    """Check that ``model`` can forecast from the daily ``store`` (a ``DailyStore``).

    Checks every input variable exists in the store, the grids are equal, the land-mask hashes
    are equal, and (optionally) that ``leads`` are among the model's. All mismatches are reported
    in one ModelError naming expected vs actual and the fix.
    """
    problems = _variable_problems(model, store) + _grid_problems(model, store)
    if leads is not None:
        extra = sorted(set(int(k) for k in leads) - set(model.leads))
        if extra:
            problems.append(f"leads {extra} requested, but the model forecasts only leads "
                            f"{list(model.leads)}: request those or train a model with these "
                            "leads")
    if problems:
        raise ModelError(f"model {model.variant.name} does not fit the store at {store.path}:\n- "
                         + "\n- ".join(problems))


def _variable_problems(model: SoilMoistureModel, store: Any) -> list[str]:
    import zarr

    available = set(zarr.open_group(str(store.path), mode="r").array_keys())
    missing = [n for n in (*model.dynamic_inputs, *model.static_inputs) if n not in available]
    if not missing:
        return []
    return [f"missing input variable(s) {', '.join(missing)} (the model needs "
            f"{', '.join((*model.dynamic_inputs, *model.static_inputs))}; the store has "
            f"{', '.join(sorted(available))}): use the store the model was trained on, or "
            "retrain on this store"]


def _grid_problems(model: SoilMoistureModel, store: Any) -> list[str]:
    problems = []
    if model.grid != store.grid:
        problems.append(f"grid mismatch: the model expects the {model.grid.describe()}, the "
                        f"store has the {store.grid.describe()}: use the matching store or "
                        "retrain on this store")
    expected, actual = mask_hash(model.land_mask), store.attrs.get("land_mask_hash")
    if expected != actual:
        problems.append(f"land mask hash mismatch: the model expects {expected}, the store has "
                        f"{actual}: use the matching store or retrain on this store")
    return problems
