"""The output directory's conventions, shared by forecast, verify and status: file-name
patterns confined to the directory, the run lock, leftovers of killed runs, checksums."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import yaml

from smcast.config import Config
from smcast.errors import BusyError, ConfigError
from smcast.locks import exclusive_lock
from smcast.templates import templates_dir

log = logging.getLogger(__name__)


def filenames(cfg: Config) -> dict[str, str]:
    """The file-name patterns (``templates/filenames.yaml`` unless configured)."""
    path = cfg.forecast.filenames or templates_dir() / "filenames.yaml"
    if not Path(path).is_file():
        raise ConfigError(f"file-name patterns {path} not found; set forecast.filenames")
    names = yaml.safe_load(Path(path).read_text())
    for key, pattern in names.items():  # checked before any work (product_path checks again)
        if Path(str(pattern)).is_absolute() or ".." in Path(str(pattern)).parts:
            raise ConfigError(f"file-name pattern {key}: {pattern!r} in {path} writes outside "
                              f"the output directory; {_KEEP_INSIDE}")
    return names


def product_path(out: Path, pattern: str, **values: str) -> Path:
    """A product's path from its pattern; ConfigError if it would leave the output directory."""
    path = (out / pattern.format(**values)).resolve()
    if out.resolve() not in path.parents:
        raise ConfigError(f"file-name pattern {pattern!r} writes outside {out}: {path}; "
                          f"{_KEEP_INSIDE}")
    return path


_KEEP_INSIDE = ("make every pattern in forecast.filenames a relative path without '..' (see "
                "templates/filenames.yaml)")


def sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


LOCK_NAME = ".smcast-forecast.lock"


@contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """One forecast or verify run at a time per output directory (BusyError otherwise).

    The lock file holds the owner's pid and start time, so the "already running" message can
    name them. The lock is released by the kernel when the process ends, however it ends."""
    with exclusive_lock(out / LOCK_NAME, f"the output directory {out}",
                        "forecast.output_dir or --output", _already_running) as fh:
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since "
                 f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ}")
        fh.flush()
        remove_leftovers(out)
        yield


def _already_running(lock_file: TextIO) -> BusyError:
    lock_file.seek(0)
    owner = lock_file.read().strip() or "unknown"
    return BusyError(f"already running: another smcast run ({owner}) holds {lock_file.name}; "
                     "this run did nothing. Try again when it has finished")


def remove_leftovers(out: Path) -> list[Path]:
    """Remove staging folders and temporary files of runs that were killed (SIGKILL, power
    loss). Called with the run lock held, so nothing found can belong to a live run."""
    found = [*out.glob(".staging-*"), *out.rglob(".*.tmp-*")]
    for path in found:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if found:
        log.warning("removed %d leftover(s) of an interrupted run in %s", len(found), out)
    return found
