"""Sample from a trained SEDD model, unconditionally or with given text (prefix, suffix, infill);
or from the autoregressive baseline (train.py --model ar): ancestrally with a KV cache, a prefix
but no suffix or infill, --temperature and --top-p as for SEDD.

    python python/sample.py --checkpoint runs/sedd
    python python/sample.py --checkpoint runs/sedd --prefix "the" --suffix "."
    python python/sample.py --checkpoint runs/sedd --infill "the [____:3] shonger [______] ."
    python python/sample.py --checkpoint louaaron/sedd-small --tokenizer gpt2:gpt2.tiktoken
    python python/sample.py --checkpoint louaaron/sedd-small --length 4096 --stride 512 --stop-at-eos
    python python/sample.py --checkpoint runs/sedd --predictor first_hitting --top-p 0.9

--length longer than the model's window generates semi-autoregressively: windows of the
model's length (or --window), sliding by --stride, each conditioned on what is already
generated. --predictor first_hitting (absorbing graph) samples the exact unmasking times: one
token per network evaluation, at most --steps evaluations per window (or --tokens-per-step).

--checkpoint takes any layout: a training output folder or checkpoint of this project, a Hub
folder or repository id (this project's or the paper's released models), or a run folder of the
paper's training code (.hydra/config.yaml + checkpoints-meta/checkpoint.pth).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from sedd.cli import (Parser, check_device, nonneg_int, positive_float, positive_int,
                      probability, run_door)
from sedd.ar import ar_sample
from sedd.inference import condition_from, load_run
from sedd.model import is_autoregressive
from sedd.predictors import PREDICTORS
from sedd.sampling import sample


def eos_id(args, tok) -> int | None:
    """The --stop-at-eos token id: --eos TEXT (one token), or the tokenizer's own EOS."""
    if not args.stop_at_eos:
        if args.eos:
            raise ValueError("--eos is read with --stop-at-eos only")
        return None
    if args.eos:
        try:
            ids = tok.encode(args.eos)
        except ValueError as e:
            raise ValueError(f"--eos {args.eos!r}: {e}") from None
        if len(ids) != 1:
            raise ValueError(f"--eos {args.eos!r} is {len(ids)} tokens; it must be one token")
        return ids[0]
    if tok.eos is None:
        raise ValueError("--stop-at-eos: this tokenizer has no end-of-sequence token; name one "
                         "with --eos TEXT (the built-in language: --eos .)")
    return tok.eos


def parser():
    p = Parser(prog="sample.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH|REPO",
                   help="a training output folder or checkpoint, a Hub folder or id, or a paper run")
    p.add_argument("--steps", type=positive_int("--steps"), default=128,
                   help="predictor steps per window (default 128); for first_hitting the cap on "
                        "network evaluations per window")
    p.add_argument("--predictor", default="analytic", choices=sorted(PREDICTORS),
                   help="a predictor of sedd.predictors (default analytic)")
    p.add_argument("--num-samples", type=positive_int("--num-samples"), default=4)
    p.add_argument("--length", type=positive_int("--length"),
                   help="tokens per sample (default: the training length; longer than the model's "
                        "window: semi-autoregressive windows)")
    p.add_argument("--window", type=positive_int("--window"),
                   help="semi-autoregressive window (default and at most: the model's window)")
    p.add_argument("--stride", type=positive_int("--stride"),
                   help="tokens each semi-autoregressive window moves on (default: half the window)")
    p.add_argument("--tokens-per-step", type=positive_int("--tokens-per-step"),
                   help="first_hitting: positions unmasked per network evaluation (default: "
                        "masked / --steps, rounded up; 1 is exact)")
    p.add_argument("--temperature", type=positive_float("--temperature"), default=1.0,
                   help="temperature of each step's denoising distribution (default 1: exact)")
    p.add_argument("--top-p", type=probability("--top-p"), default=1.0,
                   help="nucleus sampling of each step's denoising distribution, in (0, 1] "
                        "(default 1: exact)")
    p.add_argument("--stop-at-eos", action="store_true",
                   help="cut each sample after its first end-of-sequence token (semi-"
                        "autoregressive: stop when every sample has one)")
    p.add_argument("--eos", metavar="TEXT",
                   help="the end-of-sequence token as text (default: the tokenizer's, e.g. GPT-2's "
                        "<|endoftext|>; the built-in language has none: say --eos .)")
    p.add_argument("--seed", type=nonneg_int("--seed"), default=0)
    p.add_argument("--prefix", default="", help="text at the start, kept fixed")
    p.add_argument("--suffix", default="", help="text at the end, kept fixed")
    p.add_argument("--infill", default="", help='template with blanks: "text [____] text [____:12]"')
    p.add_argument("--out", help="JSON lines with tokens and text (default, for a training output "
                                 "folder: RUN/samples/sample-PREDICTOR-STEPS-seedSEED.jsonl; "
                                 "needed for any other checkpoint)")
    p.add_argument("--tokenizer", help="override the checkpoint's tokenizer, e.g. gpt2:PATH.tiktoken "
                                       "(GPT-2's BPE ranks, offline)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--cuda-graph", action="store_true",
                   help="capture network + step in a CUDA graph per window and replay it (same "
                        "samples; CUDA, analytic/euler, no --temperature/--top-p, a "
                        "sigma-conditioned model or --no-cache)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network's trunk (fullgraph; the first call pays the "
                        "compilation; SEDD models only)")
    p.add_argument("--no-cache", action="store_true",
                   help="call the network at every step even for a time-independent ('clean') "
                        "model (the cache is exact: same samples, fewer network calls); for an "
                        "autoregressive model, recompute the prefix at every token (no KV cache)")
    return p


