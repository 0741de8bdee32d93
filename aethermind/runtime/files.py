"""Files on disk, written one way: stage beside the target, fsync, rename into place.

Every file or directory AetherMind writes goes through `staged_path` (or the helpers on top of
it), so a crash, a full disk or a `kill -9` at any moment leaves either the old version under
the real name or the new one, never a half-written file. The stage is `.<name>.tmp<pid>` in
the same folder (a rename only stays atomic within one file system); a directory being
replaced is first moved aside to `.<name>.old<pid>`, because POSIX cannot rename a directory
over a non-empty one. Leftovers of a dead process (the pid in the name no longer runs) are
cleaned by `remove_stale_temp_files`, which `staged_path` runs for its own target first.
Libraries that fail a write without an OSError (torch.save, safetensors raise RuntimeError on
a full disk) are wrapped in `writer_errors`, so every command's `except OSError` gives one line
that names the disk (`write_failure`).
A leaf: it imports nothing from aethermind and not torch at module level (the torch-free data
packing workers write through it).
Usage: `atomic_text("hello\\n", Path("out/a.txt"))`; `with staged_path(out_dir) as tmp: ...`.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

StageKind = Literal["tmp", "old"]
LOW_SPACE = 64 * 2**20  # a failed write with less free than this is reported as a full disk
_KINDS: tuple[StageKind, ...] = ("tmp", "old")


def stage_path(final: Path, kind: StageKind = "tmp", pid: int | None = None) -> Path:
    """`.<name>.<kind><pid>` beside `final`: the one naming rule for staged and set-aside copies."""
    return final.with_name(f".{final.name}.{kind}{os.getpid() if pid is None else pid}")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (zombies count as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable (the rename itself is atomic already)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open directories; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc), since
    the set-and-restore fallback briefly changes it for every thread of the process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_modes(path: Path) -> None:
    """Give a staged file or tree the modes a plain `open()`/`mkdir()` would: 0666/0777 less the
    umask. Some writers (safetensors, tempfile) create owner-only (0600) files, which made an
    exported model folder unreadable to anyone else (issue 23)."""
    mask = _umask()
    for p in [path, *(path.rglob("*") if path.is_dir() else ())]:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def _fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb+") as f:
            os.fsync(f.fileno())


def remove(path: Path) -> None:
    """Delete a file, a symlink or a directory tree; a missing path is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temp_files(directory: str | Path, name: str = "*") -> list[Path]:
    """Clean up after dead writers of `directory/<name>` (a glob); returns what it removed.

    A `.tmp<pid>` stage is deleted. A `.old<pid>` copy is the previous version that a killed
    writer had moved aside: it is put back if nothing replaced it, else deleted. Files of a
    live pid (a writer at work right now) are left alone.
    """
    directory, removed = Path(directory), []
    if not directory.is_dir():
        return removed
    for kind in _KINDS:
        for stale in directory.glob(f".{name}.{kind}*"):
            stem, _, pid = stale.name.rpartition(f".{kind}")
            if not pid.isdigit() or pid_alive(int(pid)):
                continue
            final = directory / stem[1:]
            if kind == "old" and not final.exists():
                os.replace(stale, final)
                continue
            remove(stale)
            removed.append(stale)
    return removed


@contextmanager
def staged_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    The block creates a file or a directory there. On success it is fsynced and renamed over
    `final` (a directory: the old one is moved aside first and deleted after); on any error,
    KeyboardInterrupt included, the stage is deleted and `final` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(final.parent, glob.escape(final.name))
    tmp, old = stage_path(final), stage_path(final, "old")
    remove(tmp)
    try:
        yield tmp
        _normal_modes(tmp)
        _fsync_tree(tmp)
        if tmp.is_dir() and final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        fsync_dir(final.parent)
        remove(old)
    finally:
        remove(tmp)


def _mount_point(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() or not os.path.ismount(path):
        if path.parent == path:
            break
        path = path.parent
    return path


def write_failure(path: str | Path, err: BaseException) -> OSError:
    """An OSError for a writer that failed without one: torch.save and safetensors raise
    RuntimeError / SafetensorError when the disk fills, which the commands' `except OSError`
    would miss (a traceback). It names the disk and what is free on it."""
    path = Path(path)
    mount = _mount_point(path.parent)
    try:
        free = shutil.disk_usage(mount).free
    except OSError:
        free = -1
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    if 0 <= free < LOW_SPACE:
        return OSError(errno.ENOSPC, f"no space left on the disk mounted at {mount} "
                                     f"({free / 1e6:.1f} MB free) while writing {path.name}")
    return OSError(errno.EIO, f"writing {path.name} failed ({first}); the disk mounted at "
                              f"{mount} has {free / 1e6:.0f} MB free")


@contextmanager
def writer_errors(path: str | Path, *types: type[BaseException]) -> Iterator[None]:
    """Re-raise a library writer's own error `types` as `write_failure`'s OSError."""
    try:
        yield
    except types as err:
        raise write_failure(path, err) from None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call `write(binary_file)` on a staged file and rename it over `path`; returns `path`."""
    path = Path(path)
    with staged_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return path


def atomic_text(text: str, path: str | Path) -> Path:
    """Write `text` as UTF-8 to `path` atomically."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """`torch.save(obj)` to `path` atomically."""
    import torch  # here, not at the top: the torch-free packing workers import this module

    with writer_errors(path, RuntimeError):  # torch's zip writer: RuntimeError on a full disk
        return atomic_write(path, lambda f: torch.save(obj, f))
