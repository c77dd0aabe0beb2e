"""Quality against network calls for bench_decoding.py's rows: the fraction of 8-token windows
the language can emit ("valid-8"; it degrades gracefully where whole samples are never valid)
against calls per token — with exact scores (the sampler's own error) and with the trained tiny
model (what a user gets).

    SEDD_BENCH_JSON=rows.json pytest bench/bench_decoding.py --benchmark-only
    python bench/plot_decoding.py rows.json OUT.png
"""

import json
import sys


def main(src, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in json.load(open(src)) if r.get("suite") == "decoding"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharex=True)
    for ax, who, title in ((axes[0], "exact", "exact scores (the sampler's own error)"),
                           (axes[1], "model", "trained tiny model (what a user gets)")):
        for r in rows:
            if f"{who}_valid" not in r:
                continue
            family = r["impl"].split()[0].split(",")[0]
            marker = {"first_hitting": "*", "analytic": "s", "confidence": "o", "remdm": "^",
                      "ar": "D"}.get(family, "x")
            y = r[f"{who}_valid8"]
            ax.scatter(r["calls_per_token"], y, marker=marker, s=50, alpha=0.7)
            ax.annotate(r["impl"], (r["calls_per_token"], y), fontsize=6, alpha=0.8)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xscale("log")
        ax.set_xlabel("network calls per token")
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel("valid 8-token windows (fraction)")
    fig.tight_layout()
    fig.savefig(out, dpi=130)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python bench/plot_decoding.py ROWS.json OUT.png")
    main(*sys.argv[1:])
