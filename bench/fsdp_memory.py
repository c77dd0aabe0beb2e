"""Peak memory per process of DDP and FSDP2 (--fsdp) on CPUs: torchrun with N gloo processes
trains a few steps of a preset on the built-in language, and every rank reports its peak
resident memory (VmHWM) and the bytes its parameters, gradients, AdamW state and EMA hold.

    python bench/fsdp_memory.py                      # small preset, 2 processes, 3 steps
    python bench/fsdp_memory.py --preset medium --procs 4

A measurement (bench/README.md keeps the table), not a test."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(argv):
    """Inside torchrun: train, then print this rank's memory."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import torch
    from train import parse_args
    from sedd.config import from_args
    from sedd.training import Trainer

    t = Trainer(from_args(parse_args(argv)))
    t.fit()

    def nbytes(p):
        p = p.to_local() if hasattr(p, "to_local") else p      # FSDP2: this rank's shard
        return p.numel() * p.element_size()

    params = sum(nbytes(p) for p in t.model.parameters())
    ema = sum(nbytes(p) for p in t.ema_model.parameters())
    adam = sum(nbytes(v) for s in t.opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    state = 2 * params + ema + adam       # the gradients: one per parameter during a step
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024
    print(f"MEMORY rank {t.rank} world {t.world} sharded {t.sharded} state {state} peak {hwm}",
          flush=True)
    t.dist.close()


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small")
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--out", default="/tmp/sedd-fsdp-memory")
    a = p.parse_args()
    rows = []
    for mode in ("ddp", "fsdp"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={a.procs}", os.path.abspath(__file__), "--worker",
               "--preset", a.preset, "--steps", str(a.steps), "--batch-size", "1",
               "--seq-len", str(a.seq_len), "--device", "cpu", "--out", f"{a.out}/{mode}",
               "--no-progress", "--no-report", "--eval-every", "100000", "--sample-every",
               "100000", "--save-every", "100000", "--dropout", "0"]
        cmd += ["--fsdp"] if mode == "fsdp" else []
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        if r.returncode != 0:
            sys.exit(f"{mode}: {r.stderr[-2000:]}")
        for m in re.finditer(r"MEMORY rank (\d+) world (\d+) sharded (\w+) state (\d+) peak (\d+)",
                             r.stdout):
            rows.append((mode, int(m.group(1)), int(m.group(4)), int(m.group(5))))
    print("| mode | rank | parameters + gradients + AdamW + EMA | peak resident memory |")
    print("|---|---|---|---|")
    for mode, rank, state, peak in rows:
        print(f"| {mode} | {rank} | {state / 2**30:.2f} GiB | {peak / 2**30:.2f} GiB |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
