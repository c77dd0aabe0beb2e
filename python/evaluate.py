"""The likelihood bound of SEDD.md §4 of a trained model over a dataset.

    python python/evaluate.py --checkpoint runs/sedd --timesteps 128

K timesteps per sequence, stratified over all of [0, 1]; the prior term on its own line (for the
absorbing graph with the log-linear schedule's ε > 0: ε·log n nats per token against the leaky
base); perplexity exp(Σ bound / Σ tokens) with its standard error. On the built-in corpus the
exact NLL of the same sequences and the language's entropy rate are printed too.
"""

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from sedd.checkpoint import CheckpointError  # noqa: E402
from sedd.data import load_corpus  # noqa: E402
from sedd.inference import load_for_inference  # noqa: E402
from sedd.losses import likelihood_bound  # noqa: E402


def evaluate(model, graph, noise, sequences, timesteps, batch_size, seed=0, device="cpu"):
    """Per-sequence bounds, priors and standard errors over a [N, L] tensor of token ids."""
    gen = torch.Generator().manual_seed(seed)
    out = [likelihood_bound(model, sequences[i:i + batch_size].to(device), graph, noise,
                            timesteps, gen) for i in range(0, len(sequences), batch_size)]
    return tuple(torch.cat(parts) for parts in zip(*out))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", help="builtin, a text file/folder, or a datasets name (default: the training data's held-out split)")
    p.add_argument("--timesteps", type=int, default=64, help="K stratified timesteps per sequence")
    p.add_argument("--num-sequences", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if args.timesteps < 2 or args.num_sequences < 2:
        p.error("--timesteps and --num-sequences must be >= 2 (a standard error needs two)")
    try:
        model, graph, noise, tok, cfg = load_for_inference(args.checkpoint, args.device)
    except (CheckpointError, FileNotFoundError) as e:
        sys.exit(f"evaluate.py: {e}")
    train = cfg.get("train", {})
    L = train.get("seq_len", model.config.max_length)
    corpus = load_corpus(args.data or train.get("data", "builtin"), train.get("tokenizer", "gpt2"), L,
                         seed=train.get("seed", 0))
    data = corpus.valid
    n = min(args.num_sequences, len(data))
    x0 = torch.stack([data[i] for i in range(n)])
    bound, prior, se = evaluate(model, graph, noise, x0, args.timesteps, args.batch_size,
                                args.seed, args.device)
    per_token = bound.sum().item() / (n * L)
    # standard error of the mean over sequences (includes the timestep noise) per token
    stderr = bound.std(unbiased=True).item() / math.sqrt(n) / L
    print(f"sequences: {n} of {L} tokens; {args.timesteps} stratified timesteps over [0, 1]")
    print(f"likelihood bound: {per_token:.4f} ± {stderr:.4f} nats/token")
    print(f"prior term: {prior.mean().item() / L:.4f} nats/token (included above)")
    ppl = math.exp(per_token)
    print(f"perplexity bound: {ppl:.3f} ± {ppl * stderr:.3f}")
    if corpus.language is not None:
        exact = -corpus.language.log_likelihood(x0.numpy())
        print(f"exact NLL of these sequences: {exact.mean() / L:.4f} nats/token "
              f"(perplexity {math.exp(exact.mean() / L):.3f}); entropy rate at L = {L}: "
              f"{corpus.language.entropy_rate(L)[0]:.4f}")
        print(f"gap: {per_token - exact.mean() / L:.4f} nats/token")
    return per_token, stderr


if __name__ == "__main__":
    main()
