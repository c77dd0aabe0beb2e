"""The autoregressive baseline (train.py --model ar, sedd.ar): its fused loss equals
F.cross_entropy on materialised logits (float64, values and gradients), the KV-cached sampler
draws the same tokens as the uncached one, samples follow the model's distribution (chi-square),
a short run beats the unigram baseline and approaches the exact NLL, resume is exact, torchrun
works, checkpoints load through every door, and the doors refuse what an AR model cannot do."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sedd.families.ar import ar_sample
from sedd.nn import ARModel
from sedd.data.language import builtin_language
from sedd.families import build_model, family_of
from sedd.nn import ModelConfig
from sedd.training import Trainer

from conftest import ROOT, script, small_cfg


def tiny_ar(n=9, L=12, H=16, blocks=2, heads=2, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=n + 1, hidden_size=H, n_blocks=blocks, n_heads=heads,
                      dropout=0.0, scale_by_sigma=False, max_length=L, family="ar")
    m = build_model(cfg).to(dtype)
    with torch.no_grad():      # random, not zero, weights everywhere (sharper distributions)
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return m.eval()


def test_build_model_makes_the_ar_network_and_matches_the_ddit_trunk_widths():
    m = tiny_ar()
    assert isinstance(m, ARModel) and family_of(m).exact_likelihood
    names = {k for k, _ in m.named_parameters()}
    assert "blocks.0.attn_qkv.weight" in names and "blocks.1.mlp.2.bias" in names
    assert not any("adaLN" in k or "sigma_map" in k for k in names)
    with pytest.raises(ValueError, match="parametrisation must be 'score'"):
        build_model(ModelConfig(vocab_size=10, family="ar", parametrisation="clean"))
    with pytest.raises(ValueError, match="family must be one of"):
        build_model(ModelConfig(vocab_size=10, family="rnn"))


@pytest.mark.parametrize("reduction", ["sum", "mean", "none"])
def test_fused_loss_equals_cross_entropy_on_materialised_logits(reduction):
    m = tiny_ar()
    x = torch.randint(0, 9, (3, 12), generator=torch.Generator().manual_seed(1))
    fused = m(x, loss=reduction)
    gf = torch.autograd.grad(fused.sum(), list(m.parameters()))
    logits = m(x)                                   # [B, L, n], materialised
    assert logits.dtype == torch.float64 and logits.shape == (3, 12, 9)
    ref = F.cross_entropy(logits.reshape(-1, 9), x.reshape(-1), reduction=reduction)
    ref = ref.view(3, 12) if reduction == "none" else ref
    gr = torch.autograd.grad(ref.sum(), list(m.parameters()))
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    for a, b in zip(gf, gr):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_position_i_sees_only_the_tokens_before_it():
    """Changing x_j changes the logits of positions > j only (causality, BOS first)."""
    m = tiny_ar()
    x = torch.randint(0, 9, (1, 12), generator=torch.Generator().manual_seed(2))
    y = x.clone()
    y[0, 5] = (x[0, 5] + 1) % 9
    a, b = m(x), m(y)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)
    assert (a[:, 6:] - b[:, 6:]).abs().amax() > 1e-6


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.8)])
def test_kv_cached_sampler_equals_the_uncached_one(temperature, top_p):
    m = tiny_ar()
    prefix = torch.tensor([[3, 1, 4]])
    out = []
    for cache in (True, False):
        g = torch.Generator().manual_seed(7)
        out.append(ar_sample(m, 16, 12, generator=g, prefix=prefix, cache=cache,
                             temperature=temperature, top_p=top_p))
    assert torch.equal(out[0], out[1])
    assert (out[0][:, :3] == prefix).all()
    g = torch.Generator().manual_seed(8)
    assert not torch.equal(out[0], ar_sample(m, 16, 12, generator=g, prefix=prefix))


def test_cached_logits_equal_the_full_forward():
    m = tiny_ar()
    x = torch.randint(0, 9, (2, 12), generator=torch.Generator().manual_seed(3))
    full = m(x)                                      # logits of x_i given x_<i
    kv = m.new_cache(2, 12)
    steps = [m.next_logits(torch.cat([torch.full((2, 1), m.bos), x[:, :4]], 1), kv)]
    for i in range(4, 11):
        steps.append(m.next_logits(x[:, i:i + 1], kv))
    torch.testing.assert_close(torch.stack(steps, 1), full[:, 4:12], rtol=1e-10, atol=1e-12)


def test_samples_follow_the_model_distribution():
    """Chi-square of 40 000 two-token samples against the model's exact joint p(x_1) p(x_2 | x_1)
    (25 outcomes); and top-p = 0.5 never draws a token outside the first position's nucleus."""
    m = tiny_ar(n=5, L=2)
    N = 40_000
    x = ar_sample(m, N, 2, generator=torch.Generator().manual_seed(0))
    grid = torch.cartesian_prod(torch.arange(5), torch.arange(5))
    p = torch.exp(-m.nll(grid)).numpy()
    assert abs(p.sum() - 1) < 1e-12
    counts = np.bincount((x[:, 0] * 5 + x[:, 1]).numpy(), minlength=25)
    expected = p * N                    # Pearson's statistic within mean + 6 sd (24 dof)
    stat = float(((counts - expected) ** 2 / expected).sum())
    assert stat <= 24 + 6 * math.sqrt(48), stat
    first = torch.softmax(m(grid[:1])[0, 0], 0)
    order = torch.argsort(first, descending=True)
    keep = order[:int((torch.cumsum(first[order], 0) - first[order] < 0.5).sum())]
    y = ar_sample(m, 4000, 1, generator=torch.Generator().manual_seed(1), top_p=0.5)
    assert set(y[:, 0].tolist()) <= set(keep.tolist())


