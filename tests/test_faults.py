"""Fault injection (tests/faults.py) at CI size: a run SIGKILLed at random moments and at every
fault point, resumed each time, ends bit for bit where an uninterrupted run ends; SIGTERM and
Ctrl-C stop every rank with a checkpoint. The on-demand size: python tests/faults.py --kills 200."""

import os
import signal
import subprocess
import sys
import time

import pytest

import faults


def test_fsdp_two_processes_survive_ten_kills(tmp_path):
    r = faults.harness(str(tmp_path), kills=10, procs=2, fsdp=True, seed=1)
    assert r.kills == 10 and set(r.by_kind) == {"time", *faults.POINTS} - {"prepare.part"}
    assert max(r.lost) <= 5 and len(r.resumed_from) == r.launches - 1


def test_one_process_survives_kills(tmp_path):
    r = faults.harness(str(tmp_path), kills=5, procs=1, fsdp=False, seed=2)
    assert r.kills == 5 and "checkpoint.shards" not in r.by_kind and max(r.lost) <= 5


def test_fault_points_are_checked():
    env = dict(os.environ, SEDD_FAULT="nowhere:0:1")
    r = subprocess.run([sys.executable, "-c", "from sedd.core import faults; faults.point('step')"],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "unknown point 'nowhere'" in r.stderr


@pytest.mark.parametrize("how", ["sigterm-workers", "ctrl-c"])
def test_stop_signals_save_on_every_rank_and_resume(tmp_path, how):
    """SIGTERM to every worker (a scheduler's preemption) or SIGINT to torchrun (Ctrl-C, which it
    forwards): every rank leaves the loop after the same step, the checkpoint of that step is
    whole, and --resume continues from it."""
    out = str(tmp_path / "run")
    cmd = faults.command(out, 100000, 100000, 2, True, False)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log_path = str(tmp_path / "log")
    with open(log_path, "w") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
    deadline = time.time() + 120
    while faults.last_logged_step(out) < 3 and time.time() < deadline:
        time.sleep(0.1)
    if how == "ctrl-c":
        os.kill(p.pid, signal.SIGINT)
    else:
        for pid in faults.children(p.pid):
            os.kill(pid, signal.SIGTERM)
    p.wait(timeout=120)
    log = open(log_path).read()
    assert log.count("stopped at step") == 2, log[-3000:]     # both ranks said so
    # torchrun itself ends Ctrl-C with its SignalException's traceback; no worker has one
    assert "sedd/" not in log and 'train.py", line' not in log, log[-3000:]
    assert how == "ctrl-c" or "Traceback" not in log, log[-3000:]
    step = faults.latest_step(out)
    assert step >= 3 and f"stopped at step {step};" in log
    faults.check_complete(out)
    if how == "sigterm-workers":
        assert p.returncode == 0, log[-3000:]
    cmd = faults.command(out, step + 2, 100000, 2, True, True)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resumed from" in r.stdout and faults.latest_step(out) == step + 2
