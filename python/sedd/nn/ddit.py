"""The DDiT network of docs/math.md §5, with the parameter names and shapes of the paper's released
checkpoints (their state dicts load with strict=True)."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import BlockMask, flex_attention

import sedd_kernels as sk

from .layers import (BlockLayers, EmbeddingLayer, LayerNorm, ModelConfig, Rotary,
                     TimestepEmbedder, check_shape, modulate)


def real_log_softmax(out):
    """The clean parametrisation's output from the projection's [.., V] float32: log_softmax
    over the real tokens (the mask column excluded), 0 in the mask column M = V − 1."""
    return torch.cat([torch.log_softmax(out[..., :-1], dim=-1),
                      torch.zeros_like(out[..., -1:])], dim=-1)


class DDiTBlock(BlockLayers):
    def __init__(self, dim, n_heads, cond_dim, mlp_ratio=4, dropout=0.1):
        super().__init__(dim, n_heads, mlp_ratio, dropout)
        self.adaLN_modulation = nn.Linear(cond_dim, 6 * dim, bias=True)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def _residual(self, x, gate, skip):
        return skip + gate * F.dropout(x, p=self.dropout, training=self.training)

    def modulation(self, c):
        """The six adaLN vectors of condition c, each [B, 1, H]."""
        return self.adaLN_modulation(c)[:, None].chunk(6, dim=2)

    def forward(self, x, rotary, c, attn_mask=None, kv=None, mod=None):
        """attn_mask: None (every position sees every position), SDPA's boolean mask, or a flex
        attention BlockMask; kv: a function (k, v) -> (k, v) that puts cached keys and values in
        front (block diffusion); mod: `modulation(c)` computed before (a constant condition)."""
        B, L, D = x.shape
        (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp,
         gate_mlp) = self.modulation(c) if mod is None else mod
        skip = x
        q, k, v = self.qkv(modulate(self.norm1(x), shift_msa, scale_msa), rotary)
        if kv is not None:
            k, v = kv(k, v)
        if isinstance(attn_mask, BlockMask):
            h = flex_attention(q, k, v, block_mask=attn_mask)
        else:
            h = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        h = h.transpose(1, 2).reshape(B, L, D)
        x = self._residual(self.attn_out(h), gate_msa, skip)
        return self._residual(self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp)), gate_mlp, x)


class DDitFinalLayer(nn.Module):
    def __init__(self, hidden_size, out_channels, cond_dim):
        super().__init__()
        self.norm_final = LayerNorm(hidden_size)
        self.linear = nn.Linear(hidden_size, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.adaLN_modulation = nn.Linear(cond_dim, 2 * hidden_size, bias=True)
        nn.init.zeros_(self.adaLN_modulation.weight)
        nn.init.zeros_(self.adaLN_modulation.bias)

    def modulation(self, c):
        return self.adaLN_modulation(c)[:, None].chunk(2, dim=2)

    def modulated(self, x, c, mod=None):
        """What the projection reads: LayerNorm, then the adaLN shift and scale of c (or `mod`,
        `modulation(c)` computed before)."""
        shift, scale = self.modulation(c) if mod is None else mod
        return modulate(self.norm_final(x), shift, scale)

    def forward(self, x, c):
        return self.linear(self.modulated(x, c))


class DDiT(nn.Module):
    """x_t [B, L] and σ̄ [B] → log-scores [B, L, V] with ℓ at the current token set to 0."""

    sampling_entry = "trunk"     # what compile_model compiles for sampling

    def __init__(self, config: ModelConfig):
        super().__init__()
        check_shape(config, min_vocab=2)
        self.config = config
        H = config.hidden_size
        self.vocab_embed = EmbeddingLayer(H, config.vocab_size)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = Rotary(H // config.n_heads)
        self.blocks = nn.ModuleList([DDiTBlock(H, config.n_heads, config.cond_dim,
                                               dropout=config.dropout)
                                     for _ in range(config.n_blocks)])
        self.output_layer = DDitFinalLayer(H, config.vocab_size, config.cond_dim)

    @property
    def time_independent(self) -> bool:
        """True for the "clean" parametrisation: the output depends on x only, up to the
        analytic σ shift of log_score_from_clean (what the sampler's exact cache relies on)."""
        return self.config.time_independent

    def trunk(self, x, sigma, kv=None, start=0):
        """Everything up to the output projection: hidden states [B, L, H] and the condition c.
        Time-independent ("clean"): σ is ignored and c = SiLU(sigma_map(0)) for every input, a
        learned constant, so the adaLN layers become learned constant modulations (the parameter
        layout stays the paper's). kv: per block, a function (k, v) -> (k, v) its attention
        applies (the dual cache keeps or splices keys and values there); start: the position of
        x's first token (x a slice of a longer window)."""
        h = self.vocab_embed(x)
        if self.time_independent:
            sigma = torch.zeros(x.shape[0], device=x.device)
        c = F.silu(self.sigma_map(sigma))
        rotary = self.rotary_emb(x.shape[1], x.device, start=start)
        for i, block in enumerate(self.blocks):
            h = block(h, rotary, c, kv=None if kv is None else kv[i])
        return h, c

    def log_score_offset(self, sigma):
        """What the network adds after the projection (scale_by_sigma): [B] or None.
        Time-independent ("clean"): −log expm1(σ), added to log p(y | x), i.e. after the
        log-softmax of clean_log_probs (not to the raw projection)."""
        if not self.config.scale_by_sigma:
            return None
        # log(e^σ − 1) without overflow: e^σ overflows float32 above σ ≈ 88, where the log is
        # σ + log1p(−e^{−σ}) (σ = ∞ gives the limit, an offset of −∞)
        small = sigma < 20
        log_esigm1 = torch.where(small, torch.log(torch.expm1(sigma.clamp(max=20))),
                                 sigma + torch.log1p(-torch.exp(-sigma)))
        if self.time_independent:
            return -log_esigm1
        return -log_esigm1 - math.log(self.config.vocab_size - 1)

    def clean_log_probs(self, x):
        """Time-independent parametrisation of the absorbing graph (mask M = V − 1): the network
        on x alone, [B, L, V] float32, with log p(y | x) = log_softmax over the n = V − 1 real
        tokens in columns y < M (the mask logit excluded) and 0 in column M. Depends on x only."""
        if not self.time_independent:
            raise ValueError("clean_log_probs needs parametrisation='clean'")
        h, c = self.trunk(x, None)
        return real_log_softmax(self.output_layer(h, c).float())

    def log_score_from_clean(self, log_probs, x, sigma):
        """Log-scores [B, L, V] from clean_log_probs(x) at total noise σ [B]. At a masked
        position the absorbing concrete score is p_t(x with x_i = y) / p_t(x) =
        e^{−σ} p(y | x) / (1 − e^{−σ}), so ℓ_y = log p(y | x) − log expm1(σ) for y < M, and
        ℓ_M = 0 (the current token), as usual. Rows of unmasked positions hold the same shifted
        values (ℓ_x = 0, −log expm1(σ) in the mask column); neither the absorbing loss nor the
        absorbing steps read them. Cheap: the sampler's cache calls this alone when x has not
        changed."""
        out = log_probs + self.log_score_offset(sigma.float())[:, None, None]
        return torch.scatter(out, -1, x[..., None], torch.zeros_like(out[..., :1]))

    @property
    def supports_fused_loss(self) -> bool:
        """The σ-conditioned network ends in projection + offset: its loss can go through
        sedd_kernels.linear_score_entropy. (The clean parametrisation has a log-softmax there.)"""
        return not self.time_independent

    def fused_loss(self, x, sigma, *, x_0, sigma_total, graph, token_weight=None,
                   reduction="sum", validate=None):
        """Σ token_weight·SE(forward(x, σ), x_0) (docs/math.md §3) — or with reduction="none" the
        per-token SE [B, L] — without materialising the log-scores: the output projection, the
        scale_by_sigma offset and the loss fused in row chunks (the zero at the current token is
        the loss's own rule). Same value as the unfused path."""
        if not self.supports_fused_loss:
            raise ValueError("fused_loss needs parametrisation='score'")
        hidden = self._projection_input(x, sigma)
        fl = self.output_layer
        return sk.linear_score_entropy(hidden, fl.linear.weight, fl.linear.bias, x, x_0,
                                       sigma_total, graph, self.log_score_offset(sigma.float()),
                                       reduction=reduction, token_weight=token_weight,
                                       validate=validate)

    def _projection_input(self, x, sigma):
        """The trunk and the final layer up to its projection: what Linear(H, V) reads."""
        return self.output_layer.modulated(*self.trunk(x, sigma))

    projects_rows = True         # log_score_parts(rows=): the projection of chosen rows only

    def log_score_parts(self, x, sigma, out=None, rows=None):
        """(prod [B, L, V], bias [V] or None, shift [B] or None) with forward(x, σ) =
        (prod + bias) + shift[:, None, None] and the entry at the current token set to 0: the form
        the fused reverse steps read (sedd_kernels.reverse_step(bias=, shift=) adds both and
        ignores the current token's entry), so that sampling does not pay forward()'s extra
        passes over the [B, L, V] block (bias, offset, scatter, float copy). `prod` is the
        projection's product as computed (bf16 under autocast, where the bias stays inside it); into
        `out` when given (the previous step's block: no fresh allocation). For the clean
        parametrisation prod is clean_log_probs(x) and bias None.

        rows: flat positions [R] into x's B·L positions (b·L + i): the trunk runs on all of x,
        the final layer and the projection on those rows only, and prod is [R, V] (shift stays
        per sequence, [B]; on the CPU a transposed view, see project). What a step reads when
        only some positions can move (the absorbing graph's masked ones): the projection, most
        of a step at a large V, is paid for those rows alone. `out` is then a flat scratch the
        product may write into (project)."""
        offset = self.log_score_offset(sigma.float())
        if self.time_independent and rows is None:
            return self.clean_log_probs(x), None, offset
        hidden = self._projection_input(x, sigma)
        if rows is not None:
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)
        return self.project(hidden, out) + (offset,)

    def project(self, hidden, out=None):
        """(prod, bias or None) of the output projection of what it reads, hidden [..., H]
        (log_score_parts' form; the clean parametrisation's log-probs with bias None)."""
        fl = self.output_layer
        if self.time_independent:
            return real_log_softmax(fl.linear(hidden).float()), None
        w, b = fl.linear.weight, fl.linear.bias
        if torch.is_autocast_enabled(hidden.device.type) or b is None:
            return fl.linear(hidden), None
        if hidden.dim() == 2:
            if hidden.device.type != "cpu":
                return torch.mm(hidden, w.t()), b
            # gathered rows on the CPU: MKL runs this product up to 1.6x faster with the
            # vocabulary as its long side (W·hᵀ, [V, R]) and R padded to a multiple of 16 (at
            # other R it is no faster; bench/README.md "The projection for the rows that can
            # move"): the rows come back as a transposed view, written into `out` when given (a
            # flat scratch of at least V·R' entries, reused: no fresh pages per step)
            V, R = w.shape[0], hidden.shape[0]
            pad = -R % 16
            if pad:
                hidden = torch.cat([hidden, hidden.new_zeros(pad, hidden.shape[1])])
            n = V * (R + pad)
            if (out is not None and not torch.is_grad_enabled() and out.dtype == hidden.dtype
                    and out.device == hidden.device and out.dim() == 1 and out.numel() >= n):
                prod = torch.mm(w, hidden.t(), out=out[:n].view(V, R + pad))
            else:
                prod = torch.mm(w, hidden.t())
            return prod[:, :R].t(), b
        flat = hidden.reshape(-1, hidden.shape[-1])
        if (out is not None and out.dtype == flat.dtype and out.device == flat.device
                and out.shape == (*hidden.shape[:2], w.shape[0]) and out.is_contiguous()):
            torch.mm(flat, w.t(), out=out.view(-1, w.shape[0]))
        else:
            out = torch.mm(flat, w.t()).view(*hidden.shape[:2], w.shape[0])
        return out, b

    def forward(self, x, sigma, fused_loss=None):
        """Log-scores [B, L, V]; or, with fused_loss = dict(x_0=, sigma_total=, graph=,
        token_weight=), the scalar of fused_loss() — through forward, so that DDP/FSDP wrappers
        see the call."""
        if fused_loss is not None:
            return self.fused_loss(x, sigma, **fused_loss)
        if self.time_independent:
            return self.log_score_from_clean(self.clean_log_probs(x), x, sigma)
        h, c = self.trunk(x, sigma)
        out = self.output_layer(h, c).float()
        offset = self.log_score_offset(sigma.float())
        if offset is not None:
            out = out + offset[:, None, None]
        return torch.scatter(out, -1, x[..., None], torch.zeros_like(out[..., :1]))

    def num_parameters(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.vocab_embed.embedding.numel() + self.output_layer.linear.weight.numel()
        return n
