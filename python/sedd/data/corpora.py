"""Training data: the built-in language (default, needs nothing from outside), local text files or
folders, and Hugging Face `datasets` by name; tokenizers (GPT-2, a byte-level BPE trained on the
corpus, characters); tokenize once and cache as a memory-mapped token file."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass

import numpy as np
import torch

from .language import Language, LanguageDataset, builtin_language
from .prepare import DatasetDocuments, TextFiles, prepare_tokens

HF_NAMES = {
    "openwebtext": ("openwebtext", None, "train"),
    "wikitext2": ("wikitext", "wikitext-2-raw-v1", "train"),
    "wikitext103": ("wikitext", "wikitext-103-raw-v1", "train"),
    "ptb": ("ptb_text_only", None, "train"),
    "lm1b": ("lm1b", None, "train"),
    "lambada": ("EleutherAI/lambada_openai", None, "test"),
    "text8": ("afmck/text8", None, "train"),
}


# ---- detokenizers of the evaluation corpora (as the SEDD / MDLM code bases apply them)
def wikitext_detokenize(s: str) -> str:
    s = s.replace("s '", "s'")
    s = re.sub(r"/' [0-9]/", r"/'[0-9]/", s)
    s = s.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    s = s.replace(" : ", ": ").replace(" ; ", "; ").replace(" . ", ". ").replace(" ! ", "! ")
    s = s.replace(" ? ", "? ").replace(" , ", ", ")
    s = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", s)
    s = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", s)
    s = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", s)
    s = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', s)
    s = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", s)
    s = s.replace("= = = =", "====").replace("= = =", "===").replace("= =", "==")
    s = s.replace(" " + chr(176) + " ", chr(176)).replace(" \n", "\n").replace("\n ", "\n")
    s = s.replace(" N ", " 1 ").replace(" 's", "'s")
    return s


def ptb_detokenize(x: str) -> str:
    x = x.replace(" 's", "'s").replace("s ' ", "s' ").replace(" n't", "n't").replace(" \n ", "\n")
    x = x.replace("\\/", "/")
    for _ in range(10):
        x = x.replace(" N ", " 1 ")
    return x.replace("$ 1", "$1").replace("# 1", "#1").replace(" <unk> ", " ? ")


def lm1b_detokenize(x: str) -> str:
    x = x.replace("http : / / ", "http://").replace("https : / / ", "https://")
    x = re.sub(r" \'(\w+)", r"'\1", x)
    x = re.sub(r" (\w+) \. ", r" \1. ", x)
    x = re.sub(r" (\w+) \.$", r" \1.", x)
    return x.replace(" ? ", "? ").replace(" ! ", "! ").replace(" , ", ", ").replace(" : ", ": ")


DETOKENIZERS = {"wikitext2": wikitext_detokenize, "wikitext103": wikitext_detokenize,
                "ptb": ptb_detokenize, "lm1b": lm1b_detokenize}


# ---- tokenizers
class Tokenizer:
    n: int           # number of token ids
    eos: int | None

    def encode(self, text: str) -> list[int]:
        raise NotImplementedError

    def decode(self, ids) -> str:
        raise NotImplementedError


class WordTokenizer(Tokenizer):
    """The built-in language's words."""

    def __init__(self, lang: Language):
        self.lang, self.n, self.eos = lang, lang.n, None

    def encode(self, text):
        return self.lang.encode(text)

    def decode(self, ids):
        return self.lang.decode(ids)


class TiktokenGPT2(Tokenizer):
    """GPT-2's byte-level BPE from a local tiktoken ranks file (e.g. a copy of gpt2.tiktoken)."""

    PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

    def __init__(self, path: str):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe
        ranks = load_tiktoken_bpe(path)
        self.enc = tiktoken.Encoding("gpt2-local", pat_str=self.PATTERN, mergeable_ranks=ranks,
                                     special_tokens={"<|endoftext|>": len(ranks)})
        self.n, self.eos = len(ranks) + 1, len(ranks)

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode([int(i) for i in ids if 0 <= int(i) < self.n])


class HFTokenizer(Tokenizer):
    """A tokenizer of `transformers` (GPT-2 by default) or a `tokenizers` JSON file."""

    def __init__(self, name_or_path: str = "gpt2"):
        self.raw = name_or_path.endswith(".json")      # a `tokenizers` file, else transformers
        if self.raw:
            from tokenizers import Tokenizer as Tok
            self.tok = Tok.from_file(name_or_path)
            self.n = self.tok.get_vocab_size()
            self.eos = self.tok.token_to_id("<|endoftext|>")
        else:
            from transformers import AutoTokenizer
            self.tok = AutoTokenizer.from_pretrained(name_or_path)
            self.n, self.eos = len(self.tok), self.tok.eos_token_id

    def encode(self, text):
        if self.raw:
            return self.tok.encode(text).ids
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids):
        return self.tok.decode([int(i) for i in ids if 0 <= int(i) < self.n])


