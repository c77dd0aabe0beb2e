"""Conditions of a sample: which positions are given (prefix, suffix, infill blanks, any
pattern) and their tokens — built from text (`condition_from`, the doors' templates) or from
tensors (`Condition`), checked once and applied by the sampler before every window and after
the last."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

BLANK = re.compile(r"\[(_+)(?::(\d+))?\]")


@dataclass
class Condition:
    """Given tokens [B, L] at the positions `given` [B, L] (bool), or nothing given (None)."""

    tokens: torch.Tensor | None = None
    given: torch.Tensor | None = None

    @classmethod
    def of(cls, condition, num_samples: int, length: int, n: int, device) -> "Condition":
        """sample()'s `condition` — None or (tokens [num_samples or 1, length], given [.., length]
        bool) — checked (given tokens in [0, n)) and expanded to the batch, on `device`."""
        if condition is None:
            return cls()
        tokens, given = condition
        tokens = tokens.to(device).expand(num_samples, length)
        given = given.to(device).expand(num_samples, length).contiguous()
        if given.dtype != torch.bool:
            raise ValueError(f"condition: given must be a bool tensor, got {given.dtype}")
        if bool(((tokens < 0) | (tokens >= n))[given].any()):   # once per call: the steps
            raise ValueError(f"condition: given tokens must be in [0, {n})")  # skip checks
        return cls(tokens, given)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x with the given positions written in."""
        return x if self.given is None else torch.where(self.given, self.tokens, x)

    def frozen(self, done: torch.Tensor, window: slice, first: bool):
        """The positions a window keeps [B, W]: the given ones and those already generated (None
        when nothing is: the kernels' fast path)."""
        if self.given is None:
            return None if first else done[:, window]
        return done[:, window] | self.given[:, window]

    def prefix_length(self) -> int:
        """P when exactly the first P positions are given in every row (0: nothing given);
        -1 for any other pattern (a suffix, infill blanks)."""
        if self.given is None:
            return 0
        P = int(self.given[0].sum())
        lead = torch.zeros_like(self.given)
        lead[:, :P] = True
        return P if bool((self.given == lead).all()) else -1


def condition_from(tokenizer, length: int, prefix: str = "", suffix: str = "",
                   infill: str = ""):
    """(tokens [1, L], given [1, L] bool, L) for a prefix and/or suffix, or an infill template
    "text [____] text [____:12] text" whose blanks are generated (one token per underscore, or
    the given count). Raises ValueError when the pieces do not fit."""
    if infill:
        if prefix or suffix:
            raise ValueError("--infill cannot be combined with --prefix/--suffix")
        pieces, pos = [], 0
        for m in BLANK.finditer(infill):
            text = infill[pos:m.start()]
            if text.strip():
                pieces.append((tokenizer.encode(text.strip() if tokenizer.eos is None else text), True))
            n = int(m.group(2)) if m.group(2) else len(m.group(1))
            if n < 1:
                raise ValueError("an infill blank must have at least one token")
            pieces.append(([0] * n, False))
            pos = m.end()
        tail = infill[pos:]
        if tail.strip():
            pieces.append((tokenizer.encode(tail.strip() if tokenizer.eos is None else tail), True))
        if not any(not g for _, g in pieces):
            raise ValueError("--infill needs at least one blank like [____] or [____:12]")
        total = sum(len(ids) for ids, _ in pieces)
        if length and total > length:
            raise ValueError(f"the infill template is {total} tokens, longer than --length {length}")
        length = length or total
        tokens = torch.zeros(1, length, dtype=torch.long)
        given = torch.zeros(1, length, dtype=torch.bool)
        i = 0
        for ids, g in pieces:
            tokens[0, i:i + len(ids)] = torch.tensor(ids, dtype=torch.long)
            given[0, i:i + len(ids)] = g
            i += len(ids)
        return tokens, given, length
    p = tokenizer.encode(prefix) if prefix else []
    s = tokenizer.encode(suffix) if suffix else []
    if len(p) + len(s) > length:
        raise ValueError(f"prefix ({len(p)} tokens) + suffix ({len(s)} tokens) is longer than "
                         f"--length {length}")
    tokens = torch.zeros(1, length, dtype=torch.long)
    given = torch.zeros(1, length, dtype=torch.bool)
    if p:
        tokens[0, :len(p)] = torch.tensor(p)
        given[0, :len(p)] = True
    if s:
        tokens[0, length - len(s):] = torch.tensor(s)
        given[0, length - len(s):] = True
    return tokens, given, length
