"""Where smcast finds ``templates/`` (CF/ACDD attributes, file-name patterns, QGIS styles).

A checkout or an editable install uses the folder beside the package; a regular ``pip install``
puts it under ``<prefix>/share/smcast/templates`` (``[tool.setuptools.data-files]``).
"""

from __future__ import annotations

import sys
from pathlib import Path

CANDIDATES = (Path(__file__).resolve().parents[1] / "templates",
              Path(sys.prefix) / "share" / "smcast" / "templates")


def templates_dir() -> Path:
    """The first candidate folder that holds smcast's templates; FileNotFoundError naming every
    place looked at when none does."""
    for folder in CANDIDATES:
        if (folder / "filenames.yaml").is_file():
            return folder
    raise FileNotFoundError(
        "smcast's templates/ folder was not found (looked in "
        f"{', '.join(map(str, CANDIDATES))}); reinstall smcast from a complete checkout")
