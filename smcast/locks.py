"""Exclusive, non-blocking file locks (``fcntl.flock``) for the store and the output folder.

The kernel releases a lock when its process ends, however it ends (SIGKILL included), so a
killed run never leaves a stale lock behind.
"""

from __future__ import annotations

import errno
import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from smcast.errors import ConfigError, SmcastError


@contextmanager
def exclusive_lock(lock_path: Path, where: str, setting: str,
                   busy: Callable[[TextIO], SmcastError]) -> Iterator[TextIO]:
    """Hold an exclusive lock on ``lock_path`` (created with its folder) for the ``with`` body;
    yields the lock file, open for reading and writing.

    Raises ``busy(lock_file)`` at once when another process holds the lock; ConfigError naming
    ``where`` and the ``setting`` to change when the folder cannot be written (a full disk,
    ENOSPC, is passed on as it is)."""
    try:
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = open(lock_path, "a+")
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise
        raise ConfigError(f"cannot write in {where} ({exc.strerror}); set {setting} to a folder "
                          "smcast can write") from None
    with lock_file as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(fh) from None
        try:
            yield fh
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
