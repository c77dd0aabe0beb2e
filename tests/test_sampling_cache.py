"""The time-independent ("clean") parametrisation of the absorbing graph and the sampler's exact
cache (issue 5): the network ignores σ and its log-softmax over the real tokens becomes
log-scores analytically; the cached sampler gives bit-identical samples with fewer network calls;
the model trains with the same trainer and round-trips through checkpoints."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

import sedd_kernels as sk
from sedd.core.graphs import Absorbing, Uniform
from sedd.loading import load, save_pretrained
from sedd.core.losses import loss_fn
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import Geometric, LogLinear
from sedd.sampling import sample
from sedd.config import TrainConfig
from sedd.training import Trainer

from conftest import tiny_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0, max_length=32)
N = 40  # real tokens; V = 41, mask 40


def tiny_model(parametrisation="clean", seed=0, graph=None):
    """A random tiny DDiT whose output is far from uniform (the zero-initialised output layer and
    adaLN modulations are given random weights)."""
    graph = graph or Absorbing(N)
    torch.manual_seed(seed)
    model = DDiT(ModelConfig(vocab_size=graph.V, scale_by_sigma=graph.name == "absorb",
                             parametrisation=parametrisation, **TINY))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "output_layer" in name or "adaLN" in name:
                p.normal_(0, 0.3)
    return model.eval()


def masked_batch(B=3, L=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, N, (B, L), generator=g)
    return torch.where(torch.rand(B, L, generator=g) < 0.6, N, x)


# ------------------------------------------------------------------ the parametrisation

def test_clean_output_is_log_p_minus_log_expm1_sigma():
    model = tiny_model()
    x = masked_batch()
    sigma = torch.tensor([0.01, 0.7, 5.0])
    with torch.no_grad():
        ls = model(x, sigma).double()
        h, c = model.trunk(x, sigma)
        logits = model.output_layer(h, c).double()
    log_p = torch.log_softmax(logits[..., :N], -1)                 # the mask logit excluded
    want = log_p - torch.log(torch.expm1(sigma.double()))[:, None, None]
    masked = x == N
    assert masked.any() and (~masked).any()
    torch.testing.assert_close(ls[..., :N][masked], want[masked], atol=2e-5, rtol=1e-5)
    assert (ls[..., N][masked] == 0).all()                          # ℓ at the current token (mask)
    assert (ls.gather(-1, x[..., None]) == 0).all()                 # ℓ_x = 0 on every row
    # Σ_{y<M} e^{ℓ_y} = 1/expm1(σ): the absorbing score's total mass at a masked position
    mass = ls[..., :N].exp().sum(-1)
    torch.testing.assert_close(mass[masked], (1 / torch.expm1(sigma.double()))[:, None]
                               .expand_as(mass)[masked], rtol=1e-5, atol=0)


def test_clean_network_ignores_sigma_and_score_network_does_not():
    x = masked_batch()
    clean, score = tiny_model("clean"), tiny_model("score")
    with torch.no_grad():
        a, b = clean(x, torch.full((3,), 0.1)), clean(x, torch.full((3,), 3.0))
        shift = math.log(math.expm1(3.0)) - math.log(math.expm1(0.1))
        masked = x == N
        diff = (a - b)[..., :N][masked]
        torch.testing.assert_close(diff, torch.full_like(diff, shift), atol=1e-4, rtol=0)
        # the hidden states do not depend on σ at all
        assert torch.equal(clean.trunk(x, torch.full((3,), 0.1))[0],
                           clean.trunk(x, torch.full((3,), 3.0))[0])
        assert not torch.equal(score.trunk(x, torch.full((3,), 0.1))[0],
                               score.trunk(x, torch.full((3,), 3.0))[0])
        assert torch.equal(clean.clean_log_probs(x), clean.clean_log_probs(x))


def test_fused_loss_on_clean_output_is_weighted_cross_entropy():
    """With ℓ = log p − log expm1(σ), docs/math.md §3's absorbing SE is −log p(x₀ | x)/expm1(σ) at a
    masked position: the fused kernel reads the DDiT output in the same [B, L, V] layout."""
    model = tiny_model()
    x0 = torch.randint(0, N, (3, 12), generator=torch.Generator().manual_seed(4))
    xt = torch.where(masked_batch() == N, N, x0)
    sigma = torch.tensor([0.05, 0.8, 4.0], dtype=torch.float64)
    with torch.no_grad():
        ls = model(xt, sigma.float())
        se = sk.score_entropy(ls, xt, x0, sigma, "absorb").double()
        log_p = model.clean_log_probs(xt).double().gather(-1, x0[..., None])[..., 0]
    want = torch.where(xt == N, -log_p / torch.expm1(sigma)[:, None], 0.0)
    torch.testing.assert_close(se, want, rtol=2e-4, atol=1e-4)


def test_fused_analytic_step_moves_by_the_clean_distribution():
    """From a masked position, the analytic step unmasks with probability expm1(δ)/expm1(σ) and
    then picks y with probability p(y | x): the step kernel's layout matches the DDiT output."""
    model = tiny_model()
    x = torch.full((1, 12), N)
    sigma, delta = 1.0, 0.4
    with torch.no_grad():
        ls = model(x, torch.tensor([sigma]))[0, 3]                  # one position's row
        p = model.clean_log_probs(x)[0, 3, :N].double().exp()
    R = 200_000
    rows = ls.expand(1, R, N + 1).contiguous()
    new = sk.analytic_step(rows, torch.full((1, R), N), torch.tensor([delta]), "absorb",
                           torch.Generator().manual_seed(0))[0]
    counts = torch.bincount(new, minlength=N + 1).double()
    move = math.expm1(delta) / math.expm1(sigma)
    want = torch.cat([move * p, torch.tensor([1 - move], dtype=torch.float64)]) * R
    big = want > 50
    z = (counts[big] - want[big]) / want[big].sqrt()
    assert z.abs().max() < 5, z
    assert counts[~big].sum() < 5 * (want[~big].sum() + 10)


