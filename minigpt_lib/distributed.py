"""Data-parallel training: one process per device, each with a full model copy and a share of every batch.

``torchrun`` starts the processes and tells each one its place through the environment variables
``RANK`` (0 to ``WORLD_SIZE - 1`` over all machines), ``WORLD_SIZE`` and ``LOCAL_RANK`` (its index on
this machine, which picks its GPU). :func:`init_distributed` joins them into a process group;
:func:`~minigpt_lib.train.train_model` then wraps the model in ``DistributedDataParallel``, which
averages the gradients of all processes after every backward pass, and gives each process its share
of the batches with :func:`shard_loader`. Without ``torchrun`` every function here does nothing.

Same training as one process: every process starts from the same seed, so all of them draw the same
shuffled order from torch's global generator, exactly as a single process's loader does, and step
``k`` of the processes together covers the same windows as step ``k`` of one process (``--batch-size``
is the global batch, split between the processes). The price of sharing the generator is that
process ``r``'s ``i``-th window gets the same dropout mask as every other process's ``i``-th window.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


def is_distributed() -> bool:
    """Whether this process belongs to an initialized process group (started by ``torchrun``)."""
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    """How many processes train together (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True for rank 0, the one process that prints, shows progress and writes files (or when alone)."""
    return not is_distributed() or dist.get_rank() == 0


def init_distributed(device: torch.device | str) -> torch.device:
    """Join ``torchrun``'s process group and return this process's device; without ``torchrun``, ``device``.

    CUDA processes use the NCCL backend and GPU ``LOCAL_RANK``; CPU processes use Gloo.
    """
    device = torch.device(device)
    if not all(name in os.environ for name in TORCHRUN_VARIABLES):
        return device
    if device.type not in ("cpu", "cuda"):
        raise ValueError(
            f"device: data-parallel training runs on cuda (NCCL) or cpu (Gloo) processes, got {device.type}"
        )
    if device.type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK: process {local_rank} on this machine needs GPU {local_rank}, but only "
                f"{torch.cuda.device_count()} are visible; start at most that many processes per node"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not is_distributed():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)  # binds this process to its GPU
        else:
            dist.init_process_group(backend="gloo")
    return device


def cleanup() -> None:
    """Leave the process group, if this process joined one (call once training is over)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every process gets here (e.g. until rank 0 has written a checkpoint)."""
    if is_distributed():
        dist.barrier()


def mean_over_processes(value: float) -> float:
    """The mean of ``value`` over all processes (``value`` itself when alone), e.g. a batch loss.

    Each process holds the loss of its share of the batch; the mean is the loss of the whole batch.
    """
    if not is_distributed():
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"  # NCCL reduces GPU tensors only
    total = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)  # Gloo has no AVG
    return total.item() / dist.get_world_size()


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` in ``DistributedDataParallel`` when training data-parallel, else ``model`` itself.

    The wrapper copies rank 0's weights to every process once, then all-reduces gradients during backward.
    """
    if not is_distributed():
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    # The only buffers are the constant causal masks: copied once at the start, not before every forward.
    return DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


class GlobalOrderSampler(DistributedSampler):
    """A ``DistributedSampler`` whose shuffle comes from torch's global generator, like ``RandomSampler``.

    Every process draws the same permutation (same seed), pads or trims it like ``DistributedSampler``
    and keeps positions ``rank, rank + world_size, ...``: with per-process batches of ``B``, batch ``k``
    of all processes together holds positions ``k*N*B`` to ``(k+1)*N*B - 1``, one process's batch ``k``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, drop_last: bool) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=drop_last)
        self.global_shuffle = shuffle

    def __iter__(self) -> Iterator[int]:
        order = list(RandomSampler(self.dataset)) if self.global_shuffle else range(len(self.dataset))
        return (order[position] for position in super().__iter__())


def shard_loader(loader: DataLoader, world_size: int | None = None, rank: int | None = None) -> DataLoader:
    """This process's share of ``loader``: batches of ``batch_size / world_size`` windows, same order.

    ``loader`` holds global batches (what one optimizer step sees); alone, it comes back unchanged.
    ``world_size`` and ``rank`` default to the process group's.
    """
    if world_size is None:
        world_size = get_world_size()
    if rank is None:
        rank = dist.get_rank() if is_distributed() else 0
    if world_size == 1:
        return loader
    if hasattr(loader, "shard"):  # a loader that splits its own batches (token_data.TokenWindowLoader)
        return loader.shard(world_size, rank)
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"loader: data-parallel training needs a torch DataLoader to split, got {type(loader).__name__}"
        )
    if loader.batch_size is None or loader.batch_size % world_size:
        raise ValueError(
            f"batch_size: the global batch of {loader.batch_size} windows must split evenly between "
            f"{world_size} processes; use a multiple of {world_size}"
        )
    sampler = GlobalOrderSampler(
        loader.dataset,
        num_replicas=world_size,
        rank=rank,
        shuffle=isinstance(loader.sampler, RandomSampler),
        drop_last=loader.drop_last,
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size // world_size,
        sampler=sampler,
        drop_last=loader.drop_last,
        num_workers=loader.num_workers,
    )
