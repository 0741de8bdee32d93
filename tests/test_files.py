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
