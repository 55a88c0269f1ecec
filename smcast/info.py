"""``smcast info``: what smcast sees — config, store coverage, models, GPU."""

from __future__ import annotations

from pathlib import Path

from smcast.config import Config
from smcast.errors import StoreError
from smcast.store import DailyStore


def store_report(path: Path) -> list[str]:
    """Coverage, gaps, grid and land cells of the store at ``path``."""
    if not path.exists():
        return [f"store: {path} (not created yet; run `smcast ingest`)"]
    try:
        store = DailyStore(path)
    except StoreError as exc:
        return [f"store: {path} — unreadable: {exc}"]
    days, done = store.days(), store.complete_days()
    lines = [f"store: {path}", f"  grid: {store.grid.describe()}",
             f"  land cells: {store.land_cells} (mask {store.attrs['land_mask_hash']})",
             f"  source: {store.attrs.get('source')}",
             f"  days: {days[0]}…{days[-1]} ({len(days)} on the axis, {len(done)} complete)",
             f"  latest complete day: {store.latest_complete_day()}"]
    gaps = store.gaps()
    if gaps:
        shown = ", ".join(f"{a}…{b}" if a != b else str(a) for a, b in gaps[:8])
        lines.append(f"  gaps (incomplete days): {shown}{' …' if len(gaps) > 8 else ''}")
    else:
        lines.append("  gaps: none")
    return lines


def model_report(cfg: Config) -> list[str]:
    """Trained model packages (own and bundled), the current one marked."""
    from smcast.model.registry import list_models, models_dir

    entries = list_models(cfg)
    if not entries:
        return [f"models ({models_dir(cfg)}): none (train one with `smcast retrain`)"]
    names = [f"{'*' if e.current else ''}{e.name}{' (bundled)' if e.bundled else ''}"
             for e in entries]
    return [f"models ({models_dir(cfg)}): {', '.join(names)}"]


def gpu_report() -> list[str]:
    """Whether torch sees a usable CUDA device."""
    try:
        import torch
    except ImportError:
        return ["gpu: torch is not installed (pip install torch)"]
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info(0)
        return [f"gpu: usable — {name}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free "
                f"(torch {torch.__version__})"]
    return [f"gpu: none usable; inference and training run on the CPU (torch {torch.__version__})"]


def collect_info(cfg: Config, store_path: Path | None = None) -> str:
    """The whole ``smcast info`` report as text."""
    lines = ["# resolved configuration", cfg.dump().rstrip(), "", "# state"]
    lines += store_report(Path(store_path or cfg.store_path))
    lines += model_report(cfg)
    lines += gpu_report()
    return "\n".join(lines)
