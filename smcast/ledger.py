"""The operations database (SQLite): the run ledger and the verification table.

``runs``: one row per ``forecast`` (per issue date), ``verify`` and ``retrain`` run — what ran,
what started it (``$SMCAST_TRIGGER``: manual, cron, systemd, kubernetes, schedule), how it ended,
how long it took, what it wrote and the error. A row is inserted as ``running`` when the run
starts and completed when it ends; a process killed outright (SIGKILL, OOM killer, power loss)
leaves ``running`` behind, which :meth:`Ledger.reap` turns into ``abandoned`` once its process is
gone.

``verification``: per (model, issue date, lead) the skill of a verified forecast over land cells
(written by ``smcast verify``, read by ``smcast report`` and ``smcast status``).

SQLite transactions make both tables safe against a kill at any point; WAL mode lets readers
(``smcast status``) run beside a writer.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from smcast.errors import BusyError, ConfigError, SmcastError, Terminated

TRIGGER_VAR = "SMCAST_TRIGGER"
FAILED = ("failed", "abandoned", "interrupted")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    issue_date TEXT,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started TEXT NOT NULL,
    finished TEXT,
    seconds REAL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    summary TEXT,
    outputs TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS verification (
    model TEXT NOT NULL,
    issue_date TEXT NOT NULL,
    lead INTEGER NOT NULL,
    valid_date TEXT NOT NULL,
    last_forcing_day TEXT NOT NULL,
    n_cells INTEGER NOT NULL,
    r REAL, rmse REAL, kge REAL,
    consistency REAL, n_consistent INTEGER, n_inconsistent INTEGER,
    persistence_r REAL, persistence_rmse REAL, persistence_kge REAL,
    verified_at TEXT NOT NULL,
    PRIMARY KEY (model, issue_date, lead)
);
CREATE INDEX IF NOT EXISTS verification_valid ON verification (valid_date);
"""
VERIFICATION_COLUMNS = ("model", "issue_date", "lead", "valid_date", "last_forcing_day",
                        "n_cells", "r", "rmse", "kge", "consistency", "n_consistent",
                        "n_inconsistent", "persistence_r", "persistence_rmse", "persistence_kge",
                        "verified_at")


