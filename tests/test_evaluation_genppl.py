"""Generative perplexity (sedd/genppl.py, evaluate.py --samples) under a tiny random GPT-2 with
GPT-2's real tokenizer, built offline from ../shared/data/gpt2.tiktoken (or, where that file is
absent, a byte-level BPE trained with `tokenizers`): the reported figure
equals a direct per-token loop over the model's log-probabilities; and the evaluation protocols'
block layouts (sedd/evaluation.py) on real text."""

import json
import math
import os
import sys
from collections import Counter

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
TIKTOKEN = os.path.join(SHARED, "gpt2.tiktoken")
needs_ranks = pytest.mark.skipif(not os.path.exists(TIKTOKEN),
                                 reason="../shared/data/gpt2.tiktoken is absent")
CONTEXT = 32                                           # the tiny LM's context: long texts stride

TEXTS = ["Hello world, this is a test.",
         "",
         "The quick brown fox jumps over the lazy dog. " * 12,         # > 2 CONTEXT tokens
         "Ünïcödé text and numbers 12345 survive re-tokenization!",
         "and and and and and and and and and and and and and and and and and and and and and "
         "and and and and and and and and and and and and and and and and"]


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    """A folder with a 1-layer random GPT-2 (context 32) and a real tokenizer, loadable by
    AutoModelForCausalLM / AutoTokenizer: GPT-2's (fast, converted from the tiktoken ranks) when
    ../shared/data is present, else a small byte-level BPE trained here with `tokenizers`."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    if os.path.exists(TIKTOKEN) and _has("tiktoken"):
        from transformers.convert_slow_tokenizer import TikTokenConverter
        from sedd.data.corpora import TiktokenGPT2
        fast = TikTokenConverter(vocab_file=TIKTOKEN, pattern=TiktokenGPT2.PATTERN,
                                 extra_special_tokens={"<|endoftext|>": 50256}).converted()
    else:
        from tokenizers import ByteLevelBPETokenizer
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(TEXTS * 4 + ["It was the best of times, it was the worst."],
                                vocab_size=300, special_tokens=["<|endoftext|>"])
        fast = bpe._tokenizer
    tok = PreTrainedTokenizerFast(tokenizer_object=fast, bos_token="<|endoftext|>",
                                  eos_token="<|endoftext|>", model_max_length=CONTEXT)
    if os.path.exists(TIKTOKEN) and _has("tiktoken"):
        assert tok("Hello world, this is a test.")["input_ids"] == [15496, 995, 11, 428, 318,
                                                                   257, 1332, 13]
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=CONTEXT, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():                      # sharper than the init: log-probs far from uniform
        model.transformer.wte.weight.mul_(40.0)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def reference_nll(model, tok, text, context, stride):
    """Σ −log p over the text's tokens, one token at a time, unbatched: token j (after the BOS
    at 0) is scored with the context ids[b:j], b the first multiple of the stride whose window
    [b, b + context) contains j."""
    ids = [tok.bos_token_id] + tok(text, add_special_tokens=False)["input_ids"]
    total = 0.0
    with torch.no_grad():
        for j in range(1, len(ids)):
            b = max(0, math.ceil((j - context + 1) / stride)) * stride
            logits = model(torch.tensor([ids[b:j]])).logits[0, -1].double()
            total -= float(torch.log_softmax(logits, -1)[ids[j]])
    return total, len(ids) - 1


@pytest.mark.parametrize("stride", [16, 31])
def test_score_texts_equals_a_direct_loop(tiny_lm, stride):
    from sedd.evaluation.genppl import load_causal_lm, score_texts
    model, tok = load_causal_lm(tiny_lm)
    scored = score_texts(TEXTS, model, tok, batch_size=3, stride=stride)
    assert scored.context == CONTEXT and scored.stride == stride
    ref = [reference_nll(model, tok, t, CONTEXT, stride) for t in TEXTS]
    assert scored.tokens.tolist() == [n for _, n in ref]
    assert max(scored.tokens) > 2 * CONTEXT                     # the sliding window is exercised
    np.testing.assert_allclose(scored.nll, [v for v, _ in ref], rtol=2e-5, atol=1e-6)
    total = sum(v for v, _ in ref) / sum(n for _, n in ref)
    assert scored.perplexity == pytest.approx(math.exp(total), rel=1e-5)
    assert abs(total - math.log(len(tok))) > 0.5                # not the uniform model's value


def test_evaluate_cli_reports_the_generative_perplexity(tiny_lm, tmp_path):
    """evaluate.py --samples FILE --causal-lm FOLDER: the perplexity of the direct loop (default
    stride: half the context) and the unigram entropy of the samples' own tokens."""
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import evaluate
    from sedd.evaluation.genppl import load_causal_lm
    rows = [{"tokens": [1, 2, 2, 3, 3, 3], "text": TEXTS[0]}, {"tokens": [7] * 6, "text": TEXTS[2]},
            {"tokens": [4, 5, 6, 4, 5, 6], "text": TEXTS[3]}]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = evaluate.main(["--samples", str(path), "--causal-lm", tiny_lm, "--device", "cpu",
                       "--lm-batch-size", "2"])
    model, tok = load_causal_lm(tiny_lm)
    ref = [reference_nll(model, tok, row["text"], CONTEXT, CONTEXT // 2) for row in rows]
    nll = sum(v for v, _ in ref) / sum(n for _, n in ref)
    assert r.perplexity == pytest.approx(math.exp(nll), rel=1e-5)
    assert r.num_tokens == sum(n for _, n in ref)

    def H(tokens):
        p = np.array(list(Counter(tokens).values()), dtype=np.float64) / len(tokens)
        return float(-(p * np.log(p)).sum())
    assert r.entropy == pytest.approx(np.mean([H(row["tokens"]) for row in rows]))
    assert r.entropy_pooled == pytest.approx(H([t for row in rows for t in row["tokens"]]))
    assert r.valid_fraction is None


def test_an_unloadable_causal_lm_is_a_clear_error(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import evaluate
    path = tmp_path / "samples.jsonl"
    path.write_text(json.dumps({"tokens": [1, 2], "text": "hi"}) + "\n")
    empty = tmp_path / "no-model"
    empty.mkdir()
    with pytest.raises(SystemExit, match="cannot load the causal LM"):
        evaluate.main(["--samples", str(path), "--causal-lm", str(empty), "--device", "cpu"])
    path.write_text("{not json\n")
    with pytest.raises(SystemExit, match="line 1: not JSON"):
        evaluate.main(["--samples", str(path), "--causal-lm", str(empty)])


def test_protocol_block_layouts():
    """sedd: consecutive blocks of the EOS-joined stream; mdlm: [BOS] doc [EOS] per document,
    concatenated, cut into L − 2 and wrapped [BOS] … [EOS], remainder dropped."""
    from sedd.evaluation.protocols import mdlm_blocks, mdlm_stream, sedd_blocks
    E = 9
    stream = np.array([5, 6, E, 7, E, 1, 2, 3, E])
    assert mdlm_stream(stream, E, E).tolist() == [E, 5, 6, E, E, 7, E, E, 1, 2, 3, E]
    assert sedd_blocks(stream, 4).tolist() == [[5, 6, E, 7], [E, 1, 2, 3]]
    assert mdlm_blocks(stream, 5, E, E).tolist() == [[E, E, 5, 6, E], [E, E, E, 7, E],
                                                     [E, E, E, 1, E], [E, 2, 3, E, E]]
    assert mdlm_blocks(stream, 4, None, None).tolist() == sedd_blocks(stream, 4).tolist()
    with pytest.raises(ValueError, match="length >= 3"):
        mdlm_blocks(stream, 2, E, E)


@needs_ranks
def test_protocols_on_a_local_text_file(tmp_path):
    """Both protocols read the held-out tail of a local text file (no named splits) and lay it
    out as test_protocol_block_layouts says; the GPT-2 tokenizer's EOS is BOS and EOS."""
    pytest.importorskip("tiktoken", reason="tiktoken is a `train` extra")
    from sedd.data import load_corpus
    from sedd.evaluation.protocols import evaluation_set, mdlm_stream
    text = tmp_path / "doc.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 400)
    spec, L = "gpt2:" + TIKTOKEN, 16
    tail = np.asarray(load_corpus(str(text), spec, L).valid.tokens, dtype=np.int64)
    a = evaluation_set("sedd", str(text), spec, L, num=0)
    assert a.exact_nll is None and a.x0.shape == (len(tail) // L, L)
    assert a.x0.reshape(-1).tolist() == tail[:a.x0.numel()].tolist()
    b = evaluation_set("mdlm", str(text), spec, L, num=3)
    eos = 50256
    assert b.x0.shape == (3, L) and (b.x0[:, 0] == eos).all() and (b.x0[:, -1] == eos).all()
    assert b.x0[:, 1:-1].reshape(-1).tolist() == mdlm_stream(tail, eos, eos)[:3 * (L - 2)].tolist()


@needs_ranks
@pytest.mark.parametrize("protocol, name, split", [("sedd", "wikitext2", "train"),
                                                   ("sedd", "wikitext103", "test"),
                                                   ("mdlm", "wikitext103", "validation"),
                                                   ("mdlm", "lm1b", "test")])
def test_protocols_read_their_splits(monkeypatch, tmp_path, protocol, name, split):
    """The split each protocol evaluates (SEDD: test, WikiText-2 train; MDLM: validation, LM1B
    test), read through `datasets` (replaced here by an in-memory corpus: no network),
    detokenized, EOS-joined, cached, and laid out as the protocol says."""
    pytest.importorskip("tiktoken", reason="tiktoken is a `train` extra")
    datasets = pytest.importorskip("datasets")
    from sedd.data.corpora import DETOKENIZERS, HF_NAMES, get_tokenizer
    from sedd.evaluation.protocols import evaluation_set, mdlm_blocks, sedd_blocks
    docs = [f"Document {i} : it was the best of times , it was the worst of times ." for i in range(40)]
    asked = []

    def fake_load_dataset(path, config=None, split=None):
        asked.append((path, config, split))
        return datasets.Dataset.from_dict({"text": docs})
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec, L = "gpt2:" + TIKTOKEN, 24
    ev = evaluation_set(protocol, name, spec, L, num=0, cache_dir=str(tmp_path))
    assert asked == [(HF_NAMES[name][0], HF_NAMES[name][1], split)] and split in ev.source
    tok = get_tokenizer(spec)
    detok = DETOKENIZERS.get(name, lambda s: s)
    stream = np.concatenate([tok.encode(detok(d)) + [tok.eos] for d in docs])
    expected = sedd_blocks(stream, L) if protocol == "sedd" else mdlm_blocks(stream, L, tok.eos, tok.eos)
    assert ev.x0.tolist() == expected.tolist() and len(expected) > 5
