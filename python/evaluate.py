"""The likelihood bound of docs/math.md §4 of a trained model over a dataset (for the autoregressive
baseline, train.py --model ar: its exact NLL over the same blocks), or the generative perplexity
of samples.

    python python/evaluate.py --checkpoint runs/sedd --timesteps 128 [--protocol sedd|mdlm]
    python python/evaluate.py --samples samples.jsonl [--causal-lm gpt2-large]
    python python/evaluate.py --samples samples.jsonl --checkpoint runs/sedd   # built-in corpus

Likelihood bound: per block, ∫₀¹ E[σ̇(t)·Σ_i SE_i] dt over all of [0, 1] (no ε_t cut) plus the
prior term, printed on its own line (for the absorbing graph with the log-linear schedule's ε > 0:
ε·log n nats per token against the leaky base). The integral is estimated with K noise levels per
block, one in each of K strata, drawn by sedd.core.losses.NoiseLevelSampler (a change of variable that
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
import sys

from sedd.cli import Parser, check_device, nonneg_int, positive_int, run_door
from sedd.evaluation import (PROTOCOLS, bound_report, evaluation_set, exact_sample_report,
                             lm_sample_report)
from sedd.data import builtin_language
from sedd.evaluation.genppl import load_causal_lm, load_samples
from sedd.loading import load, read_config


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
    r = load(args.checkpoint, device, not args.no_ema, args.tokenizer)
    for note in r.run.notes:
        print(f"note: {note}", file=sys.stderr)
    ev = evaluation_set(args.protocol, args.data or r.run.data, r.tokenizer, r.length,
                        args.num_sequences, seed=r.run.seed,
                        cache_dir=args.cache_dir or r.run.cache_dir)
    mdlm = args.protocol == "mdlm"
    rep = bound_report(r.model, r.graph, r.noise, ev, args.timesteps, args.batch_size, args.seed,
                       device, low_discrepancy=mdlm)
    print(f"protocol: {args.protocol} — {ev.source}")
    ppl = math.exp(rep.per_token)
    if rep.exact:
        print(f"blocks: {rep.blocks} of {rep.length} tokens; {r.family.title} model: "
              f"{r.family.likelihood_note}")
        print(f"NLL: {rep.per_token:.4f} ± {rep.stderr:.4f} nats/token")
        print(f"perplexity: {ppl:.3f} ± {ppl * rep.stderr:.3f}")
    else:
        print(f"blocks: {rep.blocks} of {rep.length} tokens; {args.timesteps} stratified noise "
              f"levels per block over all of t ∈ [0, 1]"
              + ("; low-discrepancy across each batch" if mdlm else ""))
        print(f"likelihood bound: {rep.per_token:.4f} ± {rep.stderr:.4f} nats/token")
        print(f"prior term: {rep.prior_per_token:.4f} nats/token (included above)")
        print(f"perplexity bound: {ppl:.3f} ± {ppl * rep.stderr:.3f}")
    if rep.exact_per_token is not None:
        print(f"NLL of these blocks under the true language: {rep.exact_per_token:.4f} nats/token (perplexity "
              f"{math.exp(rep.exact_per_token):.3f}); entropy rate at L = {rep.length}: "
              f"{rep.entropy_rate:.4f}")
        print(f"gap: {rep.per_token - rep.exact_per_token:.4f} nats/token")
    return rep


def samples_are_builtin(args) -> bool:
    if args.data is not None:
        return args.data == "builtin"
    if args.checkpoint:
        return read_config(args.checkpoint).data == "builtin"
    return False


def genppl_main(args):
    rows = load_samples(args.samples)
    tokens = [r["tokens"] for r in rows] if all("tokens" in r for r in rows) else None
    print(f"samples: {len(rows)} from {args.samples}")
    if samples_are_builtin(args):
        if tokens is None:
            raise ValueError("built-in corpus samples need their 'tokens'")
        rep = exact_sample_report(tokens, builtin_language())
        print("scored by the built-in language's exact likelihood (it replaces a causal LM)")
        print(f"samples with positive probability: {round(rep.valid_fraction * len(rows))}/"
              f"{len(rows)}; their exact NLL: {math.log(rep.perplexity_valid):.4f} nats/token, "
              f"generative perplexity {rep.perplexity_valid:.3f}")
        print(f"generative perplexity of all samples: {rep.perplexity:.3f} (NLL "
              f"{rep.nll_per_token:.4f} nats/token over {rep.num_tokens} tokens)")
    else:
        if not all("text" in r for r in rows):
            raise ValueError("scoring with a causal LM needs every sample's 'text'")
        device = check_device(args.device)
        try:
            model, lm_tok = load_causal_lm(args.causal_lm, device)
        except RuntimeError as e:
            raise ValueError(str(e)) from None
        rep, scored = lm_sample_report([r["text"] for r in rows], tokens, model, lm_tok,
                                       batch_size=args.lm_batch_size, context=args.lm_context,
                                       stride=args.lm_stride, device=device)
        print(f"generative perplexity under {args.causal_lm}: {rep.perplexity:.3f} (NLL "
              f"{rep.nll_per_token:.4f} nats/token over {rep.num_tokens} re-tokenized tokens; "
              f"context {scored.context}, stride {scored.stride})")
    print(f"unigram entropy of the samples' tokens: {rep.entropy:.4f} nats (mean over samples); "
          f"{rep.entropy_pooled:.4f} nats pooled")
    return rep


def _main(argv=None):
    p = parser()
    args = p.parse_args(argv)
    return genppl_main(args) if args.samples else bound_main(args, p)


def main(argv=None):
    return run_door("evaluate.py", _main, argv)


if __name__ == "__main__":
    main()
