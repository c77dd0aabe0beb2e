"""The one harness every benchmark file uses (thin files on top, as in Liger-Kernel's
benchmark/scripts/utils.py): devices and the size level of a run, timing with pytest-benchmark,
a same-size copy baseline timed in the same run, peak memory, torch.compile'd references, and
one summary table per suite printed at the end of the session (markdown, ready for bench/README.md)
and written to $SEDD_BENCH_JSON when set.

Size levels — each suite picks its shapes and cases by `level(device)`:
- "quick": CPU, the default — each suite in a few minutes on 2 cores (smaller B·L, fp32, fewer
  rounds; the same ops and baselines; bench/README.md gives the times).
- "full":  CPU with `--bench-full` (or SEDD_BENCH_FULL=1) — the matrix bench/README.md's CPU tables
  come from (an hour or more on 2 cores).
- "gpu":   CUDA devices — the paper's shapes ([8, 1024, 50258] and up); what device_check.sh runs.
"""

import ctypes
import gc
import json
import os
import time

import torch

import sedd_kernels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
if os.environ.get("SEDD_BENCH_DEVICES"):
    DEVICES = [d for d in os.environ["SEDD_BENCH_DEVICES"].split(",") if d in DEVICES]

_STATE = {"full": os.environ.get("SEDD_BENCH_FULL", "") not in ("", "0")}
ROWS = []        # every recorded result, in order: dict(suite=..., kind=..., ...)
_COPY = {}
_COMPILED = {}


def set_full(full):
    _STATE["full"] = bool(full) or _STATE["full"]


def level(device):
    """'gpu' on CUDA devices, else 'full' under --bench-full / SEDD_BENCH_FULL=1, else 'quick'."""
    if torch.device(device).type == "cuda":
        return "gpu"
    return "full" if _STATE["full"] else "quick"


def pick(device, quick, full, gpu):
    """The value of the run's size level."""
    return {"quick": quick, "full": full, "gpu": gpu}[level(device)]


def row_shape(device):
    """(B, L) of the [B, L, 50258] kernel suites (score entropy, steps): quick (1, 256), full
    (2, 1024), gpu (8, 1024); SEDD_BENCH_B overrides B."""
    B, L = pick(device, quick=(1, 256), full=(2, 1024), gpu=(8, 1024))
    return int(os.environ.get("SEDD_BENCH_B", B)), L


def row_dtypes(device):
    """Storage dtypes of those suites: fp32 (quick), fp32 and bf16 (full, gpu)."""
    return pick(device, quick=[torch.float32], full=[torch.float32, torch.bfloat16],
                gpu=[torch.float32, torch.bfloat16])


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def machine(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return (f"CPU x{torch.get_num_threads()} threads "
            f"({sedd_kernels.build_info()['cpu_isa']} build)")


def compiled(key, fn):
    """torch.compile(fn, dynamic=False), compiled once per key in the session."""
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(fn, dynamic=False)
    return _COMPILED[key]


def rounds(device, impl, quick=2, full=3, gpu=10):
    """Timed rounds: the fused op (cheap) gets the GPU count everywhere; slow baselines on the CPU
    get `quick` / `full`."""
    if level(device) == "gpu" or impl == "fused":
        return gpu
    return pick(device, quick, full, gpu)


def time_it(benchmark, run, device, *, rounds, warmup=0):
    """One untimed call (warm-up, compilation), then `rounds` timed calls of run(); run()
    synchronises the device itself. Returns the pytest-benchmark stats."""
    run()
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=warmup)
    return benchmark.stats.stats


# Large CPU allocations straight from mmap and back to the system on free, so that the peak
# resident set measures what each benchmark touches (glibc's dynamic mmap threshold would keep
# freed blocks in the heap and hide their reuse).
try:
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)     # M_MMAP_THRESHOLD = 64 KiB
except OSError:
    pass


