"""The block-diffusion network (BD3LM, Arriola et al. 2025; docs/math.md §8): the DDiT with the
time-independent ("clean") parametrisation of the absorbing graph and block-causal attention over
blocks of K tokens — a block sees itself and the clean blocks before it, never what follows.

Training runs BD3LM's vectorised form: one forward over [x_t, x_0] (2L positions, each half with
the rotary positions 0..L−1) under the mask in which noised block b attends to itself and to the
clean blocks before b, and clean block b to the clean blocks up to b (`vectorised_mask`); the
noised half's hidden states give log p(x_0 | x_t of the block, the clean blocks before it).

Generation goes block by block (`BlockState`): the keys and values of the committed clean blocks
are cached, so a call on a new block costs K positions plus attention to the cache; without the
cache (use_cache=False) the clean prefix is run again with the block. Past the model's window the
cache keeps the last max_length − K positions (rotary attention depends on distances only)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask

import sedd_kernels as sk

from .ddit import DDiT, real_log_softmax
from .layers import ModelConfig


def vectorised_mask(L: int, K: int, device=None) -> torch.Tensor:
    """The [2L, 2L] bool mask of the vectorised training forward over [x_t, x_0]."""
    b = torch.arange(L, device=device) // K
    q, k = b[:, None], b[None, :]
    top = torch.cat([q == k, k < q], 1)                       # noised queries: own block, clean before
    bottom = torch.cat([torch.zeros_like(q == k), k <= q], 1)  # clean queries: clean up to own block
    return torch.cat([top, bottom], 0)


def block_causal_mask(L: int, K: int, device=None) -> torch.Tensor:
    """[L, L]: position i sees the positions of its own block and of the blocks before it."""
    b = torch.arange(L, device=device) // K
    return b[None, :] <= b[:, None]


@functools.lru_cache(maxsize=32)
def flex_block_mask(L: int, K: int, vectorised: bool, device: str):
    """The flex-attention BlockMask of `vectorised_mask(L, K)` (vectorised=True, 2L × 2L) or of
    `block_causal_mask(L, K)`, built once per shape and device."""
    if vectorised:
        def mask_mod(b, h, q, kv):
            qn, kn = q < L, kv < L                      # the noised half, x_t
            qb, kb = (q % L) // K, (kv % L) // K
            return torch.where(qn, torch.where(kn, qb == kb, kb < qb), ~kn & (kb <= qb))
        n = 2 * L
    else:
        def mask_mod(b, h, q, kv):
            return kv // K <= q // K
        n = L
    return create_block_mask(mask_mod, None, None, n, n, device=device)


class BlockState:
    """What generation has committed: the clean tokens [B, P] and, with the cache, every layer's
    keys and values of the last positions (at most `keep`), in buffers allocated once: a call
    writes its block's keys and values after the cached ones and attends to a view of both (no
    copy of the cache per call); a commit keeps them there. When the buffer is full the last
    `keep` positions move to its front (once every (capacity − keep)/K blocks). A state started
    with gradients enabled keeps its keys and values as tensors of the autograd graph instead
    (no in-place writes: the tests differentiate through block-by-block inference)."""

    def __init__(self, B: int, device, use_cache: bool, keep: int, K: int, length=None):
        self.tokens = torch.zeros(B, 0, dtype=torch.long, device=device)
        self.use_cache, self.keep, self.K = use_cache, keep, K
        self.capacity = 2 * keep + K if length is None else min(2 * keep + K, length + K)
        self.k, self.v = [], []                    # per layer [B, heads, capacity, d]
        self.n = 0                                 # cached positions
        self.functional = torch.is_grad_enabled()
        self.committing = False
        self.pos = 0                               # absolute position of the next token
        self.calls = self.positions = 0            # forward passes, positions they computed
        self.c = self.mods = None                  # the network's (constant) condition and
                                                   # its adaLN vectors, per block and final

    def make_room(self, T: int) -> None:
        if self.k and not self.functional and self.n + T > self.capacity:
            keep = min(self.keep, self.n)
            for buf in (*self.k, *self.v):
                buf[:, :, :keep] = buf[:, :, self.n - keep:self.n].clone()
            self.n = keep

    def extend(self, i: int, k, v, rows=None):
        """Layer i's keys and values for a call on k, v [B', heads, T, d]: the cached ones (of the
        sequences `rows`) followed by these."""
        n, T = self.n, k.shape[2]
        lo = max(0, n - self.keep)                 # the window: the last `keep` positions
        if self.functional:
            if len(self.k) <= i:
                self.k.append(k[:, :, :0])
                self.v.append(v[:, :, :0])
            ck, cv = (self.k[i], self.v[i]) if rows is None else (self.k[i][rows], self.v[i][rows])
            out = torch.cat([ck[:, :, lo:n], k], 2), torch.cat([cv[:, :, lo:n], v], 2)
            if self.committing:
                self.k[i], self.v[i] = torch.cat([self.k[i], k], 2), torch.cat([self.v[i], v], 2)
            return out
        if len(self.k) <= i:                       # first call: allocate the layer's buffers
            shape = (k.shape[0] if rows is None else self.tokens.shape[0], k.shape[1],
                     self.capacity, k.shape[3])
            self.k.append(k.new_empty(shape))
            self.v.append(v.new_empty(shape))
        if rows is not None:                       # a sub-batch (the exact per-sequence cache)
            return (torch.cat([self.k[i][rows, :, lo:n], k], 2),
                    torch.cat([self.v[i][rows, :, lo:n], v], 2))
        self.k[i][:, :, n:n + T] = k
        self.v[i][:, :, n:n + T] = v
        return self.k[i][:, :, lo:n + T], self.v[i][:, :, lo:n + T]


class BlockDDiT(DDiT):
    """log p(x_i = y | the block's tokens, the clean blocks before it), block size config.block_size."""

    training_entry = "vectorised_hidden"     # what --compile compiles (sedd.nn.layers.compile_model)
    projects_rows = False                    # generation goes through BlockView, not rows=

    def __init__(self, config: ModelConfig):
        if not config.block_size or config.block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {config.block_size}")
        if config.parametrisation != "clean":
            raise ValueError("the block-diffusion network is time-independent: parametrisation "
                             "must be 'clean'")
        if config.attention not in ("sdpa", "flex"):
            raise ValueError(f"attention must be 'sdpa' or 'flex', got {config.attention!r}")
        super().__init__(config)

    @property
    def K(self) -> int:
        return self.config.block_size

    def _condition(self, B, device):
        return F.silu(self.sigma_map(torch.zeros(B, device=device)))

    def _mask(self, L, vectorised, device):
        if self.config.attention == "flex":
            return flex_block_mask(L, self.K, vectorised, str(torch.device(device)))
        return (vectorised_mask if vectorised else block_causal_mask)(L, self.K, device)

    def _rotary(self, start, length, device):
        return self.rotary_emb(length, device, start=start)

    def _log_probs(self, hidden, c, mod=None):
        """[B, T, V] float32: log-softmax over the n real tokens, 0 in the mask column."""
        return real_log_softmax(
            self.output_layer.linear(self.output_layer.modulated(hidden, c, mod)).float())

    # ---- training: the vectorised forward
    def vectorised_hidden(self, x_t, x_0, mask):
        """What the output projection reads for the noised half of [x_t, x_0]: [B, L, H], and c;
        mask: the vectorised attention mask (`_mask(L, True, device)`, built outside so that a
        compiled trunk receives it as an input)."""
        B, L = x_t.shape
        c = self._condition(B, x_t.device)
        cos, sin = self.rotary_emb(L, x_t.device)
        rotary = (torch.cat([cos, cos], 1), torch.cat([sin, sin], 1))
        h = self.vocab_embed(torch.cat([x_t, x_0], 1))
        for block in self.blocks:
            h = block(h, rotary, c, attn_mask=mask)
        return self.output_layer.modulated(h[:, :L], c), c

    def block_loss(self, x_t, x_0, token_weight, reduction="sum"):
        """Σ token_weight · (−log p(x_0 | ...)) over the positions with a weight ≠ 0 (the masked
        ones): the fused projection + cross-entropy over the n real tokens on the gathered rows,
        no [B, L, V] logits. reduction "none": per-token values [B, L] (0 where not gathered)."""
        L = x_t.shape[1]
        if L % self.K:
            raise ValueError(f"the sequence length {L} is not a multiple of the block size {self.K}")
        hidden, _ = self.vectorised_hidden(x_t, x_0, self._mask(L, True, x_t.device))
        rows = token_weight.reshape(-1) != 0
        h = hidden.reshape(-1, hidden.shape[-1])[rows]
        w, b = self.output_layer.linear.weight, self.output_layer.linear.bias
        target = x_0.reshape(-1)[rows]
        weight = token_weight.reshape(-1)[rows].to(torch.float32)
        if reduction == "none":
            ce = sk.linear_cross_entropy(h, w[:-1], b[:-1] if b is not None else None, target,
                                         reduction="none")
            out = torch.zeros(x_0.numel(), dtype=ce.dtype, device=ce.device)
            return out.index_put((rows.nonzero().squeeze(1),), ce * weight).view_as(x_0)
        return sk.linear_cross_entropy(h, w[:-1], b[:-1] if b is not None else None, target,
                                       reduction="sum", token_weight=weight)

    def forward(self, x, sigma=None, block_loss=None):
        """With block_loss = dict(x_0=, token_weight=): the training loss (through forward, so
        DDP/FSDP wrappers see the call). Else the clean log-probs [B, L, V] of x under the
        block-causal mask (each block given the blocks of x before it, as they are)."""
        if block_loss is not None:
            return self.block_loss(x, **block_loss)
        B, L = x.shape
        c = self._condition(B, x.device)
        h = self.vocab_embed(x)
        rotary = self._rotary(0, L, x.device)
        mask = self._mask(L, False, x.device)
        for block in self.blocks:
            h = block(h, rotary, c, attn_mask=mask)
        return self._log_probs(h, c)

    # ---- generation, block by block
    def start(self, B: int, device=None, use_cache: bool = True, length=None) -> BlockState:
        """An empty state for B sequences (length: the most tokens they will get, if known: the
        cache's buffers are sized by it)."""
        device = device or self.vocab_embed.embedding.device
        return BlockState(B, device, use_cache, max(0, self.config.max_length - self.K), self.K,
                          length)

    def block_log_probs(self, state: BlockState, x_block, rows=None):
        """Clean log-probs [B', T, V] of a block x_block [B', T] (T ≤ K) after the committed
        tokens of the sequences `rows` (an index tensor [B']; default all B): from the cached
        keys and values, or (no cache) the prefix run again."""
        return self._run(state, x_block, commit=False, rows=rows)

    def commit(self, state: BlockState, x_block) -> None:
        """Append a finished (clean) block of K tokens to the state (its keys and values to the
        cache)."""
        if x_block.shape[1] != self.K:
            raise ValueError(f"commit takes whole blocks of {self.K} tokens, got {x_block.shape[1]}")
        if state.use_cache:
            self._run(state, x_block, commit=True)
        state.tokens = torch.cat([state.tokens, x_block], 1)
        state.pos += x_block.shape[1]

    def _run(self, state, x_block, commit, rows=None):
        if commit and rows is not None:
            raise ValueError("commit appends a block to every sequence: rows must be None")
        B, T = x_block.shape
        if state.c is None:       # one condition for every call (σ is not read): broadcast
            state.c = c = self._condition(1, x_block.device)
            state.mods = ([blk.modulation(c) for blk in self.blocks],
                          self.output_layer.modulation(c))
        c, (mods, final) = state.c, state.mods
        state.calls += 1
        if not state.use_cache:                      # the clean prefix (last `keep`) again
            prefix = state.tokens[:, max(0, state.tokens.shape[1] - state.keep):]
            if rows is not None:
                prefix = prefix.index_select(0, rows)
            x = torch.cat([prefix, x_block], 1)
            P = prefix.shape[1]                      # whole blocks: commit takes whole blocks
            rotary = self._rotary(state.pos - P, P + T, x.device)
            mask = block_causal_mask(P + T, self.K, x.device)    # P + T varies: SDPA
            h = self.vocab_embed(x)
            for block, mod in zip(self.blocks, mods):
                h = block(h, rotary, c, attn_mask=mask, mod=mod)
            state.positions += B * (P + T)
            return self._log_probs(h[:, P:], c, final)
        state.make_room(T)
        state.committing = commit
        rotary = self._rotary(state.pos, T, x_block.device)
        h = self.vocab_embed(x_block)
        for i, (block, mod) in enumerate(zip(self.blocks, mods)):
            h = block(h, rotary, c, kv=functools.partial(state.extend, i, rows=rows), mod=mod)
        state.positions += B * T
        if commit:
            state.n += T
            return None
        return self._log_probs(h, c, final)
