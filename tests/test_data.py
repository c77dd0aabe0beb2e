"""Data: the built-in language (exact likelihoods), tokenizers (GPT-2 from the shared ranks file,
characters, a BPE trained on the corpus) and token caches (in the cache folder, never beside the
data)."""

import itertools
import math
import os
import shutil

import numpy as np
import pytest

from sedd.data.language import builtin_language

from conftest import SHARED


def test_builtin_language_likelihood_matches_enumeration():
    """The forward algorithm equals the sum over hidden paths, and sums to 1 over all sequences."""
    lang = builtin_language()
    seqs = lang.sample(12, 3, seed=4)
    S = len(lang.states)
    for x in seqs:
        total = 0.0
        for path in itertools.product(range(S), repeat=3):
            p = lang.start[path[0]] * lang.emit[path[0], x[0]]
            for i in (1, 2):
                p *= lang.trans[path[i - 1], path[i]] * lang.emit[path[i], x[i]]
            total += p
        assert math.isclose(math.exp(lang.log_likelihood(x[None])[0]), total, rel_tol=1e-10)
    pairs = np.array(list(itertools.product(range(lang.n), repeat=2)))
    assert math.isclose(np.exp(lang.log_likelihood(pairs)).sum(), 1.0, rel_tol=1e-9)
    h, se = lang.entropy_rate(32, num=500)
    assert 1.0 < h < math.log(lang.n) and se < 0.05


def test_builtin_language_round_trips_text():
    lang = builtin_language()
    x = lang.sample(2, 40, seed=0)
    for row in x:
        assert lang.encode(lang.decode(row)) == row.tolist()
    with pytest.raises(ValueError, match="not in the built-in language"):
        lang.encode("the qwzx")


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "gpt2.tiktoken")),
                    reason="../shared/data/gpt2.tiktoken is absent")
def test_gpt2_tokenizer_from_the_shared_ranks_file():
    pytest.importorskip("tiktoken", reason="tiktoken is a `train` extra")
    from sedd.data import get_tokenizer
    tok = get_tokenizer("gpt2:" + os.path.join(SHARED, "gpt2.tiktoken"))
    ids = tok.encode("Hello world, this is a test.")
    assert ids == [15496, 995, 11, 428, 318, 257, 1332, 13]
    assert tok.decode(ids) == "Hello world, this is a test."
    assert tok.eos == 50256 and tok.n == 50257


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "shakespeare.txt")),
                    reason="../shared/data/shakespeare.txt is absent")
def test_text_file_corpus_is_tokenized_once(tmp_path):
    from sedd.data import load_corpus
    text = open(os.path.join(SHARED, "shakespeare.txt"), encoding="utf-8").read()[:200_000]
    f = tmp_path / "plays.txt"
    f.write_text(text)
    cache = tmp_path / "cache"          # the cache folder, never beside the data (issue 11)
    c = load_corpus(str(f), "char", 64, cache_dir=str(cache))
    caches = list(cache.glob("tokens-*.u32"))
    assert len(caches) == 1 and len(c.train) > 100
    assert c.tokenizer.decode(c.train[0].tolist()) == "".join(
        ch for ch in text.lower() if ch in c.tokenizer.index)[:64]
    mtime = caches[0].stat().st_mtime_ns
    load_corpus(str(f), "char", 64, cache_dir=str(cache))
    assert caches[0].stat().st_mtime_ns == mtime
    # a byte-level BPE trained with `tokenizers` on the corpus, in the cache folder
    pytest.importorskip("tokenizers", reason="tokenizers is a `train` extra")
    c = load_corpus(str(f), "bpe:400", 32, cache_dir=str(cache))
    assert len(list(cache.glob("bpe-400-*.json"))) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "plays.txt"]
    assert c.tokenizer.n <= 400 and len(c.train) > 10
    assert c.tokenizer.decode(c.tokenizer.encode("To be, or not to be")) == "To be, or not to be"


def test_nothing_is_written_beside_the_data(tmp_path, monkeypatch):
    """Token files and trained BPEs go to the cache folder ($SEDD_CACHE here), keyed by the
    content digest: a copy of the corpus elsewhere reuses them."""
    from sedd.data import load_corpus
    pytest.importorskip("tokenizers", reason="tokenizers is a `train` extra")
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("To be, or not to be, that is the question. " * 400)
    monkeypatch.setenv("SEDD_CACHE", str(tmp_path / "cache"))
    c = load_corpus(str(data), "bpe:300", 16)
    assert os.listdir(data) == ["a.txt"]
    cached = sorted(os.listdir(tmp_path / "cache"))
    assert [f.split("-")[0] for f in cached] == ["bpe", "tokens", "tokens"]    # + its record
    assert c.tokenizer.decode(c.tokenizer.encode("To be, or not to be")) == "To be, or not to be"
    copy = tmp_path / "copy"
    shutil.copytree(data, copy)
    load_corpus(str(copy), "bpe:300", 16)
    assert sorted(os.listdir(tmp_path / "cache")) == cached     # same content, same cache entries