def test_stop_at_eos_cuts_each_row_after_its_first_eos():
    m = tiny_ar(n=5, L=12)
    rows, stats = ar_sample(m, 8, 12, generator=torch.Generator().manual_seed(0), stop_at_eos=True,
                            eos=2, return_stats=True)
    for r, ended in zip(rows, stats.ended):
        hits = (r == 2).nonzero().flatten().tolist()
        assert (hits == [len(r) - 1]) if ended else (hits == [] and len(r) == 12)


def test_ar_sample_bad_input():
    m = tiny_ar()
    with pytest.raises(ValueError, match="longer than the autoregressive model's window 12"):
        ar_sample(m, 2, 13)
    with pytest.raises(ValueError, match="prefix .* longer than the length"):
        ar_sample(m, 2, 3, prefix=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="top_p must be in"):
        ar_sample(m, 2, 3, top_p=0.0)
    with pytest.raises(ValueError, match="stop_at_eos needs the eos"):
        ar_sample(m, 2, 3, stop_at_eos=True)


def ar_cfg(out, **kw):
    return small_cfg(out, family="ar", **kw)


def test_a_short_run_beats_the_unigram_baseline_and_approaches_the_exact_nll(tmp_path):
    """150 steps of the H = 32 AR model on the built-in language: its exact held-out NLL is below
    the unigram entropy and, being a likelihood, not below the true NLL of the same sequences."""
    lang = builtin_language()
    t = Trainer(ar_cfg(tmp_path, steps=150, batch_size=16, seq_len=32, lr=3e-3, warmup=10,
                       ema=0.0))
    x0 = torch.stack([t.corpus.valid[i] for i in range(256)])
    before = t.family.nll(t.model, x0)[0].mean().item() / 32
    t.fit()
    after = t.family.nll(t.model, x0)[0].mean().item() / 32
    unigram = lang.start @ lang.emit
    h_unigram = float(-(unigram * np.log(unigram)).sum())
    true_nll = float(-lang.log_likelihood(x0.numpy()).mean() / 32)
    print(f"before {before:.3f} after {after:.3f} unigram {h_unigram:.3f} true {true_nll:.3f}")
    assert after < before and after < h_unigram - 0.2, (before, after, h_unigram)
    assert after > true_nll - 0.05, (after, true_nll)


