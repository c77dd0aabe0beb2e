"""Sample from a trained SEDD model, unconditionally or with given text (prefix, suffix, infill).

    python python/sample.py --checkpoint runs/sedd
    python python/sample.py --checkpoint runs/sedd --prefix "the" --suffix "."
    python python/sample.py --checkpoint runs/sedd --infill "the [____:3] shonger [______] ."
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from sedd.checkpoint import CheckpointError  # noqa: E402
from sedd.inference import condition_from, load_for_inference  # noqa: E402
from sedd.sampling import sample  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a training output folder (its latest checkpoint) or a checkpoint")
    p.add_argument("--steps", type=int, default=128, help="predictor steps (default 128)")
    p.add_argument("--predictor", default="analytic", choices=["analytic", "euler"])
    p.add_argument("--num-samples", type=int, default=4)
    p.add_argument("--length", type=int, help="tokens per sample (default: the training length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prefix", default="", help="text at the start, kept fixed")
    p.add_argument("--suffix", default="", help="text at the end, kept fixed")
    p.add_argument("--infill", default="", help='template with blanks: "text [____] text [____:12]"')
    p.add_argument("--out", default="samples.jsonl", help="JSON lines with tokens and text")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--no-cache", action="store_true",
                   help="call the network at every step even for a time-independent ('clean') "
                        "model (the cache is exact: same samples, fewer network calls)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.num_samples < 1:
        p.error("--steps and --num-samples must be >= 1")
    try:
        model, graph, noise, tok, cfg = load_for_inference(args.checkpoint, args.device, not args.no_ema)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.exit(f"sample.py: {e}")
    length = args.length or cfg.get("train", {}).get("seq_len") or model.config.max_length
    condition = None
    if args.prefix or args.suffix or args.infill:
        try:
            tokens, given, length = condition_from(tok, length if not args.infill else args.length or 0,
                                                   args.prefix, args.suffix, args.infill)
        except ValueError as e:
            sys.exit(f"sample.py: {e}")
        condition = (tokens, given)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    x, stats = sample(model, graph, noise, args.num_samples, length, args.steps, args.predictor,
                      condition=condition, generator=gen, device=args.device, progress=True,
                      cache=not args.no_cache, return_stats=True)
    print(f"network calls: {stats.network_calls} of {stats.evaluations} evaluations"
          + (" (exact cache)" if stats.cached else ""), file=sys.stderr)
    with open(args.out, "w") as fh:
        for row in x.cpu().tolist():
            text = tok.decode(row)
            print(text + "\n")
            fh.write(json.dumps({"tokens": row, "text": text}) + "\n")


if __name__ == "__main__":
    main()
