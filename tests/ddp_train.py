"""Run by test_trainer's torchrun test: python/train.py's flags, its Trainer, then a check that
every rank ends with the same weights (written to OUT/ranks.txt by rank 0)."""

import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from train import parse_args  # noqa: E402

from sedd.config import from_args  # noqa: E402
from sedd.training import Trainer  # noqa: E402

if __name__ == "__main__":
    t = Trainer(from_args(parse_args(sys.argv[1:])))
    t.fit()
    if t.sharded:           # FSDP2: each rank holds shards; the checkpoint holds the whole weights
        t.dist.exit_worker()
    flat = torch.cat([p.detach().double().flatten().cpu() for p in t.model.parameters()])
    mine = torch.tensor([float(flat.sum()), float((flat * flat).sum()), float(flat[::97].sum())],
                        dtype=torch.float64)
    every = [torch.zeros_like(mine) for _ in range(t.world)]
    dist.all_gather(every, mine)
    if t.is_main:
        same = all(torch.equal(every[0], v) for v in every)
        with open(os.path.join(t.cfg.out, "ranks.txt"), "w") as fh:
            fh.write(f"world {t.world} step {t.step} identical_weights {same}\n")
    t.dist.exit_worker()
