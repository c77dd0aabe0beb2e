"""Generative perplexity of samples (the sample-quality figure of docs/math.md §7) and their unigram
entropy.

Generative perplexity is exp of the token-mean negative log-likelihood of the samples' text under
an independent causal language model (GPT-2 large in the SEDD and MDLM papers): each text is
re-tokenized with that model's tokenizer, the tokenizer's BOS token (GPT-2: <|endoftext|>) is put
in front so that every token of the text is scored, and

    gen-PPL = exp( Σ_samples Σ_j −log p(y_j | BOS, y_<j) / Σ_samples (number of tokens) ).

Texts longer than the model's context are scored with a sliding window: windows of `context`
tokens starting every `stride` tokens; each token is scored once, in the first window that
contains it, so it always sees at least context − stride tokens of history (or all of it).

Generative perplexity alone rewards dull text (a repeated token has a low NLL), so the unigram
entropy of the samples is reported beside it: per sample, −Σ_v p_v log p_v of the empirical
distribution of its tokens, averaged over samples (as in the MDLM/ReMDM/DUO evaluations); and the
same of all samples' tokens pooled.

For the built-in corpus the true language is known, and its exact log-likelihood of a sample's
tokens (sedd.data.language.Language.log_likelihood) replaces the causal model: no model's opinion is
needed, and a sample with an impossible transition has probability 0."""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch


def load_samples(path: str) -> list[dict]:
    """JSON lines as python/sample.py writes them ({"tokens": [...], "text": "..."} per line)."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for k, line in enumerate(fh, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {k}: not JSON ({e})") from e
                if not isinstance(row, dict) or not ("tokens" in row or "text" in row):
                    raise ValueError(f"{path}, line {k}: expected an object with 'tokens'/'text'")
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no samples")
    return rows


def unigram_entropy(token_lists) -> tuple[float, float]:
    """(mean over samples of the entropy of each sample's token frequencies, entropy of all
    samples' tokens pooled), in nats."""
    def entropy(counts):
        c = np.asarray(list(counts.values()), dtype=np.float64)
        p = c / c.sum()
        return float(-(p * np.log(p)).sum())
    per = [entropy(Counter(map(int, t))) for t in token_lists if len(t)]
    pooled = Counter(int(v) for t in token_lists for v in t)
    if not per:
        raise ValueError("unigram entropy of samples without tokens")
    return float(np.mean(per)), entropy(pooled)


def load_causal_lm(name_or_path: str, device="cpu"):
    """(model, tokenizer) of a `transformers` causal LM: a Hub name (e.g. gpt2-large) or a local
    folder; a clear error when it cannot be loaded (no network and not cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForCausalLM.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise RuntimeError(f"cannot load the causal LM {name_or_path!r} with transformers ({e}); "
                           f"pass a local model folder with --causal-lm") from e
    return model.to(device).eval(), tokenizer


def _context_size(model, tokenizer) -> int:
    cfg = model.config
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        size = getattr(cfg, key, None)
        if isinstance(size, int) and size > 0:
            return size
    size = getattr(tokenizer, "model_max_length", None)
    if isinstance(size, int) and 0 < size < 10 ** 7:
        return size
    raise ValueError("cannot tell the causal LM's context size; pass context=")


@dataclass
class Scored:
    nll: np.ndarray          # [N] Σ_j −log p(y_j | …) per text, nats (float64)
    tokens: np.ndarray       # [N] number of scored tokens per text
    context: int
    stride: int

    @property
    def nll_per_token(self) -> float:
        return float(self.nll.sum() / self.tokens.sum())

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll_per_token)


def window_starts(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """The sliding windows over a sequence of n ids (the first is the BOS): (start, end, first
    scored position) with every position 1..n−1 scored exactly once, in the first window whose
    end passes it."""
    out, scored_to, start = [], 1, 0
    while scored_to < n:
        end = min(start + context, n)
        out.append((start, end, scored_to))
        scored_to = end
        start += stride
    return out


@torch.no_grad()
def score_texts(texts, model, tokenizer, *, batch_size: int = 8, context: int | None = None,
                stride: int | None = None, device="cpu") -> Scored:
    """Token NLLs of `texts` under a causal LM (see the module docstring), batched, no grad."""
    context = context or _context_size(model, tokenizer)
    stride = stride or max(1, context // 2)
    if not 0 < stride <= context - 1:
        raise ValueError(f"need 0 < stride < context, got stride {stride}, context {context}")
    start_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    items = []                       # (text index, window ids, first scored index within window)
    counts = np.zeros(len(texts), dtype=np.int64)
    for k, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if start_id is not None:
            ids = [start_id] + list(ids)
        counts[k] = max(len(ids) - 1, 0)
        for start, end, first in window_starts(len(ids), context, stride):
            items.append((k, ids[start:end], first - start))
    nll = np.zeros(len(texts), dtype=np.float64)
    items.sort(key=lambda it: len(it[1]))          # similar lengths together: less padding
    for b in range(0, len(items), batch_size):
        chunk = items[b:b + batch_size]
        width = max(len(ids) for _, ids, _ in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        mask = torch.zeros(len(chunk), width, dtype=torch.long)
        for r, (_, seq, _) in enumerate(chunk):      # right padding: causal attention keeps the
            ids[r, :len(seq)] = torch.tensor(seq)     # real positions' logits unchanged
            mask[r, :len(seq)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
        logits = logits.float()                       # log p(ids[j+1] | ids[≤ j]), no [B, W, V] copy
        target = (logits.gather(-1, ids[:, 1:, None].to(device))[..., 0]
                  - torch.logsumexp(logits, -1)).double().cpu()
        for r, (k, seq, first) in enumerate(chunk):
            nll[k] -= float(target[r, first - 1:len(seq) - 1].sum())
    return Scored(nll, counts, context, stride)


def exact_language_nll(token_lists, language) -> np.ndarray:
    """−log p(tokens) per sample under the built-in language (inf for an impossible sample),
    [N] float64; samples may differ in length."""
    out = np.empty(len(token_lists), dtype=np.float64)
    for length in sorted({len(t) for t in token_lists}):
        rows = [k for k, t in enumerate(token_lists) if len(t) == length]
        seqs = np.asarray([token_lists[k] for k in rows], dtype=np.int64)
        if seqs.size and (seqs.min() < 0 or seqs.max() >= language.n):
            raise ValueError(f"samples hold token ids outside the language's [0, {language.n})")
        out[rows] = -language.log_likelihood(seqs) if length else 0.0
    return out
