"""Will a run fit: a rough upper estimate of its memory, checked against what the device has
before anything large is allocated."""

from __future__ import annotations

import os

import torch


def available_memory(device: str) -> int:
    """Bytes a run may use: free CUDA memory, or the machine's available RAM."""
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def estimate_memory(cfg, model_cfg, device: str = "cpu", shards: int = 1) -> dict:
    """A rough upper estimate of a process's memory in bytes, by part: weights with gradients,
    AdamW state and the EMA copy (5 fp32 copies; FSDP2 over `shards` processes keeps 1/shards
    of them plus the two blocks it gathers whole at a time, after building the whole network and
    its EMA copy once: 2 fp32 copies); activations kept for backward (about 20 values per
    token, width and block: bf16 under CUDA autocast, fp32 on the CPU) and the [tokens, V]
    log-score block (a chunk of rows when the projection is fused); the built-in corpus's
    sequences (int64, generated once)."""
    H, C, V, n = model_cfg.hidden_size, model_cfg.cond_dim, model_cfg.vocab_size, model_cfg.n_blocks
    params = 2 * V * H + V + n * (12 * H * H + 6 * H * C + 13 * H) + 2 * H * C + 256 * C + C * C
    tokens = cfg.batch_size * cfg.seq_len
    act = 2 if str(device).startswith("cuda") else 4
    fused = getattr(cfg, "fused_linear", True)
    block = 12 * H * H + 6 * H * C + 13 * H
    state = 20 * params if shards <= 1 else max(20 * params / shards + 2 * 2 * act * block,
                                                8 * params)
    parts = {"weights, gradients, optimizer, EMA": state,
             "activations": act * 20 * tokens * H * n,
             "log-scores": 4 * 3 * V * (min(tokens, 1024) if fused else tokens)}
    if cfg.data == "builtin":
        parts["built-in corpus"] = 2 * 8 * 21_000 * cfg.seq_len
    return parts


def check_memory(cfg, model_cfg, device, shards: int = 1) -> None:
    """Refuse a run that cannot fit, naming the parts and the flags that shrink it."""
    parts = estimate_memory(cfg, model_cfg, str(device), shards)
    total, have = sum(parts.values()), available_memory(str(device))
    if total > 0.9 * have:
        detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
        raise ValueError(f"--batch-size {cfg.batch_size} x --seq-len {cfg.seq_len} would need "
                         f"about {gib(total)} ({detail}), more than the {gib(have)} available "
                         f"on {device}; lower --seq-len or --batch-size (or raise --accum)"
                         + ("" if shards > 1 else "; under torchrun, --fsdp shards the weights "
                            "and optimizer"))
