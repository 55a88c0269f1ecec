"""Atomic file writes: write to a temporary sibling, then ``os.replace`` it onto the target.

A reader (or a concurrent run) never sees a half-written product, and a failed write leaves any
existing file at the target untouched.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write to; move it onto ``path`` on success.

    The temporary file lies in the same folder (so ``os.replace`` is atomic), its name starts with
    ``.`` and ends ``.tmp-<pid>-<random>`` plus the original suffix (so format libraries that look
    at the suffix still work). On any exception the temporary file is removed and the exception
    propagates; ``path`` is not touched.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
