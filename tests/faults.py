"""Fault injection for training: a small run under torchrun (or one process) is SIGKILLed many
times, at random moments and at the fault points (sedd.core.faults: mid-step, between the shard
write and the weights, mid-weights, before the rename, between the rename and the `latest`
pointer), and resumed after each kill. Every resume must start from the newest complete
checkpoint, lose at most the steps since it, and the run must end with the same weights and EMA
weights, bit for bit, as a run that was never killed (CPU: gloo's reduction order is fixed).

    python tests/faults.py --kills 200               # FSDP2 over 2 processes (on demand)
    python tests/faults.py --kills 200 --procs 1     # one process

tests/test_faults.py runs it at a small size in CI."""

from __future__ import annotations

import argparse
import csv
import os
import random
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

from sedd.core.faults import POINTS  # noqa: E402

FLAGS = ["--batch-size", "4", "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2",
         "--n-heads", "2", "--cond-dim", "16", "--device", "cpu", "--no-progress", "--no-report",
         "--eval-every", "100000", "--sample-every", "100000", "--log-every", "1"]


@dataclass
class Outcome:
    kills: int = 0
    launches: int = 0
    by_kind: dict = field(default_factory=dict)
    lost: list = field(default_factory=list)       # steps redone after each kill
    resumed_from: list = field(default_factory=list)
    seconds: float = 0.0


def command(out, steps, save_every, procs, fsdp, resume):
    args = FLAGS + ["--steps", str(steps), "--save-every", str(save_every), "--out", out]
    args += ["--fsdp"] if fsdp else []
    args += ["--resume"] if resume else []
    train = os.path.join(ROOT, "python", "train.py")
    if procs == 1:
        return [sys.executable, train] + args
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={procs}", "--monitor-interval", "0.1", train] + args


def latest_step(out):
    path = os.path.join(out, "checkpoints", "latest")
    if not os.path.exists(path):
        return None
    return int(open(path).read().strip().split("-")[1])


def last_logged_step(out):
    path = os.path.join(out, "metrics.csv")
    if not os.path.exists(path):
        return 0
    rows = [r for r in csv.reader(open(path)) if r and r[0].isdigit()]
    return int(rows[-1][0]) if rows else 0


def check_complete(out):
    """The checkpoint `latest` names loads whole: weights, EMA, state, config, every shard."""
    from sedd.loading.checkpoints import load_checkpoint
    from sedd.training.checkpoints import check_shards
    _, _, state, _, path = load_checkpoint(out)
    if "sharded" in state:
        check_shards(os.path.join(path, "train"))
    return path


