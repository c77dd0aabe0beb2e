"""evaluate.py and sedd.evaluation on a briefly trained tiny model: the likelihood bound under both
protocols, and samples of the built-in language scored exactly."""

import json
import math
import os
import sys

import pytest

from conftest import ROOT, script  # noqa: F401  (run_dir: a conftest fixture)


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
    from sedd.data.language import builtin_language
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
