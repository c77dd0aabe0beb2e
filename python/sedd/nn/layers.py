"""What the networks share: their config (ModelConfig), the transformer layers in the paper's
parameter layout (bias-free fp32 LayerNorm, rotary positions, the timestep embedder, the block's
attention and MLP layers), and torch.compile of a network.

Imports: torch and sedd_kernels only."""

from __future__ import annotations

import math
from dataclasses import InitVar, asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelConfig:
    """The network's shape and kind. `family` names the model family that owns the network
    (sedd.families: "sedd" the DDiT, "ar" the causal baseline, ...); the family checks the
    fields it cares about when it builds the network (Family.check_network)."""

    vocab_size: int          # V: tokens the network sees (n + 1 with the absorbing mask or BOS)
    hidden_size: int = 768
    n_blocks: int = 12
    n_heads: int = 12
    cond_dim: int = 128
    dropout: float = 0.1
    scale_by_sigma: bool = True   # docs/math.md §5, for the absorbing graph
    max_length: int = 1024
    # "score": the paper's σ-conditioned network (docs/math.md §5). "clean": the time-independent
    # parametrisation of the absorbing graph (DDiT.clean_log_probs): the network ignores σ and
    # outputs log p(y | x) over the n real tokens, turned into log-scores analytically.
    parametrisation: str = "score"
    family: str = "sedd"
    # block diffusion (sedd.nn.block): attention is block-causal over blocks of this many tokens
    block_size: int | None = None
    # how block diffusion computes its masked attention: "sdpa" (scaled_dot_product_attention
    # with a boolean mask) or "flex" (torch's flex_attention, its block mask built once per
    # shape); the same numbers either way
    attention: str = "sdpa"
    # deprecated spelling of `family` (checkpoints before the family seam): "ddit" -> "sedd"
    arch: InitVar[str | None] = None

    def __post_init__(self, arch):
        if arch is not None:
            self.family = OLD_ARCH.get(arch, arch)
        if not isinstance(self.family, str) or not self.family:
            raise ValueError(f"family must be a family name, got {self.family!r}")
        if self.parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation must be one of {PARAMETRISATIONS}, got "
                             f"{self.parametrisation!r}")
        if self.parametrisation == "clean" and not self.scale_by_sigma:
            raise ValueError("parametrisation='clean' is for the absorbing graph only "
                             "(scale_by_sigma=True)")

    @property
    def time_independent(self) -> bool:
        return self.parametrisation == "clean"

    def to_dict(self):
        return asdict(self)


def check_shape(config: ModelConfig, min_vocab: int, vocab_what: str = "vocab_size"):
    """What every network of these layers needs: whole heads and enough ids."""
    if config.hidden_size % config.n_heads:
        raise ValueError(f"hidden_size {config.hidden_size} is not divisible by n_heads "
                         f"{config.n_heads}")
    if config.vocab_size < min_vocab:
        raise ValueError(f"{vocab_what} must be >= {min_vocab}, got {config.vocab_size}")


PARAMETRISATIONS = ("score", "clean")
OLD_ARCH = {"ddit": "sedd"}     # ModelConfig.arch of older checkpoints -> family


def compile_model(model: nn.Module, *, training: bool, blocks: bool = False) -> nn.Module:
    """torch.compile the network in place with fullgraph=True (a graph break is an error: the
    fused ops are custom ops with fake kernels, traced like aten ops). training: the method the
    network names in `training_entry`, else `forward` — for the DDiT with the fused loss that is
    trunk + linear_score_entropy in one graph (block diffusion: its vectorised trunk, whose loss
    gathers a data-dependent number of masked rows outside the graph); sampling: the
    method the network names in `sampling_entry` (the DDiT's `trunk`: the sampler reads
    DDiT.log_score_parts, whose product feeds the fused step; else `forward`). Parameters and
    state_dict are untouched (checkpoints, EMA copies and the paper's layout see the plain
    module). Idempotent. blocks: each of the network's `blocks` compiled on its own instead (FSDP2
    runs its gather / reduce hooks between them, outside the graphs)."""
    if blocks:
        if getattr(model, "_sedd_compiled", None) != "blocks":
            for block in model.blocks:
                block.forward = torch.compile(block.forward, fullgraph=True)
            model._sedd_compiled = "blocks"
        return model
    name = getattr(model, "training_entry" if training else "sampling_entry", "forward")
    if getattr(model, "_sedd_compiled", None) == name:
        return model
    setattr(model, name, torch.compile(getattr(model, name), fullgraph=True))
    model._sedd_compiled = name
    return model


class LayerNorm(nn.Module):
    """LayerNorm without bias, computed in fp32 (as the paper's)."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.dim = dim

    def forward(self, x):
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = F.layer_norm(x.float(), [self.dim])
        return x * self.weight[None, None, :]


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Rotary(nn.Module):
    """Rotary position embedding (base 10⁴, rotate-half convention)."""

    def __init__(self, dim, base=10_000):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
        self.register_buffer("inv_freq", inv_freq)

    def forward(self, L, device, start=0):
        """cos, sin [1, L, 1, dim] of the positions start … start + L − 1."""
        t = torch.arange(start, start + L, device=device, dtype=self.inv_freq.dtype)
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class TimestepEmbedder(nn.Module):
    """σ̄ → 256-wide sinusoidal embedding ([cos, sin], frequencies exp(−log(10⁴)·k/128)) → MLP."""

    def __init__(self, hidden_size, frequency_embedding_size=256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(),
                                 nn.Linear(hidden_size, hidden_size))
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t, dim, max_period=10_000):
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32,
                                                               device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t):
        return self.mlp(self.timestep_embedding(t, self.frequency_embedding_size))


class EmbeddingLayer(nn.Module):
    def __init__(self, dim, vocab_dim):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty((vocab_dim, dim)))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, x):
        return self.embedding[x]


class BlockLayers(nn.Module):
    """The layers every transformer block here has, in the paper's registration order (norm1,
    attn_qkv, attn_out, norm2, mlp): the DDiT's block adds adaLN, the AR baseline's nothing."""

    def __init__(self, dim, n_heads, mlp_ratio=4, dropout=0.1):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim, bias=True),
                                 nn.GELU(approximate="tanh"),
                                 nn.Linear(mlp_ratio * dim, dim, bias=True))
        self.dropout = dropout

    def qkv(self, h, rotary):
        """q, k (rotary applied), v of the normalised input h [B, L, D]: [B, heads, L, D/heads]."""
        B, L, D = h.shape
        qkv = self.attn_qkv(h).view(B, L, 3, self.n_heads, D // self.n_heads)
        cos, sin = (r.to(qkv.dtype) for r in rotary)
        q = apply_rotary(qkv[:, :, 0], cos, sin)
        k = apply_rotary(qkv[:, :, 1], cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2), qkv[:, :, 2].transpose(1, 2)


