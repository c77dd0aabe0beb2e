"""`python -m sedd_kernels`: how the extension was built, and a small worked example of the fused
score-entropy loss against its plain-PyTorch reference (value, gradient and time)."""

import argparse
import time

import torch

import sedd_kernels as sk
from sedd_kernels import reference


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--vocab", type=int, default=50258, help="V (GPT-2 + mask: 50258)")
    p.add_argument("--graph", choices=["absorb", "uniform"], default="absorb")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    print(f"sedd-kernels {sk.__version__}, torch {torch.__version__}, build {sk.build_info()}")
    g = torch.Generator(device=args.device).manual_seed(0)
    B, L, V = args.batch, args.length, args.vocab
    log_score = torch.randn(B, L, V, device=args.device, generator=g)
    x_0 = torch.randint(0, V - 1, (B, L), device=args.device, generator=g)
    if args.graph == "absorb":  # mask about half of the positions
        masked = torch.rand(B, L, device=args.device, generator=g) < 0.5
        x_t = torch.where(masked, torch.full_like(x_0, V - 1), x_0)
    else:
        x_t = torch.randint(0, V, (B, L), device=args.device, generator=g)
    sigma = torch.rand(B, device=args.device, generator=g) + 0.1

    def run(fn):
        ls = log_score.clone().requires_grad_(True)
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = fn(ls, x_t, x_0, sigma, args.graph)
        loss.sum().backward()
        if args.device == "cuda":
            torch.cuda.synchronize()
        return loss.detach(), ls.grad, time.perf_counter() - t0

    fused, gf, tf = run(sk.score_entropy)
    ref, gr, tr = run(reference.score_entropy)
    print(f"score_entropy on [{B}, {L}, {V}] {args.graph}, {args.device}:")
    print(f"  mean loss: fused {fused.mean().item():.6f}   reference {ref.mean().item():.6f}")
    print(f"  max |loss difference| {(fused - ref).abs().max().item():.3g}, "
          f"max |gradient difference| {(gf - gr).abs().max().item():.3g}")
    print(f"  forward+backward: fused {tf * 1e3:.1f} ms, reference {tr * 1e3:.1f} ms "
          f"({tr / tf:.1f}x; first calls, see bench/ for timings)")


if __name__ == "__main__":
    main()
