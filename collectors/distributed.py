"""Which process of a distributed training job this is, without any change in the job.

Looked at in this order (the first that answers wins):

1. an initialised ``torch.distributed`` process group - only when the job imported torch
   already (``torch.distributed`` in ``sys.modules``): this module never imports torch;
2. ``RANK`` / ``WORLD_SIZE`` (``LOCAL_RANK``): torchrun, ``accelerate launch``, DeepSpeed's
   launcher, torch elastic;
3. ``OMPI_COMM_WORLD_RANK`` / ``OMPI_COMM_WORLD_SIZE``: ``mpirun`` (DeepSpeed/Horovod with MPI);
4. ``SLURM_PROCID`` / ``SLURM_NTASKS`` (``SLURM_LOCALID``): ``srun``.

Nothing found means a single process: rank 0 of 1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping

_ENV_PAIRS = (
    ("env", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("mpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int | None = None
    source: str = "single"  # torch.distributed | env | mpi | slurm | single | given

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _from_torch(environ: Mapping[str, str]) -> RankInfo | None:
    dist = sys.modules.get("torch.distributed")  # imported by the job, never by us
    if dist is None:
        return None
    try:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        rank, world = int(dist.get_rank()), int(dist.get_world_size())
    except Exception:  # a half-set-up group, a stub module: fall back to the environment
        return None
    if world < 1 or not 0 <= rank < world:
        return None
    return RankInfo(rank, world, _int(environ.get("LOCAL_RANK")), "torch.distributed")


def detect(environ: Mapping[str, str] | None = None) -> RankInfo:
    """This process's rank and the job's world size (see the module docstring)."""
    environ = os.environ if environ is None else environ
    info = _from_torch(environ)
    if info is not None:
        return info
    for source, rank_var, world_var, local_var in _ENV_PAIRS:
        rank, world = _int(environ.get(rank_var)), _int(environ.get(world_var))
        if rank is not None and world is not None and 0 <= rank < world:
            return RankInfo(rank, world, _int(environ.get(local_var)), source)
    return RankInfo()


def given(rank: int | None, world_size: int | None) -> RankInfo | None:
    """``rank`` / ``world_size`` passed explicitly (both, or world_size alone for rank 0)."""
    if rank is None and world_size is None:
        return None
    world = 1 if world_size is None else int(world_size)
    r = 0 if rank is None else int(rank)
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"rank must be within [0, world_size), got rank={rank}, "
                         f"world_size={world_size}")
    return RankInfo(r, world, None, "given")
