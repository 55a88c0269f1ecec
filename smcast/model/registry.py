"""The model registry: packages under ``<data_dir>/models/<name>/`` and a ``CURRENT`` file
naming the model forecasts use. The small demo model shipped inside smcast
(``smcast/data/models/``) is listed too, and serves as current for the demo source until a model
of your own is promoted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from smcast.config import Config
from smcast.model.package import ModelError, read_manifest

BUNDLED_DIR = Path(__file__).resolve().parent.parent / "data" / "models"
BUNDLED_DEMO = "demo-phys"
CURRENT = "CURRENT"


@dataclass
class ModelEntry:
    """One package: its name, folder, manifest, and whether it is current / bundled."""

    name: str
    path: Path
    manifest: dict[str, Any]
    current: bool = False
    bundled: bool = False


def models_dir(cfg: Config) -> Path:
    """``<data_dir>/models``."""
    return cfg.data_dir / "models"


def current_name(cfg: Config) -> str | None:
    """The promoted model's name; the bundled demo model for the demo source; else None."""
    pointer = models_dir(cfg) / CURRENT
    if pointer.exists():
        return pointer.read_text().strip() or None
    if cfg.source.name == "demo" and (BUNDLED_DIR / BUNDLED_DEMO / "manifest.json").exists():
        return BUNDLED_DEMO
    return None


def model_path(cfg: Config, name: str) -> Path:
    """Folder of a model by name (own models first, then bundled); ModelError if unknown."""
    for root in (models_dir(cfg), BUNDLED_DIR):
        if (root / name / "manifest.json").exists():
            return root / name
    known = ", ".join(e.name for e in list_models(cfg)) or "none"
    raise ModelError(f"no model named {name!r}; known models: {known} (train one with "
                     "`smcast retrain`)")


def list_models(cfg: Config) -> list[ModelEntry]:
    """Every readable package, own models first (newest last), then the bundled ones. Hidden
    folders are not packages: ``save_package`` stages into them, and a run killed before its
    rename leaves one behind."""
    current = current_name(cfg)
    out = []
    for root, bundled in ((models_dir(cfg), False), (BUNDLED_DIR, True)):
        if not root.exists():
            continue
        for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")
                             and (p / "manifest.json").exists()):
            try:
                manifest = read_manifest(folder)
            except ModelError:
                continue
            out.append(ModelEntry(folder.name, folder, manifest, folder.name == current,
                                  bundled))
    return out


def new_name(variant: str) -> str:
    """``<variant>-<UTC timestamp>``, e.g. ``phys-20261123T220102``."""
    return f"{variant}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}"


def set_current(cfg: Config, name: str) -> None:
    """Make ``name`` the current model (atomic replace of the pointer file)."""
    model_path(cfg, name)
    folder = models_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CURRENT}.{os.getpid()}"
    tmp.write_text(name + "\n")
    os.replace(tmp, folder / CURRENT)
