"""Tokenize a corpus once, ahead of training: parallel worker processes, a progress bar, a
resumable memory-mapped token file in the cache folder, checked (size and digest) whenever it is
read, and rebuilt if it is truncated or corrupt. train.py, evaluate.py and compare.py then read
the same file (a torchrun job need not wait on one rank tokenizing).

    python python/prepare.py --data openwebtext --tokenizer gpt2 --workers 16
    python python/prepare.py --data my_corpus/ --tokenizer bpe:8192
    python python/prepare.py --data openwebtext --tokenizer gpt2 --verify    # read it all
"""

import argparse
import sys

from sedd.cli import Parser, positive_int, run_door
from sedd.data.corpora import corpus_tokens
from sedd.data.prepare import record_path, verify


def parse_args(argv=None):
    p = Parser(prog="prepare.py", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True,
                   help="a text file or folder, a datasets name (openwebtext, wikitext103, ...) "
                        "or hf:NAME")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2, gpt2:PATH, bpe[:N], char or a path")
    p.add_argument("--workers", type=positive_int("--workers"), default=None,
                   help="tokenizing processes (default: the CPUs this process may use, at most 8)")
    p.add_argument("--cache-dir", default=None,
                   help="where the token file goes (default $SEDD_CACHE or ~/.cache/sedd)")
    p.add_argument("--verify", action="store_true",
                   help="also check the whole file's SHA-256 against its record")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    return p.parse_args(argv)


def _main(argv=None):
    a = parse_args(argv)
    if a.data == "builtin":
        raise ValueError("--data builtin: the built-in language is generated, not tokenized")
    tokens, tok = corpus_tokens(a.data, a.tokenizer, a.cache_dir, a.workers, a.progress)
    path = tokens.filename if hasattr(tokens, "filename") else "(empty)"
    if a.verify and hasattr(tokens, "filename"):
        problem = verify(path, full=True)
        if problem:
            raise ValueError(f"token file {path} is {problem}; run prepare.py again to rebuild it")
    print(f"{len(tokens):,} tokens ({tok.n} ids) in {path}; record {record_path(path)}")


def main(argv=None):
    run_door("prepare.py", _main, argv)


if __name__ == "__main__":
    sys.exit(main())
