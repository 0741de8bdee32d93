"""What the Colab notebook needs beyond the guide's commands: run one from a cell, live curve.

`run_command` runs a guide command as a child process, streams its output into the cell (Colab
does not show a child's own stdout) and raises `CommandFailed` on a non-zero exit, so "Run all"
stops at the first failing step instead of carrying on as `!cmd` would. `train_live` does the
same for `scripts/train.py` while redrawing the loss curve from the run's `metrics.jsonl` in
place under the log (an IPython display handle; plain lines outside a kernel). Stopping the cell
sends the child Ctrl-C, so it saves a checkpoint first and `--resume` continues.
It knows nothing about models or configs; the precision rule it trains by is `dist.gpu_precision`.
Usage (in a cell): `train_live(cmd, "outputs/metrics.jsonl")`.
"""

from __future__ import annotations

import queue
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from aethermind.training.dashboard import plot_losses


class CommandFailed(RuntimeError):
    """A notebook step's command exited non-zero; the message names the command and the code."""


def _spawn(command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(shlex.split(command), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, errors="replace")


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put(None)  # end of output


def _watch(command: str, tick: Callable[[], None], refresh_s: float) -> str:
    """Run `command`, print its lines as they come, call `tick` every `refresh_s`; return the
    output. Ctrl-C (the notebook's stop button) is passed on and waited for, then re-raised."""
    print(f"$ {command}", flush=True)
    proc = _spawn(command)
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
    out: list[str] = []
    done, next_tick = False, time.monotonic() + refresh_s
    try:
        while not done:
            try:
                line = lines.get(timeout=max(0.05, next_tick - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None:
                done = True
            elif line:
                out.append(line)
                print(line, end="", flush=True)
            if done or time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + refresh_s
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # train saves a checkpoint after the current step
        while not done:  # its last lines, up to the end of output (unless already seen)
            line = lines.get()
            done = line is None
            print(line or "", end="", flush=True)
        proc.wait()
        raise
    if proc.wait() != 0:
        raise CommandFailed(f"`{command}` exited with code {proc.returncode}; see its output")
    return "".join(out)


def run_command(command: str) -> str:
    """Run one shell-free command, streaming its output; return the output or raise."""
    return _watch(command, lambda: None, refresh_s=3600.0)


class _LiveCurve:
    """The loss curve of `metrics` as one PNG display, replaced in place when the file grows."""

    def __init__(self, metrics: Path) -> None:
        self.metrics, self.seen, self.handle = metrics, -1, None
        self.png = Path(tempfile.mkdtemp(prefix="aethermind_live_")) / "loss_curve.png"

    def __call__(self) -> None:
        size = self.metrics.stat().st_size if self.metrics.exists() else 0
        if size == self.seen or size == 0:
            return
        try:
            drawn = plot_losses(self.metrics, self.png)
        except ValueError:  # a line caught half-written: the next tick reads it whole
            return
        self.seen = size
        if drawn is not None:
            self._show()

    def _show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:
            return
        if get_ipython() is None:  # a plain interpreter: the log lines are the progress
            return
        image = Image(data=self.png.read_bytes(), format="png")
        if self.handle is None:
            self.handle = display(image, display_id=True)
        else:
            self.handle.update(image)


def train_live(command: str, metrics: str | Path, refresh_s: float = 5.0) -> str:
    """Run a training command; redraw the loss curve from `metrics` every `refresh_s` seconds."""
    return _watch(command, _LiveCurve(Path(metrics)), refresh_s)