def now_iso() -> str:
    """Now, UTC, ISO 8601 to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def trigger() -> str:
    """What started this process: ``$SMCAST_TRIGGER`` (a short word), else ``manual``."""
    value = os.environ.get(TRIGGER_VAR, "").strip() or "manual"
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", value):
        raise ConfigError(f"${TRIGGER_VAR}={value!r} is not a short word; use e.g. cron, "
                          "systemd, kubernetes or leave it unset")
    return value


@dataclass
class RunRecord:
    """One row of the ledger."""

    id: int
    command: str
    issue_date: str | None
    trigger: str
    status: str
    exit_code: int | None
    started: str
    finished: str | None
    seconds: float | None
    host: str
    pid: int
    summary: str | None
    outputs: list[str]
    error: str | None

    @property
    def scheduled(self) -> bool:
        """Started by a scheduler (cron, systemd, Kubernetes, the daemon), not by hand."""
        return self.trigger != "manual"

    def line(self) -> str:
        """A one-line description for ``smcast status``."""
        what = f"{self.command} {self.issue_date or ''}".strip()
        took = f"{self.seconds:.1f} s" if self.seconds is not None else "…"
        tail = self.error if self.status in FAILED else self.summary
        if tail and tail.startswith(f"{what}: "):
            tail = tail[len(what) + 2:]  # the row already says what ran
        text = f"{self.started[:16].replace('T', ' ')}  {what:<20} {self.status:<13} " \
               f"{took:>8}  {self.trigger:<10}"
        return f"{text}  {_first_line(tail)}" if tail else text


@dataclass
class RunHandle:
    """What a running command tells the ledger: its summary line, outputs and final status."""

    id: int
    status: str = "ok"
    summary: str | None = None
    outputs: list[str] = field(default_factory=list)


class Ledger:
    """The operations database at ``path`` (created on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._create()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the operations database {self.path}: {exc}; set "
                              "operations.database to a writable file") from None

    @classmethod
    def for_config(cls, cfg: Any) -> "Ledger":
        """The ledger of a :class:`smcast.config.Config`."""
        return cls(cfg.database_path)

    def _create(self, wait_s: float = 60.0) -> None:
        """Tables and WAL mode (kept by the file). Two processes starting at once on a new file
        can get "database is locked" from the journal-mode switch at once, without SQLite's busy
        wait: that is retried for ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                with closing(sqlite3.connect(self.path, timeout=wait_s)) as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60)) as db:
            db.row_factory = sqlite3.Row
            with db:  # one transaction, committed on success, rolled back on error
                yield db

    # -- runs ----------------------------------------------------------------------------
    @contextmanager
    def record(self, command: str, issue: date | None = None) -> Iterator[RunHandle]:
        """Record a run around the ``with`` body; exceptions are recorded and re-raised."""
        t0 = time.perf_counter()
        with self._connect() as db:
            cur = db.execute(
                "INSERT INTO runs (command, issue_date, trigger, status, started, host, pid) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?)",
                (command, str(issue) if issue else None, trigger(), now_iso(),
                 socket.gethostname(), os.getpid()))
        handle = RunHandle(int(cur.lastrowid))
        try:
            yield handle
        except BaseException as exc:
            status, code = _outcome(exc)
            self._finish(handle, status, code, time.perf_counter() - t0, _message(exc))
            raise
        code = 7 if handle.status == "nothing-to-do" else 0
        self._finish(handle, handle.status, code, time.perf_counter() - t0, None)

    def _finish(self, handle: RunHandle, status: str, code: int, seconds: float,
                error: str | None) -> None:
        with self._connect() as db:
            db.execute("UPDATE runs SET status=?, exit_code=?, finished=?, seconds=?, summary=?,"
                       " outputs=?, error=? WHERE id=?",
                       (status, code, now_iso(), round(seconds, 3), handle.summary,
                        json.dumps(handle.outputs), error, handle.id))

    def reap(self, max_hours: float = 24.0) -> int:
        """Mark ``running`` rows as ``abandoned`` when their process is gone (same host) or when
        they started more than ``max_hours`` ago (another host or container)."""
        host = socket.gethostname()
        cutoff = (datetime.now(timezone.utc) - timedelta(hours=max_hours)).isoformat(
            timespec="seconds")
        with self._connect() as db:
            rows = db.execute("SELECT id, pid, host, started FROM runs WHERE status='running'"
                              ).fetchall()
            dead = [r["id"] for r in rows if r["started"] < cutoff or
                    (r["host"] == host and not _alive(r["pid"]))]
            db.executemany("UPDATE runs SET status='abandoned', error=? WHERE id=?",
                           [("the process ended without finishing (killed?)", i) for i in dead])
        return len(dead)

    def runs(self, limit: int = 20, command: str | None = None) -> list[RunRecord]:
        """The newest runs first."""
        sql = "SELECT * FROM runs" + (" WHERE command=?" if command else "") + \
              " ORDER BY id DESC LIMIT ?"
        args: tuple = (command, limit) if command else (limit,)
        with self._connect() as db:
            return [_record(r) for r in db.execute(sql, args).fetchall()]

    # -- verification --------------------------------------------------------------------
    def save_verification(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or replace verification rows (keys: :data:`VERIFICATION_COLUMNS`)."""
        cols = ", ".join(VERIFICATION_COLUMNS)
        marks = ", ".join("?" for _ in VERIFICATION_COLUMNS)
        with self._connect() as db:
            db.executemany(f"INSERT OR REPLACE INTO verification ({cols}) VALUES ({marks})",
                           [tuple(_plain(r[c]) for c in VERIFICATION_COLUMNS) for r in rows])

    def verification(self, first: date | None = None, last: date | None = None,
                     model: str | None = None):
        """Verification rows with valid dates first…last (a pandas DataFrame)."""
        import pandas as pd

        where, args = [], []
        for clause, value in (("valid_date >= ?", first), ("valid_date <= ?", last),
                              ("model = ?", model)):
            if value is not None:
                where.append(clause)
                args.append(str(value))
        sql = "SELECT * FROM verification" + (" WHERE " + " AND ".join(where) if where else "")
        with self._connect() as db:
            rows = [dict(r) for r in db.execute(sql + " ORDER BY valid_date, lead", args)]
        df = pd.DataFrame(rows, columns=list(VERIFICATION_COLUMNS))
        numeric = [c for c in VERIFICATION_COLUMNS[5:-1]]
        df[numeric] = df[numeric].apply(pd.to_numeric, errors="coerce")
        return df


def _outcome(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, BusyError):
        return "busy", exc.exit_code
    if isinstance(exc, Terminated):
        return "interrupted", Terminated.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", 130
    if isinstance(exc, SmcastError):
        return "failed", exc.exit_code
    return "failed", 1


def _message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, SmcastError) else f"{type(exc).__name__}: {text}"[:4000]


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 110 else line[:107] + "…"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _record(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    data["outputs"] = json.loads(data["outputs"]) if data["outputs"] else []
    return RunRecord(**data)


def _plain(value: Any) -> Any:
    """numpy scalars → Python; NaN → NULL."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value
