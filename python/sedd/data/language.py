"""The built-in corpus: a synthetic English-like language with an exactly computable likelihood.

A hidden Markov model over grammatical states (determiner, adjective, subject and object noun,
verb, adverb, preposition, conjunction, pronoun, sentence end) emits words of a vocabulary of a
few hundred pseudo-English words, all generated deterministically from a seed. Its exact
log-likelihood of any token sequence comes from the forward algorithm, so a model's likelihood
bound can be held against the true entropy of the data. Nothing is read from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..core.losses import log_expm1

# state: (name, category, transitions to (state, weight))
_STATES = [
    ("S-DET", "det", [("S-ADJ", 2), ("S-NOUN", 5)]),
    ("S-ADJ", "adj", [("S-ADJ", 1), ("S-NOUN", 5)]),
    ("S-NOUN", "noun", [("VERB", 6), ("ADV", 1)]),
    ("PRON", "pron", [("VERB", 5), ("ADV", 1)]),
    ("ADV", "adv", [("VERB", 4)]),
    ("VERB", "verb", [("O-DET", 5), ("PREP", 2), ("END", 2), ("CONJ", 1), ("ADV2", 1)]),
    ("ADV2", "adv", [("END", 2), ("PREP", 1)]),
    ("O-DET", "det", [("O-ADJ", 2), ("O-NOUN", 5)]),
    ("O-ADJ", "adj", [("O-ADJ", 1), ("O-NOUN", 5)]),
    ("O-NOUN", "noun", [("END", 5), ("PREP", 2), ("CONJ", 1)]),
    ("PREP", "prep", [("O-DET", 5), ("PRON-O", 1)]),
    ("PRON-O", "pron_o", [("END", 3), ("PREP", 1)]),
    ("CONJ", "conj", [("S-DET", 3), ("PRON", 2)]),
    ("END", "end", [("S-DET", 5), ("PRON", 3)]),
]
_FUNCTION_WORDS = {
    "det": ["the", "a", "this", "that", "every", "some", "no", "my", "our", "their"],
    "pron": ["she", "he", "they", "we", "it", "you", "i"],
    "pron_o": ["her", "him", "them", "us", "it", "me", "you"],
    "prep": ["of", "in", "on", "under", "with", "from", "near", "over", "through", "behind"],
    "conj": ["and", "but", "so", "while", "because", "or"],
    "end": [".", "!", "?"],
}
_CONTENT_SIZES = {"noun": 160, "verb": 90, "adj": 60, "adv": 30}
_ONSETS = ["b", "br", "c", "ch", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n",
           "p", "pl", "r", "s", "sh", "sl", "st", "t", "th", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "oo", "ou"]
_CODAS = ["", "", "n", "r", "l", "s", "t", "m", "nd", "st", "rk", "ng"]
_SUFFIX = {"noun": ["", "", "", "er", "on", "ock"], "verb": ["s", "ed", "es", "ened", "ishes"],
           "adj": ["y", "ish", "en", "ful", "ous"], "adv": ["ly"]}


@dataclass
class Language:
    words: list[str]          # id -> word
    states: list[str]
    start: np.ndarray         # [S] initial (stationary) state distribution
    trans: np.ndarray         # [S, S] P(next state | state)
    emit: np.ndarray          # [S, n] P(word | state)

    @property
    def n(self):
        return len(self.words)

    # ---- tokenizer (word level)
    def encode(self, text: str) -> list[int]:
        index = {w: i for i, w in enumerate(self.words)}
        out = []
        for w in text.replace("!", " ! ").replace("?", " ? ").replace(".", " . ").split():
            if w not in index:
                raise ValueError(f"word {w!r} is not in the built-in language's vocabulary")
            out.append(index[w])
        return out

    def decode(self, ids) -> str:
        text = " ".join(self.words[int(i)] if 0 <= int(i) < self.n else "[MASK]" for i in ids)
        for p in (".", "!", "?"):
            text = text.replace(" " + p, p)
        return text

    # ---- sampling and exact likelihood
    def sample(self, num: int, length: int, seed: int) -> np.ndarray:
        """num sequences of `length` tokens from the stationary chain, deterministic in seed."""
        rng = np.random.default_rng(seed)
        S = len(self.states)
        cum_t = np.cumsum(self.trans, axis=1)
        cum_e = np.cumsum(self.emit, axis=1)
        state = rng.choice(S, size=num, p=self.start)
        out = np.empty((num, length), dtype=np.int64)
        for i in range(length):
            u = rng.random(num)
            out[:, i] = np.minimum((cum_e[state] < u[:, None]).sum(1), self.n - 1)
            u = rng.random(num)
            state = np.minimum((cum_t[state] < u[:, None]).sum(1), S - 1)
        return out

    def log_likelihood(self, seqs, known=None) -> np.ndarray:
        """Exact log p(x_1..L) per sequence (forward algorithm, scaled), [N] float64. With
        `known` ([N, L] bool), the marginal log p(x_known) of the known positions only (the others
        summed over every token): log p(x) − log p(x_known) is the exact conditional
        −NLL of the unknown positions given the known ones (infilling's ground truth)."""
        seqs = np.asarray(seqs, dtype=np.int64)
        N, L = seqs.shape
        known = None if known is None else np.asarray(known, dtype=bool)
        if known is not None and known.shape != seqs.shape:
            raise ValueError(f"known must have the shape of seqs {list(seqs.shape)}, got "
                             f"{list(known.shape)}")
        alpha = self.start[None, :] * self._emission(seqs, known, 0)    # [N, S]
        ll = np.zeros(N)
        with np.errstate(divide="ignore", invalid="ignore"):  # impossible sequences: −inf
            return self._forward(seqs, alpha, ll, known)

    def _emission(self, seqs, known, i):
        e = self.emit[:, seqs[:, i]].T                                   # [N, S]
        if known is not None:
            e = np.where(known[:, i, None], e, 1.0)                      # Σ_y P(y | s) = 1
        return e

    def _forward(self, seqs, alpha, ll, known=None):
        for i in range(seqs.shape[1]):
            if i > 0:
                alpha = (alpha @ self.trans) * self._emission(seqs, known, i)
            c = alpha.sum(1)
            ll += np.log(c)
            alpha = np.where(c[:, None] > 0, alpha / np.where(c > 0, c, 1.0)[:, None], 0.0)
        return ll

    def entropy_rate(self, length: int, num: int = 4000, seed: int = 12345):
        """H(X_1..L)/L in nats per token, estimated as the mean exact NLL of `num` sampled
        sequences, with its standard error."""
        nll = -self.log_likelihood(self.sample(num, length, seed)) / length
        return float(nll.mean()), float(nll.std(ddof=1) / math.sqrt(num))


class LanguageOracle(torch.nn.Module):
    """The exact denoiser of the built-in language for the absorbing graph (mask = n): a
    time-independent ("clean") network whose p(x_i = y | the unmasked tokens of x) is the exact
    conditional of the language, by the forward–backward algorithm over its hidden states — for
    sequences of any length (the language is stationary, so any stretch of it is distributed as
    a sequence of that length). It has the DDiT's clean interface (clean_log_probs,
    log_score_from_clean, forward(x, σ)), so the samplers run on exact scores: what remains of a
    sample's error is the sampler's own. `window` (config.max_length) is None: any length fits
    one window unless sample(window=...) says otherwise."""

    time_independent = True

    def __init__(self, lang: Language):
        super().__init__()
        self.lang = lang
        self.mask = lang.n
        self.register_buffer("initial", torch.from_numpy(lang.start))
        self.register_buffer("trans", torch.from_numpy(lang.trans))
        self.register_buffer("emit", torch.from_numpy(lang.emit))           # [S, n]
        self.config = type("OracleConfig", (), {"max_length": None})()

    def clean_log_probs(self, x):
        """[B, L, n + 1] float32: log p(x_i = y | unmasked tokens) in columns y < n, 0 in the mask
        column (rows of unmasked positions hold their posterior too; nobody reads them)."""
        B, L = x.shape
        masked = x == self.mask
        e = self.emit.T[x.clamp(max=self.mask - 1)]                         # [B, L, S]
        e = torch.where(masked[..., None], torch.ones_like(e), e)
        alpha = torch.empty(B, L, e.shape[-1], dtype=torch.float64, device=x.device)
        a = self.initial[None] * e[:, 0]
        for i in range(L):                       # scaled forward pass: α_i ∝ p(s_i, x_≤i)
            if i > 0:
                a = (a @ self.trans) * e[:, i]
            a = a / a.sum(1, keepdim=True).clamp_min(1e-300)
            alpha[:, i] = a
        post = torch.empty_like(alpha)
        b = torch.ones(B, e.shape[-1], dtype=torch.float64, device=x.device)
        for i in range(L - 1, -1, -1):           # backward pass: β_i ∝ p(x_>i | s_i)
            g = alpha[:, i] * b
            post[:, i] = g / g.sum(1, keepdim=True).clamp_min(1e-300)
            b = self.trans @ (e[:, i] * b).T
            b = b.T / b.T.sum(1, keepdim=True).clamp_min(1e-300)
        probs = post @ self.emit                                            # [B, L, n]
        with torch.no_grad():
            logp = torch.log(probs).float()
        return torch.cat([logp, torch.zeros_like(logp[..., :1])], -1)

    def log_score_offset(self, sigma):
        """As DDiT's (clean parametrisation): −log expm1(σ), [B]."""
        return -log_expm1(sigma.double()).float()

    def log_score_from_clean(self, log_probs, x, sigma):
        """As DDiT.log_score_from_clean: ℓ_y = log p(y | x) − log expm1(σ), 0 at the current token."""
        out = log_probs + self.log_score_offset(sigma)[:, None, None]
        return torch.scatter(out, -1, x[..., None], torch.zeros_like(out[..., :1]))

    def log_score_parts(self, x, sigma, out=None):
        """As DDiT.log_score_parts: (clean log-probs, no bias, the σ offset) — so the samplers'
        fused path (the steps add the offset themselves) runs on exact scores too."""
        return self.clean_log_probs(x), None, self.log_score_offset(sigma)

    def forward(self, x, sigma):
        return self.log_score_from_clean(self.clean_log_probs(x), x, sigma)


def _pseudo_words(rng, count, suffixes, taken):
    words = []
    while len(words) < count:
        w = rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
        if rng.random() < 0.5:
            w += rng.choice(_ONSETS[:12]) + rng.choice(_VOWELS)
        w += rng.choice(suffixes)
        if w not in taken and 2 < len(w) < 12:
            taken.add(w)
            words.append(w)
    return words


def builtin_language(seed: int = 0) -> Language:
    """The project's language: ~400 words, 14 grammatical states; Zipf-distributed emissions."""
    rng = np.random.default_rng(seed)
    taken = {w for ws in _FUNCTION_WORDS.values() for w in ws}
    vocab = {k: list(v) for k, v in _FUNCTION_WORDS.items()}
    for cat, size in _CONTENT_SIZES.items():
        vocab[cat] = _pseudo_words(rng, size, _SUFFIX[cat], taken)
    words = sorted({w for ws in vocab.values() for w in ws})
    index = {w: i for i, w in enumerate(words)}
    names = [s[0] for s in _STATES]
    S, n = len(names), len(words)
    trans = np.zeros((S, S))
    for i, (_, _, nxt) in enumerate(_STATES):
        for name, w in nxt:
            trans[i, names.index(name)] = w
    trans /= trans.sum(1, keepdims=True)
    emit = np.zeros((S, n))
    for i, (_, cat, _) in enumerate(_STATES):
        ws = vocab[cat]
        order = rng.permutation(len(ws))               # a different Zipf ranking per state
        zipf = 1.0 / (np.arange(1, len(ws) + 1) ** 1.1)
        for rank, j in enumerate(order):
            emit[i, index[ws[j]]] = zipf[rank]
        emit[i] /= emit[i].sum()
    # stationary distribution of the state chain
    evals, evecs = np.linalg.eig(trans.T)
    start = np.real(evecs[:, np.argmin(np.abs(evals - 1))])
    start = np.abs(start) / np.abs(start).sum()
    return Language(words, names, start, trans, emit)


class LanguageDataset(torch.utils.data.Dataset):
    """`num` sequences of the built-in language, generated once from `seed` (train and held-out
    splits use different seeds)."""

    def __init__(self, lang: Language, num: int, length: int, seed: int):
        self.lang = lang
        self.data = torch.from_numpy(lang.sample(num, length, seed))

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]


class BlockLanguageOracle(LanguageOracle):
    """The exact block conditionals of the built-in language, with the block-diffusion network's
    generation interface (sedd.nn.block.BlockDDiT: start, block_log_probs, commit): p(x_i = y |
    the committed prefix, the block's unmasked tokens), everything after the block summed out —
    so block-by-block sampling runs on exact scores and what remains is the sampler's error."""

    def __init__(self, lang: Language, block_size: int):
        super().__init__(lang)
        self.config = type("OracleConfig", (), {"max_length": None, "block_size": block_size})()

    def start(self, B, device=None, use_cache=True, length=None):
        device = device or self.trans.device
        return type("OracleState", (), {"tokens": torch.zeros(B, 0, dtype=torch.long,
                                                              device=device),
                                        "calls": 0, "positions": 0})()

    def block_log_probs(self, state, x_block, rows=None):
        prefix = state.tokens if rows is None else state.tokens.index_select(0, rows)
        state.calls += 1
        state.positions += x_block.shape[0] * (prefix.shape[1] + x_block.shape[1])
        return self.clean_log_probs(torch.cat([prefix, x_block], 1))[:, -x_block.shape[1]:]

    def commit(self, state, x_block):
        state.tokens = torch.cat([state.tokens, x_block], 1)
