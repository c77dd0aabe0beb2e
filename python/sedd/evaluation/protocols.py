"""Evaluation protocols of the likelihood bound (docs/math.md §4): which text is cut into which blocks.

Two published protocols differ in how a corpus becomes fixed-length model inputs:

- ``sedd`` (Lou et al. 2024, following GPT-2's zero-shot setup, as docs/math.md §4 records it):
  documents tokenized and joined with EOS, the stream cut into consecutive blocks of L tokens,
  each block evaluated on its own; test splits, except WikiText-2, which is evaluated on its
  train split (GPT-2 did the same).
- ``mdlm`` (Sahoo et al. 2024, its released code: ``dataloader._group_texts`` and
  ``get_dataloaders``): every document wrapped as [BOS] doc [EOS], all of them concatenated, the
  stream cut into pieces of L − 2 tokens and each piece wrapped again as [BOS] piece [EOS] (the
  remainder is dropped); validation splits, except the test splits of LM1B and text8 (their code
  also uses test for AG News). For GPT-2's tokenizer BOS = EOS = <|endoftext|>. The per-token
  figures divide by all L tokens of a block, BOS/EOS included, as that code does.

What is the same under both here: the bound itself (likelihood_bound over all of t ∈ [0, 1]) and
its estimator. The two papers' time sampling differs only in variance, not in what is estimated,
except for one point where this code departs from MDLM's: MDLM's code draws t ∈ [10⁻³, 1]
(``sampling_eps``), which leaves ∫₀^{10⁻³} out and is then not a bound; here t covers [0, 1]
under both protocols. What is kept of MDLM's sampler is its low-discrepancy coupling: the draws of
one batch are spread evenly over each stratum (likelihood_bound's batch_low_discrepancy).

Data without named splits — local text and OpenWebText, which has only a train split — is
evaluated on the held-out tail that training set aside (sedd.data.load_corpus), under both
protocols. The built-in language (sedd.data.language) has no documents and no BOS/EOS tokens; it is a
stationary chain. Under ``sedd`` its held-out sequences are the blocks; under ``mdlm`` one long
held-out stream is cut into consecutive blocks (MDLM's wrapping without the special tokens the
vocabulary lacks). Because the chain starts in its stationary distribution, every block of the
stream is distributed as a fresh sequence, and its exact NLL is the forward algorithm's.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..data.corpora import (DETOKENIZERS, HF_NAMES, cache_folder, get_tokenizer, load_corpus,
                           tokenizer_digest)
from ..data.prepare import DatasetDocuments, prepare_tokens
from ..data.language import Language
from ..families import family_of
from .genppl import exact_language_nll, score_texts, unigram_entropy

PROTOCOLS = ("sedd", "mdlm")

# the split each protocol evaluates, for the `datasets` corpora that have named splits
SPLITS = {
    "sedd": {"wikitext2": "train", "wikitext103": "test", "ptb": "test", "lm1b": "test",
             "lambada": "test", "text8": "test"},
    "mdlm": {"wikitext2": "validation", "wikitext103": "validation", "ptb": "validation",
             "lm1b": "test", "lambada": "test", "text8": "test"},
}


@dataclass
class EvalSet:
    x0: torch.Tensor                     # [N, L] token ids, one block per row
    exact_nll: np.ndarray | None         # [N] exact −log p(block) (the built-in corpus), else None
    source: str                          # what was read, in words
    language: Language | None = None     # the built-in language, when that is the data


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {protocol!r}: choose one of "
                         f"{', '.join(PROTOCOLS)}")
    return protocol


def sedd_blocks(tokens: np.ndarray, length: int) -> np.ndarray:
    """Consecutive blocks of `length` tokens of an EOS-joined stream, [N, length]."""
    n = len(tokens) // length
    return np.asarray(tokens[:n * length], dtype=np.int64).reshape(n, length)


def mdlm_stream(tokens: np.ndarray, bos: int, eos: int) -> np.ndarray:
    """An EOS-joined stream (doc EOS doc EOS …) rewritten as MDLM's [BOS] doc [EOS] [BOS] doc
    [EOS] …: a BOS in front and after every EOS but the last token."""
    tokens = np.asarray(tokens, dtype=np.int64)
    after = np.flatnonzero(tokens[:-1] == eos) + 1
    return np.insert(np.concatenate([[bos], tokens]), after + 1, bos)


def mdlm_blocks(tokens: np.ndarray, length: int, bos: int | None, eos: int | None) -> np.ndarray:
    """MDLM's wrapped blocks [BOS] + (length − 2 tokens) + [EOS] of the stream, remainder dropped;
    without BOS/EOS ids (a vocabulary without them), plain consecutive blocks."""
    if bos is None or eos is None:
        return sedd_blocks(tokens, length)
    if length < 3:
        raise ValueError(f"MDLM blocks need length >= 3 (BOS, EOS and a token), got {length}")
    body = sedd_blocks(mdlm_stream(tokens, bos, eos), length - 2)
    n = len(body)
    return np.concatenate([np.full((n, 1), bos), body, np.full((n, 1), eos)], axis=1)


def _hf_split_tokens(name: str, split: str, tokenizer, cache_dir: str | None) -> np.ndarray:
    """The EOS-joined token stream of one split of a `datasets` corpus (detokenized as in
    sedd.data), tokenized once and cached."""
    from datasets import load_dataset
    path, config, _ = HF_NAMES[name]
    try:
        ds = load_dataset(path, config, split=split)
    except ValueError as e:
        raise ValueError(f"{name}: cannot load split {split!r} of {path}: {e}") from e
    field = "text" if "text" in ds.column_names else ds.column_names[0]
    cache = os.path.join(cache_folder(cache_dir), f"{name}-{split}-{type(tokenizer).__name__}-"
                                                   f"{tokenizer.n}-{tokenizer_digest(tokenizer)}.u32")
    return prepare_tokens(DatasetDocuments(ds, field, DETOKENIZERS.get(name)), tokenizer, cache,
                          describe=f"{name} {split}")


def evaluation_set(protocol: str, data: str, tokenizer: str, length: int, num: int = 0,
                   seed: int = 0, cache_dir: str | None = None) -> EvalSet:
    """The blocks a protocol evaluates: `num` of them (0: all), [num, length]."""
    check_protocol(protocol)
    if data == "builtin":
        corpus = load_corpus("builtin", tokenizer, length, seed=seed)
        lang, held_out = corpus.language, corpus.valid
        count = num or len(held_out)
        if protocol == "sedd":
            x0 = torch.stack([held_out[i] for i in range(min(count, len(held_out)))])
            source = f"the built-in language's held-out sequences of {length} tokens"
        else:
            stream = lang.sample(1, count * length, seed=3000 + seed)[0]
            x0 = torch.from_numpy(sedd_blocks(stream, length))
            source = (f"one held-out stream of the built-in language cut into blocks of {length} "
                      f"(no BOS/EOS in its vocabulary)")
        return EvalSet(x0, -lang.log_likelihood(x0.numpy()), source, lang)
    split = SPLITS[protocol].get(data)
    if split is not None:
        tok = get_tokenizer(tokenizer)
        tokens = _hf_split_tokens(data, split, tok, cache_dir)
        source = f"{data}, {split} split"
    else:
        corpus = load_corpus(data, tokenizer, length, cache_dir=cache_dir)
        tok, tokens = corpus.tokenizer, np.asarray(corpus.valid.tokens)
        source = f"{data}, the held-out tail set aside by training"
    if protocol == "sedd":
        blocks = sedd_blocks(tokens, length)
        source += f", EOS-joined and cut into blocks of {length}"
    else:
        blocks = mdlm_blocks(tokens, length, tok.eos, tok.eos)
        source += (f", documents wrapped [BOS] doc [EOS] and cut into [BOS] + {length - 2} + [EOS]"
                   if tok.eos is not None else f", cut into blocks of {length} (no BOS/EOS)")
    if len(blocks) == 0:
        raise ValueError(f"{source}: fewer tokens than one block of {length}")
    blocks = blocks[:num] if num else blocks
    return EvalSet(torch.from_numpy(np.ascontiguousarray(blocks)), None, source)


# ---- the likelihood bound over an evaluation set
class BoundReport(NamedTuple):
    per_token: float               # Σ bound / Σ tokens, nats (the AR baseline: its exact NLL)
    stderr: float                  # its standard error (over blocks, timestep noise included)
    exact_per_token: float | None  # exact NLL of the same blocks (built-in corpus), nats/token
    prior_per_token: float = 0.0   # the prior term (included in per_token)
    blocks: int = 0
    length: int = 0
    entropy_rate: float | None = None   # the built-in language's, at this length
    exact: bool = False            # per_token is the model's exact NLL (autoregressive), no bound


def evaluate(model, graph, noise, sequences, timesteps, batch_size, seed=0, device="cpu", *,
             low_discrepancy=False):
    """Per-sequence likelihood figures, priors and standard errors over a [N, L] tensor of token
    ids, in batches: the model's family's (SEDD: the bound; the autoregressive baseline: its exact
    NLL, no prior term, no timestep noise)."""
    family = family_of(model, graph, noise)
    gen = torch.Generator().manual_seed(seed)
    out = [[t.cpu() for t in family.nll(model, sequences[i:i + batch_size].to(device), gen,
                                        timesteps, low_discrepancy=low_discrepancy)]
           for i in range(0, len(sequences), batch_size)]
    return tuple(torch.cat(parts) for parts in zip(*out))


def bound_report(model, graph, noise, ev: EvalSet, timesteps: int, batch_size: int, seed: int = 0,
                 device="cpu", low_discrepancy: bool = False) -> BoundReport:
    """The corpus figure Σ bound / Σ tokens with the standard error of the mean over blocks (the
    autoregressive baseline: Σ exact NLL / Σ tokens, its spread over blocks)."""
    x0 = ev.x0
    n, L = x0.shape
    if n < 2:
        raise ValueError(f"{ev.source}: {n} block; a standard error needs two")
    bound, prior, _ = evaluate(model, graph, noise, x0, timesteps, batch_size, seed, device,
                               low_discrepancy=low_discrepancy)
    per_token = bound.sum().item() / (n * L)
    # standard error of the mean over blocks (includes the timestep noise) per token
    stderr = bound.std(unbiased=True).item() / math.sqrt(n) / L
    exact = float(ev.exact_nll.mean() / L) if ev.exact_nll is not None else None
    rate = ev.language.entropy_rate(L)[0] if ev.language is not None else None
    return BoundReport(per_token, stderr, exact, prior.mean().item() / L, n, L, rate,
                       family_of(model).exact_likelihood)


# ---- sample quality
class GenPPLReport(NamedTuple):
    perplexity: float              # exp(token-mean NLL) over all samples (inf: an impossible one)
    nll_per_token: float
    num_tokens: int
    entropy: float                 # mean over samples of each sample's unigram entropy, nats
    entropy_pooled: float          # unigram entropy of all samples' tokens pooled, nats
    valid_fraction: float | None   # built-in corpus: share of samples with p > 0
    perplexity_valid: float | None  # built-in corpus: over the samples with p > 0


def exact_sample_report(tokens, lang: Language) -> GenPPLReport:
    """Samples of a built-in-language model scored by the language's exact likelihood."""
    nll = exact_language_nll(tokens, lang)
    counts = np.array([len(t) for t in tokens])
    valid = np.isfinite(nll)
    per_token = float(nll.sum() / counts.sum())
    valid_pt = float(nll[valid].sum() / counts[valid].sum()) if valid.any() else math.inf
    entropy, pooled = unigram_entropy(tokens)
    return GenPPLReport(math.exp(per_token), per_token, int(counts.sum()), entropy, pooled,
                        float(valid.mean()), math.exp(valid_pt))


def lm_sample_report(texts, tokens, model, lm_tok, **score_kw):
    """(GenPPLReport, genppl.Scored) of sample texts under a causal LM; `tokens` (the samples'
    own token ids, or None: the LM's) give the unigram entropy."""
    scored = score_texts(texts, model, lm_tok, **score_kw)
    if tokens is None:
        tokens = [lm_tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    entropy, pooled = unigram_entropy(tokens)
    return GenPPLReport(scored.perplexity, scored.nll_per_token, int(scored.tokens.sum()), entropy,
                        pooled, None, None), scored
