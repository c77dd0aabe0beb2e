"""--fsdp (FSDP2) on CPUs with gloo under torchrun: its losses and weights equal DDP's and one
process's (a run is world x accum micro-batches, each with its own noise seed); the sharded
checkpoint (torch.distributed.checkpoint) saved by 2 processes resumes at 2 bit for bit and at 1
and 4 processes exactly (the state loaded is the state saved; the continuation equal within
float reduction order); the doors read an FSDP run like any other; a missing shard or a
dangling `latest` is a one-line error; --compile works under it."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT

FLAGS = ["--batch-size", "4", "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2",
         "--n-heads", "2", "--cond-dim", "16", "--device", "cpu", "--no-progress", "--no-report",
         "--eval-every", "2", "--sample-every", "2", "--save-every", "2", "--log-every", "1",
         "--lr", "3e-3", "--warmup", "1"]
ENV = dict(os.environ, OMP_NUM_THREADS="1")
TRAIN = os.path.join(ROOT, "python", "train.py")
# gloo sums two ranks' gradients in another order than one process accumulating them
TOL = dict(rtol=1e-5, atol=1e-6)


def train(out, procs, *flags, check=True, torchrun=False):
    cmd = [sys.executable, TRAIN] if procs == 1 and not torchrun else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={procs}", TRAIN]
    flags = list(flags)
    if "--device" in flags:            # this test's device instead of FLAGS' cpu
        base = [f for i, f in enumerate(FLAGS) if f != "--device" and FLAGS[i - 1] != "--device"]
    else:
        base = FLAGS
    r = subprocess.run(cmd + base + ["--out", str(out), *flags], capture_output=True, text=True,
                       env=ENV, timeout=600)
    if check:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def losses(out):
    rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    return np.array([float(r["loss"]) for r in rows]), \
        np.array([float(r["eval_loss"]) for r in rows if r["eval_loss"]])


def weights(out, step, name="model"):
    return load_file(os.path.join(out, "checkpoints", f"step-{step:08d}", f"{name}.safetensors"))


def assert_close(a, b, exact=False):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], **TOL, msg=k)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """4 steps with 2 micro-batches per process: FSDP2 and DDP on 2 processes, one process with
    4 micro-batches; and the FSDP run cut at step 2 (its checkpoint is resumed below)."""
    root = tmp_path_factory.mktemp("fsdp")
    train(root / "fsdp", 2, "--steps", "4", "--accum", "2", "--fsdp")
    train(root / "ddp", 2, "--steps", "4", "--accum", "2")
    train(root / "one", 1, "--steps", "4", "--accum", "4")
    train(root / "cut", 2, "--steps", "2", "--accum", "2", "--fsdp")
    return root


def test_fsdp_equals_ddp_and_one_process(runs):
    f, d, o = (losses(runs / k) for k in ("fsdp", "ddp", "one"))
    for other in (d, o):
        np.testing.assert_allclose(f[0], other[0], rtol=1e-5)     # the mean loss of every rank
        np.testing.assert_allclose(f[1], other[1], rtol=1e-5)     # the EMA's held-out loss
    for name in ("model", "ema"):
        for other in ("ddp", "one"):
            assert_close(weights(runs / "fsdp", 4, name), weights(runs / other, 4, name))
    assert f[0][-1] < f[0][0]                                    # and it trains


def test_fsdp_checkpoint_is_sharded_and_whole(runs):
    ckpt = runs / "fsdp" / "checkpoints" / "step-00000004"
    shards = sorted(p for p in os.listdir(ckpt / "train") if p.endswith(".distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"] and (ckpt / "train" / ".metadata").exists()
    state = torch.load(ckpt / "state.pt", weights_only=False)
    assert state["sharded"] == {"world": 2} and "optimizer" not in state
    assert sorted(os.listdir(runs / "fsdp" / "samples"))                # rank 0 wrote samples


def test_doors_read_an_fsdp_run(runs):
    from sedd.loading import load
    a, b = load(str(runs / "fsdp")), load(str(runs / "ddp"))
    assert a.weights == "ema"
    assert_close(a.model.state_dict(), b.model.state_dict())
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "sample.py"),
                        "--checkpoint", str(runs / "fsdp"), "--num-samples", "2", "--steps", "4",
                        "--device", "cpu"], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_at_two_processes_is_bitwise(runs, tmp_path):
    out = tmp_path / "cut"
    subprocess.run(["cp", "-r", str(runs / "cut"), str(out)], check=True)
    train(out, 2, "--steps", "4", "--accum", "2", "--fsdp", "--resume")
    for name in ("model", "ema"):
        assert_close(weights(out, 4, name), weights(runs / "fsdp", 4, name), exact=True)


def test_resume_at_one_process_loads_the_state_exactly(runs):
    """In this process (no process group): weights, EMA and every AdamW moment are the saved
    ones, bit for bit."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save
    from conftest import small_cfg
    from sedd.training import Trainer
    cut = runs / "cut"
    ckpt = cut / "checkpoints" / "step-00000002"
    t = Trainer(small_cfg(cut, steps=4, batch_size=4, seq_len=16, hidden_size=32, n_blocks=2,
                          n_heads=2, cond_dim=16, accum=4, resume=True, lr=3e-3, warmup=1))
    assert t.step == 2 and not t.sharded
    assert_close(t.model.state_dict(), load_file(str(ckpt / "model.safetensors")), exact=True)
    assert_close(t.ema_model.state_dict(), load_file(str(ckpt / "ema.safetensors")), exact=True)
    dcp_to_torch_save(str(ckpt / "train"), str(runs / "cut-state.pt"))
    saved = torch.load(runs / "cut-state.pt", weights_only=False)["optimizer"]["state"]
    names = [n for n, _ in t.model.named_parameters()]
    moments = t.opt.state_dict()["state"]
    assert len(moments) == len(names)
    for i, name in enumerate(names):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(moments[i][key], saved[name][key]), (name, key)