def output_path(args, name: str | None = None) -> str:
    """--out, or for a training output folder its samples/ folder (never the current folder)."""
    if args.out:
        return args.out
    run = os.path.expanduser(args.checkpoint)
    if os.path.isdir(os.path.join(run, "checkpoints")):
        os.makedirs(os.path.join(run, "samples"), exist_ok=True)
        name = name or f"{args.predictor}-{args.steps}"
        return os.path.join(run, "samples", f"sample-{name}-seed{args.seed}.jsonl")
    raise ValueError(f"--out FILE is needed to write the samples of {args.checkpoint} (only a "
                     f"training output folder has a default, its samples/ folder)")


def _main(argv=None):
    args = parser().parse_args(argv)
    device = check_device(args.device)
    r = load_run(args.checkpoint, device, not args.no_ema, args.tokenizer)
    for note in r.run.notes:
        print(f"note: {note}", file=sys.stderr)
    model, tok = r.model, r.tokenizer
    if is_autoregressive(model):
        return ar_main(args, r, device)
    window = model.config.max_length
    if args.window and args.window > window:
        raise ValueError(f"--window {args.window} is longer than the model's window {window}")
    window = args.window or window
    if args.stride and args.stride > window:
        raise ValueError(f"--stride {args.stride} is longer than the window {window}")
    predictor = PREDICTORS[args.predictor]
    if args.tokens_per_step and predictor.loop is None:
        raise ValueError(f"--tokens-per-step applies to --predictor first_hitting, not "
                         f"{args.predictor}")
    predictor.check_graph(r.graph)
    if args.cuda_graph and torch.device(device).type != "cuda":
        raise ValueError("--cuda-graph needs a CUDA device (--device cuda)")
    if args.cuda_graph and predictor.loop is not None:
        raise ValueError(f"--cuda-graph applies to --predictor analytic or euler, not "
                         f"{args.predictor}")
    eos = eos_id(args, tok)
    length = args.length or r.length
    condition = None
    if args.prefix or args.suffix or args.infill:
        tokens, given, length = condition_from(tok, length if not args.infill else args.length or 0,
                                               args.prefix, args.suffix, args.infill)
        condition = (tokens, given)
    out = output_path(args)
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out {out}: the folder {out_dir} does not exist")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    x, stats = sample(model, r.graph, r.noise, args.num_samples, length, args.steps, args.predictor,
                      condition=condition, generator=gen, device=device, progress=True,
                      cache=not args.no_cache, return_stats=True, window=window,
                      stride=args.stride, tokens_per_step=args.tokens_per_step,
                      temperature=args.temperature, top_p=args.top_p,
                      stop_at_eos=args.stop_at_eos, eos=eos, compile=args.compile,
                      cuda_graph=args.cuda_graph)
    print(f"network calls: {stats.network_calls} of {stats.evaluations} evaluations"
          + (" (exact cache)" if stats.cached else "")
          + (f", {stats.windows} windows" if stats.windows > 1 else ""), file=sys.stderr)
    write_records(out, x, tok, stats, args.stop_at_eos)


def ar_main(args, r, device):
    """The autoregressive baseline: ancestral sampling with a KV cache; a prefix, no suffix or
    infill (a left-to-right model cannot condition on what follows)."""
    model, tok = r.model, r.tokenizer
    if args.suffix or args.infill:
        raise ValueError(f"{'--suffix' if args.suffix else '--infill'}: an autoregressive model "
                         f"generates left to right and cannot condition on text after the "
                         f"blanks; use --prefix, or a SEDD checkpoint to infill")
    for flag, given in (("--window", args.window), ("--stride", args.stride),
                        ("--tokens-per-step", args.tokens_per_step)):
        if given:
            raise ValueError(f"{flag} is for SEDD models; an autoregressive model samples one "
                             f"token per evaluation within its window")
    if args.predictor != "analytic":
        raise ValueError(f"--predictor {args.predictor}: an autoregressive model samples "
                         f"ancestrally (no predictor)")
    eos = eos_id(args, tok)
    length = args.length or r.length
    if length > model.config.max_length:
        raise ValueError(f"--length {length} is longer than the autoregressive model's window "
                         f"{model.config.max_length}")
    if args.compile or args.cuda_graph:
        flag = "--compile" if args.compile else "--cuda-graph"
        raise ValueError(f"{flag} applies to SEDD models: the autoregressive sampler's KV-cached "
                         "calls change shape at every token")
    prefix = None
    if args.prefix:
        ids, _, _ = condition_from(tok, length, args.prefix)
        prefix = ids[:, :len(tok.encode(args.prefix))]
    out = output_path(args, "ar")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out {out}: the folder {out_dir} does not exist")
    gen = torch.Generator(device=device).manual_seed(args.seed)
    x, stats = ar_sample(model, args.num_samples, length, generator=gen, prefix=prefix,
                         temperature=args.temperature, top_p=args.top_p, cache=not args.no_cache,
                         stop_at_eos=args.stop_at_eos, eos=eos, device=device, return_stats=True)
    print(f"network calls: {stats.network_calls} (ancestral, one per token"
          + (", KV cache" if stats.cached else "") + ")", file=sys.stderr)
    write_records(out, x, tok, stats, args.stop_at_eos)


def write_records(out, x, tok, stats, stop_at_eos):
    with open(out, "w") as fh:
        for i, row in enumerate(x):
            row = row.cpu().tolist()
            text = tok.decode(row)
            print(text + "\n")
            record = {"tokens": row, "text": text}
            if stop_at_eos:
                record.update(length=len(row), ended=stats.ended[i])
            fh.write(json.dumps(record) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def main(argv=None):
    run_door("sample.py", _main, argv)


if __name__ == "__main__":
    main()
