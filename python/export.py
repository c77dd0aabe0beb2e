"""Write a checkpoint as a Hub folder: this project's layout, or the paper's (a folder the paper's
own `SEDD.from_pretrained` / `load_model` reads, to take a model to tools built on its code).

    python python/export.py --checkpoint runs/sedd --out exported/ --layout paper
    python python/export.py --checkpoint paper_run/ --out hub/          # a paper run -> Hub folder

The weights are the EMA ones unless --no-ema. The paper's layout needs what its code can
represent: the absorbing or uniform graph, the σ-conditioned ("score") network, and the
log-linear schedule with ε = 1e-3 or the geometric one.
"""

import argparse
import os

from sedd.cli import Parser, run_door
from sedd.loading import load, save_pretrained


def _main(argv=None):
    p = Parser(prog="export.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="PATH|REPO", help="any layout sedd.loading.load reads")
    p.add_argument("--out", required=True, help="the folder to write (config.json, model.safetensors)")
    p.add_argument("--layout", choices=["paper", "sedd-kernels"], default="paper")
    p.add_argument("--no-ema", action="store_true", help="the raw weights instead of the EMA")
    args = p.parse_args(argv)
    if os.path.isfile(os.path.join(args.out, "config.json")):
        raise FileExistsError(f"--out {args.out} already holds a config.json; choose a new folder")
    pre = load(args.checkpoint, use_ema=not args.no_ema, tokenizer=False)
    save_pretrained(args.out, pre.model, layout=args.layout, run=pre.run)
    print(f"wrote {args.out} ({args.layout} layout, {pre.weights} weights of {pre.path})")


def main(argv=None):
    run_door("export.py", _main, argv)


if __name__ == "__main__":
    main()