def test_configuration_errors():
    with pytest.raises(ValueError, match="parametrisation must be"):
        ModelConfig(vocab_size=10, parametrisation="x0")
    with pytest.raises(ValueError, match="absorbing"):
        ModelConfig(vocab_size=10, scale_by_sigma=False, parametrisation="clean")
    with pytest.raises(ValueError, match="needs --graph absorb"):
        TrainConfig.from_preset("tiny", graph="uniform", parametrisation="clean")
    with pytest.raises(ValueError, match="parametrisation must be"):
        TrainConfig.from_preset("tiny", parametrisation="x0")
    with pytest.raises(ValueError, match="clean_log_probs needs"):
        tiny_model("score").clean_log_probs(masked_batch())
    # a clean model cannot drive another graph's sampler
    with pytest.raises(ValueError, match="absorbing graph"):
        sample(tiny_model(), Uniform(N + 1), Geometric(), 2, 8, 4)


def test_hub_round_trip_keeps_the_parametrisation(tmp_path):
    model = tiny_model()
    save_pretrained(str(tmp_path / "m"), model, {"graph": "absorb", "n": N})
    r = load(str(tmp_path / "m"), tokenizer=False)
    again, cfg = r.model, r.run.to_dict()
    assert again.config.parametrisation == "clean" and cfg["model"]["parametrisation"] == "clean"
    x, sigma = masked_batch(), torch.full((3,), 0.5)
    with torch.no_grad():
        assert torch.equal(model(x, sigma), again(x, sigma))
    # a config written before the field existed loads as the σ-conditioned network
    old = json.load(open(tmp_path / "m" / "config.json"))
    del old["model"]["parametrisation"]
    json.dump(old, open(tmp_path / "m" / "config.json", "w"))
    assert load(str(tmp_path / "m"), tokenizer=False).model.config.parametrisation == "score"


# ------------------------------------------------------------------ the exact cache

@pytest.mark.parametrize("predictor, B, L, steps", [("analytic", 1, 16, 1024),
                                                   ("euler", 2, 16, 256)])
def test_cache_is_bit_identical_with_fewer_network_calls(predictor, B, L, steps):
    model, graph, noise = tiny_model(), Absorbing(N), LogLinear()
    runs = {}
    for cache in (True, False):
        runs[cache] = sample(model, graph, noise, B, L, steps, predictor, cache=cache,
                             generator=torch.Generator().manual_seed(7), return_stats=True)
    (xc, sc), (xu, su) = runs[True], runs[False]
    assert torch.equal(xc, xu)
    assert xc.max() < N                                             # no mask left
    assert sc.cached and not su.cached
    # uncached: one call per evaluation until no position can move (then a step needs none)
    assert su.evaluations == steps + 1 and su.network_calls <= su.evaluations
    # every call of the cached sampler follows a step that changed a token (or is the first):
    # at most one per unmasked token, and far fewer than the steps
    assert sc.network_calls <= B * L + 1 and sc.network_calls < su.network_calls / 4
    assert sc.reused == sc.evaluations - sc.network_calls > 0


