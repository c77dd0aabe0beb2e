"""Where a training process runs: torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK), its
device, the process group (NCCL on GPUs, gloo on CPUs), the DDP or FSDP2 wrapper, and the few
collectives the loop itself needs (the mean loss, one stop decision for every rank).

FSDP2 (`fully_shard`) shards each transformer block and then the whole network (embedding, σ
map, output layer), so a rank holds 1/world of every weight, gradient and AdamW moment; the EMA
copy is sharded the same way (its update is a foreach lerp over matching shards). On GPUs the
blocks compute in bf16 and reduce gradients in fp32 over fp32 master weights; on CPUs everything
stays fp32 (gloo), which is what the tests run."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
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
        if world > 1 or "TORCHELASTIC_RUN_ID" in os.environ:     # torchrun, even of 1 process
            if not dist.is_initialized():
                dist.init_process_group("nccl" if d.device.type == "cuda" else "gloo")
            d._flags = (dist.new_group(backend="gloo") if d.device.type == "cuda"
                        else dist.group.WORLD)
        return d

    def __post_init__(self):
        self._flags = None

    def sharding(self, fsdp: bool) -> bool:
        """Whether --fsdp shards this run: under torchrun (a process group), even of one
        process (FSDP2's mixed precision on one GPU); a plain `python train.py` is not sharded."""
        return bool(fsdp) and dist.is_initialized()

    def wrap(self, model: torch.nn.Module, fsdp: bool = False,
             ema: torch.nn.Module | None = None) -> torch.nn.Module:
        """The model as the loss sees it: itself (one process), DDP, or the model sharded in
        place by FSDP2 (then `ema`, a copy of it, is sharded the same way)."""
        if fsdp:
            for m in (model, ema):
                if m is not None:
                    shard_fsdp2(m, self.device)
            return model
        if self.world == 1:
            return model
        return DistributedDataParallel(
            model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    # ---- the loop's own collectives
    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over the ranks of a scalar (the logged loss: every rank's micro-batches)."""
        if self.world == 1:
            return value
        value = value.detach().clone()
        dist.all_reduce(value)
        return value / self.world

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on one (a stop signal seen by some ranks only:
        every rank leaves the loop after the same step). A gloo group of its own, so a GPU run
        pays no device synchronisation for it."""
        if self.world == 1:
            return flag
        t = torch.tensor([int(flag)])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self._flags)
        return bool(t.item())

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group (every rank, after its last collective), for a process that
        goes on; a torchrun worker that is done calls `exit_worker`."""
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()

    def exit_worker(self, code: int = 0) -> None:
        """End a torchrun worker whose work is done: a barrier (every rank's collectives and
        files are behind it), then os._exit — past the interpreter's teardown, where gloo's
        threads have aborted finished processes (std::terminate: seen at 4 CPU processes with
        torch 2.13 without destroy_process_group, and with 2.14.1 even after it)."""
        if not dist.is_initialized():
            return
        dist.barrier()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def transformer_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The units FSDP2 shards one by one: the network's `blocks`."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"--fsdp: {type(model).__name__} has no `blocks` to shard")
    return list(blocks)


def shard_fsdp2(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """fully_shard each transformer block, then the whole network (in place). GPUs: bf16
    compute, fp32 gradient reduction, fp32 master weights."""
    kw = {}
    if device.type == "cuda":
        kw["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16,
                                               reduce_dtype=torch.float32)
    for block in transformer_blocks(model):
        fully_shard(block, **kw)
    fully_shard(model, **kw)
    return model


def gather_module(model: torch.nn.Module, build, dist_: Distributed):
    """An FSDP2-sharded network gathered whole on rank 0 (every rank calls it): `build()` makes
    a plain network of the same shape, which gets the full weights; None on other ranks."""
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                               cpu_offload=True))
    if not dist_.is_main:
        return None
    plain = build().to(dist_.device)
    plain.load_state_dict(full, strict=True)
    return plain.eval().requires_grad_(False)
