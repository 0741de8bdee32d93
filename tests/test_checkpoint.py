"""Checkpoints: atomic writes, keep-last-K, corrupt ones skipped, safe loading, final export."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.runtime.files import atomic_torch_save, atomic_write


def state(step: int) -> dict:
    return {"step": step, "model": {"w": torch.full((3,), float(step))}, "optimizer": {},
            "config": {"variant": "tiny"}, "tokenizer_fingerprint": "abc"}


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = ckpt.save_checkpoint(state(5), tmp_path, 5)
    assert path.name == "step_0000005.pt"
    assert [p.name for p in tmp_path.iterdir()] == ["step_0000005.pt"]
    assert torch.equal(ckpt.load_checkpoint(path)["model"]["w"], torch.full((3,), 5.0))


def test_a_failed_write_keeps_the_old_file(tmp_path):
    ckpt.save_checkpoint(state(1), tmp_path, 1)
    target = tmp_path / "step_0000001.pt"

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, boom)
    assert ckpt.load_checkpoint(target)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000001.pt"]


def test_keeps_only_the_newest_k(tmp_path):
    for step in (2, 4, 6, 8, 10):
        ckpt.save_checkpoint(state(step), tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_0000008.pt",
                                                                  "step_0000010.pt"]


def test_truncated_newest_is_skipped_with_a_warning(tmp_path):
    ckpt.save_checkpoint(state(2), tmp_path, 2)
    newest = ckpt.save_checkpoint(state(4), tmp_path, 4)
    newest.write_bytes(newest.read_bytes()[:100])  # what a crash mid-copy could leave
    with pytest.warns(UserWarning, match=r"skipping .*step_0000004.pt: unreadable checkpoint"):
        path, loaded = ckpt.latest_valid(tmp_path)
    assert path.name == "step_0000002.pt" and loaded["step"] == 2


def test_no_checkpoint_gives_none(tmp_path):
    assert ckpt.latest_valid(tmp_path / "missing") is None


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_loading_never_executes_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "step_0000009.pt"
    torch.save({**state(9), "payload": _Evil()}, bad)
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        ckpt.load_checkpoint(bad)
    assert not (tmp_path / "PWNED").exists()


def test_incomplete_state_is_rejected(tmp_path):
    path = tmp_path / "step_0000001.pt"
    torch.save({"step": 1}, path)
    with pytest.raises(ValueError, match="not a complete AetherMind checkpoint"):
        ckpt.load_checkpoint(path)


def test_rng_state_round_trips_through_a_safe_load(tmp_path):
    atomic_torch_save(ckpt.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_final_model_layout_loads_as_the_guide_does(tmp_path, tiny_config, tiny_tokenizer):
    model = Forge1Model(tiny_config)
    final = tmp_path / "final_model"
    path = write_final(model.state_dict(), tiny_config, tiny_tokenizer, final_dir(tmp_path), "tiny")
    assert path == final / "forge1_tiny_final.pt"
    cfg = Forge1Config.from_dict(json.loads((final / "config.json").read_text()))
    assert (final / "tokenizer" / "tokenizer.json").is_file()
    again = Forge1Model(cfg)
    again.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    tokens = torch.randint(0, cfg.vocab_size, (1, 6))
    assert torch.equal(model(tokens), again(tokens))
