"""Learning curves of training runs side by side: the held-out loss each run logged (metrics.csv:
eval_loss, nats per sequence, every --eval-every steps) against training tokens, and the final
figure evaluate.py printed beside it (RUN.eval, if present). Writes a markdown table and a plot.

    python bench/learning_curves.py OUT_DIR RUN_DIR [RUN_DIR ...]

Used for docs/block.md's real-text table (bench/real_text.sh makes the runs). The held-out loss
of a diffusion family is a one-sample estimate of its bound; the AR baseline's is its exact NLL."""

import csv
import json
import os
import re
import sys


def read_run(folder):
    ckpt = os.path.join(folder, "checkpoints")
    latest = open(os.path.join(ckpt, "latest")).read().strip()
    train = json.load(open(os.path.join(ckpt, latest, "config.json")))["train"]
    L = train["seq_len"]
    tokens_per_step = train["batch_size"] * train.get("accum", 1) * L      # one process
    curve = []
    with open(os.path.join(folder, "metrics.csv")) as fh:
        for row in csv.DictReader(fh):
            if row.get("eval_loss"):
                curve.append((int(row["step"]) * tokens_per_step, float(row["eval_loss"]) / L))
    final = None
    ev = folder.rstrip("/") + ".eval"
    if os.path.exists(ev):
        m = re.search(r"(likelihood bound|NLL): ([0-9.]+) ± ([0-9.]+)", open(ev).read())
        if m:
            final = (m.group(1), float(m.group(2)), float(m.group(3)))
    return curve, final


def main(out, runs):
    os.makedirs(out, exist_ok=True)
    data = {os.path.basename(r.rstrip("/")): read_run(r) for r in runs}
    steps = sorted({t for curve, _ in data.values() for t, _ in curve})
    marks = [t for t in steps if t in (steps[len(steps) // 3 - 1], steps[2 * len(steps) // 3 - 1],
                                       steps[-1])]
    lines = ["| run | " + " | ".join(f"held-out @ {t / 1e6:.2f}M tokens" for t in marks)
             + " | final: evaluate.py (nats/token) | perplexity |",
             "|---|" + "---|" * (len(marks) + 2)]
    for name, (curve, final) in data.items():
        at = dict(curve)
        cells = [f"{at[t]:.3f}" if t in at else "—" for t in marks]
        fin = f"{final[1]:.3f} ± {final[2]:.3f} ({'bound' if 'bound' in final[0] else 'exact'})" \
            if final else "—"
        ppl = f"{'≤ ' if final and 'bound' in final[0] else ''}{2.718281828 ** final[1]:.0f}" \
            if final else "—"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {fin} | {ppl} |")
    table = "\n".join(lines)
    open(os.path.join(out, "learning_curves.md"), "w").write(table + "\n")
    with open(os.path.join(out, "learning_curves.csv"), "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["run", "tokens", "held_out_nats_per_token"])
        for name, (curve, _) in data.items():
            w.writerows([name, t, f"{v:.5f}"] for t, v in curve)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for name, (curve, _) in data.items():
            ax.plot([t / 1e6 for t, _ in curve], [v for _, v in curve], label=name,
                    # dashed: the diffusion runs without the variance reductions
                    linestyle="-" if name == "ar" or name.endswith(("-vr", "-ld")) else "--")
        ax.set_xlabel("training tokens (millions)")
        ax.set_ylabel("held-out nats/token (AR: NLL; others: bound estimate)")
        ax.set_ylim(top=min(7.0, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "learning_curves.png"), dpi=110)
    except ImportError:
        pass
    print(table)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python bench/learning_curves.py OUT_DIR RUN_DIR [RUN_DIR ...]")
    main(sys.argv[1], sys.argv[2:])
