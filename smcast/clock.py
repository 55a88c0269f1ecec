"""The one place smcast asks what day it is (UTC), so every command agrees and tests can
patch it."""

from __future__ import annotations

from datetime import date, datetime, timezone


def utc_today() -> date:
    """Today's date in UTC."""
    return datetime.now(timezone.utc).date()
