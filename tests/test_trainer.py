"""The SEDD model and trainer (issue: python/train.py from a laptop CPU to torchrun): a training
step lowers the loss, resume is bitwise exact on CPU, two torchrun processes keep identical
weights, the paper's checkpoint layout loads strictly, the built-in language's exact likelihood,
GPT-2 tokenization from the shared ranks file, and clear errors for bad input."""

import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sedd.checkpoint import CheckpointError, load_checkpoint
from sedd.graphs import Absorbing, Uniform
from sedd.language import builtin_language
from sedd.losses import batch_loss, loss_fn
from sedd.model import DDiT, ModelConfig, PRESETS
from sedd.noise import Geometric, LogLinear
from sedd.trainer import TrainConfig, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


def small_cfg(out, **kw):
    base = dict(steps=6, batch_size=8, seq_len=16, lr=1e-3, warmup=2, ema=0.9, eval_every=1000,
                save_every=1000, sample_every=1000, log_every=1, out=str(out), progress=False,
                final_report=False, hidden_size=32, n_blocks=2, n_heads=2, dropout=0.0,
                device="cpu")
    base.update(kw)
    return TrainConfig.from_preset("tiny", **base)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_training_step_lowers_the_loss(graph):
    """SEDD.md §4 loss on a fixed batch and fixed noise levels falls under AdamW."""
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb", **TINY))
    x0 = torch.from_numpy(lang.sample(16, 24, seed=3))
    t = torch.linspace(0.05, 0.95, 16, dtype=torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss():
        return loss_fn(model, x0, g, noise, torch.Generator().manual_seed(0), t=t).mean()

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.8 * first


def test_fused_and_reference_loss_agree():
    lang = builtin_language()
    g = Absorbing(lang.n)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.05)
    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    a = loss_fn(model, x0, g, LogLinear(), torch.Generator().manual_seed(2))
    b = loss_fn(model, x0, g, LogLinear(), torch.Generator().manual_seed(2), use_reference=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_fused_linear_loss_matches_the_unfused_model(graph):
    """batch_loss through the fused projection + loss (linear_score_entropy, the trainer's
    default) equals the unfused path — DDiT log-scores [B, L, V] then the fused loss — in value
    and in every parameter's gradient (float64 model, same random draws)."""
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb", **TINY))
    for p in model.parameters():          # move off the zero initialisation of the output layer
        torch.nn.init.normal_(p, std=0.05)
    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    values, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        v = batch_loss(model, x0, g, noise, torch.Generator().manual_seed(2), fused_linear=fused,
                       scale=0.5)
        v.backward()
        values.append(v.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(values[0], values[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-7


def test_bound_integrand_through_the_fused_projection():
    """The likelihood bound's integrand (score_entropy_sum) goes through the fused projection for
    a DDiT and equals the unfused network + loss with the same draws."""
    from sedd.losses import score_entropy_sum
    lang = builtin_language()
    g = Absorbing(lang.n)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.05)

    class Unfused(torch.nn.Module):          # the same network without supports_fused_loss
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, sigma):
            return self.m(x, sigma)

    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    sigma = torch.tensor([0.01, 0.5, 2.0, 7.0], dtype=torch.float64)
    a = score_entropy_sum(model, x0, g, sigma, torch.Generator().manual_seed(3))
    b = score_entropy_sum(Unfused(model), x0, g, sigma, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_no_fused_linear_flag_trains(tmp_path):
    """--no-fused-linear reaches the config and trains to the same loss scale as the default."""
    from train import parse_args
    assert parse_args(["--no-fused-linear"]).no_fused_linear
    losses = []
    for fused in (True, False):
        t = Trainer(small_cfg(tmp_path / str(fused), steps=3, fused_linear=fused))
        losses.append([t.train_step()[0] for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def test_resume_is_bitwise_exact(tmp_path):
    """N steps straight and N/2 + resume + N/2 give bitwise-identical weights on CPU."""
    from safetensors.torch import load_file
    Trainer(small_cfg(tmp_path / "straight", steps=6)).fit()
    Trainer(small_cfg(tmp_path / "split", steps=3)).fit()
    Trainer(small_cfg(tmp_path / "split", steps=6, resume=True)).fit()
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    e1 = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000006" / "ema.safetensors"))
    e2 = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "ema.safetensors"))
    assert all(torch.equal(e1[k], e2[k]) for k in e1)


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    """`torchrun --nproc_per_node=2 python/train.py` on CPU (gloo, DDP) for a few steps."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "python", "train.py"), "--steps", "3", "--batch-size", "4",
           "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2", "--n-heads", "2",
           "--device", "cpu", "--out", str(out), "--no-progress", "--no-report",
           "--eval-every", "100", "--save-every", "100", "--sample-every", "100"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "ranks.txt").read_text().split()[-1] == "True"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000003"


def paper_small_layout(V=50258, H=768, N=12, C=128):
    """Names and shapes of the paper's released SEDD-small state dict."""
    spec = {"vocab_embed.embedding": (V, H), "sigma_map.mlp.0.weight": (C, 256),
            "sigma_map.mlp.0.bias": (C,), "sigma_map.mlp.2.weight": (C, C),
            "sigma_map.mlp.2.bias": (C,), "rotary_emb.inv_freq": (H // 12 // 2,)}
    for i in range(N):
        b = f"blocks.{i}."
        spec.update({b + "norm1.weight": (H,), b + "attn_qkv.weight": (3 * H, H),
                     b + "attn_out.weight": (H, H), b + "norm2.weight": (H,),
                     b + "mlp.0.weight": (4 * H, H), b + "mlp.0.bias": (4 * H,),
                     b + "mlp.2.weight": (H, 4 * H), b + "mlp.2.bias": (H,),
                     b + "adaLN_modulation.weight": (6 * H, C), b + "adaLN_modulation.bias": (6 * H,)})
    spec.update({"output_layer.norm_final.weight": (H,), "output_layer.linear.weight": (V, H),
                 "output_layer.linear.bias": (V,), "output_layer.adaLN_modulation.weight": (2 * H, C),
                 "output_layer.adaLN_modulation.bias": (2 * H,)})
    return spec


def test_paper_checkpoint_layout_loads_strictly():
    spec = paper_small_layout()
    state = {k: torch.randn(s) * 0.01 for k, s in spec.items()}
    model = DDiT(ModelConfig(vocab_size=50258, **PRESETS["small"]))
    model.load_state_dict(state, strict=True)
    assert 85e6 < model.num_parameters() < 95e6


def test_builtin_language_likelihood_matches_enumeration():
    """The forward algorithm equals the sum over hidden paths, and sums to 1 over all sequences."""
    lang = builtin_language()
    seqs = lang.sample(12, 3, seed=4)
    S = len(lang.states)
    for x in seqs:
        total = 0.0
        for path in itertools.product(range(S), repeat=3):
            p = lang.start[path[0]] * lang.emit[path[0], x[0]]
            for i in (1, 2):
                p *= lang.trans[path[i - 1], path[i]] * lang.emit[path[i], x[i]]
            total += p
        assert math.isclose(math.exp(lang.log_likelihood(x[None])[0]), total, rel_tol=1e-10)
    pairs = np.array(list(itertools.product(range(lang.n), repeat=2)))
    assert math.isclose(np.exp(lang.log_likelihood(pairs)).sum(), 1.0, rel_tol=1e-9)
    h, se = lang.entropy_rate(32, num=500)
    assert 1.0 < h < math.log(lang.n) and se < 0.05


def test_builtin_language_round_trips_text():
    lang = builtin_language()
    x = lang.sample(2, 40, seed=0)
    for row in x:
        assert lang.encode(lang.decode(row)) == row.tolist()
    with pytest.raises(ValueError, match="not in the built-in language"):
        lang.encode("the qwzx")


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "gpt2.tiktoken")),
                    reason="../shared/data/gpt2.tiktoken is absent")
def test_gpt2_tokenizer_from_the_shared_ranks_file():
    pytest.importorskip("tiktoken", reason="tiktoken is a `train` extra")
    from sedd.data import get_tokenizer
    tok = get_tokenizer("gpt2:" + os.path.join(SHARED, "gpt2.tiktoken"))
    ids = tok.encode("Hello world, this is a test.")
    assert ids == [15496, 995, 11, 428, 318, 257, 1332, 13]
    assert tok.decode(ids) == "Hello world, this is a test."
    assert tok.eos == 50256 and tok.n == 50257


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "shakespeare.txt")),
                    reason="../shared/data/shakespeare.txt is absent")
