"""Sample from a trained model of any family, unconditionally or with given text (prefix,
suffix, infill — what the family can honour): a SEDD model with any predictor; the
autoregressive baseline (train.py --model ar) ancestrally with a KV cache, a prefix but no suffix
or infill, --temperature and --top-p as for SEDD.

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
--predictor confidence unmasks the most confident positions first (--threshold, or
--tokens-per-step per call: Fast-dLLM / LLaDA); --predictor remdm remasks as it goes (--remask
cap|rescale|conf|loop, --eta, --loop): more --steps, better samples.

    python python/sample.py --checkpoint runs/sedd --predictor confidence --threshold 0.9
    python python/sample.py --checkpoint runs/sedd --predictor remdm --steps 256 --remask loop
    python python/sample.py --checkpoint runs/sedd --predictor confidence --kv-cache dual --block-length 16

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

from sedd.cli import (Parser, check_device, fraction, nonneg_int, positive_float, positive_int,
                      probability, run_door)
from sedd.families import FAMILIES
from sedd.loading import load
from sedd.sampling import PREDICTORS, condition_from

# the sampling flags a family may or may not read (Family.sample_options)
FAMILY_FLAGS = ("steps", "predictor", "window", "stride", "tokens_per_step", "threshold",
                "rank_by", "greedy", "remask", "eta", "loop", "block_length", "kv_cache",
                "refresh", "compile", "cuda_graph", "no_kv_cache")


def loop_phase(text):
    """--loop T_ON,T_OFF,ALPHA_ON: three numbers (checked by the sampler)."""
    try:
        t_on, t_off, alpha_on = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loop must be T_ON,T_OFF,ALPHA_ON (three numbers), "
                                         f"got {text!r}") from None
    return t_on, t_off, alpha_on


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
    p.add_argument("--steps", type=positive_int("--steps"),
                   help="predictor steps per window (default 128); for first_hitting the cap on "
                        "network evaluations per window")
    p.add_argument("--predictor", choices=sorted(PREDICTORS),
                   help="a predictor of sedd.sampling.predictors (default analytic)")
    p.add_argument("--num-samples", type=positive_int("--num-samples"), default=4)
    p.add_argument("--length", type=positive_int("--length"),
                   help="tokens per sample (default: the training length; longer than the model's "
                        "window: semi-autoregressive windows)")
    p.add_argument("--window", type=positive_int("--window"),
                   help="semi-autoregressive window (default and at most: the model's window)")
    p.add_argument("--stride", type=positive_int("--stride"),
                   help="tokens each semi-autoregressive window moves on (default: half the window)")
    p.add_argument("--tokens-per-step", type=positive_int("--tokens-per-step"),
                   help="first_hitting, confidence: positions unmasked per network evaluation "
                        "(default: masked / --steps, rounded up; 1 is exact)")
    p.add_argument("--threshold", type=probability("--threshold"),
                   help="confidence: unmask every position whose confidence is at least this, and "
                        "at least one per call (Fast-dLLM); default: --tokens-per-step per call")
    p.add_argument("--rank-by", choices=["top", "margin", "entropy"],
                   help="confidence: the top probability (default), top minus second, or "
                        "exp(-entropy) of each position's denoising distribution")
    p.add_argument("--greedy", action="store_true",
                   help="confidence: the chosen positions take their most likely token (not exact)")
    p.add_argument("--remask", choices=["cap", "rescale", "conf", "loop"],
                   help="remdm: the remasking schedule (default loop)")
    p.add_argument("--eta", type=fraction("--eta"),
                   help="remdm: the remasking rate eta of cap/rescale/loop (defaults 0.008, 0.015, "
                        "0.02; 0 with cap or rescale is the analytic predictor)")
    p.add_argument("--loop", type=loop_phase, metavar="T_ON,T_OFF,ALPHA_ON",
                   help="remdm --remask loop: the loop's time interval and unmasked share "
                        "(default 0.55,0.05,0.9)")
    p.add_argument("--block-length", type=positive_int("--block-length"),
                   help="denoise each window in sub-blocks of this many positions, left to right "
                        "(Fast-dLLM's blocks; default with --kv-cache dual: 32)")
    p.add_argument("--kv-cache", choices=["dual", "none"],
                   help="dual: keep the keys and values outside the sub-block being denoised "
                        "(prefix and suffix) and refresh them once per sub-block (Fast-dLLM; "
                        "approximate, more so for a sigma-conditioned model); none: the default")
    p.add_argument("--refresh", type=positive_int("--refresh"),
                   help="--kv-cache dual: a full pass every this many calls (1: exact)")
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
    p.add_argument("--no-kv-cache", action="store_true",
                   help="block diffusion: run the clean prefix again at every call instead of "
                        "caching its keys and values (same distribution; for tests and benchmarks)")
    p.add_argument("--no-cache", action="store_true",
                   help="call the network at every step even for a time-independent ('clean') "
                        "model (the cache is exact: same samples, fewer network calls); for an "
                        "autoregressive model, recompute the prefix at every token (no KV cache)")
    return p


def output_path(args, family_name: str) -> str:
    """--out, or for a training output folder its samples/ folder (never the current folder)."""
    if args.out:
        out = args.out
    else:
        run = os.path.expanduser(args.checkpoint)
        if not os.path.isdir(os.path.join(run, "checkpoints")):
            raise ValueError(f"--out FILE is needed to write the samples of {args.checkpoint} "
                             f"(only a training output folder has a default, its samples/ folder)")
        os.makedirs(os.path.join(run, "samples"), exist_ok=True)
        name = "-".join(str(v) for v in (args.predictor, args.steps) if v) or family_name
        out = os.path.join(run, "samples", f"sample-{name}-seed{args.seed}.jsonl")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        raise FileNotFoundError(f"--out {out}: the folder {out_dir} does not exist")
    return out


def family_options(args, family) -> dict:
    """The family's sampling flags that were given; a flag the family does not read is an
    error naming the families that do."""
    given = {k: getattr(args, k) for k in FAMILY_FLAGS if getattr(args, k) not in (None, False)}
    unread = [k for k in given if k not in family.sample_options]
    if unread:
        owners = {k: " or ".join(f.title for f in FAMILIES.values() if k in f.sample_options)
                  for k in unread}
        raise ValueError("; ".join(f"--{k.replace('_', '-')} applies to {owners[k]} models"
                                   for k in unread)
                         + f" (the {family.title} model does not read "
                         + ("it)" if len(unread) == 1 else "them)"))
    return given


def check_conditions(args, family, window: int, length: int):
    """The conditions the flags ask for, against what the family can honour."""
    for kind in ("prefix", "suffix", "infill"):
        if getattr(args, kind) and kind not in family.conditions:
            raise ValueError(f"--{kind}: {family.no_condition}")
    if length > window and "windows" not in family.conditions:
        raise ValueError(f"--length {length} is longer than the {family.title} model's window "
                         f"{window}")


def _main(argv=None):
    args = parser().parse_args(argv)
    device = check_device(args.device)
    r = load(args.checkpoint, device, not args.no_ema, args.tokenizer)
    for note in r.run.notes:
        print(f"note: {note}", file=sys.stderr)
    model, tok, family = r.model, r.tokenizer, r.family
    options = family_options(args, family)
    window = model.config.max_length
    eos = eos_id(args, tok)
    length = args.length or r.length
    condition = None
    if args.prefix or args.suffix or args.infill:
        tokens, given, length = condition_from(tok, length if not args.infill else args.length or 0,
                                               args.prefix, args.suffix, args.infill)
        condition = (tokens, given)
    check_conditions(args, family, window, length)
    out = output_path(args, family.name)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    x, stats = family.generate(model, args.num_samples, length, condition=condition,
                               generator=gen, device=device, progress=True,
                               cache=not args.no_cache, return_stats=True,
                               temperature=args.temperature, top_p=args.top_p,
                               stop_at_eos=args.stop_at_eos, eos=eos, **options)
    print(f"network calls: {stats.network_calls} of {stats.evaluations} evaluations"
          + (" (cached)" if stats.cached else "")
          + (f", {stats.windows} windows" if stats.windows > 1 else "")
          + (f", {stats.positions / max(1, sum(len(r) for r in x)):.1f} positions computed per "
             f"sampled token" if stats.positions else ""), file=sys.stderr)
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
