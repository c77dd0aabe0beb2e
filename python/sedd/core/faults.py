"""Fault points: named places in the training loop and the checkpoint writer where a test makes a
process die (SIGKILL, no handler, no cleanup), to show that a kill at any of them leaves the last
complete checkpoint intact and the resumed run exact (tests/faults.py).

Armed by the environment: SEDD_FAULT="POINT:RANK:N" kills rank RANK the N-th time it reaches
POINT (N counted from 1 in that process). Unset, the default, a point is one dictionary lookup."""

from __future__ import annotations

import os
import signal

# point: (where it is, which ranks reach it)
POINTS = {
    "step": ("after a micro-batch's backward, before the optimizer step", "every rank"),
    "checkpoint.shards": ("after the sharded training state is written (--fsdp), before the "
                          "weights are gathered", "every rank"),
    "checkpoint.weights": ("after model.safetensors, before ema.safetensors", "rank 0"),
    "checkpoint.promote": ("with every file written, before the folder is renamed into place",
                           "rank 0"),
    "checkpoint.latest": ("after the rename, before the `latest` pointer moves", "rank 0"),
    "prepare.part": ("after a part of a token file is tokenized (sedd.data.prepare)",
                     "the preparing process"),
}

_counts: dict[str, int] = {}


def _armed():
    spec = os.environ.get("SEDD_FAULT", "")
    if not spec:
        return None
    try:
        point, rank, n = spec.rsplit(":", 2)
        rank, n = int(rank), int(n)
    except ValueError:
        raise ValueError(f"$SEDD_FAULT={spec!r}: expected POINT:RANK:N") from None
    if point not in POINTS:
        raise ValueError(f"$SEDD_FAULT={spec!r}: unknown point {point!r} (one of "
                         f"{', '.join(POINTS)})")
    return point, rank, n


def point(name: str) -> None:
    """Die here if $SEDD_FAULT names this point, this process's rank and this visit."""
    armed = _armed()
    if armed is None or armed[0] != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if armed[1] == int(os.environ.get("RANK", "0")) and _counts[name] == armed[2]:
        os.kill(os.getpid(), signal.SIGKILL)
