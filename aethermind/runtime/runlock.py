"""One run per output folder: a lock file holding the owner's host and pid.

Two training runs writing one folder would interleave metrics and overwrite each other's
checkpoints, so `train` holds `<output_dir>/.aethermind.lock` for its whole life. The lock is
created with O_EXCL (atomic on local disks), removed on exit, and a lock left by a crashed run
(kill -9, power loss) is detected as stale because its pid no longer runs on this host.
A lock from another host cannot be checked; the message names the file to delete.
A command that runs training inside a folder of its own (the demo) holds a second lock there,
under another `name`. Usage: `with OutputLock(out_dir): ...` (raises LockedError with a
one-line message).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path

from aethermind.runtime.files import pid_alive

LOCK_NAME = ".aethermind.lock"


class LockedError(RuntimeError):
    """The folder is in use by another live run; the message is one line for the user."""


class OutputLock:
    def __init__(self, folder: str | Path, what: str = "training run",
                 name: str = LOCK_NAME, option: str = "output_dir") -> None:
        self.path = Path(folder) / name
        self.what, self.option = what, option  # option: how the user names another folder
        self.held = self.created = False

    def _owner(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def acquire(self) -> None:
        self.created = not self.path.parent.exists()  # an empty folder we made is removed
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # read-only file system, no permission, a file in the way
            raise LockedError(f"cannot create the output folder {self.path.parent} "
                              f"({err.strerror or err}): choose a writable {self.option}") from None
        me = {"host": socket.gethostname(), "pid": os.getpid()}
        for _ in range(3):  # create; if a stale lock is in the way, remove it and retry
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner.get("host") == me["host"] and not pid_alive(int(owner.get("pid", 0))):
                    self.path.unlink(missing_ok=True)  # left by a crashed run
                    continue
                if not owner:  # being written this very moment, or unreadable: not ours
                    owner = {"host": "?", "pid": "?"}
                raise LockedError(
                    f"{self.path.parent} is in use by another {self.what} (pid {owner['pid']} on "
                    f"{owner['host']}): wait for it to finish or use another {self.option}; if no "
                    f"such run exists, delete {self.path}") from None
            except OSError as err:
                if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                    raise LockedError(f"cannot write to {self.path.parent} ({err.strerror}): "
                                      f"choose a writable {self.option}") from None
                raise
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return
        raise LockedError(f"cannot take the lock {self.path}: delete it and retry")

    def release(self) -> None:
        if self.held and self._owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
            if self.created:
                with contextlib.suppress(OSError):  # only succeeds if the run wrote nothing
                    self.path.parent.rmdir()
        self.held = False

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
