"""What a training run shows and records: Rich live view, plain log lines, metrics.jsonl, PNG.

On a terminal the Rich view redraws in place (progress bar with ETA, loss and a live loss
curve, learning rate, tokens/s, steps/s, memory, epoch). Anywhere else (CI, notebook logs,
a file) it prints one plain line every `log_every` steps, since redraw codes would be noise
there. Every optimizer step also goes to `metrics.jsonl`; TensorBoard is optional and imported
only when asked for. It knows nothing about models: the loop hands it numbers.
Usage: `dash = Dashboard(total_steps, out_dir, mode="auto")`; `dash.update(m)`; `dash.close()`.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

import psutil
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
from rich.table import Table

from aethermind.runtime.files import atomic_text
from aethermind.training.config import Dashboard as DashboardMode

SPARK = "▁▂▃▄▅▆▇█"


def memory_text(device: torch.device) -> str:
    """GPU memory allocated (peak) on CUDA, the process RSS elsewhere."""
    if device.type == "cuda":
        used = torch.cuda.memory_allocated(device) / 2**30
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        return f"{used:.2f} GiB GPU (peak {peak:.2f})"
    return f"{psutil.Process().memory_info().rss / 2**30:.2f} GiB RSS"


def sparkline(values: list[float], width: int = 60) -> str:
    """Loss curve as one line of block characters (the newest `width` points)."""
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[int((v - lo) / span * (len(SPARK) - 1))] for v in values)


class MetricsWriter:
    """Append one JSON object per optimizer step to `metrics.jsonl`, flushed each line."""

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            self._truncate_after(resume_step)
        elif resume_step is None:
            self.path.write_text("", encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")

    def _truncate_after(self, step: int) -> None:
        """Drop lines past the resumed step: the crashed run logged steps that will rerun."""
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by the crash
        atomic_text("".join(f"{line}\n" for line in kept), self.path)  # a crash keeps the old

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def plot_losses(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    """Train (and val) loss against step as a PNG, with matplotlib's headless Agg backend."""
    records = read_metrics(metrics_path)
    if not records:
        return None
    loss_figure(records).savefig(out_path)
    return Path(out_path)


def loss_figure(records: list[dict[str, Any]]) -> Any:  # -> matplotlib.figure.Figure
    """The loss-curve figure of metrics records, the y-axis in log scale: on a linear axis the
    first steps' loss (~7 nats) flattens the late drop in validation loss (issue 25)."""
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    train = [(r["step"], r["loss"]) for r in records if r.get("loss") is not None]
    val = [(r["step"], r["val_loss"]) for r in records if r.get("val_loss") is not None]
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), "o-", label="val loss")
    ax.set_yscale("log")
    # Plain numbers, and labels at 2x, 3x and 5x too: a loss curve spans a decade or two, where
    # the default labels only the powers of ten (as 10^0).
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (nats, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


class LiveView:
    """A run's terminal view: a Rich progress bar and panel on a TTY, plain lines every
    `log_every` steps otherwise, or nothing ('off'); one-off messages that do not break it.
    Training's `Dashboard` and RL's `RLDashboard` say what they show."""

    def __init__(self, total_steps: int, *, label: str, mode: str = "auto", log_every: int = 10,
                 start_step: int = 0, enabled: bool = True, stream: Any = None) -> None:
        self.stream = stream or sys.stdout
        if mode == "auto":
            mode = "rich" if self.stream.isatty() else "plain"
        self.mode = mode if enabled else "off"
        self.total, self.log_every, self.start_step = total_steps, log_every, start_step
        self._live: Live | None = None
        self._progress = self._task = None
        if self.mode == "rich":
            self._progress = Progress(f"[bold]{label}", BarColumn(), MofNCompleteColumn(),
                                      TimeRemainingColumn())
            self._task = self._progress.add_task(label, total=total_steps, completed=start_step)
            self._live = Live(self._progress, console=Console(file=self.stream),
                              refresh_per_second=4, transient=False)
            self._live.start()

    def plain_due(self, step: int) -> bool:
        """Whether plain mode prints this step's line."""
        return self.mode == "plain" and (step % self.log_every == 0 or step == self.total)

    def show(self, step: int, panel: Any) -> None:
        """Rich mode: move the bar to `step` and show `panel` under it."""
        if self._live is not None:
            self._progress.update(self._task, completed=step)
            self._live.update(Group(self._progress, panel))

    def message(self, text: str) -> None:
        """A one-off line (checkpoint saved, resumed...) that does not break the live view."""
        if self._live is not None:
            self._live.console.print(text)
        elif self.mode != "off":
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        """Stop the live view (later messages print as plain lines); idempotent."""
        if self._live is not None:
            self._live.stop()
            self._live = None


class Dashboard(LiveView):
    """Training's view: loss, val loss, lr, grad norm, speed, memory and the loss curve."""

    def __init__(self, total_steps: int, out_dir: str | Path, *, mode: DashboardMode = "auto",
                 log_every: int = 10, start_step: int = 0, tensorboard: bool = False,
                 enabled: bool = True, stream: Any = None) -> None:
        super().__init__(total_steps, label="training", mode=mode, log_every=log_every,
                         start_step=start_step, enabled=enabled, stream=stream)
        self.losses: deque[float] = deque(maxlen=400)
        self.t0 = time.perf_counter()
        self.tb = _tensorboard_writer(Path(out_dir) / "tensorboard") if (
            tensorboard and enabled) else None

    def _render(self, m: dict[str, Any]) -> Any:
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        val = m.get("val_loss")
        table.add_row("loss", _num(m["loss"], ".4f"), "val loss", _num(val, ".4f"))
        table.add_row("lr", f"{m['lr']:.2e}", "grad norm", _num(m["grad_norm"], ".3f"))
        table.add_row("tokens/s", f"{m['tokens_per_s']:,.0f}", "steps/s", f"{m['steps_per_s']:.2f}")
        table.add_row("memory", m["memory"], "epoch", str(m["epoch"]))
        return Group(table, f"loss curve  {sparkline(list(self.losses))}")

    def update(self, m: dict[str, Any]) -> None:
        """Show step metrics `m` (step, loss, lr, grad_norm, tokens_per_s, steps_per_s, ...)."""
        if m.get("loss") is not None:
            self.losses.append(m["loss"])
        if self.tb is not None:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "val_loss"):
                if m.get(key) is not None:
                    self.tb.add_scalar(f"train/{key}", m[key], m["step"])
        if self.mode == "rich":
            self.show(m["step"], self._render(m))
        elif self.plain_due(m["step"]) or (self.mode == "plain" and m.get("val_loss") is not None):
            val = "" if m.get("val_loss") is None else f" | val {m['val_loss']:.4f}"
            print(f"step {m['step']:>6}/{self.total} | loss {_num(m['loss'], '.4f')}{val} | "
                  f"lr {m['lr']:.2e} | grad {_num(m['grad_norm'], '.3f')} | "
                  f"{m['tokens_per_s']:,.0f} tok/s | {m['steps_per_s']:.2f} steps/s | "
                  f"epoch {m['epoch']} | {m['memory']}", file=self.stream, flush=True)

    def close(self) -> None:
        super().close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _tensorboard_writer(log_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise RuntimeError("tensorboard: true needs the tensorboard package: "
                           "pip install tensorboard (or set tensorboard: false)") from None
    return SummaryWriter(log_dir=str(log_dir))
