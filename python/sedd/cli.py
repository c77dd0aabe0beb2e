"""What every command-line door shares: bad input ends in one line on stderr and a non-zero exit,
never a traceback.

- `Parser`: argparse whose usage errors are one line (`train.py: error: ...`), exit code 2.
- `run_door(name, main, argv)`: runs a door's main; the errors that bad input raises
  (ValueError, OSError, CheckpointError, ImportError, out-of-memory) become
  `SystemExit("name: message")`: that line on stderr and exit status 1 (in-process callers catch
  SystemExit and read the message from it). Set SEDD_DEBUG=1 to see the traceback instead.
- argparse types for counts and rates that name the flag when they are out of range, and
  `check_device` (`--device` checked against this machine): the library's own, re-exported.

Only the doors import this module; the library never does."""

from __future__ import annotations

import argparse
import os
import re
import sys

import torch

from .core.options import (fraction, nonneg_int, positive_float, positive_int, probability,
                           unit_interval)
from .loading import CheckpointError
from .training.distributed import check_device

__all__ = ["Parser", "run_door", "USER_ERRORS", "check_device", "fraction", "nonneg_int",
           "positive_float", "positive_int", "probability", "unit_interval"]

USER_ERRORS = (ValueError, OSError, CheckpointError, ImportError, torch.OutOfMemoryError)


class Parser(argparse.ArgumentParser):
    def error(self, message):
        message = re.sub(r"^argument (\S+?)(/\S+)?: (?=\1 )", "", message)
        self.exit(2, f"{self.prog}: error: {message}\n")


def run_door(name: str, main, argv=None):
    try:
        return main(argv)
    except USER_ERRORS as e:
        if os.environ.get("SEDD_DEBUG"):
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, torch.OutOfMemoryError):
            msg = "out of memory: " + msg[:200] + " (lower --batch-size or --seq-len)"
        raise SystemExit(f"{name}: {msg}") from None     # printed on stderr, exit status 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
