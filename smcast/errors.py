"""smcast's exceptions and the exit codes the CLI maps them to.

Every error a user can cause names the problem and the fix in its message. Exit codes let cron,
systemd and monitoring tell the failure classes apart:

====  ==========================================================================
 0    success
 1    unexpected failure (a bug or an environment problem; the traceback is logged)
 2    bad configuration or command-line usage
 3    bad input data (missing variable, missing hours, corrupt file, values out of range, …)
 4    data not available yet (beyond the source's latency, or not in the mirror)
 5    store problem (grid mismatch, store locked by another run, store unreadable)
 6    model problem (damaged or tampered package, pickle refused, model/store mismatch)
 7    nothing to do (the forecast for that issue date exists; use --force to redo it)
75    busy: another smcast run holds the lock (try again later)
130   interrupted (Ctrl-C)
143   terminated (SIGTERM: systemd stop, docker stop, kill); temporary files are removed
====  ==========================================================================
"""

from __future__ import annotations


class SmcastError(Exception):
    """Base class: an error with a user-facing message and an exit code."""

    exit_code = 1


class ConfigError(SmcastError):
    """The configuration or the command line is wrong."""

    exit_code = 2


class InputDataError(SmcastError):
    """Source data is missing, corrupt, or physically implausible."""

    exit_code = 3


class DataUnavailableError(SmcastError):
    """The requested days are not (yet) available from the source."""

    exit_code = 4


class StoreError(SmcastError):
    """The daily store does not match the request, or cannot be written."""

    exit_code = 5


class BusyError(SmcastError):
    """Another smcast process holds the lock for this work."""

    exit_code = 75


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    (a retry loop, say) swallows it: the run unwinds, removing its temporary files."""

    exit_code = 143


NOTHING_TO_DO = 7
