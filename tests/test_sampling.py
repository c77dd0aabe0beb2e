"""The sampler (sedd.sampling) and sample.py: given positions stay fixed and the mask never comes
out, prefix/suffix/infill conditions, the door's errors, the predictor registry."""

import json

import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.loading import load
from sedd.sampling import condition_from
from sedd.data.language import builtin_language
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import Geometric, LogLinear

from conftest import script  # run_dir: a conftest fixture

TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


def test_sample_cli_with_prefix_and_suffix(run_dir, tmp_path):
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(run_dir), "--steps", "8", "--num-samples", "3",
               "--prefix", "the", "--suffix", ".", "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    r = load(str(run_dir))
    model, graph, noise, tok = r.model, r.graph, r.noise, r.tokenizer
    assert len(rows) == 3
    for row in rows:
        assert len(row["tokens"]) == 24
        assert row["tokens"][0] == tok.encode("the")[0] and row["tokens"][-1] == tok.encode(".")[0]
        assert max(row["tokens"]) < graph.n                     # never the mask


@pytest.mark.parametrize("flags,calls", [
    (["--predictor", "confidence", "--tokens-per-step", "2"], "network calls: 12 of 12"),
    (["--predictor", "confidence", "--threshold", "0.2", "--rank-by", "margin"], None),
    (["--predictor", "remdm", "--steps", "48", "--remask", "rescale", "--eta", "0.1"],
     "of 49 evaluations"),
    (["--predictor", "confidence", "--tokens-per-step", "1", "--kv-cache", "dual",
      "--block-length", "8", "--refresh", "4"], "network calls: 23 of 23"),
])
def test_sample_cli_fewer_calls(run_dir, tmp_path, flags, calls):
    """The issue-27 predictors and the dual cache from the command line, with a prefix: the
    prefix kept, no mask left, the calls as promised (printed on stderr)."""
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(run_dir), "--num-samples", "2", "--prefix", "the",
               "--out", str(out), "--device", "cpu", *flags)
    assert r.returncode == 0, r.stderr
    tok, n = load(str(run_dir)).tokenizer, load(str(run_dir)).graph.n
    for row in (json.loads(line) for line in out.read_text().splitlines()):
        assert row["tokens"][0] == tok.encode("the")[0] and max(row["tokens"]) < n
    assert calls is None or calls in r.stderr, r.stderr


def test_infill_template(run_dir):
    tok = load(str(run_dir)).tokenizer
    tokens, given, L = condition_from(tok, 0, infill="the [____:3] shonger [__] .")
    assert L == 1 + 3 + 1 + 2 + 1
    assert given[0].tolist() == [True, False, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="longer than --length"):
        condition_from(tok, 5, infill="the [____:9] .")
    with pytest.raises(ValueError, match="prefix .* longer than"):
        condition_from(tok, 2, prefix="the shonger", suffix=".")


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/run"], "does not exist"),
    (["--predictor", "leap"], "invalid choice"),
    (["--infill", "the [____:99] ."], "longer than --length"),
    (["--prefix", "the the the the the the the the the the the the", "--suffix",
      "the the the the the the the the the the the the the", "--length", "24"], "longer than"),
])
def test_sample_cli_errors(run_dir, args, message):
    if args[0] != "--checkpoint":
        args = ["--checkpoint", str(run_dir), "--length", "24"] + args if "--length" not in args \
            else ["--checkpoint", str(run_dir)] + args
    r = script("sample.py", *args, "--device", "cpu")
    assert r.returncode != 0 and message in r.stderr, r.stderr


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


class _ForwardOnly(torch.nn.Module):
    """A DDiT seen through forward() alone: the sampler must materialise its log-scores."""

    def __init__(self, model):
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, x, sigma):
        return self.model(x, sigma)


@pytest.mark.parametrize("graph, parametrisation", [("absorb", "score"), ("uniform", "score"),
                                                    ("absorb", "clean")])
@pytest.mark.parametrize("predictor", ["analytic", "euler"])
def test_sampler_steps_on_the_raw_output(graph, parametrisation, predictor):
    """The sampler hands the fused steps the bare product h·Wᵀ, the projection's bias and the σ
    offset (model.log_score_parts) instead of forward()'s [B, L, V] log-scores: the same tokens
    (here bit for bit: the kernels round (prod + bias) + shift as addmm + offset does), with and
    without the clean model's cache."""
    from sedd.sampling import sample
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    torch.manual_seed(1)
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb",
                             parametrisation=parametrisation, **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)
    outs = [sample(m, g, noise, 5, 16, 12, predictor, generator=torch.Generator().manual_seed(7))
            for m in (model, _ForwardOnly(model))]
    assert torch.equal(outs[0], outs[1])
    prod, bias, shift = model.eval().log_score_parts(outs[0], torch.full((5,), 0.7))
    full = model(outs[0], torch.full((5,), 0.7))
    if bias is not None:
        prod = prod + bias
    if shift is not None:
        prod = prod + shift[:, None, None]
    torch.testing.assert_close(prod.scatter(-1, outs[0][..., None], 0.0), full, rtol=1e-6,
                               atol=1e-6)


def test_cuda_graph_needs_cuda_and_the_fused_steps():
    """sample(cuda_graph=True) refuses what it cannot capture, in one clear error (the capture
    itself is tested on CUDA: tests/test_cuda.py)."""
    from sedd.sampling import sample
    g = Absorbing(9)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY)).eval()
    with pytest.raises(ValueError, match=r"cuda_graph=True \(--cuda-graph\) needs a CUDA model"):
        sample(model, g, LogLinear(), 2, 8, 4, cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph=True applies to the grid predictors"):
        sample(model, g, LogLinear(), 2, 8, 4, "first_hitting", cuda_graph=True)
