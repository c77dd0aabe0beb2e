"""sedd.data.prepare and python/prepare.py: a corpus tokenized by parallel worker processes gives
the same token file as one process; a preparation killed midway resumes from its finished parts;
a truncated, corrupt or unrecorded token file is detected (size, digest) and rebuilt, never read;
a `datasets` corpus goes through the same path."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from sedd.data.corpora import CharTokenizer, corpus_tokens, load_corpus
from sedd.data.language import builtin_language
from sedd.data.prepare import TextFiles, prepare_tokens, record_path, verify

PREPARE = os.path.join(ROOT, "python", "prepare.py")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """40 text files of the built-in language's sentences (a document each)."""
    folder = tmp_path_factory.mktemp("corpus")
    lang = builtin_language()
    for i in range(40):
        words = lang.sample(8, 48, seed=i)
        (folder / f"doc-{i:02d}.txt").write_text("\n".join(lang.decode(r) for r in words))
    return folder


def expected_tokens(folder):
    tok = CharTokenizer()
    return np.concatenate([np.asarray(tok.encode(open(f).read()), dtype=np.uint32)
                           for f in sorted(folder.glob("*.txt"))])


def test_parallel_workers_write_the_same_file_as_one_process(corpus, tmp_path):
    files = sorted(str(f) for f in corpus.glob("*.txt"))
    one = prepare_tokens(TextFiles(files), CharTokenizer(), str(tmp_path / "one.u32"), workers=1)
    two = prepare_tokens(TextFiles(files), CharTokenizer(), str(tmp_path / "two.u32"), workers=2)
    np.testing.assert_array_equal(one, expected_tokens(corpus))
    np.testing.assert_array_equal(one, two)
    assert verify(str(tmp_path / "two.u32"), full=True) is None
    assert not os.path.exists(str(tmp_path / "two.u32") + ".parts")      # parts cleaned up


def prepare(corpus, cache, *extra, env=None):
    return subprocess.run([sys.executable, PREPARE, "--data", str(corpus), "--tokenizer", "char",
                           "--cache-dir", str(cache), "--no-progress", *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300)


def test_a_killed_preparation_resumes_from_its_parts(corpus, tmp_path):
    cache = tmp_path / "cache"
    r = prepare(corpus, cache, "--workers", "1", env={"SEDD_FAULT": "prepare.part:0:7"})
    assert r.returncode == -9                                    # SIGKILLed after 7 parts
    [parts] = cache.glob("*.parts")
    assert len(list(parts.glob("part-*.u32"))) == 7 and not list(cache.glob("tokens-*.u32"))
    r = prepare(corpus, cache, "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "resuming, 7 of 40 parts already done" in r.stderr
    tokens, _ = corpus_tokens(str(corpus), "char", str(cache))
    np.testing.assert_array_equal(tokens, expected_tokens(corpus))
    assert f"{len(tokens):,} tokens" in r.stdout


@pytest.mark.parametrize("damage", ["truncate", "flip", "record"])
def test_a_damaged_token_file_is_rebuilt_not_read(corpus, tmp_path, damage, capfd):
    cache = tmp_path / "cache"
    c = load_corpus(str(corpus), "char", 32, cache_dir=str(cache))
    [path] = cache.glob("tokens-*.u32")
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[:-4])
        says = "truncated or overwritten"
    elif damage == "flip":
        path.write_bytes(good[:100] + bytes([good[100] ^ 1]) + good[101:])
        says = "corrupt"
    else:
        os.remove(record_path(str(path)))
        says = "without its record"
    capfd.readouterr()
    again = load_corpus(str(corpus), "char", 32, cache_dir=str(cache))
    err = capfd.readouterr().err
    assert says in err and "rebuilding it" in err
    assert path.read_bytes() == good
    np.testing.assert_array_equal(again.train[3].numpy(), c.train[3].numpy())


def test_verify_reads_the_whole_file(corpus, tmp_path):
    """The windows' digest covers all of a small file; --verify checks the full SHA-256."""
    cache = tmp_path / "cache"
    assert prepare(corpus, cache).returncode == 0
    [path] = cache.glob("tokens-*.u32")
    r = prepare(corpus, cache, "--verify")
    assert r.returncode == 0 and "tokens" in r.stdout
    import json
    rec = json.load(open(record_path(str(path))))
    assert rec["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert rec["tokens"] * 4 == rec["bytes"] == path.stat().st_size


def test_a_datasets_corpus_goes_through_the_workers(corpus, tmp_path, monkeypatch):
    """hf:FOLDER (a local `datasets` text corpus, a row per line), offline, in 2 processes."""
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    a, tok = corpus_tokens(f"hf:{corpus}", "char", str(tmp_path / "c1"), workers=1)
    b, _ = corpus_tokens(f"hf:{corpus}", "char", str(tmp_path / "c2"), workers=2)
    np.testing.assert_array_equal(a, b)
    # the rows are the lines of the files, newlines dropped by the char tokenizer
    assert len(a) == len(expected_tokens(corpus))


def test_door_errors_are_one_line(tmp_path):
    r = prepare(tmp_path / "nothing-here", tmp_path / "cache")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"prepare.py: --data {tmp_path / 'nothing-here'}: no such file or folder"
    r = subprocess.run([sys.executable, PREPARE, "--data", "x", "--workers", "0"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--workers must be >= 1" in r.stderr
