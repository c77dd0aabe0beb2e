"""Shared machinery of the kernel benchmarks: devices, a same-size copy baseline timed in the
same run, and a summary table (ratios to the reference eager / compiled ops, GB/s, fraction of
copy bandwidth) printed at the end and written to $SEDD_BENCH_JSON if set."""

import ctypes
import gc
import json
import os
import time

import pytest
import torch

import sedd_kernels

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
if os.environ.get("SEDD_BENCH_DEVICES"):
    DEVICES = [d for d in os.environ["SEDD_BENCH_DEVICES"].split(",") if d in DEVICES]

RESULTS = []  # rows: dict(op, device, dtype, case, impl, pass_, median_s, bytes)
LINEAR_RESULTS = []  # bench_linear.py: dict(machine, dtype, N, graph, impl, median_s, peak_bytes)
_COPY = {}


def batch_size(device):
    """B of the [B, 1024, 50258] benchmarks: 2 on CPU, 8 on GPU, or SEDD_BENCH_B."""
    return int(os.environ.get("SEDD_BENCH_B", 8 if device == "cuda" else 2))


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


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


def machine(device):
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name()
    return (f"CPU x{torch.get_num_threads()} threads "
            f"({sedd_kernels.build_info()['cpu_isa']} build)")


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


def record(benchmark, *, op, device, dtype, case, impl, pass_, bytes_moved, size_bytes):
    """Store one result and attach GB/s and the fraction of copy bandwidth to extra_info."""
    median = benchmark.stats.stats.median
    t_copy = copy_seconds(size_bytes, device)
    gbs = bytes_moved / median / 1e9
    copy_gbs = 2 * size_bytes / t_copy / 1e9
    benchmark.extra_info.update(
        machine=machine(device), effective_GBps=round(gbs, 2), copy_GBps=round(copy_gbs, 2),
        fraction_of_copy=round(gbs / copy_gbs, 3), bytes_moved=bytes_moved)
    RESULTS.append(dict(op=op, device=str(device), machine=machine(device), dtype=str(dtype),
                        case=case, impl=impl, pass_=pass_, median_s=median, gbs=gbs,
                        copy_gbs=copy_gbs))


def _linear_summary(tr):
    """Loss stage at V = 50258: time, peak memory and working memory (peak minus the gradients
    returned) of each implementation, and the baselines' ratios to the fused op."""
    tr.section("linear_score_entropy: loss stage (fwd+bwd) time and peak memory")
    tr.write_line(f"{'machine':<34}{'dtype':<10}{'N':>7}  {'graph':<9}{'impl':<17}{'ms':>9}"
                  f"{'x fused':>9}{'peak MB':>9}{'work MB':>9}{'peak/f':>8}{'work/f':>8}")
    fused = {(r["machine"], r["dtype"], r["N"], r["graph"]): r for r in LINEAR_RESULTS
             if r["impl"] == "fused"}

    def work(r):
        return None if r["peak_bytes"] is None else r["peak_bytes"] - r["grad_bytes"]

    def ratio(a, b):
        return f"{a / b:8.1f}" if (a is not None and b) else f"{'-':>8}"

    for r in sorted(LINEAR_RESULTS, key=lambda r: (r["machine"], r["dtype"], r["N"], r["graph"])):
        f = fused.get((r["machine"], r["dtype"], r["N"], r["graph"]))
        t = f"{r['median_s'] / f['median_s']:9.2f}" if f else f"{'-':>9}"
        mb = lambda b: f"{b / 2 ** 20:9.0f}" if b is not None else f"{'-':>9}"  # noqa: E731
        tr.write_line(f"{r['machine'][:33]:<34}{r['dtype']:<10}{r['N']:>7}  {r['graph']:<9}"
                      f"{r['impl']:<17}{r['median_s'] * 1e3:9.1f}{t}{mb(r['peak_bytes'])}"
                      f"{mb(work(r))}{ratio(r['peak_bytes'], f and f['peak_bytes'])}"
                      f"{ratio(work(r), f and work(f))}")


def pytest_terminal_summary(terminalreporter):
    if LINEAR_RESULTS:
        _linear_summary(terminalreporter)
        out = os.environ.get("SEDD_BENCH_JSON")
        if out and not RESULTS:
            with open(out, "w") as fh:
                json.dump(LINEAR_RESULTS, fh, indent=1)
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("sedd-kernels benchmark summary")
    groups = {}
    for r in RESULTS:
        groups.setdefault((r["op"], r["device"], r["machine"], r["dtype"], r["case"], r["pass_"]),
                          {})[r["impl"]] = r
    tr.write_line(f"{'op':<14}{'machine':<34}{'dtype':<16}{'case':<22}{'pass':<8}"
                  f"{'fused ms':>10}{'ref ms':>10}{'comp ms':>10}{'x ref':>8}{'x comp':>8}"
                  f"{'GB/s':>9}{'% copy':>8}")
    rows = []
    for (op, dev, mach, dtype, case, pass_), impls in sorted(groups.items()):
        f, r, c = impls.get("fused"), impls.get("reference"), impls.get("compiled")
        ms = lambda x: f"{x['median_s'] * 1e3:10.2f}" if x else f"{'-':>10}"  # noqa: E731
        ratio = lambda x: f"{x['median_s'] / f['median_s']:8.1f}" if (x and f) else f"{'-':>8}"  # noqa: E731
        tr.write_line(f"{op:<14}{mach[:33]:<34}{dtype.replace('torch.', ''):<16}{case:<22}{pass_:<8}"
                      f"{ms(f)}{ms(r)}{ms(c)}{ratio(r)}{ratio(c)}"
                      + (f"{f['gbs']:9.1f}{100 * f['gbs'] / f['copy_gbs']:7.1f}%" if f else ""))
        rows.append(dict(op=op, device=dev, machine=mach, dtype=dtype, case=case, pass_=pass_,
                         **{k: v["median_s"] for k, v in impls.items()},
                         gbs=f["gbs"] if f else None, copy_gbs=f["copy_gbs"] if f else None))
    out = os.environ.get("SEDD_BENCH_JSON")
    if out:
        with open(out, "w") as fh:
            json.dump(rows, fh, indent=1)
