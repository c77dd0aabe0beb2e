"""The likelihood bound of SEDD.md §4 of a trained model over a dataset, or the generative
perplexity of samples.

    python python/evaluate.py --checkpoint runs/sedd --timesteps 128 [--protocol sedd|mdlm]
    python python/evaluate.py --samples samples.jsonl [--causal-lm gpt2-large]
    python python/evaluate.py --samples samples.jsonl --checkpoint runs/sedd   # built-in corpus

Likelihood bound: per block, ∫₀¹ E[σ̇(t)·Σ_i SE_i] dt over all of [0, 1] (no ε_t cut) plus the
prior term, printed on its own line (for the absorbing graph with the log-linear schedule's ε > 0:
ε·log n nats per token against the leaky base). The integral is estimated with K noise levels per
block, one in each of K strata, drawn by sedd.losses.NoiseLevelSampler (a change of variable that
keeps the estimator's variance finite as σ → 0; unbiased) with a per-block standard error; the
corpus figure is Σ bound / Σ tokens with the standard error of the mean over blocks, and the
perplexity bound is its exponential. On the built-in corpus the exact NLL of the same blocks and
the language's entropy rate are printed too, so the gap is visible.

Protocols (--protocol; see sedd/evaluation.py for the details and sources):
  sedd  the SEDD paper's (GPT-2's zero-shot setup): documents joined with EOS, cut into blocks
        of L tokens, each block evaluated on its own; test splits (WikiText-2: train split). The
        paper drew K = 1000 random t per block; any K estimates the same bound (K sets the noise).
  mdlm  MDLM's (Sahoo et al. 2024): each document wrapped [BOS] doc [EOS], concatenated, cut
        into [BOS] + (L − 2 tokens) + [EOS] blocks; validation splits (LM1B, text8: test); the
        draws of each batch spread evenly over every stratum (MDLM's low-discrepancy sampler).
        Unlike MDLM's code, t is not cut at 10⁻³ (the cut leaves part of the bound out).
Local text and OpenWebText have no named splits: both protocols read the held-out tail that
training set aside. The built-in language has no documents and no BOS/EOS: under mdlm one long
held-out stream is cut into blocks.

Generative perplexity (--samples FILE, JSON lines of python/sample.py): exp of the token-mean NLL
of the samples' text, re-tokenized, under a causal LM loaded with transformers (--causal-lm: a Hub
name, default gpt2-large, or a local folder; long texts scored with a sliding window), and the
unigram entropy of the samples' tokens (sedd/genppl.py). For samples of a model trained on the
built-in corpus (--checkpoint of such a run, or --data builtin) the exact log-likelihood under
the true language replaces the causal LM.
"""

import argparse
import math
import os
import sys
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sedd.cli import Parser, check_device, nonneg_int, positive_int, run_door  # noqa: E402
from sedd.evaluation import PROTOCOLS, evaluation_set  # noqa: E402
from sedd.genppl import (exact_language_nll, load_causal_lm, load_samples, score_texts,  # noqa: E402
                         unigram_entropy)
from sedd.hub import read_run_config  # noqa: E402
from sedd.inference import load_run  # noqa: E402
from sedd.language import builtin_language  # noqa: E402
from sedd.losses import likelihood_bound  # noqa: E402


class BoundReport(NamedTuple):
    per_token: float               # Σ bound / Σ tokens, nats
    stderr: float                  # its standard error (over blocks, timestep noise included)
    exact_per_token: float | None  # exact NLL of the same blocks (built-in corpus), nats/token


class GenPPLReport(NamedTuple):
    perplexity: float              # exp(token-mean NLL) over all samples (inf: an impossible one)
    nll_per_token: float
    num_tokens: int
    entropy: float                 # mean over samples of each sample's unigram entropy, nats
    entropy_pooled: float          # unigram entropy of all samples' tokens pooled, nats
    valid_fraction: float | None   # built-in corpus: share of samples with p > 0
    perplexity_valid: float | None  # built-in corpus: over the samples with p > 0


