"""Clean shutdown of the bundle's ``torch.distributed`` runs (``multi_gpu_*.json``)."""

from __future__ import annotations

import gc

import torch
import torch.distributed as dist

__all__ = ["release_ddp", "shutdown"]

# The attributes through which a DistributedDataParallel wrapper holds the process group.
_DDP_PROCESS_GROUP_HOLDERS = ("logger", "reducer", "process_group")


def release_ddp(network: torch.nn.Module) -> None:
    """Make a ``DistributedDataParallel`` wrapper let go of its process group; the wrapped module stays usable.

    The configs keep the DDP wrapper alive (trainer, evaluator and savers hold it) until the
    interpreter tears down, and a Gloo process group destroyed that late aborts the process
    ("terminate called without an active exception") after the work is done, in about one
    run in three. Dropping the C++ reducer and logger now lets the group be freed in order.

    Args:
        network: the model the workflow trained or evaluated; anything but a DDP wrapper is left as it is.
    """
    if not isinstance(network, torch.nn.parallel.DistributedDataParallel):
        return
    for name in _DDP_PROCESS_GROUP_HOLDERS:
        setattr(network, name, None)
    gc.collect()


def shutdown(network: torch.nn.Module | None = None) -> None:
    """End a distributed run: wait for every rank, release ``network``'s hold, destroy the process group.

    Args:
        network: the workflow's (possibly DDP-wrapped) network, or None.
    """
    if not dist.is_initialized():
        return
    dist.barrier()  # no rank tears down while another still exchanges results
    if network is not None:
        release_ddp(network)
    dist.destroy_process_group()
