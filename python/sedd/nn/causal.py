"""The autoregressive baseline's network: a causal transformer of the DDiT's size class with a
KV cache (its family, sampler and likelihood: sedd.families.ar).

The network is the DDiT trunk without time conditioning: the same blocks (bias-free fp32
LayerNorm, fused QKV, rotary positions on q and k, a 4× GELU-tanh MLP, parameter names as the
DDiT's minus ``adaLN_modulation``), causal attention, a final LayerNorm and an output projection
over the n real tokens. Token id n is BOS: the input is [BOS, x_1, …, x_{L−1}] and position i
predicts x_i, so the loss of a sequence is its exact −log p(x_1..L) under the model — the same
quantity, on the same tokens, as SEDD's likelihood bound bounds. The loss goes through
``sedd_kernels.linear_cross_entropy`` (projection and cross-entropy fused in row chunks, no
[B, L, n] logits). Non-embedding size: the DDiT's minus its time conditioning (``sigma_map`` and
the adaLN layers), reported by ``num_parameters``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

import sedd_kernels as sk

from .layers import BlockLayers, EmbeddingLayer, LayerNorm, ModelConfig, Rotary, check_shape


class KVCache:
    """Keys and values of every block for positions [0, pos): [blocks, B, heads, capacity, d]."""

    def __init__(self, n_blocks, B, heads, capacity, d, dtype, device):
        self.k = torch.empty(n_blocks, B, heads, capacity, d, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.pos = 0

    @property
    def capacity(self) -> int:
        return self.k.shape[3]


class CausalBlock(BlockLayers):
    """The DDiT block without adaLN: x + attn(LN(x)), then x + MLP(LN(x)); causal attention."""

    def forward(self, x, rotary, cache: KVCache | None = None, layer: int = 0):
        B, L, D = x.shape
        q, k, v = self.qkv(self.norm1(x), rotary)
        if cache is None:
            h = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            p = cache.pos
            cache.k[layer, :, :, p:p + L] = k
            cache.v[layer, :, :, p:p + L] = v
            k, v = cache.k[layer, :, :, :p + L], cache.v[layer, :, :, :p + L]
            if L == 1:                       # one new query sees every cached position
                h = F.scaled_dot_product_attention(q, k, v)
            else:                            # query i (position p + i) sees positions ≤ p + i
                mask = torch.ones(L, p + L, dtype=torch.bool, device=x.device).tril(diagonal=p)
                h = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        h = h.transpose(1, 2).reshape(B, L, D)
        x = x + F.dropout(self.attn_out(h), p=self.dropout, training=self.training)
        return x + F.dropout(self.mlp(self.norm2(x)), p=self.dropout, training=self.training)


class ARModel(nn.Module):
    """x [B, L] → logits [B, L, n] of p(x_i | x_<i) (BOS in front); or the fused loss."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        check_shape(config, min_vocab=3, vocab_what="vocab_size (n tokens + BOS)")
        self.config = config
        H = config.hidden_size
        self.vocab_embed = EmbeddingLayer(H, config.vocab_size)
        self.rotary_emb = Rotary(H // config.n_heads)
        self.blocks = nn.ModuleList([CausalBlock(H, config.n_heads, dropout=config.dropout)
                                     for _ in range(config.n_blocks)])
        self.norm_final = LayerNorm(H)
        self.lm_head = nn.Linear(H, config.vocab_size - 1)

    time_independent = False

    @property
    def n(self) -> int:
        return self.config.vocab_size - 1

    @property
    def bos(self) -> int:
        return self.config.vocab_size - 1

    def hidden(self, inputs, cache: KVCache | None = None):
        """Final hidden states [B, L, H] of input ids (BOS included), continuing `cache`."""
        B, L = inputs.shape
        p = 0 if cache is None else cache.pos
        if p + L > self.config.max_length:
            raise ValueError(f"{p + L} positions exceed the autoregressive model's window "
                             f"{self.config.max_length}")
        rotary = self.rotary_emb(L, inputs.device, start=p)
        h = self.vocab_embed(inputs)
        for i, block in enumerate(self.blocks):
            h = block(h, rotary, cache, i)
        if cache is not None:
            cache.pos += L
        return self.norm_final(h)

    def shifted(self, x):
        """[BOS, x_1, …, x_{L−1}]: the inputs whose position i predicts x_i."""
        bos = torch.full_like(x[:, :1], self.bos)
        return torch.cat([bos, x[:, :-1]], 1)

    def forward(self, x, loss: str | None = None, token_weight=None):
        """Logits [B, L, n] (fp32; fp64 for an fp64 model) of x_i given x_<i; with loss="sum"/"mean"/"none" the fused
        cross-entropy (sedd_kernels.linear_cross_entropy) instead — through forward, so DDP/FSDP
        wrappers see the call; token_weight as that op's (reduction "sum")."""
        if x.dim() != 2:
            raise ValueError(f"x must have shape [B, L], got {list(x.shape)}")
        h = self.hidden(self.shifted(x))
        if loss is not None:
            return sk.linear_cross_entropy(h, self.lm_head.weight, self.lm_head.bias, x,
                                           reduction=loss, token_weight=token_weight)
        out = self.lm_head(h)
        return out if out.dtype == torch.float64 else out.float()

    @torch.no_grad()
    def nll(self, x) -> torch.Tensor:
        """Exact −log p(x_1..L) per sequence under the model, [B] float64 nats."""
        return self(x, loss="none").double().sum(1)

    def new_cache(self, B: int, capacity: int, dtype=None, device=None) -> KVCache:
        p = self.lm_head.weight
        c = self.config
        return KVCache(c.n_blocks, B, c.n_heads, capacity, c.hidden_size // c.n_heads,
                       dtype or p.dtype, device or p.device)

    def next_logits(self, inputs, cache: KVCache | None = None):
        """Logits [B, n] of the token after `inputs` (BOS first when there is no cache)."""
        return self.lm_head(self.hidden(inputs, cache)[:, -1])

    def num_parameters(self, non_embedding=True):
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.vocab_embed.embedding.numel() + self.lm_head.weight.numel()
        return n
