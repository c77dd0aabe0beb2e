"""What every command-line door shares: bad input ends in one line on stderr and a non-zero exit,
never a traceback.

- `Parser`: argparse whose usage errors are one line (`train.py: error: ...`), exit code 2.
- `run_door(name, main, argv)`: runs a door's main; the errors that bad input raises
  (ValueError, OSError, CheckpointError, ImportError, out-of-memory) become
  `SystemExit("name: message")`: that line on stderr and exit status 1 (in-process callers catch
  SystemExit and read the message from it). Set SEDD_DEBUG=1 to see the traceback instead.
- argparse types for counts and rates that name the flag when they are out of range.
- `check_device`: `--device` parsed and checked against this machine."""

from __future__ import annotations

import argparse
import os
import re
import sys

import torch

from .checkpoint import CheckpointError

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


def _number(kind, what, ok):
    def for_flag(flag):
        def parse(text):
            try:
                v = kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text!r}") from None
            if v != v or not ok(v):
                raise argparse.ArgumentTypeError(f"{flag} must be {what}, got {text}")
            return v
        parse.__name__ = what
        return parse
    return for_flag


# argparse types: `type=positive_int("--steps")` rejects 0 with "--steps must be >= 1, got 0"
positive_int = _number(int, ">= 1", lambda v: v >= 1)
nonneg_int = _number(int, ">= 0", lambda v: v >= 0)
positive_float = _number(float, "> 0 (finite)", lambda v: 0 < v < float("inf"))
unit_interval = _number(float, "in [0, 1)", lambda v: 0 <= v < 1)
probability = _number(float, "in (0, 1]", lambda v: 0 < v <= 1)


def check_device(spec: str | None) -> str:
    """'cpu', 'cuda' or 'cuda:N' that this machine has; a clear error otherwise."""
    if spec is None or spec == "":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device {spec!r}: unknown device (expected cpu, cuda or cuda:N)") from None
    if dev.type == "cpu":
        return spec
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is a CPU build" if torch.version.cuda is None else \
                "no CUDA device is visible"
            raise ValueError(f"--device {spec}: CUDA is not available here ({why}); use "
                             f"--device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} "
                             f"CUDA device(s)")
        return spec
    raise ValueError(f"--device {spec!r}: unsupported device type {dev.type!r} (cpu or cuda)")


def available_memory(device: str) -> int:
    """Bytes a run may use: free CUDA memory, or the machine's available RAM."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
