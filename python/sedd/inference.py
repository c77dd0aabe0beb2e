"""Loading a trained model for sampling and evaluation, and conditioning templates."""

from __future__ import annotations

import os
import re

import torch

from .data import WordTokenizer, _text_files, get_tokenizer
from .graphs import get_graph
from .hub import from_pretrained
from .language import builtin_language
from .noise import get_noise

BLANK = re.compile(r"\[(_+)(?::(\d+))?\]")


def load_for_inference(checkpoint: str, device="cpu", use_ema=True):
    """(model, graph, noise, tokenizer, config) of a training output folder or checkpoint. The
    model is rebuilt from its saved ModelConfig, parametrisation included ("score" when a config
    predates the field)."""
    model, cfg = from_pretrained(checkpoint, device=device, use_ema=use_ema)
    train = cfg.get("train", {})
    graph = get_graph(cfg.get("graph", "absorb"), cfg.get("n", model.config.vocab_size - 1))
    if model.config.time_independent and graph.name != "absorb":
        raise ValueError(f"checkpoint {checkpoint!r}: a time-independent ('clean') model needs "
                         f"the absorbing graph, its config says {cfg.get('graph')!r}")
    noise_cfg = dict(cfg.get("noise", {"name": "loglinear"}))
    noise = get_noise(noise_cfg.pop("name"), **noise_cfg)
    data = train.get("data", "builtin")
    if data == "builtin":
        tokenizer = WordTokenizer(builtin_language())
    else:
        spec = train.get("tokenizer", "gpt2")
        files = _text_files(data) if spec.startswith("bpe") and os.path.exists(data) else None
        tokenizer = get_tokenizer(spec, files)
    return model, graph, noise, tokenizer, cfg


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