def test_cache_with_a_larger_batch_and_the_reference_steps():
    model, graph, noise = tiny_model(seed=3), Absorbing(N), LogLinear()
    out = [sample(model, graph, noise, 4, 8, 128, use_reference=True, cache=cache,
                  generator=torch.Generator().manual_seed(2), return_stats=True)
           for cache in (True, False)]
    assert torch.equal(out[0][0], out[1][0]) and out[0][0].max() < N
    assert out[0][1].network_calls < out[1][1].network_calls == 129


def test_score_network_is_never_cached():
    model, graph, noise = tiny_model("score"), Absorbing(N), LogLinear()
    # all_rows: every evaluation is a call (the row-wise sampler skips a call with nothing to move)
    x1, s1 = sample(model, graph, noise, 1, 8, 64, generator=torch.Generator().manual_seed(0),
                    return_stats=True, all_rows=True)
    x2 = sample(model, graph, noise, 1, 8, 64, cache=False,
                generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1, x2)
    assert not s1.cached and s1.network_calls == s1.evaluations == 65


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
@pytest.mark.parametrize("use_reference", [False, True])
def test_cached_sampler_keeps_given_positions_and_never_outputs_the_mask(predictor,
                                                                         use_reference):
    model, graph, noise = tiny_model(seed=5), Absorbing(N), LogLinear()
    L = 16
    tokens = torch.randint(0, N, (1, L), generator=torch.Generator().manual_seed(9))
    given = torch.zeros(1, L, dtype=torch.bool)
    given[0, :3] = given[0, 7] = given[0, -2:] = True
    x, stats = sample(model, graph, noise, 3, L, 200, predictor, condition=(tokens, given),
                      generator=torch.Generator().manual_seed(1), use_reference=use_reference,
                      return_stats=True)
    assert (x[:, given[0]] == tokens[:, given[0]]).all()
    assert x.max() < N and x.min() >= 0
    assert stats.cached and stats.network_calls < stats.evaluations
    # the sampled blanks are not all copies of one token (the model's p(y | x) is not peaked)
    assert x[:, ~given[0]].unique().numel() > 3


# ------------------------------------------------------------------ training and the CLI

@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean_run")
    cfg = tiny_run_config(out, parametrisation="clean")
    trainer = Trainer(cfg)
    assert trainer.model.time_independent
    held_out = torch.stack([trainer.corpus.valid[i] for i in range(32)])
    t = torch.linspace(0.05, 0.95, 32, dtype=torch.float64)

    def held_out_loss(model):
        with torch.no_grad():
            return loss_fn(model, held_out, trainer.graph, trainer.noise,
                           torch.Generator().manual_seed(0), t=t).mean().item()

    before = held_out_loss(trainer.model)
    trainer.fit()
    return out, trainer, before, held_out_loss(trainer.model)


def test_clean_model_trains_with_the_trainer(clean_run):
    out, trainer, before, after = clean_run
    assert math.isfinite(after) and after < 0.8 * before, (before, after)


def test_clean_checkpoint_loads_for_inference_and_samples_with_the_cache(clean_run, tmp_path):
    out, trainer, _, _ = clean_run
    r = load(str(out))
    model, graph, noise, tok, cfg = r.model, r.graph, r.noise, r.tokenizer, r.run.to_dict()
    assert model.config.parametrisation == "clean" and cfg["train"]["parametrisation"] == "clean"
    ema = trainer.ema_model.state_dict()
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())
    rows, calls = {}, {}
    for flag in ([], ["--no-cache"]):
        path = tmp_path / f"s{len(flag)}.jsonl"
        r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "sample.py"),
                            "--checkpoint", str(out), "--steps", "96", "--num-samples", "2",
                            "--prefix", "the", "--out", str(path), "--device", "cpu", *flag],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        rows[bool(flag)] = [json.loads(line)["tokens"] for line in path.read_text().splitlines()]
        calls[bool(flag)] = int(r.stderr.split("network calls: ")[1].split()[0])
    # uncached: a call per step while a position can move (≤ 97); cached: far fewer
    assert calls[False] < calls[True] / 2 and calls[True] <= 97, calls
    assert rows[True] == rows[False]
    assert all(row[0] == tok.encode("the")[0] and max(row) < graph.n for row in rows[True])
