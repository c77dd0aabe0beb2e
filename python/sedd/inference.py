"""Loading a trained model for sampling and evaluation, and conditioning templates."""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from .hub import load_pretrained
from .runconfig import RunConfig

BLANK = re.compile(r"\[(_+)(?::(\d+))?\]")


@dataclass
class Loaded:
    model: torch.nn.Module
    graph: object
    noise: object
    tokenizer: object
    run: RunConfig
    path: str          # the file or folder the weights came from
    weights: str       # "ema", "raw" or "hub"

    @property
    def length(self) -> int:
        """The training length (the model's window when the config has none)."""
        return self.run.seq_len or self.model.config.max_length


def load_run(checkpoint: str, device="cpu", use_ema=True, tokenizer: str | None = None) -> Loaded:
    """Model, graph, noise and tokenizer of any checkpoint sedd.hub.load_pretrained reads (this
    project's runs and Hub folders, the paper's Hub folders and training runs, Hub ids).
    `tokenizer` overrides the run's (a sedd.data.get_tokenizer spec, e.g. gpt2:PATH.tiktoken to
    work offline); it must have the checkpoint's vocabulary."""
    p = load_pretrained(checkpoint, device=device, use_ema=use_ema)
    run = p.run
    tok = run.build_tokenizer(tokenizer)
    return Loaded(p.model, run.build_graph(), run.build_noise(), tok, run, p.path, p.weights)


def load_for_inference(checkpoint: str, device="cpu", use_ema=True, tokenizer: str | None = None):
    """(model, graph, noise, tokenizer, config dict) of load_run; the config in this project's
    format (a paper checkpoint's translated)."""
    r = load_run(checkpoint, device, use_ema, tokenizer)
    return r.model, r.graph, r.noise, r.tokenizer, r.run.to_dict()


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
