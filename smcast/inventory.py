"""The output inventory: which forecasts exist, read from their run manifests.

A manifest is written last by ``smcast forecast`` (atomically), so one that exists marks a
complete forecast. Catch-up, verification and ``smcast status`` all read this inventory instead
of keeping a second record that could disagree with the files.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class ForecastEntry:
    """One forecast on disk: its manifest's path and content."""

    path: Path
    doc: dict[str, Any]

    @property
    def issue(self) -> date:
        """The issue date."""
        return date.fromisoformat(self.doc["issue_date"])

    @property
    def last_forcing(self) -> date:
        """L, the last forcing day."""
        return date.fromisoformat(self.doc["last_forcing_day"])

    @property
    def valid(self) -> list[date]:
        """The valid days, one per lead."""
        return [date.fromisoformat(d) for d in self.doc["valid_days"]]

    @property
    def verified(self) -> set[date]:
        """Valid days already verified."""
        return {date.fromisoformat(d) for d in self.doc.get("verified", {})}

    @property
    def folder(self) -> Path:
        """The folder the manifest's relative file paths start from."""
        return self.path.parent


def manifest_glob(pattern: str) -> str:
    """A manifest file-name pattern (``{issue}/smcast_{model}_{issue}.json``) as a glob."""
    return re.sub(r"\{[a-z_]+\}", "*", pattern)


def forecasts(out: Path, pattern: str) -> list[ForecastEntry]:
    """Every forecast manifest under ``out``, oldest issue date first (unreadable ones are
    logged and skipped: they were not written by smcast)."""
    entries = []
    for path in sorted(Path(out).glob(manifest_glob(pattern))):
        try:
            doc = json.loads(path.read_text())
            entry = ForecastEntry(path, doc)
            entry.issue, entry.valid  # noqa: B018 — the keys must be there
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping %s: not an smcast forecast manifest (%s)", path, exc)
            continue
        entries.append(entry)
    return sorted(entries, key=lambda e: (e.issue, str(e.path)))


def issue_dates(out: Path, pattern: str) -> set[date]:
    """Issue dates that have a forecast (any model)."""
    return {e.issue for e in forecasts(out, pattern)}