def test_text_file_corpus_is_tokenized_once(tmp_path):
    from sedd.data import load_corpus
    text = open(os.path.join(SHARED, "shakespeare.txt"), encoding="utf-8").read()[:200_000]
    f = tmp_path / "plays.txt"
    f.write_text(text)
    cache = tmp_path / "cache"          # the cache folder, never beside the data (issue 11)
    c = load_corpus(str(f), "char", 64, cache_dir=str(cache))
    caches = list(cache.glob("tokens-*.u32"))
    assert len(caches) == 1 and len(c.train) > 100
    assert c.tokenizer.decode(c.train[0].tolist()) == "".join(
        ch for ch in text.lower() if ch in c.tokenizer.index)[:64]
    mtime = caches[0].stat().st_mtime_ns
    load_corpus(str(f), "char", 64, cache_dir=str(cache))
    assert caches[0].stat().st_mtime_ns == mtime
    # a byte-level BPE trained with `tokenizers` on the corpus, in the cache folder
    pytest.importorskip("tokenizers", reason="tokenizers is a `train` extra")
    c = load_corpus(str(f), "bpe:400", 32, cache_dir=str(cache))
    assert len(list(cache.glob("bpe-400-*.json"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "plays.txt"]
    assert c.tokenizer.n <= 400 and len(c.train) > 10
    assert c.tokenizer.decode(c.tokenizer.encode("To be, or not to be")) == "To be, or not to be"


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "--steps must be >= 1"), ("batch_size", 0, "--batch-size"),
    ("lr", -1.0, "--lr must be > 0"), ("ema", 1.5, "--ema"), ("graph", "masked", "--graph"),
    ("accum", 0, "--accum")])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_preset("tiny", **{field: value})
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig.from_preset("huge")


