"""sample.py, evaluate.py and Hub-style checkpoints on a briefly trained tiny model."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from sedd.hub import from_pretrained, save_pretrained
from sedd.inference import condition_from, load_for_inference
from sedd.trainer import Trainer

from conftest import tiny_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = tiny_run_config(out)
    Trainer(cfg).fit()
    return out


def script(name, *args):
    return subprocess.run([sys.executable, os.path.join(ROOT, "python", name), *args],
                          capture_output=True, text=True, timeout=300)


def test_save_and_load_pretrained_round_trip(run_dir, tmp_path):
    model, cfg = from_pretrained(str(run_dir))
    save_pretrained(str(tmp_path / "hub"), model, {"graph": cfg["graph"], "n": cfg["n"]})
    again, cfg2 = from_pretrained(str(tmp_path / "hub"))
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert cfg2["model"] == model.config.to_dict()


def test_sample_cli_with_prefix_and_suffix(run_dir, tmp_path):
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(run_dir), "--steps", "8", "--num-samples", "3",
               "--prefix", "the", "--suffix", ".", "--out", str(out), "--device", "cpu")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    model, graph, noise, tok, cfg = load_for_inference(str(run_dir))
    assert len(rows) == 3
    for row in rows:
        assert len(row["tokens"]) == 24
        assert row["tokens"][0] == tok.encode("the")[0] and row["tokens"][-1] == tok.encode(".")[0]
        assert max(row["tokens"]) < graph.n                     # never the mask


def test_infill_template(run_dir):
    *_, tok, _ = load_for_inference(str(run_dir))
    tokens, given, L = condition_from(tok, 0, infill="the [____:3] shonger [__] .")
    assert L == 1 + 3 + 1 + 2 + 1
    assert given[0].tolist() == [True, False, False, False, True, False, False, True]
    with pytest.raises(ValueError, match="longer than --length"):
        condition_from(tok, 5, infill="the [____:9] .")
    with pytest.raises(ValueError, match="prefix .* longer than"):
        condition_from(tok, 2, prefix="the shonger", suffix=".")


@pytest.mark.parametrize("protocol", ["sedd", "mdlm"])
def test_evaluate_bound_is_finite_and_above_the_exact_nll(run_dir, protocol):
    """evaluate.py under both protocols (sedd/evaluation.py) on the built-in corpus: a finite
    bound, not below the exact NLL of the same blocks beyond its noise."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import evaluate
    r = evaluate.main(["--checkpoint", str(run_dir), "--timesteps", "8", "--num-sequences", "32",
                       "--device", "cpu", "--protocol", protocol])
    assert math.isfinite(r.per_token) and math.isfinite(r.stderr) and r.stderr > 0
    assert r.exact_per_token is not None and math.isfinite(r.exact_per_token)
    assert r.per_token > r.exact_per_token - 3 * r.stderr


def test_evaluate_rejects_an_unknown_protocol(run_dir):
    r = script("evaluate.py", "--checkpoint", str(run_dir), "--protocol", "gpt", "--device", "cpu")
    assert r.returncode != 0 and "invalid choice: 'gpt'" in r.stderr, r.stderr
    from sedd.evaluation import evaluation_set
    with pytest.raises(ValueError, match="unknown evaluation protocol 'gpt'"):
        evaluation_set("gpt", "builtin", "gpt2", 24)


def test_evaluate_scores_builtin_samples_exactly(run_dir, tmp_path):
    """--samples with a checkpoint trained on the built-in corpus: the language's exact
    log-likelihood replaces the causal LM; one impossible sample makes the perplexity of all
    samples infinite, and the valid ones are reported on their own."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import evaluate
    from sedd.language import builtin_language
    lang = builtin_language()
    good = lang.sample(5, 24, seed=7)
    bad = lang.encode("the the") + good[0, 2:].tolist()
    assert lang.log_likelihood([bad])[0] == -math.inf
    rows = [{"tokens": t.tolist(), "text": lang.decode(t)} for t in good] + \
           [{"tokens": bad, "text": lang.decode(bad)}]
    path = tmp_path / "s.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    r = evaluate.main(["--samples", str(path), "--checkpoint", str(run_dir)])
    nll = -lang.log_likelihood(good)
    assert r.valid_fraction == pytest.approx(5 / 6)
    assert r.perplexity_valid == pytest.approx(math.exp(nll.sum() / good.size), rel=1e-12)
    assert r.perplexity == math.inf and r.num_tokens == 6 * 24
    r = evaluate.main(["--samples", str(path), "--data", "builtin"])      # the same without a run
    assert r.perplexity_valid == pytest.approx(math.exp(nll.sum() / good.size), rel=1e-12)


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
