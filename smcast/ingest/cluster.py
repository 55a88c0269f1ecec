"""The dask.distributed cluster that aggregates the days of a multi-day ingest from files.

``ingest.scheduler`` unset: a LocalCluster of ``ingest.workers`` processes (one thread each,
``ingest.memory_per_worker`` each: dask's nanny spills, pauses and restarts a worker over it),
started for the ingest and closed after it. Set (``tcp://host:8786``): a Client of that running
scheduler; its workers need smcast and the input files at the same paths, and the remote cluster
is left running. One-day ingests, ``workers: 1`` without a scheduler, and sources without a
``reader`` (the demo) run in this process and start nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import date
from typing import TYPE_CHECKING, Any

from smcast.config import IngestConfig
from smcast.errors import ConfigError

log = logging.getLogger(__name__)

#: seconds to wait for a configured scheduler to answer, and then for its first worker
CONNECT_TIMEOUT = 10.0

if TYPE_CHECKING:  # distributed itself is imported when a cluster is needed
    from distributed import Client


def local_workers(cfg: IngestConfig) -> int:
    """``ingest.workers`` resolved: 0 means one per CPU core, at most 8."""
    return cfg.workers or min(os.cpu_count() or 1, 8)


def uses_cluster(cfg: IngestConfig, source: Any, days: list[date]) -> bool:
    """Whether ``days`` from ``source`` are aggregated on a dask cluster (else in-process)."""
    if getattr(source, "reader", None) is None or len(days) < 2:
        return False
    return cfg.scheduler is not None or local_workers(cfg) > 1


def day_engine(cfg: IngestConfig, source: Any, days: list[date]
               ) -> AbstractContextManager[Client | None]:
    """A context giving the dask Client for this ingest, or None to run in this process."""
    if not uses_cluster(cfg, source, days):
        return nullcontext(None)
    return dask_client(cfg, min(local_workers(cfg), len(days)))


@contextmanager
def dask_client(cfg: IngestConfig, workers: int) -> Iterator[Client]:
    """A Client of ``cfg.scheduler``, else of a LocalCluster of ``workers`` processes; closes
    what it opened (a remote cluster keeps running)."""
    with _quiet_distributed():
        if cfg.scheduler is not None:
            with _remote(cfg.scheduler) as client:
                yield client
        else:
            with _local(workers, cfg.memory_per_worker) as client:
                yield client


@contextmanager
def _local(workers: int, memory_limit: str) -> Iterator[Client]:
    """A LocalCluster of ``workers`` single-threaded worker processes, each under its nanny's
    ``memory_limit``, and its Client.

    Worker processes are forked from a forkserver (started once per smcast process) rather than
    spawned: a second cluster in the same process, or a worker restarted by its nanny, starts in
    a fraction of a second. dask's ``MALLOC_TRIM_THRESHOLD_`` for workers is left out: it turns
    off glibc's adaptive mmap threshold, and every large temporary of a day's aggregation then
    costs fresh page faults (measured on a 30° x 30° mirror: 3x the system time, +40 % wall
    time). Neither Client is made dask's default: the store is written by this process's own
    dask/zarr calls, never by the cluster.
    """
    import dask
    from distributed import Client, LocalCluster

    settings = {"distributed.worker.multiprocessing-method": "forkserver",
                "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    with _environ_kept(), dask.config.set(settings), \
            LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         memory_limit=memory_limit, dashboard_address=None) as cluster, \
            Client(cluster, set_as_default=False) as client:
        log.info("ingest on a local dask cluster: %d worker process(es), memory limit %s each",
                 workers, memory_limit)
        yield client


@contextmanager
def _environ_kept() -> Iterator[None]:
    """This process's environment as it was before: dask's nannies write their pre-spawn
    variables (``OMP_NUM_THREADS=1``, …) into it, which must not outlive the ingest (a forecast
    after it would run torch on one thread)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


@contextmanager
def _remote(address: str) -> Iterator[Client]:
    """A Client of the scheduler at ``address`` with at least one worker; ConfigError if not."""
    from distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, TypeError, ValueError) as exc:
        # OSError/TimeoutError: nobody answers; TypeError/ValueError: distributed refuses the
        # address (tls:// without dask's TLS settings, ucx:// without UCX support)
        raise ConfigError(
            f"ingest.scheduler: cannot reach the dask scheduler at {address} within "
            f"{CONNECT_TIMEOUT:g} s ({exc}); start it (`dask scheduler`) or check the address "
            "(and for tls:// dask's distributed.comm.tls settings), or set ingest.scheduler: "
            "null for a local cluster") from None
    try:
        _wait_for_workers(client, address)
        threads = client.nthreads()
        log.info("ingest on the dask scheduler %s: %d worker(s), %d thread(s)", address,
                 len(threads), sum(threads.values()))
        yield client
    finally:
        client.close()


def _wait_for_workers(client: Client, address: str) -> None:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError):
        raise ConfigError(
            f"ingest.scheduler: the dask scheduler at {address} has no workers after "
            f"{CONNECT_TIMEOUT:g} s; start some (`dask worker {address} --nthreads 1 "
            "--memory-limit 4GiB` on machines with smcast and the input files), or set "
            "ingest.scheduler: null for a local cluster") from None


@contextmanager
def _quiet_distributed() -> Iterator[None]:
    """distributed's INFO chatter (scheduler and nanny start-up, connections) hidden unless
    smcast logs at DEBUG; its warnings (memory, restarted workers) still show."""
    import distributed  # noqa: F401  (its import sets the level this overrides)

    logger = logging.getLogger("distributed")
    old = logger.level
    if not logging.getLogger("smcast").isEnabledFor(logging.DEBUG):
        logger.setLevel(max(old, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(old)