def test_resume_is_bitwise_exact(tmp_path):
    from safetensors.torch import load_file
    Trainer(ar_cfg(tmp_path / "straight", steps=4)).fit()
    Trainer(ar_cfg(tmp_path / "split", steps=2)).fit()
    Trainer(ar_cfg(tmp_path / "split", steps=4, resume=True)).fit()
    for f in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000004" / f))
        b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000004" / f))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_a_sedd_checkpoint(tmp_path):
    Trainer(small_cfg(tmp_path, steps=1)).fit()
    with pytest.raises(ValueError, match="family = 'sedd', this run has 'ar'"):
        Trainer(ar_cfg(tmp_path, steps=2, resume=True))


def test_accumulation_and_autocast_paths_run(tmp_path):
    """--accum 2 gives the loss of one batch of twice the size (same data order), bf16 autocast
    of the fused loss stays within bf16 tolerance of fp32."""
    t1 = Trainer(ar_cfg(tmp_path / "a", steps=1, batch_size=4, accum=2))
    t2 = Trainer(ar_cfg(tmp_path / "b", steps=1, batch_size=4))
    x = torch.cat([t1.batch(0, 0), t1.batch(0, 1)])
    loss = float(t1.forward_backward())
    with torch.no_grad():
        ref = float(t2.family.loss(t2.model, x, None))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = float(t2.family.loss(t2.model, x, None))
    assert math.isclose(loss, ref, rel_tol=1e-5)
    assert math.isclose(low, ref, rel_tol=2e-2)


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "ddp_train.py"), "--model", "ar", "--steps", "3",
           "--batch-size", "4", "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2",
           "--n-heads", "2", "--device", "cpu", "--out", str(out), "--no-progress", "--no-report",
           "--eval-every", "100", "--save-every", "100", "--sample-every", "100"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "ranks.txt").read_text().split()[-1] == "True"


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ar_run")
    Trainer(ar_cfg(out, steps=20, batch_size=8, seq_len=16)).fit()
    return out


def test_checkpoint_loads_through_every_door(ar_run, tmp_path):
    from sedd.loading import load, save_pretrained
    from sedd.loading import ConfigError
    p = load(str(ar_run), tokenizer=False)
    assert family_of(p.model).exact_likelihood and p.run.graph is None and p.run.n == 381
    assert p.run.build_graph() is None and p.run.build_noise() is None
    hub = save_pretrained(str(tmp_path / "hub"), p.model, run=p.run)
    q = load(hub, tokenizer=False)
    x = torch.randint(0, 381, (2, 16))
    torch.testing.assert_close(q.model.nll(x), p.model.nll(x))
    with pytest.raises(ConfigError, match="no autoregressive model"):
        save_pretrained(str(tmp_path / "paper"), p.model, run=p.run, layout="paper")


def test_evaluate_reports_the_exact_nll(ar_run):
    r = script("evaluate.py", "--checkpoint", str(ar_run), "--num-sequences", "16")
    assert r.returncode == 0, r.stderr
    assert "its exact NLL" in r.stdout and "NLL: " in r.stdout and "bound" not in r.stdout
    r = script("evaluate.py", "--checkpoint", str(ar_run), "--num-sequences", "16",
               "--protocol", "mdlm")
    assert r.returncode == 0, r.stderr


def test_sample_door_accepts_a_prefix_and_refuses_infill(ar_run, tmp_path):
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(ar_run), "--prefix", "the", "--num-samples", "3",
               "--top-p", "0.9", "--temperature", "0.8", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    the = builtin_language().encode("the")[0]
    assert len(rows) == 3 and all(row["tokens"][0] == the and len(row["tokens"]) == 16
                                  for row in rows)
    for flags, match in [(["--infill", "the [___] ."], "--infill: an autoregressive model"),
                         (["--suffix", "."], "--suffix: an autoregressive model"),
                         (["--length", "17"], "--length 17 is longer than"),
                         (["--predictor", "euler"], "--predictor applies to SEDD or block-diffusion models"),
                         (["--window", "8"], "--window applies to SEDD models")]:
        r = script("sample.py", "--checkpoint", str(ar_run), "--out", str(out), *flags)
        assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr, r.stderr
