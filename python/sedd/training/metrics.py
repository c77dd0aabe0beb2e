"""What a training run reports as it goes: metrics.csv, TensorBoard (tb/), the progress bar, the
loss plot (loss.png) at the end, and sample files (samples/step-N.txt). Only the main process
writes; the others get a logger that does nothing."""

from __future__ import annotations

import csv
import os
import time

COLUMNS = ["step", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s"]


class MetricsLogger:
    def __init__(self, out: str, *, enabled: bool, total_steps: int, start_step: int,
                 tokens_per_step: int, progress: bool):
        self.out, self.enabled, self.tokens_per_step = out, enabled, tokens_per_step
        self.csv_file = self.writer = self.tb = self.bar = None
        self.t_last, self.s_last = time.perf_counter(), start_step
        if not enabled:
            return
        path = os.path.join(out, "metrics.csv")
        new = not os.path.exists(path)
        self.csv_file = open(path, "a", newline="")
        self.writer = csv.writer(self.csv_file)
        if new:
            self.writer.writerow(COLUMNS)
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(os.path.join(out, "tb"))
        except ImportError:
            self.tb = None
        if progress:
            try:
                from tqdm.auto import tqdm
                self.bar = tqdm(total=total_steps, initial=start_step, desc="training")
            except ImportError:
                self.bar = None

    def log(self, step: int, loss: float, eval_loss, lr: float, grad_norm: float):
        """One metrics row (eval_loss "" when there was no evaluation at this step)."""
        if not self.enabled:
            return
        now = time.perf_counter()
        tps = self.tokens_per_step * (step - self.s_last) / max(now - self.t_last, 1e-9)
        self.t_last, self.s_last = now, step
        self.writer.writerow([step, f"{loss:.5f}", eval_loss, f"{lr:.3g}", f"{grad_norm:.4f}",
                              f"{tps:.0f}"])
        self.csv_file.flush()
        if self.tb is not None:
            self.tb.add_scalar("loss/train", loss, step)
            if eval_loss != "":
                self.tb.add_scalar("loss/eval", eval_loss, step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:.0f}",
                                 **({"eval": f"{eval_loss:.3f}"} if eval_loss != "" else {}))

    def advance(self):
        if self.bar is not None:
            self.bar.update(1)

    def close(self):
        for thing in (self.bar, self.csv_file, self.tb):
            if thing is not None:
                thing.close()
        self.bar = self.csv_file = self.tb = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def plot(self):
        """loss.png from metrics.csv (train loss, EMA eval loss), when matplotlib is there."""
        if not self.enabled:
            return
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = list(csv.DictReader(open(os.path.join(self.out, "metrics.csv"))))
        steps = [int(r["step"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, [float(r["loss"]) for r in rows], label="train")
        ev = [(int(r["step"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval (EMA)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats per sequence)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(self.out, "loss.png"), dpi=100)
        plt.close(fig)


def write_samples(out: str, step: int, texts: list[str]) -> str:
    """samples/step-N.txt: the texts, one blank line apart."""
    folder = os.path.join(out, "samples")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"step-{step:08d}.txt")
    with open(path, "w") as fh:
        fh.write("\n\n".join(texts) + "\n")
    return path
