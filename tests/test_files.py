"""`runtime.files`: every write is staged, renamed whole, and a dead writer's leftovers go."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from aethermind.runtime.files import atomic_text, remove_stale_temp_files, stage_path, staged_path


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_directory_is_replaced_whole_or_not_at_all(tmp_path):
    final = tmp_path / "shards"
    with staged_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("half")
        raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]
    assert (final / "a").read_text() == "old"
    with staged_path(final) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("new")
    assert [p.name for p in final.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["shards"]


def test_a_dead_writers_stage_goes_and_its_set_aside_copy_comes_back(tmp_path):
    dead = _dead_pid()
    stale = stage_path(tmp_path / "x.txt", pid=dead)
    stale.write_text("half")
    aside = stage_path(tmp_path / "run", "old", pid=dead)  # killed between the two renames
    aside.mkdir()
    (aside / "weights").write_text("previous")
    live = stage_path(tmp_path / "y.txt")  # this process: a writer at work
    live.write_text("busy")
    assert remove_stale_temp_files(tmp_path) == [stale]
    assert (tmp_path / "run" / "weights").read_text() == "previous"
    assert live.exists() and not aside.exists()


def test_staging_a_file_cleans_its_own_stale_stage(tmp_path):
    stale = stage_path(tmp_path / "x.txt", pid=_dead_pid())
    stale.write_text("half")
    atomic_text("done", tmp_path / "x.txt")
    assert sorted(os.listdir(tmp_path)) == ["x.txt"]


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_staged_files_get_normal_modes_under_the_umask(tmp_path, mask):
    """safetensors writes 0600 files: inside a staged folder they must come out 0666 & ~umask
    like any file (an exported HF folder was unreadable to other users, issue 23)."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    torch = pytest.importorskip("torch")
    previous = os.umask(mask)
    try:
        with staged_path(tmp_path / "model_hf") as tmp:
            (tmp / "sub").mkdir(parents=True)
            safetensors_torch.save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            os.chmod(tmp / "sub", 0o700)
            (tmp / "sub" / "config.json").write_text("{}")
        atomic_text("x", tmp_path / "single.txt")
    finally:
        os.umask(previous)
    final = tmp_path / "model_hf"
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777
             for p in [final, *final.rglob("*"), tmp_path / "single.txt"]}
    file_mode, dir_mode = 0o666 & ~mask, 0o777 & ~mask
    assert modes == {"model_hf": dir_mode, "model_hf/sub": dir_mode,
                     "model_hf/model.safetensors": file_mode,
                     "model_hf/sub/config.json": file_mode, "single.txt": file_mode}
