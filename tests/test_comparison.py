"""python/compare.py and sedd.compare: the CI-sized comparison runs and its tables are complete
and finite; the pieces it stands on — the AR depth matched to the DDiT's size, the exact infilling
ground truth (marginal likelihoods of the built-in language), the completeness check — and the
causal-LM path for data other than the built-in language, on a tiny random causal LM."""

import csv
import itertools
import json
import math

import numpy as np
import pytest
import torch

import comparison as C
from sedd.data.language import builtin_language

from conftest import script
from test_evaluation_genppl import tiny_lm  # noqa: F401  (the fixture)


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    r = script("compare.py", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return out, r.stdout


def test_quick_run_writes_a_complete_finite_table(quick):
    out, stdout = quick
    res = json.loads((out / "results.json").read_text())
    rows = res["rows"]
    v = C.LEVELS["quick"]
    C.check_complete(rows, v, exact=True)            # raises when a row is missing or not finite
    lik = {r["model"]: r for r in rows if r["section"] == "likelihood"}
    assert set(lik) == {"ar", "sedd-absorb", "sedd-uniform", "block-4", "block-16",
                        "true language", "entropy rate"}
    assert lik["ar"]["kind"] == "exact NLL" and lik["sedd-absorb"]["kind"] == "bound"
    assert lik["block-4"]["kind"] == "bound"
    # a likelihood (AR) and an upper bound (SEDD, block) cannot beat the truth beyond their noise
    for m in ("ar", "sedd-absorb", "sedd-uniform", "block-4", "block-16"):
        assert lik[m]["nll"] > lik["true language"]["nll"] - 3 * lik[m]["stderr"]
    samples = [r for r in rows if r["section"] == "samples"]
    # data, AR; analytic and Euler for the four diffusion models; first-hitting on absorbing ones
    assert len(samples) == 2 + 4 * 2 * len(v["sample_steps"]) + 3 * len(v["fh_steps"])
    ar = next(r for r in samples if r["model"] == "ar")
    assert ar["evaluations"] == res["training"]["ar"]["seq_len"]
    data = next(r for r in samples if r["model"] == "data")
    assert data["valid"] == 1.0
    # the decoding table: calls per token as each setting promises, the dual cache computing
    # fewer positions than the same sub-blocks without it, ReMDM's calls growing with its steps
    dec = {(r["model"], r["predictor"]): r for r in rows if r["section"] == "decoding"}
    L = res["training"]["ar"]["seq_len"]
    assert dec["sedd-absorb", "confidence k=1"]["calls_per_token"] == 1.0
    assert dec["sedd-absorb", "confidence k=4"]["calls_per_token"] == math.ceil(L / 4) / L
    # one call per block, and one that commits each block but the last to the KV cache
    assert dec["block-4", "confidence k=4"]["calls_per_token"] == (2 * L // 4 - 1) / L
    sub = "confidence k=1, sub-blocks 16"
    dual, plain = (dec["sedd-absorb", sub + k]["positions_per_token"] for k in (", dual cache", ""))
    assert dual < plain if L > 16 else dual == plain == L     # one sub-block: nothing kept
    assert dec["sedd-absorb", "remdm loop 4L"]["calls_per_token"] > \
        dec["sedd-absorb", "remdm loop 2L"]["calls_per_token"] > 1.0
    assert "| block-16 | remdm loop 2L |" in (out / "table.md").read_text()
    infill = {r["model"]: r for r in rows if r["section"] == "infill"}
    assert infill["truth"]["valid"] == 1.0 and math.isnan(infill["ar"]["nll"])
    # the machine, versions and seeds are recorded; the other files are there
    assert res["machine"]["torch"] == torch.__version__ and res["settings"]["seed"] == 0
    with open(out / "results.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(rows)
    assert (out / "compare.png").stat().st_size > 10_000
    table = (out / "table.md").read_text()
    assert table.strip() in stdout and "| sedd-uniform | euler |" in table


def test_a_second_run_reuses_the_trained_models(quick):
    out, _ = quick
    r = script("compare.py", "--quick", "--out", str(out), "--sample-steps", "2",
               "--fh-steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "(0 now" in r.stdout             # resumed at the last step: nothing trained again
    res = json.loads((out / "results.json").read_text())
    assert {r["steps"] for r in res["rows"] if r.get("predictor") == "euler"} == {2}


def test_the_ar_depth_matches_the_ddit_size():
    k, ar, ddit = C.matched_ar_blocks(128, 4, 64, 4, 381)
    assert k == 5
    from sedd.families import build_model
    from sedd.nn import ModelConfig
    counts = {j: build_model(ModelConfig(vocab_size=382, hidden_size=128, n_blocks=j, n_heads=4,
                                         scale_by_sigma=False, max_length=8, family="ar"))
              .num_parameters() for j in (4, 5, 6)}
    assert counts[5] == ar and all(abs(counts[5] - ddit) <= abs(c - ddit) for c in counts.values())


def test_marginal_likelihood_is_the_sum_over_the_unknown_positions():
    """log p(x_known) of the forward algorithm with unit emissions = logsumexp over every filling
    of two unknown positions (brute force, n² sequences)."""
    lang = builtin_language()
    x = lang.sample(2, 5, seed=3)
    known = np.ones_like(x, dtype=bool)
    known[:, [1, 3]] = False
    fills = np.array(list(itertools.product(range(lang.n), repeat=2)))
    for b in range(2):
        seqs = np.repeat(x[b:b + 1], len(fills), 0)
        seqs[:, [1, 3]] = fills
        brute = np.logaddexp.reduce(lang.log_likelihood(seqs))
        assert math.isclose(lang.log_likelihood(x[b:b + 1], known[b:b + 1])[0], brute,
                            rel_tol=1e-10)
    assert np.allclose(lang.log_likelihood(x, np.zeros_like(known)), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="known must have the shape"):
        lang.log_likelihood(x, known[:, :2])


def test_check_complete_names_what_is_missing_or_not_finite():
    v = dict(sample_steps=[4], fh_steps=[4], decoding="quick")
    lik = [dict(section="likelihood", model=m, nll=1.0, stderr=0.1, ppl_ratio_to_ar=1.0)
           for m in C.MODELS]
    smp = [dict(section="samples", model="ar", predictor="ancestral", steps=8, nll=1.0,
                valid=0.5, entropy=2.0)]
    smp += [dict(section="samples", model=m, predictor=p, steps=4, nll=1.0, valid=0.5, entropy=2.0)
            for m in C.MODELS if m != "ar" for p in ("analytic", "euler")]
    smp += [dict(section="samples", model="sedd-absorb", predictor="first_hitting", steps=4,
                 nll=1.0, valid=0.5, entropy=2.0)]
    inf = [dict(section="infill", model=m, nll=1.0, valid=1.0)
           for m in ("sedd-absorb", "sedd-uniform")]
    inf += [dict(section="infill", model="block-4", predictor="cannot infill", nll=math.nan,
                 valid=math.nan)]                   # a family without infill: no numbers
    dec = [dict(section="decoding", model=m, predictor=name, steps=4, nll=1.0, valid=0.5,
                entropy=2.0) for m in C.DECODING_MODELS for name in C.decoding_plan(m, v)]
    assert {r["predictor"] for r in dec if r["model"] == "sedd-absorb"} > \
        {r["predictor"] for r in dec if r["model"] == "block-4"}     # no dual cache in a block
    inf += dec
    C.check_complete(lik + smp + inf, v, exact=True)
    with pytest.raises(AssertionError, match="missing .*first_hitting"):
        C.check_complete(lik + smp[:-1] + inf, v, exact=True)
    with pytest.raises(AssertionError, match="missing .*'block-16', 'confidence k=4'"):
        C.check_complete(lik + smp + [r for r in inf if r.get("predictor") != "confidence k=4"
                                      or r["model"] != "block-16"], v, exact=True)
    bad = [dict(r) for r in smp]
    bad[1]["entropy"] = math.inf
    with pytest.raises(AssertionError, match="not finite"):
        C.check_complete(lik + bad + inf, v, exact=True)
    no_valid = [dict(r) for r in smp]
    no_valid[1].update(valid=0.0, nll=math.nan)      # no valid sample: its NLL is undefined
    C.check_complete(lik + no_valid + inf, v, exact=True)


def test_the_causal_lm_path_for_other_data(tmp_path, tiny_lm):  # noqa: F811
    """A local text corpus (character tokenizer) scored by a tiny random GPT-2: the same tables
    with generative perplexity instead of the exact NLL; no truth rows."""
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sat on the mat. the dog sat on the log. " * 200)
    s = C.Settings(level="quick", data=str(text), tokenizer="char", causal_lm=tiny_lm,
                   out=str(tmp_path / "out"),
                   overrides=dict(steps=3, num_samples=4, sample_steps=[2], fh_steps=[2],
                                  bound_sequences=4, timesteps=2, infill_sequences=4,
                                  infill_steps=2, batch_size=4))
    res = C.run_comparison(s, log=lambda *a: None)
    models = {r["model"] for r in res["rows"] if r["section"] == "likelihood"}
    assert models == set(C.MODELS)
    smp = [r for r in res["rows"] if r["section"] == "samples"]
    assert all(math.isfinite(r["nll"]) and math.isnan(r["valid"]) for r in smp)


def test_door_errors():
    r = script("compare.py", "--data", "openwebtext")
    assert r.returncode != 0 and "needs --causal-lm" in r.stderr and "Traceback" not in r.stderr
    r = script("compare.py", "--sample-steps", "4,0")
    assert r.returncode != 0 and "--sample-steps" in r.stderr and "Traceback" not in r.stderr
