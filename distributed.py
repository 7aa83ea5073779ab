"""Devices and torchrun: the device of a run, a process group when torchrun started several processes (gloo on
CPU, nccl on CUDA), and the cores shared among local processes. A script runs alone or under torchrun unchanged."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from errors import DataError


def resolve_device(choice: str, local_rank: int = 0) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise DataError(None, "--device cuda asked for, but no CUDA device is available")
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def use_all_cores(processes: int = 1) -> int:
    """Share this machine's cores among `processes` local processes; returns the threads of this one."""
    threads = max(1, (os.cpu_count() or 1) // max(1, processes))
    torch.set_num_threads(threads)
    return threads


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def agree(self, ok: bool) -> bool:
        """True on every rank when `ok` is true on every rank (so all ranks stop together)."""
        if self.world_size == 1:
            return ok
        flag = torch.tensor([1 if ok else 0])
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())


def progress_printer(world: Distributed) -> Callable[[str], None]:
    """print (flushed) on rank 0, nothing on the other ranks."""
    return (lambda line: print(line, flush=True)) if world.is_main else (lambda line: None)


def under_torchrun() -> bool:
    """Whether this process is one of several started by torchrun."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def distributed_session(device_choice: str) -> Iterator[tuple[torch.device, Distributed]]:
    """The device and process group of a script run alone or under torchrun (gloo on CPU, nccl on CUDA);
    local processes share the cores."""
    device = resolve_device(device_choice)
    world = Distributed()
    if under_torchrun():
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        world = Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    try:
        if device.type == "cuda":
            device = resolve_device(device_choice, world.local_rank)
        use_all_cores(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        yield device, world
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