def children(pid):
    """The worker processes torchrun started (its direct children)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def run(cmd, log_path, env, kill_after=None, procs=1, rng=None, timeout=300):
    """Launch; with kill_after (seconds after training starts) SIGKILL one worker then. Returns
    (return code, log text, seconds from the start of training to the exit)."""
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    deadline = time.time() + timeout
    while p.poll() is None and time.time() < deadline:      # training starts
        if "model:" in open(log_path).read():
            break
        time.sleep(0.02)
    started = time.time()
    if kill_after is not None:
        time.sleep(kill_after)
        if p.poll() is None:
            victims = children(p.pid) if procs > 1 else [p.pid]
            if victims:
                os.kill(rng.choice(victims), signal.SIGKILL)
    try:
        p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise RuntimeError(f"{' '.join(cmd)} hung; log: {open(log_path).read()[-2000:]}")
    return p.returncode, open(log_path).read(), time.time() - started


def weights(out, step):
    from safetensors.torch import load_file
    ckpt = os.path.join(out, "checkpoints", f"step-{step:08d}")
    return (load_file(os.path.join(ckpt, "model.safetensors")),
            load_file(os.path.join(ckpt, "ema.safetensors")))


def harness(workdir, kills=10, procs=2, fsdp=True, steps=None, save_every=5, seed=0,
            verbose=False) -> Outcome:
    """Kill and resume a run `kills` times; compare its end with an uninterrupted run's."""
    rng = random.Random(seed)
    steps = steps or 20 * kills + 40
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("SEDD_FAULT", None)
    ref = os.path.join(workdir, "uninterrupted")
    rc, log, training = run(command(ref, steps, save_every, procs, fsdp, False),
                            os.path.join(workdir, "uninterrupted.log"), env)
    assert rc == 0, log[-3000:]
    # a launch moves on about `save_every` steps before its kill (a timed kill falls within the
    # time of 2·save_every steps; a fault point within 2·save_every steps or 2 saves), so that a
    # run of 20·kills steps outlasts its kills
    window = 2 * save_every * training / steps
    out, result, t0 = os.path.join(workdir, "killed"), Outcome(), time.time()
    deck = []
    while True:
        before = latest_step(out)
        cmd = command(out, steps, save_every, procs, fsdp, before is not None)
        kind, run_env, kill_after = None, env, None
        if result.kills < kills:
            if not deck:             # every kind once per round, in a random order
                deck = ["time"] + [k for k in POINTS if k.startswith("checkpoint.") and
                                   (fsdp or k != "checkpoint.shards")] + ["step"]
                rng.shuffle(deck)
            kind = deck.pop()
            if kind == "time":
                kill_after = rng.uniform(0.0, window)
            else:
                n = rng.randint(1, 2 * save_every) if kind == "step" else rng.randint(1, 2)
                rank = rng.randrange(procs) if POINTS[kind][1] == "every rank" else 0
                run_env = dict(env, SEDD_FAULT=f"{kind}:{rank}:{n}")
        rc, log, _ = run(cmd, os.path.join(workdir, f"launch-{result.launches}.log"), run_env,
                            kill_after, procs, rng)
        result.launches += 1
        m = re.search(r"resumed from \S+ at step (\d+)", log)
        if before is not None:
            assert m and int(m.group(1)) == before, \
                f"launch {result.launches}: resumed from {m and m.group(1)}, latest was {before}"
            result.resumed_from.append(before)
        if rc == 0:
            if latest_step(out) != steps:
                raise AssertionError(f"launch {result.launches} ended before step {steps}: "
                                     f"{log[-2000:]}")
            if result.kills < kills:
                raise AssertionError(f"the run reached step {steps} after {result.kills} of "
                                     f"{kills} kills (a kill armed past its end): give it more "
                                     f"steps")
            break
        assert "Traceback" not in log or kind is not None, log[-3000:]
        result.kills += 1
        result.by_kind[kind] = result.by_kind.get(kind, 0) + 1
        if latest_step(out) is not None:
            check_complete(out)
        lost = last_logged_step(out) - (latest_step(out) or 0)
        assert 0 <= lost <= save_every, f"kill {result.kills} ({kind}): {lost} steps lost"
        result.lost.append(lost)
        if verbose:
            print(f"kill {result.kills:4d} {kind:20s} latest {latest_step(out)} lost {lost}",
                  flush=True)
    result.seconds = time.time() - t0
    a, b = weights(ref, steps), weights(out, steps)
    for name, x, y in (("weights", a[0], b[0]), ("EMA", a[1], b[1])):
        assert x.keys() == y.keys()
        differ = [k for k in x if not (x[k] == y[k]).all()]
        assert not differ, f"after {result.kills} kills the {name} differ from the " \
                           f"uninterrupted run's in {differ[:5]}"
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--ddp", action="store_true", help="DDP instead of FSDP2 (procs > 1)")
    p.add_argument("--save-every", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    a = p.parse_args()
    import tempfile
    workdir = a.workdir or tempfile.mkdtemp(prefix="sedd-faults-")
    os.makedirs(workdir, exist_ok=True)
    r = harness(workdir, a.kills, a.procs, not a.ddp and a.procs > 1, save_every=a.save_every,
                seed=a.seed, verbose=True)
    print(f"{r.kills} kills over {r.launches} launches in {r.seconds:.0f} s "
          f"({', '.join(f'{k} {v}' for k, v in sorted(r.by_kind.items()))}); steps lost per kill: "
          f"max {max(r.lost)}, mean {sum(r.lost) / len(r.lost):.2f}; final weights and EMA "
          f"bitwise equal to the uninterrupted run's")


if __name__ == "__main__":
    main()