def peak_bytes(run, device):
    """Peak memory of run() above what was in use before it (its results included): CUDA
    max_memory_allocated; CPU growth of the peak resident set (VmHWM, reset through
    /proc/self/clear_refs), None where that is unavailable."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = run()
        del out
        return torch.cuda.max_memory_allocated() - base

    def status(key):
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")                   # reset VmHWM to the current RSS
    except OSError:
        return None
    base = status("VmRSS:")
    out = run()
    del out
    return status("VmHWM:") - base


def copy_seconds(nbytes, device):
    """Median time of dst.copy_(src) for a buffer of nbytes (read + write), cached per size."""
    key = (nbytes, str(device))
    if key not in _COPY:
        src = torch.empty(nbytes, dtype=torch.uint8, device=device).fill_(1)
        dst = torch.empty_like(src).fill_(0)
        times = []
        for _ in range(7):
            sync(device)
            t0 = time.perf_counter()
            dst.copy_(src)
            sync(device)
            times.append(time.perf_counter() - t0)
        _COPY[key] = sorted(times)[len(times) // 2]
        del src, dst
    return _COPY[key]


# ---- recording ----------------------------------------------------------------------------------

def record_kernel(benchmark, *, suite, op, device, dtype, case, impl, pass_, bytes_moved,
                  size_bytes):
    """A bandwidth-bound kernel: median time, effective GB/s (bytes_moved / time) and the
    fraction of a same-size copy (size_bytes read + written) timed in this run."""
    median = benchmark.stats.stats.median
    t_copy = copy_seconds(size_bytes, device)
    gbs = bytes_moved / median / 1e9
    copy_gbs = 2 * size_bytes / t_copy / 1e9
    benchmark.extra_info.update(
        machine=machine(device), effective_GBps=round(gbs, 2), copy_GBps=round(copy_gbs, 2),
        fraction_of_copy=round(gbs / copy_gbs, 3), bytes_moved=bytes_moved)
    ROWS.append(dict(suite=suite, kind="kernel", op=op, device=str(device),
                     machine=machine(device), dtype=str(dtype).replace("torch.", ""), case=case,
                     impl=impl, pass_=pass_, median_s=median, gbs=gbs, copy_gbs=copy_gbs))


def record_memory(benchmark, *, suite, device, dtype, case, impl, peak, grad_bytes, tokens):
    """A stage measured in time and peak memory (peak includes the gradients it returns)."""
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(machine=machine(device), peak_bytes=peak, grad_bytes=grad_bytes,
                                tokens=tokens, tokens_per_s=round(tokens / median))
    ROWS.append(dict(suite=suite, kind="memory", device=str(device), machine=machine(device),
                     dtype=str(dtype).replace("torch.", ""), case=case, impl=impl,
                     median_s=median, peak_bytes=peak, grad_bytes=grad_bytes))


def record_throughput(benchmark, *, suite, device, case, impl, tokens, seconds, baseline,
                      peak=None, **info):
    """An end-to-end job: tokens/s = tokens / seconds; `baseline` names the impl the summary
    divides by. Extra keyword arguments go to the JSON and to pytest-benchmark's extra_info."""
    tps = tokens / seconds
    benchmark.extra_info.update(machine=machine(device), tokens_per_s=round(tps, 1),
                                peak_bytes=peak, **info)
    ROWS.append(dict(suite=suite, kind="throughput", device=str(device), machine=machine(device),
                     case=case, impl=impl, tokens_per_s=tps, baseline=baseline, peak_bytes=peak,
                     **info))


def record_generation(benchmark, *, suite, device, case, impl, tokens, seconds, calls_per_token,
                      positions_per_token):
    """A generation method: tokens/s, network calls per generated token (per sequence) and the
    token positions those calls computed per generated token."""
    tps = tokens / seconds
    benchmark.extra_info.update(machine=machine(device), tokens_per_s=round(tps, 1),
                                calls_per_token=calls_per_token,
                                positions_per_token=positions_per_token)
    ROWS.append(dict(suite=suite, kind="generation", device=str(device), machine=machine(device),
                     case=case, impl=impl, tokens_per_s=tps, seconds=seconds,
                     calls_per_token=calls_per_token, positions_per_token=positions_per_token))


