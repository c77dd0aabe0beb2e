"""Token files at scale: a corpus tokenized by parallel worker processes into one memory-mapped
uint32 token file, with a progress bar, resumable, and checked every time it is read.

The documents are cut into at most 1024 parts (a plan fixed by the number of documents, so a
rerun with another worker count keeps the finished parts); each part is tokenized by a worker
into its own file in PATH.parts/, written atomically, so a killed preparation resumes where it
stopped. The parts are then joined into PATH with its record beside it (PATH.json: token count,
byte size, SHA-256 of the whole file, and a digest of 16 spread 1 MiB windows). A read checks the
size and the windows' digest (O(16 MiB) for any size; `verify(path, full=True)` reads it all); a
file that fails is rebuilt, never read."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import shutil
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from ..core import faults

FORMAT = "sedd-tokens-1"
MAX_PARTS = 1024
WINDOW, WINDOWS = 1 << 20, 16


# ---- sources of documents (picklable: workers get them)
class TextFiles:
    """Local text files, a document each."""

    def __init__(self, files: list[str]):
        self.files = list(files)

    def __len__(self):
        return len(self.files)

    def texts(self, lo: int, hi: int) -> list[str]:
        return [open(f, encoding="utf-8", errors="replace").read() for f in self.files[lo:hi]]


def _same(text: str) -> str:
    return text


class DatasetDocuments:
    """A column of a `datasets` Dataset (memory-mapped Arrow: a worker reads its rows from the
    files), through a detokenizer."""

    def __init__(self, dataset, field: str = "text", detokenize=None):
        self.dataset, self.field, self.detokenize = dataset, field, detokenize or _same

    def __len__(self):
        return len(self.dataset)

    def texts(self, lo: int, hi: int) -> list[str]:
        return [self.detokenize(t) for t in self.dataset[lo:hi][self.field]]


# ---- the record and the checks
def _window_digest(path: str, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        if size <= WINDOW * WINDOWS:
            h.update(fh.read())
        else:
            for i in range(WINDOWS):
                fh.seek((size - WINDOW) * i // (WINDOWS - 1))
                h.update(fh.read(WINDOW))
    return h.hexdigest()


def _full_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def record_path(path: str) -> str:
    return path + ".json"


def verify(path: str, full: bool = False) -> str | None:
    """None if the token file matches its record; else what is wrong, in a few words."""
    if not os.path.exists(path):
        return "missing"
    try:
        rec = json.load(open(record_path(path)))
    except FileNotFoundError:
        return "without its record (an older or interrupted build)"
    except (OSError, ValueError):
        return "with an unreadable record"
    if rec.get("format") != FORMAT:
        return f"of another format ({rec.get('format')!r})"
    size = os.path.getsize(path)
    if size != rec["bytes"]:
        return f"truncated or overwritten ({size} bytes, its record says {rec['bytes']})"
    if _window_digest(path, size) != rec["windows_sha256"]:
        return "corrupt (its content does not match its record's digest)"
    if full and _full_digest(path) != rec["sha256"]:
        return "corrupt (its SHA-256 does not match its record)"
    return None


def open_tokens(path: str) -> np.ndarray:
    if os.path.getsize(path) == 0:
        return np.zeros(0, dtype=np.uint32)
    return np.memmap(path, dtype=np.uint32, mode="r")


# ---- the workers
_WORK = {}


def _init_worker(source, tokenizer):
    _WORK["source"], _WORK["tokenizer"] = source, tokenizer


def _tokenize_part(lo: int, hi: int, out: str, source=None, tokenizer=None) -> int:
    """Documents [lo, hi) joined with EOS into the part file `out` (atomically); its tokens."""
    source = source or _WORK["source"]
    tokenizer = tokenizer or _WORK["tokenizer"]
    n = 0
    tmp = out + ".tmp"
    with open(tmp, "wb") as fh:
        for text in source.texts(lo, hi):
            ids = tokenizer.encode(text)
            if tokenizer.eos is not None:
                ids = list(ids) + [tokenizer.eos]
            arr = np.asarray(ids, dtype=np.uint32)
            arr.tofile(fh)
            n += len(arr)
    os.replace(tmp, out)
    return n


def default_workers() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1))


def prepare_tokens(source, tokenizer, path: str, workers: int | None = None,
                   progress: bool = True, describe: str = "corpus") -> np.ndarray:
    """The token file of `source` under `tokenizer` at `path` (memory-mapped), built if it is
    missing or fails its check."""
    problem = verify(path)
    if problem is None:
        return open_tokens(path)
    if problem != "missing":
        print(f"token cache {path} is {problem}; rebuilding it", file=sys.stderr)
        for stale in (path, record_path(path)):
            if os.path.exists(stale):
                os.remove(stale)
    n_docs = len(source)
    per_part = max(1, math.ceil(n_docs / MAX_PARTS))
    spans = [(lo, min(n_docs, lo + per_part)) for lo in range(0, n_docs, per_part)]
    parts = path + ".parts"
    plan = {"documents": n_docs, "per_part": per_part, "tokenizer": type(tokenizer).__name__,
            "n": tokenizer.n}
    plan_file = os.path.join(parts, "plan.json")
    if not os.path.exists(plan_file) or json.load(open(plan_file)) != plan:
        shutil.rmtree(parts, ignore_errors=True)
        os.makedirs(parts)
        json.dump(plan, open(plan_file, "w"))
    files = [os.path.join(parts, f"part-{i:05d}.u32") for i in range(len(spans))]
    todo = [i for i, f in enumerate(files) if not os.path.exists(f)]
    workers = max(1, min(workers or default_workers(), len(todo) or 1))
    if len(todo) < len(spans):
        print(f"tokenizing {describe}: resuming, {len(spans) - len(todo)} of {len(spans)} parts "
              f"already done", file=sys.stderr)
    bar = _bar(len(spans), len(spans) - len(todo), describe, progress)
    if workers == 1:
        for i in todo:
            _tokenize_part(*spans[i], files[i], source, tokenizer)
            faults.point("prepare.part")
            bar.update(1)
    else:
        ctx = multiprocessing.get_context("spawn")      # no fork of a process holding torch
        with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(source, tokenizer)) as pool:
            running = [pool.submit(_tokenize_part, *spans[i], files[i]) for i in todo]
            for done in as_completed(running):
                done.result()
                faults.point("prepare.part")
                bar.update(1)
    bar.close()
    _join(files, path)
    shutil.rmtree(parts, ignore_errors=True)
    return open_tokens(path)


def _join(files: list[str], path: str) -> None:
    """The parts into one file, then its record; both atomically (the record last)."""
    tmp, h, size = path + ".tmp", hashlib.sha256(), 0
    with open(tmp, "wb") as out:
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    out.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    rec = {"format": FORMAT, "dtype": "uint32", "tokens": size // 4, "bytes": size,
           "sha256": h.hexdigest(), "windows_sha256": _window_digest(path, size)}
    with open(record_path(path) + ".tmp", "w") as fh:
        json.dump(rec, fh, indent=1)
    os.replace(record_path(path) + ".tmp", record_path(path))


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def _bar(total, done, describe, progress):
    if not progress:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, initial=done, desc=f"tokenizing {describe}", unit="part",
                disable=None, file=sys.stderr)
