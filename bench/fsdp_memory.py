"""Peak memory per process of DDP and FSDP2 (--fsdp) on CPUs: torchrun with N gloo processes
builds a preset's trainer on the built-in language and runs a few optimizer steps, and every rank
reports the bytes its parameters, gradients, AdamW state and EMA hold, its peak resident memory
(VmHWM) once built, and the peak over the steps alone (the peak restarted after building, through
/proc/self/clear_refs, so it starts at the resident memory then).

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


def peak() -> int:
    """This process's peak resident memory (VmHWM), bytes."""
    return int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) * 1024


def worker(argv):
    """Inside torchrun: train, then print this rank's memory."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import torch
    from train import parse_args
    from sedd.config import from_args
    from sedd.training import Trainer

    t = Trainer(from_args(parse_args(argv)))
    built = peak()
    import gc
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:     # restart the peak: training's own
        fh.write("5")
    for _ in range(t.cfg.steps):       # the steps alone (no eval, samples or checkpoint)
        t.train_step()

    def nbytes(p):
        p = p.to_local() if hasattr(p, "to_local") else p      # FSDP2: this rank's shard
        return p.numel() * p.element_size()

    params = sum(nbytes(p) for p in t.model.parameters())
    ema = sum(nbytes(p) for p in t.ema_model.parameters())
    adam = sum(nbytes(v) for s in t.opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor))
    state = 2 * params + ema + adam       # the gradients: one per parameter during a step
    print(f"MEMORY rank {t.rank} world {t.world} sharded {t.sharded} state {state} "
          f"built {built} peak {peak()}", flush=True)
    t.dist.exit_worker()


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
               "--seq-len", str(a.seq_len), "--data", "builtin", "--device", "cpu", "--out", f"{a.out}/{mode}",
               "--no-progress", "--no-report", "--eval-every", "100000", "--sample-every",
               "100000", "--save-every", "100000", "--dropout", "0"]
        cmd += ["--fsdp"] if mode == "fsdp" else []
        r = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="131072"))
        if r.returncode != 0:
            sys.exit(f"{mode}: {r.stderr[-2000:]}")
        for m in re.finditer(r"MEMORY rank (\d+) world \d+ sharded \w+ state (\d+) built (\d+) "
                             r"peak (\d+)", r.stdout):
            rows.append((mode, *(int(g) for g in m.groups())))
    print("| mode | rank | parameters + gradients + AdamW + EMA | peak RSS, building | "
          "peak RSS, training |")
    print("|---|---|---|---|---|")
    for mode, rank, state, built, peak_ in sorted(rows):
        print(f"| {mode} | {rank} | {state / 2**30:.2f} GiB | {built / 2**30:.2f} GiB | "
              f"{peak_ / 2**30:.2f} GiB |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
    else:
        main()