# ---- summary ------------------------------------------------------------------------------------

def _ms(s):
    return f"{s * 1e3:.2f}" if s is not None else "-"


def _x(a, b):
    return f"{a / b:.1f}" if (a is not None and b) else "-"


def _mib(b):
    return f"{b / 2 ** 20:,.0f}" if b is not None else "-"


def _kernel_table(rows):
    groups = {}
    for r in rows:
        key = (r["op"], r["machine"], r["dtype"], r["case"], r["pass_"])
        groups.setdefault(key, {})[r["impl"]] = r
    out = ["| op | machine | dtype | case | pass | fused ms | reference ms | compiled ms | "
           "× reference | × compiled | GB/s | % of copy |", "|" + "---|" * 12]
    for (op, mach, dtype, case, pass_), impls in groups.items():
        f, r, c = (impls.get(k) for k in ("fused", "reference", "compiled"))
        t = lambda x: x and x["median_s"]  # noqa: E731
        out.append(f"| {op} | {mach} | {dtype} | {case} | {pass_} | {_ms(t(f))} | {_ms(t(r))} | "
                   f"{_ms(t(c))} | {_x(t(r), t(f))} | {_x(t(c), t(f))} | "
                   + (f"{f['gbs']:.1f} | {100 * f['gbs'] / f['copy_gbs']:.1f} % |" if f
                      else "- | - |"))
    return out


def _memory_table(rows):
    """Time, peak memory and working memory (peak minus the gradients returned) per impl, and
    the ratios to the fused op."""
    fused = {(r["machine"], r["dtype"], r["case"]): r for r in rows if r["impl"] == "fused"}
    work = lambda r: None if r["peak_bytes"] is None else r["peak_bytes"] - r["grad_bytes"]  # noqa: E731
    out = ["| machine | dtype | case | impl | ms | × fused | peak MiB | work MiB | peak / fused | "
           "work / fused |", "|" + "---|" * 10]
    for r in rows:
        f = fused.get((r["machine"], r["dtype"], r["case"]))
        out.append(f"| {r['machine']} | {r['dtype']} | {r['case']} | {r['impl']} | "
                   f"{_ms(r['median_s'])} | {_x(r['median_s'], f and f['median_s'])} | "
                   f"{_mib(r['peak_bytes'])} | {_mib(work(r))} | "
                   f"{_x(r['peak_bytes'], f and f['peak_bytes'])} | {_x(work(r), f and work(f))} |")
    return out


def _throughput_table(rows):
    groups = {}
    for r in rows:
        groups.setdefault((r["machine"], r["case"]), {})[r["impl"]] = r
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    base = rows[0]["baseline"]
    peaks = any(r.get("peak_bytes") is not None for r in rows)
    head = ["machine", "case"] + [f"{i} tok/s" for i in impls] + \
        [f"{i} × {base}" for i in impls if i != base] + (["peak MiB (" + ", ".join(impls) + ")"]
                                                        if peaks else [])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (mach, case), got in groups.items():
        tps = {i: got[i]["tokens_per_s"] if i in got else None for i in impls}
        cells = [mach, case] + [f"{tps[i]:,.1f}" if tps[i] else "-" for i in impls]
        cells += [f"{tps[i] / tps[base]:.2f}" if (tps[i] and tps.get(base)) else "-"
                  for i in impls if i != base]
        if peaks:
            cells.append(", ".join(_mib(got[i].get("peak_bytes")) if i in got else "-"
                                   for i in impls))
        out.append("| " + " | ".join(cells) + " |")
    return out


