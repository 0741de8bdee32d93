"""How a training run is asked to stop: signals become a flag the loop reads at a step boundary.

SIGINT (Ctrl-C), SIGTERM and SIGHUP all end a run the same way: the step finishes, a checkpoint
is written, the process exits 128 + signal. It knows nothing of the loop; `train.py` polls it.
Usage: `with StopFlag() as stop: ... if stop.signum is not None: save and leave`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any

from aethermind.runtime import dist


class StopFlag:
    """SIGINT (Ctrl-C), SIGTERM (kill, a scheduler's preemption) and SIGHUP (the terminal was
    closed) set a flag; the loop saves a checkpoint at the step boundary and exits 128 + signal.

    After SIGHUP the terminal is gone and every write to it fails with EIO, which would crash
    the run before its checkpoint: the descriptors that were a terminal at entry are pointed at
    /dev/null (files and pipes keep their output), and put back on exit if the terminal is
    still there (a `kill -HUP`).
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                    if hasattr(signal, name))  # Windows has no SIGHUP

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        self._terminals: list[int] = []  # stdout/stderr descriptors that were a tty at entry
        self._saved_fds: dict[int, int] = {}  # fd -> a dup of it, while it points at /dev/null

    def __enter__(self) -> StopFlag:
        if not _in_main_thread():
            return self
        # Checked now: once the terminal has hung up, isatty() on it is False.
        self._terminals = [fd for fd in (1, 2) if os.isatty(fd)]
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        # Python runs this between any two bytecodes of the main thread: in the middle of a
        # Rich render, a half-done import or a buffered write. So it only sets the flag and
        # writes its note with one raw os.write: a print here went through Rich's stderr
        # proxy, re-rendered the live view mid-render and crashed the run (an ImportError of
        # a half-imported module, exit 1 instead of 128 + SIGHUP, one run in ten under load).
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (the last checkpoint stays)
        if signum == getattr(signal, "SIGHUP", None):
            self._detach_terminal()
        first = self.signum is None
        self.signum = signum
        if not first or not dist.is_main():
            return
        note = "finishing this step, then saving a checkpoint"
        if signum == signal.SIGINT:
            note = f"Ctrl-C: {note}; press Ctrl-C again to stop at once"
        else:
            note = f"{signal.Signals(signum).name}: {note}"
        with contextlib.suppress(OSError):  # a closed or hung-up stderr: the flag is what counts
            os.write(2, f"\n{note}\n".encode())

    def _detach_terminal(self) -> None:
        null = os.open(os.devnull, os.O_WRONLY)
        for fd in self._terminals:
            if fd not in self._saved_fds:
                self._saved_fds[fd] = os.dup(fd)
                os.dup2(null, fd)
        os.close(null)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        for fd, saved in self._saved_fds.items():
            if os.isatty(saved):  # a SIGHUP with the terminal still there (kill -HUP): put it back
                with contextlib.suppress(OSError, ValueError, AttributeError):
                    (sys.stdout if fd == 1 else sys.stderr).flush()  # into /dev/null
                os.dup2(saved, fd)
            os.close(saved)  # a hung-up terminal stays replaced: writes to it would fail
        self._saved_fds.clear()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
