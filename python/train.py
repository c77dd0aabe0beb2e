"""Train a SEDD model.

    python python/train.py                       # tiny model, built-in language, minutes on a CPU
    python python/train.py --preset small --data openwebtext --tokenizer gpt2
    torchrun --nproc_per_node=8 python/train.py --preset small --data openwebtext
    python python/train.py --init-from louaaron/sedd-small --data my_corpus/ --seq-len 256

Defaults come from the preset (sedd.config.PRESETS); every flag overrides one field of
sedd.config.TrainConfig (the flags are generated from its fields; --model picks the model family,
sedd.families, whose own options join them). With --init-from the graph,
noise, model shape, tokenizer and length come from the checkpoint (any layout: this project's runs
and Hub folders, the paper's Hub folders and training runs); a flag that disagrees is an error.
Outputs in --out: checkpoints/ (safetensors + state, atomic), metrics.csv, tb/ (TensorBoard),
samples/, loss.png. Token files and trained tokenizers go to --cache-dir, never beside the data.
"""

import argparse

from sedd.cli import Parser, run_door
from sedd.config import add_flags, from_args
from sedd.training import Trainer


def parse_args(argv=None):
    p = Parser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(p)
    return p.parse_args(argv)


def _main(argv=None):
    trainer = Trainer(from_args(parse_args(argv)))
    trainer.fit()
    trainer.dist.exit_worker()          # under torchrun: done, past the interpreter's teardown


def main(argv=None):
    run_door("train.py", _main, argv)


if __name__ == "__main__":
    main()
