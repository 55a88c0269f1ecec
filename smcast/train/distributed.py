"""Training under ``torchrun``: the process group, this process's place in it, and the few
collectives the trainer needs.

``smcast retrain`` runs unchanged as one process. Started by ``torchrun --nproc-per-node N``
(``WORLD_SIZE`` > 1 in the environment), each process joins a process group — NCCL when it
trains on CUDA (device ``cuda:LOCAL_RANK``), gloo on the CPU — and :func:`session` hands it a
:class:`Dist`: rank, world size, whether it is the main process (rank 0), and sums, gathers,
broadcasts and barriers that are identities when there is one process. The group is destroyed
on the way out, whatever happened.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as tdist

from smcast.errors import ConfigError

log = logging.getLogger(__name__)

#: how long the other ranks wait for rank 0 to score, save and promote the model at the end
FINAL_WAIT = timedelta(hours=6)
#: the launcher's variables a process of a distributed run needs
REQUIRED_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job.

    Attributes:
        rank: global rank, 0 … world − 1 (0 is the main process, the only one that writes).
        world: number of processes (1: an ordinary single-process run).
        local_rank: rank on this node; the CUDA device index when training on GPUs.
        backend: "nccl", "gloo", or "" for a single process.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str = ""
    _final: Any = None  # a gloo group with a long timeout for the wait at the end

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The training device of this process: ``cuda:LOCAL_RANK`` for CUDA under torchrun."""
        if device.type == "cuda" and self.distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, items: np.ndarray) -> np.ndarray:
        """This rank's share ``items[rank::world]`` (ascending when ``items`` is); an error
        when some rank would get nothing."""
        if len(items) < self.world:
            raise ConfigError(f"{len(items)} training cells cannot be shared by {self.world} "
                              "processes; train on more cells or start fewer processes")
        return items[self.rank::self.world]

    def batch_share(self, batch_size: int) -> int:
        """Cells each rank draws per step so that the ranks together draw ``batch_size``."""
        if batch_size % self.world:
            raise ConfigError(f"train.batch_size {batch_size} is not a multiple of the "
                              f"{self.world} processes (each draws batch_size / processes "
                              f"cells per step); set it to a multiple of {self.world}")
        return batch_size // self.world

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Element-wise sums over the ranks (float64); the values themselves for one process."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t.cpu().tolist()

    def mean(self, values: Mapping[str, float]) -> dict[str, float]:
        """The mean over the ranks of each value (the same keys on every rank)."""
        if not self.distributed:
            return dict(values)
        sums = self.all_reduce_sum(list(values.values()))
        return {k: s / self.world for k, s in zip(values, sums)}

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world
        tdist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` (picklable) on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier(device_ids=[self.local_rank] if self.backend == "nccl" else None)

    def wait_for_main(self) -> None:
        """Hold every rank until rank 0 arrives here too (after scoring and saving the model,
        which may take longer than the process group's timeout; this waits ``FINAL_WAIT``)."""
        if self.distributed:
            tdist.barrier(group=self._final)

    def _comm_device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" \
            else torch.device("cpu")


#: the single process: every collective is an identity
SINGLE = Dist()


def world_size(environ: Mapping[str, str] = os.environ) -> int:
    """The number of processes the launcher started (``WORLD_SIZE``; 1 when unset)."""
    text = environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={text!r} is not a number of processes") from None
    if world < 1:
        raise ConfigError(f"WORLD_SIZE={world}: expected at least 1 process")
    return world


@contextmanager
def session(device_choice: str = "auto",
            environ: Mapping[str, str] = os.environ) -> Iterator[Dist]:
    """The process group for one training job: :data:`SINGLE` unless the launcher (torchrun,
    or any launcher setting ``WORLD_SIZE`` > 1 and ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``) started several processes. ``device_choice`` is ``train.device``: NCCL
    when it resolves to CUDA, else gloo. The group is destroyed on exit."""
    world = world_size(environ)
    if world == 1:
        yield SINGLE
        return
    d = _init(world, device_choice, environ)
    restore = _tag_logs(d)
    try:
        yield d
    finally:
        restore()
        tdist.destroy_process_group()


def _init(world: int, device_choice: str, environ: Mapping[str, str]) -> Dist:
    if not tdist.is_available():
        raise ConfigError(f"WORLD_SIZE={world} but this torch build has no torch.distributed")
    missing = [k for k in REQUIRED_ENV if k not in environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: start "
                          "distributed training with torchrun")
    rank, local_rank = int(environ["RANK"]), int(environ["LOCAL_RANK"])
    cuda = device_choice != "cpu" and torch.cuda.is_available()
    backend = "nccl" if cuda else "gloo"
    kwargs: dict[str, Any] = {}
    if cuda:
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    tdist.init_process_group(backend, init_method="env://", rank=rank, world_size=world,
                             **kwargs)
    final = tdist.new_group(backend="gloo", timeout=FINAL_WAIT)
    log.info("distributed training: rank %d of %d (local rank %d, %s%s)", rank, world,
             local_rank, backend, ", torchrun" if tdist.is_torchelastic_launched() else "")
    return Dist(rank, world, local_rank, backend, final)


def _tag_logs(d: Dist) -> Callable[[], None]:
    """Prefix every log message of this process with its rank; returns the undo."""
    previous = logging.getLogRecordFactory()
    tag = f"[rank {d.rank}/{d.world}] "

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.msg = tag + str(record.msg)
        return record

    logging.setLogRecordFactory(factory)
    return lambda: logging.setLogRecordFactory(previous)