def test_cli_rejects_bad_values(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "train.py"), "--steps", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--steps must be >= 1" in r.stderr


def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path):
    """SIGTERM stops the run after the current step with a checkpoint; --resume continues."""
    import signal
    import time
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "python", "train.py"), "--steps", "100000",
           "--batch-size", "4", "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2",
           "--n-heads", "2", "--device", "cpu", "--out", str(out), "--no-progress", "--no-report",
           "--eval-every", "100000", "--save-every", "100000", "--sample-every", "100000",
           "--log-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert "stopped at step" in log
    name = (out / "checkpoints" / "latest").read_text().strip()
    step = int(name.split("-")[1])
    assert step >= 3
    cfg = small_cfg(out, steps=step + 2, batch_size=4, resume=True)
    t = Trainer(cfg)
    assert t.step == step
    t.fit()
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step + 2:08d}"


def test_corrupt_or_missing_checkpoints(tmp_path):
    Trainer(small_cfg(tmp_path / "run", steps=2)).fit()
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(str(tmp_path / "run"))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(small_cfg(tmp_path / "empty", resume=True))
    # a failed resume never touched the last good pointer
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-00000002"


def test_resume_rejects_a_different_parametrisation(tmp_path):
    """Weights of a σ-conditioned model have the shapes of a time-independent one: resuming with
    the other --parametrisation must fail clearly, not load silently."""
    Trainer(small_cfg(tmp_path / "run", steps=1)).fit()
    with pytest.raises(ValueError, match="parametrisation = 'score', this run has 'clean'"):
        Trainer(small_cfg(tmp_path / "run", steps=2, resume=True, parametrisation="clean"))


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_sampler_keeps_given_positions_and_never_outputs_the_mask(graph, predictor):
    from sedd.sampling import sample
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    torch.manual_seed(0)
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb", **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)
    tokens = torch.from_numpy(lang.sample(1, 20, seed=1))
    given = torch.zeros(1, 20, dtype=torch.bool)
    given[0, :5] = True
    given[0, 12:14] = True
    a = sample(model, g, noise, 6, 20, 16, predictor, condition=(tokens, given),
               generator=torch.Generator().manual_seed(3))
    b = sample(model, g, noise, 6, 20, 16, predictor, condition=(tokens, given),
               generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a[:, given[0]] == tokens[0, given[0]]).all()
    assert ((a >= 0) & (a < lang.n)).all()          # in particular never the mask id


def test_training_with_a_general_rate_matrix(tmp_path):
    """--graph general:PATH trains on a user's Q (here a random one over the built-in words)
    through GeneralGraph and samples from it."""
    from sedd.sampling import sample
    V = builtin_language().n
    g = torch.Generator().manual_seed(0)
    Q = torch.rand(V, V, generator=g, dtype=torch.float64) / V
    Q.fill_diagonal_(0)
    Q -= torch.diag(Q.sum(0))
    torch.save(Q, tmp_path / "Q.pt")
    cfg = small_cfg(tmp_path / "run", steps=3, batch_size=4, seq_len=8,
                    graph=f"general:{tmp_path / 'Q.pt'}", noise="geometric")
    t = Trainer(cfg)
    t.fit()
    assert t.graph.name == "general" and not t.model.config.scale_by_sigma
    x = sample(t.ema_model, t.graph, t.noise, 2, 8, 4, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2, 8) and ((x >= 0) & (x < V)).all()