class CharTokenizer(Tokenizer):
    """Characters (text8: a–z and space); unknown characters are dropped."""

    def __init__(self, alphabet: str = " abcdefghijklmnopqrstuvwxyz"):
        self.alphabet, self.n, self.eos = alphabet, len(alphabet), None
        self.index = {c: i for i, c in enumerate(alphabet)}

    def encode(self, text):
        return [self.index[c] for c in text.lower() if c in self.index]

    def decode(self, ids):
        return "".join(self.alphabet[int(i)] for i in ids if 0 <= int(i) < self.n)


def default_cache_dir() -> str:
    """Where token files and trained tokenizers go: $SEDD_CACHE, else ~/.cache/sedd. Nothing is
    ever written beside the user's data (a read-only or shared data folder works)."""
    return os.environ.get("SEDD_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sedd")


def cache_folder(cache_dir: str | None) -> str:
    folder = cache_dir or default_cache_dir()
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise OSError(f"cache folder {folder}: cannot create it ({e.strerror}); set --cache-dir "
                      f"or $SEDD_CACHE") from None
    if not os.access(folder, os.W_OK):
        raise OSError(f"cache folder {folder} is not writable; set --cache-dir or $SEDD_CACHE")
    return folder


def train_bpe(files: list[str], vocab_size: int, out_path: str) -> str:
    """A byte-level BPE trained with `tokenizers` on the corpus, saved to out_path (in the cache
    folder)."""
    from tokenizers import ByteLevelBPETokenizer
    tok = ByteLevelBPETokenizer()
    tok.train(files, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    tok.save(out_path)
    return out_path


def get_tokenizer(spec, files: list[str] | None = None, cache_dir: str | None = None):
    """'gpt2' (transformers, else a local tiktoken ranks file: gpt2:PATH, or $SEDD_GPT2_RANKS
    when transformers cannot load 'gpt2'), 'bpe[:N]' (trained on the files, kept in the cache folder),
    'char', or a path (a .tiktoken ranks file, a tokenizers .json, a transformers folder). A
    Tokenizer object is returned as it is."""
    if isinstance(spec, Tokenizer):
        return spec
    if spec.startswith("gpt2"):
        path = spec.split(":", 1)[1] if ":" in spec else None
        if path is None:
            try:
                return HFTokenizer("gpt2")
            except Exception:  # no network / not cached: fall back to a local ranks file
                path = os.environ.get("SEDD_GPT2_RANKS", "")
        if not os.path.isfile(path):
            if ":" in spec:
                raise FileNotFoundError(f"--tokenizer {spec}: no tiktoken ranks file at {path}")
            raise FileNotFoundError("GPT-2 tokenizer: transformers cannot load 'gpt2' (offline "
                                    "and not cached?); pass --tokenizer gpt2:PATH.tiktoken "
                                    "(GPT-2's BPE ranks) or set $SEDD_GPT2_RANKS to work "
                                    "offline")
        return _tiktoken(path, spec)
    if spec.startswith("bpe"):
        try:
            size = int(spec.split(":", 1)[1]) if ":" in spec else 4096
        except ValueError:
            raise ValueError(f"--tokenizer {spec}: expected bpe or bpe:N with N an integer") from None
        if size < 257:
            raise ValueError(f"--tokenizer {spec}: a byte-level BPE needs N >= 257, got {size}")
        if not files:
            raise ValueError("--tokenizer bpe needs text files to train on")
        out = os.path.join(cache_folder(cache_dir), f"bpe-{size}-{_digest(files)}.json")
        if not os.path.exists(out):
            train_bpe(files, size, out)
        return HFTokenizer(out)
    if spec == "char":
        return CharTokenizer()
    if os.path.exists(spec):
        if spec.endswith(".tiktoken"):
            return _tiktoken(spec, spec)
        try:
            return HFTokenizer(spec)
        except Exception as e:  # tokenizers / transformers raise their own types
            raise ValueError(f"--tokenizer {spec}: cannot be read as a tokenizer "
                             f"({type(e).__name__})") from None
    raise ValueError(f"unknown tokenizer {spec!r} (gpt2, gpt2:PATH, bpe[:N], char, or a path)")


def _tiktoken(path, spec):
    try:
        return TiktokenGPT2(path)
    except ImportError:
        raise ImportError(f"--tokenizer {spec}: needs tiktoken (the 'train' extra)") from None
    except Exception as e:  # a file that is not a ranks file
        raise ValueError(f"--tokenizer {spec}: {path} is not a tiktoken ranks file "
                         f"({type(e).__name__})") from None


def _digest(files):
    """The content digest of the files (their bytes and relative order): a cache key that
    survives copies and moves and changes with any edit."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(os.path.basename(f).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()[:16]


def text_files(path):
    """The .txt/.md/.text files of a folder (recursively), or the file itself."""
    if os.path.isdir(path):
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs
                       if f.endswith((".txt", ".md", ".text")))
        if not files:
            raise FileNotFoundError(f"--data {path}: no .txt, .md or .text files in the folder")
        return files
    if os.path.isfile(path):
        return [path]
    raise FileNotFoundError(f"--data {path}: no such file or folder")



class PackedBlocks(torch.utils.data.Dataset):
    """Consecutive blocks of `length` tokens of a token file (documents packed across blocks)."""

    def __init__(self, tokens: np.ndarray, length: int):
        self.tokens, self.length = tokens, length
        if len(tokens) < length:
            raise ValueError(f"the corpus has {len(tokens)} tokens, fewer than one block of {length}")

    def __len__(self):
        return len(self.tokens) // self.length

    def __getitem__(self, i):
        s = i * self.length
        return torch.from_numpy(np.asarray(self.tokens[s:s + self.length], dtype=np.int64))


@dataclass
class Corpus:
    train: torch.utils.data.Dataset
    valid: torch.utils.data.Dataset
    tokenizer: Tokenizer
    language: Language | None = None      # set for the built-in corpus (exact likelihoods)


def load_corpus(data: str, tokenizer: str, length: int, seed: int = 0,
                cache_dir: str | None = None, train_size: int = 20_000,
                valid_size: int = 1_000, workers: int | None = None,
                progress: bool = True) -> Corpus:
    """'builtin' (default), a local text file/folder, or a Hugging Face datasets name. The text
    is tokenized once, by `workers` processes, into a checked token file (sedd.data.prepare)."""
    if data == "builtin":
        lang = builtin_language(seed=0)     # the language itself is fixed; seeds pick samples
        return Corpus(LanguageDataset(lang, train_size, length, seed=1000 + seed),
                      LanguageDataset(lang, valid_size, length, seed=2000 + seed),
                      WordTokenizer(lang), lang)
    tokens, tok = corpus_tokens(data, tokenizer, cache_dir, workers, progress)
    if data in HF_NAMES or data.startswith("hf:"):
        split_at = int(len(tokens) * 0.995)
        return Corpus(PackedBlocks(tokens[:split_at], length), PackedBlocks(tokens[split_at:], length),
                      tok)
    if len(tokens) < 2 * length:
        raise ValueError(f"--data {data}: {len(tokens)} tokens, fewer than two blocks of "
                         f"--seq-len {length} (one to train on, one held out)")
    split = int(len(tokens) * 0.98)
    split = min(split, len(tokens) - length)
    return Corpus(PackedBlocks(tokens[:split], length), PackedBlocks(tokens[split:], length), tok)


def corpus_tokens(data: str, tokenizer, cache_dir: str | None = None, workers: int | None = None,
                  progress: bool = True):
    """(the token file of a local text file/folder or a `datasets` corpus, its tokenizer): built
    by `workers` processes the first time (python/prepare.py runs just this), then read."""
    if data in HF_NAMES or data.startswith("hf:"):
        return _hf_tokens(data, tokenizer, cache_dir, workers, progress)
    files = text_files(data)
    if all(os.path.getsize(f) == 0 for f in files):
        raise ValueError(f"--data {data}: empty (no text to train on)")
    tok = get_tokenizer(tokenizer, files, cache_dir)
    folder = cache_folder(cache_dir)
    key = f"{_digest(files)}-{type(tok).__name__}-{tok.n}-{tokenizer_digest(tok)}"
    tokens = prepare_tokens(TextFiles(files), tok, os.path.join(folder, f"tokens-{key}.u32"),
                            workers, progress, describe=data)
    return tokens, tok


def tokenizer_digest(tok) -> str:
    """Tells tokenizers of one class and size apart (a BPE trained on other text, a ranks file)."""
    probe = "The quick brown fox, 1234 — ünïcode."
    return hashlib.sha256(repr(tok.encode(probe)).encode()).hexdigest()[:8]


def _hf_tokens(name, tokenizer, cache_dir, workers, progress):
    from datasets import load_dataset
    path, config, split = HF_NAMES.get(name, (name[3:], None, "train"))
    ds = load_dataset(path, config, split=split)
    field = "text" if "text" in ds.column_names else ds.column_names[0]
    tok = get_tokenizer(tokenizer)
    key = name if name in HF_NAMES else "hf-" + hashlib.sha256(name.encode()).hexdigest()[:12]
    cache = os.path.join(cache_folder(cache_dir), f"{key}-{len(ds)}-{type(tok).__name__}-{tok.n}-"
                                                  f"{tokenizer_digest(tok)}.u32")
    tokens = prepare_tokens(DatasetDocuments(ds, field, DETOKENIZERS.get(name)), tok, cache,
                            workers, progress, describe=name)
    return tokens, tok
