"""The run ledger's database when several processes open a new one at the same moment (the
daemon's job and a cron run, or two runs started together)."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from smcast.ledger import Ledger


def _open(path: str, barrier, errors) -> None:
    barrier.wait()
    try:
        with Ledger(Path(path)).record("forecast"):
            pass
    except BaseException as exc:  # reported to the parent
        errors.put(repr(exc))


def test_many_processes_create_the_database_at_once(tmp_path):
    ctx = mp.get_context("fork")
    n, rounds = 6, 8
    for r in range(rounds):
        path = tmp_path / f"round{r}" / "smcast.sqlite"
        barrier, errors = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(path), barrier, errors)) for _ in range(n)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        found = []
        while not errors.empty():
            found.append(errors.get())
        assert not found, found
        assert len(Ledger(path).runs(50)) == n