def _trade_table(rows):
    """bench_predictors.py: per case and steps, each predictor's tokens/s (and × the first
    predictor's), network calls, and its sample quality with exact scores."""
    base = rows[0]["impl"]
    ref = {(r["machine"], r["case"], r["steps"]): r["tokens_per_s"] for r in rows
           if r["impl"] == base}
    out = ["| machine | case | steps | predictor | tok/s | × " + base + " | network calls | "
           "sequences run / B·evaluations | valid | NLL − H (nats/token) |", "|" + "---|" * 10]
    for r in rows:
        b = ref.get((r["machine"], r["case"], r["steps"]))
        out.append(f"| {r['machine']} | {r['case']} | {r['steps']} | {r['impl']} | "
                   f"{r['tokens_per_s']:,.1f} | {_x(r['tokens_per_s'], b)} | "
                   f"{r['network_calls']} of {r['evaluations']} | "
                   f"{r['sequences']} / {r['batch'] * r['evaluations']} | {r['valid']:.3f} | "
                   f"{r['nll_excess']:+.4f} |")
    return out


def _generation_table(rows):
    """bench_block.py: per case, each method's tokens/s, × the first method's and × the AR
    baseline's, network calls and positions computed per generated token."""
    _x2 = lambda a, b: f"{a / b:.2f}" if (a is not None and b) else "-"  # noqa: E731
    first = rows[0]["impl"]
    by = {(r["machine"], r["case"], r["impl"]): r["tokens_per_s"] for r in rows}
    out = ["| machine | case | method | seconds | tok/s | × " + first + " | × ar+kv | "
           "calls / token | positions / token |", "|" + "---|" * 9]
    for r in rows:
        key = (r["machine"], r["case"])
        out.append(f"| {r['machine']} | {r['case']} | {r['impl']} | {r['seconds']:.2f} | "
                   f"{r['tokens_per_s']:,.1f} | {_x2(r['tokens_per_s'], by.get((*key, first)))} | "
                   f"{_x2(r['tokens_per_s'], by.get((*key, 'ar+kv')))} | "
                   f"{r['calls_per_token']:.3f} | {r['positions_per_token']:,.1f} |")
    return out


def _decoding_table(rows):
    """bench_decoding.py: per predictor setting, calls per token and tokens/s (the trained model),
    and the samples' quality with exact scores and with the trained model."""
    def q(r, who):
        if f"{who}_valid" not in r:
            return "— | — | — | —"
        return (f"{r[who + '_valid']:.3f} | {r[who + '_valid8']:.3f} | "
                f"{r[who + '_nll_excess']:+.3f} | {r[who + '_unigram_delta']:+.3f}")
    out = ["| machine | case | predictor | calls / token (per sequence) | positions / token | tok/s | "
           "exact: valid | valid-8 | NLL − H | unigram Δ | model: valid | valid-8 | NLL − H | "
           "unigram Δ |", "|" + "---|" * 14]
    for r in rows:
        per = r.get("sequence_calls_per_token")
        calls = f"{r['calls_per_token']:.3f}" + (f" ({per:.3f})" if per is not None else "")
        out.append(f"| {r['machine']} | {r['case']} | {r['impl']} | {calls} | "
                   f"{r['positions_per_token']:.1f} | {r['tokens_per_s']:,.0f} | "
                   f"{q(r, 'exact')} | {q(r, 'model')} |")
    return out


TABLES = {"decoding": _decoding_table, "generation": _generation_table, "trade": _trade_table, "kernel": _kernel_table, "memory": _memory_table, "throughput": _throughput_table}


def summary(section, write_line):
    """One table per suite, in the order the suites ran; JSON of every row to $SEDD_BENCH_JSON."""
    suites = {}
    for r in ROWS:
        suites.setdefault((r["suite"], r["kind"]), []).append(r)
    for (suite, kind), rows in suites.items():
        section(f"bench_{suite}.py summary ({kind}; levels: "
                + ", ".join(sorted({level(r['device']) for r in rows})) + ")")
        for line in TABLES[kind](rows):
            write_line(line)
    out = os.environ.get("SEDD_BENCH_JSON")
    if out and ROWS:
        with open(out, "w") as fh:
            json.dump(ROWS, fh, indent=1)