@pytest.mark.parametrize("procs,accum", [(1, 4), (4, 1)])
def test_resume_at_another_world_size(runs, tmp_path, procs, accum):
    """Saved by 2 processes, continued by 1 (or 4) with the same micro-batches per step: the
    same run, up to the order of float sums."""
    out = tmp_path / "cut"
    subprocess.run(["cp", "-r", str(runs / "cut"), str(out)], check=True)
    r = train(out, procs, "--steps", "4", "--accum", str(accum), "--resume",
              *(["--fsdp"] if procs > 1 else []))
    assert "resumed from" in r.stdout and "at step 2" in r.stdout
    for name in ("model", "ema"):
        assert_close(weights(out, 4, name), weights(runs / "fsdp", 4, name))


def test_a_ddp_checkpoint_resumes_under_fsdp(runs, tmp_path):
    out = tmp_path / "ddp"
    train(out, 2, "--steps", "2", "--accum", "2")
    train(out, 2, "--steps", "4", "--accum", "2", "--resume", "--fsdp")
    assert_close(weights(out, 4), weights(runs / "fsdp", 4))


def test_broken_sharded_checkpoints_are_one_line_errors(runs, tmp_path):
    out = tmp_path / "cut"
    subprocess.run(["cp", "-r", str(runs / "cut"), str(out)], check=True)
    ckpt = out / "checkpoints" / "step-00000002"
    os.remove(ckpt / "train" / "__1_0.distcp")
    r = train(out, 1, "--steps", "4", "--accum", "4", "--resume", check=False)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("train.py: checkpoint")
    assert "missing 1 of its 2 shard files (__1_0.distcp" in r.stderr
    os.remove(ckpt / "train" / ".metadata")
    r = train(out, 1, "--steps", "4", "--accum", "4", "--resume", check=False)
    assert r.returncode != 0 and "has no index" in r.stderr and "Traceback" not in r.stderr
    for text, says in (("step-00000099\n", "which is missing"), ("", "is empty")):
        (out / "checkpoints" / "latest").write_text(text)
        r = train(out, 1, "--steps", "4", "--resume", check=False)
        assert r.returncode != 0 and says in r.stderr and "Traceback" not in r.stderr


def test_fsdp_with_compile(runs, tmp_path):
    """--compile under FSDP2 compiles each block (fullgraph) and trains as the eager run does."""
    train(tmp_path / "c", 2, "--steps", "2", "--accum", "2", "--fsdp", "--compile")
    assert_close(weights(tmp_path / "c", 2), weights(runs / "cut", 2))


def test_fsdp_under_torchrun_of_one_process(runs, tmp_path):
    """torchrun of one process with --fsdp shards over a world of one (the way FSDP2's bf16
    policy runs on a single GPU); it trains as the plain process does."""
    out = tmp_path / "one"
    train(out, 1, "--steps", "4", "--accum", "4", "--fsdp", torchrun=True)
    state = torch.load(out / "checkpoints" / "step-00000004" / "state.pt", weights_only=False)
    assert state["sharded"] == {"world": 1}
    assert_close(weights(out, 4), weights(runs / "one", 4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fsdp_cuda_bf16_policy_trains_and_resumes(tmp_path):
    """On a GPU (NCCL, one process): FSDP2 computes the blocks in bf16 over fp32 master
    weights, trains, writes fp32 weights, and resumes from its sharded checkpoint. The resumed
    run matches the uninterrupted one to bf16 accuracy (CUDA reductions are not ordered)."""
    a, b = tmp_path / "a", tmp_path / "b"
    flags = ["--device", "cuda", "--fsdp", "--hidden-size", "64", "--n-heads", "4"]
    train(a, 1, "--steps", "6", *flags, torchrun=True)
    train(b, 1, "--steps", "3", *flags, torchrun=True)
    r = train(b, 1, "--steps", "6", "--resume", *flags, torchrun=True)
    assert "at step 3" in r.stdout
    la = losses(a)[0]
    assert np.isfinite(la).all() and la[-1] < la[0]
    wa, wb = weights(a, 6), weights(b, 6)
    assert all(v.dtype == torch.float32 for v in wa.values())
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=2e-2, atol=2e-3, msg=k)


def test_memory_estimate_divides_the_state_by_the_shards():
    """train.py's pre-flight estimate under --fsdp: the state per process falls with the world
    size, down to the floor of building the whole network and its EMA copy once."""
    from sedd.config import resolve_config
    from sedd.training.memory import estimate_memory
    cfg = resolve_config("medium", data="openwebtext", tokenizer="gpt2", batch_size=1,
                         seq_len=1024)
    mc = cfg.model_config(50258)
    part = "weights, gradients, optimizer, EMA"
    one, two, many = (estimate_memory(cfg, mc, "cuda", w)[part] for w in (1, 2, 64))
    assert 0.5 * one < two < 0.55 * one
    assert many == pytest.approx(0.4 * one)          # 8 of the 20 bytes per parameter
    assert estimate_memory(cfg, mc, "cuda", 2)["activations"] == \
        estimate_memory(cfg, mc, "cuda", 1)["activations"]
