"""Train a SEDD model.

    python python/train.py                       # tiny model, built-in language, minutes on a CPU
    python python/train.py --preset small --data openwebtext --tokenizer gpt2
    torchrun --nproc_per_node=8 python/train.py --preset small --data openwebtext
    python python/train.py --init-from louaaron/sedd-small --data my_corpus/ --seq-len 256

Defaults come from the preset; every flag overrides one field. With --init-from the graph, noise,
model shape, tokenizer and length come from the checkpoint (any layout: this project's runs and
Hub folders, the paper's Hub folders and training runs); a flag that disagrees is an error.
Outputs in --out: checkpoints/ (safetensors + state, atomic), metrics.csv, tb/ (TensorBoard),
samples/, loss.png. Token files and trained tokenizers go to --cache-dir, never beside the data.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sedd.cli import (Parser, nonneg_int, positive_float, positive_int, run_door,  # noqa: E402
                      unit_interval)
from sedd.trainer import TRAIN_PRESETS, TrainConfig, Trainer  # noqa: E402


def parse_args(argv=None):
    p = Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--preset", default="tiny", choices=sorted(TRAIN_PRESETS), help="model and schedule sizes (default tiny)")
    a("--data", help="builtin (default for tiny), a text file or folder, or a datasets name "
                     "(openwebtext, wikitext2, wikitext103, ptb, lm1b, lambada, text8)")
    a("--tokenizer", help="gpt2, gpt2:PATH.tiktoken, bpe[:N], char, or a path (ignored for builtin)")
    a("--graph", help="forward process: absorb (default), uniform, or general:PATH (a [V, V] rate "
                      "matrix Q saved with torch.save or as .npy; Q[y, x] = rate x -> y)")
    a("--noise", choices=["loglinear", "geometric"], help="noise schedule (default by graph)")
    a("--steps", type=positive_int("--steps"), help="total optimizer steps of the run (resume continues to it)")
    a("--batch-size", type=positive_int("--batch-size"), help="sequences per optimizer step and process (before --accum)")
    a("--accum", type=positive_int("--accum"), help="gradient accumulation micro-batches per step")
    a("--seq-len", type=positive_int("--seq-len"), help="tokens per sequence")
    a("--lr", type=positive_float("--lr"), help="peak learning rate (AdamW, linear warm-up, then constant)")
    a("--warmup", type=nonneg_int("--warmup"), help="warm-up steps")
    a("--ema", type=unit_interval("--ema"), help="EMA decay of the weights used for eval and samples")
    a("--grad-clip", type=positive_float("--grad-clip"), help="gradient-norm clipping (default 1.0)")
    a("--out", help="output folder (default runs/sedd)")
    a("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    a("--init-from", metavar="PATH|REPO",
      help="fine-tune: start from this checkpoint's weights (EMA initialised from them)")
    a("--init-weights", choices=["ema", "raw"], help="which weights of --init-from (default ema)")
    a("--cache-dir", help="token files and trained tokenizers (default $SEDD_CACHE or ~/.cache/sedd)")
    a("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    a("--seed", type=nonneg_int("--seed"), help="seed of data order, noise levels, perturbations")
    a("--eval-every", type=positive_int("--eval-every"), help="steps between held-out eval losses")
    a("--save-every", type=positive_int("--save-every"), help="steps between checkpoints")
    a("--sample-every", type=positive_int("--sample-every"), help="steps between sample files")
    a("--sample-steps", type=positive_int("--sample-steps"), help="sampler steps for periodic samples")
    a("--log-every", type=positive_int("--log-every"), help="steps between metric rows")
    a("--hidden-size", type=positive_int("--hidden-size"), help="override the preset's hidden size")
    a("--n-blocks", type=positive_int("--n-blocks"), help="override the preset's number of blocks")
    a("--n-heads", type=positive_int("--n-heads"), help="override the preset's number of heads")
    a("--dropout", type=unit_interval("--dropout"), help="override the preset's dropout")
    a("--parametrisation", choices=["score", "clean"],
      help="score (default): the paper's sigma-conditioned network; clean: time-independent "
           "absorbing model, log p(y | x) turned into scores analytically (exact sampling cache)")
    a("--reference-loss", action="store_true", help="plain-PyTorch loss instead of the fused kernel")
    a("--no-fused-linear", action="store_true",
      help="materialise the [B, L, V] log-scores and apply the fused loss to them, instead of "
           "fusing the output projection into the loss (linear_score_entropy, the default)")
    a("--fsdp", action="store_true", help="FullyShardedDataParallel instead of DDP (GPUs, torchrun)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--no-report", action="store_true", help="skip the final samples and likelihood report")
    return p.parse_args(argv)


def _main(argv=None):
    args = parse_args(argv)
    over = {k: v for k, v in vars(args).items()
            if k not in ("preset", "no_progress", "no_report", "no_fused_linear")
            and v is not None and v is not False}
    over["fused_linear"] = not args.no_fused_linear
    over["progress"] = not args.no_progress
    over["final_report"] = not args.no_report
    cfg = TrainConfig.from_preset(args.preset, **over)
    Trainer(cfg).fit()


def main(argv=None):
    run_door("train.py", _main, argv)


if __name__ == "__main__":
    main()
