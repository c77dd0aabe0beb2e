"""Where a training process runs: torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), its
device, the process group (NCCL on GPUs, gloo on CPUs) and the DDP / FSDP wrapper."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel
from torch.nn.parallel import DistributedDataParallel



def check_device(spec: str | None) -> str:
    """'cpu', 'cuda' or 'cuda:N' that this machine has; a clear error otherwise (--device)."""
    if spec is None or spec == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r}: unknown device (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return spec
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU build" if torch.version.cuda is None else \
                "no CUDA device is visible"
            raise ValueError(f"--device {spec}: CUDA is not available here ({why}); use "
                             f"--device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
        return spec
    raise ValueError(f"--device {spec!r}: unsupported device type {dev.type!r} (cpu or cuda)")


@dataclass
class Distributed:
    world: int
    rank: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str | None) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = check_device(device)
        if dev == "cuda" and world > 1:
            dev = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        d = cls(world, rank, local_rank, torch.device(dev))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if d.device.type == "cuda" else "gloo")
        return d

    def wrap(self, model: torch.nn.Module, fsdp: bool = False) -> torch.nn.Module:
        """The model as the loss sees it: itself, DDP, or FSDP (GPUs)."""
        if self.world == 1:
            return model
        if fsdp:
            if self.device.type != "cuda":
                raise ValueError("--fsdp needs CUDA devices")
            return FullyShardedDataParallel(model)
        return DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
