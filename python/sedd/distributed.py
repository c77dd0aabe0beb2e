"""Where a training process runs: torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), its
device, the process group (NCCL on GPUs, gloo on CPUs) and the DDP / FSDP wrapper."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .cli import check_device


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
            from torch.distributed.fsdp import FullyShardedDataParallel
            return FullyShardedDataParallel(model)
        from torch.nn.parallel import DistributedDataParallel
        return DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
