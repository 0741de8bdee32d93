"""What an RL run shows and records: live view or plain lines, metrics.jsonl, reward PNG.

The live view (Rich, on a terminal) and the plain lines show reward mean and variance, exact
accuracy, the shares of zero-signal groups and of groups given the reference answer, answer
length and speed; every rollout batch goes to `metrics.jsonl` through training's
`MetricsWriter`. It knows nothing about models.
Usage: `dash = RLDashboard(total, mode="auto")`; `dash.update(record)`; `plot_rewards(...)`.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Group
from rich.table import Table

from aethermind.training.dashboard import LiveView, read_metrics, sparkline


class RLDashboard(LiveView):
    """RL's view: reward mean and spread, accuracy, zero-signal share, answer length, loss,
    KL, lr, rollout speed and the reward curve."""

    def __init__(self, total_steps: int, *, mode: str = "auto", log_every: int = 1,
                 start_step: int = 0, enabled: bool = True, stream: Any = None) -> None:
        super().__init__(total_steps, label="RL", mode=mode, log_every=log_every,
                         start_step=start_step, enabled=enabled, stream=stream)
        self.rewards: deque[float] = deque(maxlen=400)

    def update(self, m: dict[str, Any]) -> None:
        self.rewards.append(m["reward_mean"])
        if self.mode == "rich":
            table = Table.grid(padding=(0, 2))
            for _ in range(4):
                table.add_column()
            table.add_row("reward", f"{m['reward_mean']:.3f} ± {m['reward_var'] ** 0.5:.3f}",
                          "accuracy", f"{m['accuracy']:.1%}")
            table.add_row("zero-signal groups", f"{m['zero_signal']:.0%}",
                          "answer tokens", f"{m['answer_tokens']:.0f}")
            table.add_row("guided groups", f"{m['guided']:.0%}", "", "")
            table.add_row("loss", f"{m['loss']:.4f}", "kl", f"{m['kl']:.4f}")
            table.add_row("lr", f"{m['lr']:.2e}", "rollout tok/s", f"{m['tokens_per_s']:,.0f}")
            self.show(m["step"], Group(table, f"reward curve  {sparkline(list(self.rewards))}"))
        elif self.plain_due(m["step"]):
            print(f"rl step {m['step']:>5}/{self.total} | reward {m['reward_mean']:.3f} "
                  f"(var {m['reward_var']:.3f}) | acc {m['accuracy']:.1%} | zero-signal "
                  f"{m['zero_signal']:.0%} | guided {m['guided']:.0%} | answer "
                  f"{m['answer_tokens']:.0f} tok | loss "
                  f"{m['loss']:.4f} | {m['tokens_per_s']:,.0f} tok/s", file=self.stream,
                  flush=True)


def plot_rewards(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Reward mean and exact accuracy against RL step as a PNG (headless Agg)."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["reward_mean"] for r in records], label="reward (mean)", linewidth=1)
    ax.plot(steps, [r["accuracy"] for r in records], label="exact accuracy", linewidth=1)
    ax.set_xlabel("RL step (rollout batch)")
    ax.set_ylabel("reward / accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_path)
    return Path(out_path)
