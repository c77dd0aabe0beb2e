"""Train a SEDD model.

    python python/train.py                       # tiny model, built-in language, minutes on a CPU
    python python/train.py --preset small --data openwebtext --tokenizer gpt2
    torchrun --nproc_per_node=8 python/train.py --preset small --data openwebtext

Defaults come from the preset; every flag overrides one field. Outputs in --out: checkpoints/
(safetensors + state, atomic), metrics.csv, tb/ (TensorBoard), samples/, loss.png.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sedd.trainer import TRAIN_PRESETS, TrainConfig, Trainer  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--preset", default="tiny", choices=sorted(TRAIN_PRESETS), help="model and schedule sizes (default tiny)")
    a("--data", help="builtin (default for tiny), a text file or folder, or a datasets name "
                     "(openwebtext, wikitext2, wikitext103, ptb, lm1b, lambada, text8)")
    a("--tokenizer", help="gpt2, gpt2:PATH.tiktoken, bpe[:N], char, or a path (ignored for builtin)")
    a("--graph", help="forward process: absorb (default), uniform, or general:PATH (a [V, V] rate "
                      "matrix Q saved with torch.save or as .npy; Q[y, x] = rate x -> y)")
    a("--noise", choices=["loglinear", "geometric"], help="noise schedule (default by graph)")
    a("--steps", type=int, help="total optimizer steps of the run (resume continues to it)")
    a("--batch-size", type=int, help="sequences per optimizer step and process (before --accum)")
    a("--accum", type=int, help="gradient accumulation micro-batches per step")
    a("--seq-len", type=int, help="tokens per sequence")
    a("--lr", type=float, help="peak learning rate (AdamW, linear warm-up, then constant)")
    a("--warmup", type=int, help="warm-up steps")
    a("--ema", type=float, help="EMA decay of the weights used for eval and samples")
    a("--grad-clip", type=float, help="gradient-norm clipping (default 1.0)")
    a("--out", help="output folder (default runs/sedd)")
    a("--resume", action="store_true", help="continue from OUT/checkpoints/latest")
    a("--device", help="cpu or cuda (default: cuda if available)")
    a("--seed", type=int, help="seed of data order, noise levels, perturbations")
    a("--eval-every", type=int, help="steps between held-out eval losses")
    a("--save-every", type=int, help="steps between checkpoints")
    a("--sample-every", type=int, help="steps between sample files")
    a("--sample-steps", type=int, help="sampler steps for periodic samples")
    a("--log-every", type=int, help="steps between metric rows")
    a("--hidden-size", type=int, help="override the preset's hidden size")
    a("--n-blocks", type=int, help="override the preset's number of blocks")
    a("--n-heads", type=int, help="override the preset's number of heads")
    a("--dropout", type=float, help="override the preset's dropout")
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


def main(argv=None):
    args = parse_args(argv)
    over = {k: v for k, v in vars(args).items()
            if k not in ("preset", "no_progress", "no_report", "no_fused_linear")
            and v is not None and v is not False}
    over["fused_linear"] = not args.no_fused_linear
    over["progress"] = not args.no_progress
    over["final_report"] = not args.no_report
    try:
        cfg = TrainConfig.from_preset(args.preset, **over)
    except ValueError as e:
        sys.exit(f"train.py: {e}")
    Trainer(cfg).fit()


if __name__ == "__main__":
    main()
