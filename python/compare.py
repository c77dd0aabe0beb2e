"""Compare an autoregressive baseline with SEDD (absorbing and uniform) and block diffusion
(K = 4 and 16), trained alike, on the paper's claims: likelihood, sample quality against network
evaluations, infilling — and what the fast-decoding predictors trade.

    python python/compare.py                 # built-in language, exact measures (about an hour, 2 cores)
    python python/compare.py --quick         # CI-sized (minutes): the tables complete and finite
    python python/compare.py --preset small --data openwebtext --causal-lm gpt2-large   # GPUs

Trains the five models for the same tokens (the AR depth matched to the DDiT's non-embedding
parameter count), then prints and writes (to --out) four tables and a plot: likelihood (AR exact
NLL, diffusion bounds ± s.e., the true language's NLL and entropy rate, perplexity ratios to
AR); sample quality against network evaluations (analytic and Euler at each --sample-steps,
first-hitting, AR ancestral: exact NLL of the samples under the language, their valid fraction,
unigram entropy; a causal LM's generative perplexity for other data); the fast-decoding
predictors' calls and positions per token and tokens/s against the same quality measures
(confidence, ReMDM, the dual cache; on sedd-absorb and the block models); infilling of random
blanks (exact conditional NLL of the fills given the context, against the held-out truth's).
Trained models in OUT/<model> are reused (resumed to --steps) unless --retrain. Results:
OUT/results.json (with the machine, versions and seeds), results.csv, table.md, compare.png. The
experiment's code: python/comparison.py.
"""

import argparse

from comparison import LEVELS, Settings, run_comparison
from sedd.cli import Parser, check_device, nonneg_int, positive_float, positive_int, run_door
from sedd.config import PRESETS


def step_list(flag):
    check = positive_int(flag)

    def parse(text):
        return [check(s) for s in text.split(",") if s.strip()] or check("")
    return parse


def parser():
    p = Parser(prog="compare.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI-sized run (minutes on 2 cores)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="model sizes and schedule of a training preset (default: the level's "
                        "own, tiny-sized)")
    p.add_argument("--data", default="builtin",
                   help="builtin (default: exact measures), a text file or folder, or a datasets "
                        "name (then --causal-lm scores the samples)")
    p.add_argument("--tokenizer", help="for data other than builtin (default gpt2)")
    p.add_argument("--causal-lm", help="scoring model for data other than builtin (a transformers "
                                       "Hub name or a local folder)")
    p.add_argument("--out", default="runs/compare", help="output folder (default runs/compare)")
    p.add_argument("--seed", type=nonneg_int("--seed"), default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--retrain", action="store_true", help="train from scratch even if OUT holds "
                                                          "trained models")
    g = p.add_argument_group("overrides of the level's settings")
    g.add_argument("--steps", type=positive_int("--steps"), help="training steps per model")
    g.add_argument("--batch-size", type=positive_int("--batch-size"))
    g.add_argument("--seq-len", type=positive_int("--seq-len"))
    g.add_argument("--lr", type=positive_float("--lr"))
    g.add_argument("--num-samples", type=positive_int("--num-samples"),
                   help="samples per sampler setting")
    g.add_argument("--sample-steps", type=step_list("--sample-steps"),
                   help="comma-separated predictor steps, e.g. 8,32,128")
    g.add_argument("--fh-steps", type=step_list("--fh-steps"),
                   help="comma-separated first-hitting evaluation caps")
    g.add_argument("--bound-sequences", type=positive_int("--bound-sequences"))
    g.add_argument("--timesteps", type=positive_int("--timesteps"),
                   help="noise levels per sequence of the likelihood bound")
    g.add_argument("--infill-sequences", type=positive_int("--infill-sequences"))
    g.add_argument("--infill-steps", type=positive_int("--infill-steps"))
    return p


def _main(argv=None):
    args = parser().parse_args(argv)
    if args.data != "builtin" and not args.causal_lm:
        raise ValueError("--data other than builtin needs --causal-lm (the model that scores the "
                         "samples; the exact measures exist for the built-in language only)")
    if args.bound_sequences == 1:
        raise ValueError("--bound-sequences must be >= 2 (a standard error needs two)")
    keys = (set(LEVELS["default"]) | {"lr"}) - {"preset"}
    s = Settings(level="quick" if args.quick else "default", preset=args.preset, data=args.data,
                 tokenizer=args.tokenizer, causal_lm=args.causal_lm, out=args.out, seed=args.seed,
                 device=str(check_device(args.device)), retrain=args.retrain,
                 overrides={k: getattr(args, k) for k in keys if getattr(args, k, None) is not None})
    run_comparison(s)


def main(argv=None):
    run_door("compare.py", _main, argv)


if __name__ == "__main__":
    main()