def evaluate(model, graph, noise, sequences, timesteps, batch_size, seed=0, device="cpu", *,
             low_discrepancy=False):
    """Per-sequence bounds, priors and standard errors over a [N, L] tensor of token ids."""
    gen = torch.Generator().manual_seed(seed)
    out = [likelihood_bound(model, sequences[i:i + batch_size].to(device), graph, noise, timesteps,
                            gen, batch_low_discrepancy=low_discrepancy)
           for i in range(0, len(sequences), batch_size)]
    return tuple(torch.cat(parts) for parts in zip(*out))


def parser():
    p = Parser(prog="evaluate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", metavar="PATH|REPO",
                   help="a training output folder or checkpoint, a Hub folder or id, or a paper "
                        "run (the bound needs it)")
    p.add_argument("--data", help="builtin, a text file/folder, or a datasets name (default: the "
                                  "training data)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="sedd",
                   help="sedd: EOS-joined documents in L-token blocks, test splits; mdlm: "
                        "[BOS] doc [EOS] wrapped blocks, validation splits, low-discrepancy draws "
                        "(details above)")
    p.add_argument("--timesteps", type=positive_int("--timesteps"), default=64,
                   help="K noise levels per block, stratified (the SEDD paper used 1000)")
    p.add_argument("--num-sequences", type=nonneg_int("--num-sequences"), default=256,
                   help="blocks to evaluate (0: all)")
    p.add_argument("--batch-size", type=positive_int("--batch-size"), default=32)
    p.add_argument("--seed", type=nonneg_int("--seed"), default=0)
    p.add_argument("--tokenizer", help="override the checkpoint's tokenizer, e.g. gpt2:PATH.tiktoken "
                                       "(GPT-2's BPE ranks, offline)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--cache-dir", help="token files (default $SEDD_CACHE or ~/.cache/sedd)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    g = p.add_argument_group("generative perplexity")
    g.add_argument("--samples", help="JSON lines of samples (python/sample.py --out): score them "
                                     "instead of computing the bound")
    g.add_argument("--causal-lm", default="gpt2-large",
                   help="the scoring model: a transformers Hub name or a local folder")
    g.add_argument("--lm-batch-size", type=positive_int("--lm-batch-size"), default=8)
    g.add_argument("--lm-context", type=positive_int("--lm-context"),
                   help="tokens per window (default: the LM's context)")
    g.add_argument("--lm-stride", type=positive_int("--lm-stride"),
                   help="window stride for long texts (default: half)")
    return p


def bound_main(args, p):
    if not args.checkpoint:
        p.error("--checkpoint is required (or --samples for generative perplexity)")
    if args.num_sequences == 1:
        p.error("--num-sequences must be >= 2 or 0 (a standard error needs two)")
    device = check_device(args.device)
    r = load_run(args.checkpoint, device, not args.no_ema, args.tokenizer)
    for note in r.run.notes:
        print(f"note: {note}", file=sys.stderr)
    model, graph, noise, run = r.model, r.graph, r.noise, r.run
    L = r.length
    data = args.data or run.data
    ev = evaluation_set(args.protocol, data, r.tokenizer, L, args.num_sequences, seed=run.seed,
                        cache_dir=args.cache_dir or run.cache_dir)
    x0, n = ev.x0, len(ev.x0)
    if n < 2:
        raise ValueError(f"{ev.source}: {n} block; a standard error needs two")
    mdlm = args.protocol == "mdlm"
    bound, prior, se = evaluate(model, graph, noise, x0, args.timesteps, args.batch_size,
                                args.seed, device, low_discrepancy=mdlm)
    per_token = bound.sum().item() / (n * L)
    # standard error of the mean over blocks (includes the timestep noise) per token
    stderr = bound.std(unbiased=True).item() / math.sqrt(n) / L
    print(f"protocol: {args.protocol} — {ev.source}")
    print(f"blocks: {n} of {L} tokens; {args.timesteps} stratified noise levels per block over all "
          f"of t ∈ [0, 1]" + ("; low-discrepancy across each batch" if mdlm else ""))
    print(f"likelihood bound: {per_token:.4f} ± {stderr:.4f} nats/token")
    print(f"prior term: {prior.mean().item() / L:.4f} nats/token (included above)")
    ppl = math.exp(per_token)
    print(f"perplexity bound: {ppl:.3f} ± {ppl * stderr:.3f}")
    exact_per_token = None
    if ev.exact_nll is not None:
        exact_per_token = float(ev.exact_nll.mean() / L)
        print(f"exact NLL of these blocks: {exact_per_token:.4f} nats/token (perplexity "
              f"{math.exp(exact_per_token):.3f}); entropy rate at L = {L}: "
              f"{ev.language.entropy_rate(L)[0]:.4f}")
        print(f"gap: {per_token - exact_per_token:.4f} nats/token")
    return BoundReport(per_token, stderr, exact_per_token)


def samples_are_builtin(args) -> bool:
    if args.data is not None:
        return args.data == "builtin"
    if args.checkpoint:
        return read_run_config(args.checkpoint).data == "builtin"
    return False


def genppl_main(args):
    rows = load_samples(args.samples)
    tokens = [r["tokens"] for r in rows] if all("tokens" in r for r in rows) else None
    print(f"samples: {len(rows)} from {args.samples}")
    if samples_are_builtin(args):
        if tokens is None:
            raise ValueError("built-in corpus samples need their 'tokens'")
        lang = builtin_language()
        nll = exact_language_nll(tokens, lang)
        counts = np.array([len(t) for t in tokens])
        valid = np.isfinite(nll)
        per_token = float(nll.sum() / counts.sum())
        valid_pt = float(nll[valid].sum() / counts[valid].sum()) if valid.any() else math.inf
        print("scored by the built-in language's exact likelihood (it replaces a causal LM)")
        print(f"samples with positive probability: {valid.sum()}/{len(rows)}; their exact NLL: "
              f"{valid_pt:.4f} nats/token, generative perplexity {math.exp(valid_pt):.3f}")
        print(f"generative perplexity of all samples: {math.exp(per_token):.3f} (NLL "
              f"{per_token:.4f} nats/token over {counts.sum()} tokens)")
        report = dict(perplexity=math.exp(per_token), nll_per_token=per_token,
                      num_tokens=int(counts.sum()), valid_fraction=float(valid.mean()),
                      perplexity_valid=math.exp(valid_pt))
    else:
        if not all("text" in r for r in rows):
            raise ValueError("scoring with a causal LM needs every sample's 'text'")
        device = check_device(args.device)
        try:
            model, lm_tok = load_causal_lm(args.causal_lm, device)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
        scored = score_texts([r["text"] for r in rows], model, lm_tok, batch_size=args.lm_batch_size,
                             context=args.lm_context, stride=args.lm_stride, device=device)
        print(f"generative perplexity under {args.causal_lm}: {scored.perplexity:.3f} (NLL "
              f"{scored.nll_per_token:.4f} nats/token over {scored.tokens.sum()} re-tokenized tokens; "
              f"context {scored.context}, stride {scored.stride})")
        report = dict(perplexity=scored.perplexity, nll_per_token=scored.nll_per_token,
                      num_tokens=int(scored.tokens.sum()), valid_fraction=None, perplexity_valid=None)
        if tokens is None:
            tokens = [lm_tok(r["text"], add_special_tokens=False)["input_ids"] for r in rows]
    entropy, pooled = unigram_entropy(tokens)
    print(f"unigram entropy of the samples' tokens: {entropy:.4f} nats (mean over samples); "
          f"{pooled:.4f} nats pooled")
    return GenPPLReport(entropy=entropy, entropy_pooled=pooled, **report)


def _main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    return genppl_main(args) if args.samples else bound_main(args, p)


def main(argv=None):
    return run_door("evaluate.py", _main, argv)


if __name__ == "__main__":
    main()
