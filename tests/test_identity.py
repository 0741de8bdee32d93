"""The identity set: 20 built-in pairs about the model, mixed with the user's own data, and a
shrunk fine-tune that learns them (the real 5-minute demo is measured by hand, see the guide)."""

from __future__ import annotations

import json
from types import SimpleNamespace

from _train_helpers import make_cfg, write_chats

from aethermind.data import identity
from aethermind.data.cli import main as data_main
from aethermind.text.chat_format import parse
from aethermind.training import train


def test_the_set_has_twenty_distinct_pairs_about_the_model():
    pairs = identity.load_pairs()
    assert len(pairs) == 20 == len({q for q, _ in pairs})
    assert ("Who made you?", "I was made by the AetherMind project.") in pairs


def test_train_mixes_own_data_and_val_is_the_pairs_once(tmp_path):
    own = write_chats(tmp_path / "own.jsonl", 30, seed=0)
    train_path, val_path = identity.write_identity(tmp_path / "id", own, repeat=3, n_mix=10)
    lines = train_path.read_text(encoding="utf-8").splitlines()
    mine = set(own.read_text(encoding="utf-8").splitlines())
    assert len(lines) == 70 and sum(line in mine for line in lines) == 10
    val = [parse(json.loads(line)["text"]) for line in val_path.read_text().splitlines()]
    assert [(c.turns[0].user, c.turns[0].assistant) for c in val] == identity.load_pairs()
    again, _ = identity.write_identity(tmp_path / "id2", own, repeat=3, n_mix=10)
    assert again.read_text() == train_path.read_text()  # seeded: the same file every time


def test_the_command_writes_the_set_and_refuses_a_missing_mix(tmp_path, capsys):
    assert data_main(["identity", "--output", str(tmp_path / "id")]) == 0
    lines = (tmp_path / "id" / "train.jsonl").read_text().splitlines()
    assert len(lines) == 20 * identity.DEFAULT_REPEAT  # no --mix: the pairs only
    assert data_main(["identity", "--mix", str(tmp_path / "nope.jsonl")]) == 1
    assert "file not found" in capsys.readouterr().err


def test_a_shrunk_fine_tune_learns_the_pairs(tmp_path, tiny_tokenizer_dir):
    base = SimpleNamespace(tok=str(tiny_tokenizer_dir), cache=str(tmp_path / "c0"),
                           train=str(write_chats(tmp_path / "own.jsonl", 64, seed=0)))
    train.train(make_cfg(base, tmp_path / "base", max_steps=6))
    train_path, val_path = identity.write_identity(tmp_path / "id", base.train, repeat=4,
                                                   n_mix=16)
    data = SimpleNamespace(tok=base.tok, cache=str(tmp_path / "c1"), train=str(train_path))
    result = train.train(make_cfg(data, tmp_path / "ft", max_steps=40, context_length=96,
                                  layout="padded", val_data=str(val_path), eval_every=40,
                                  init_from=str(tmp_path / "base" / "final_model")))
    # 40 steps: well on the way (the exact-match target is the hand-measured 5-minute demo).
    assert result["losses"][0] > 3 and result["val_loss"] < 0.5 * result["losses"][0]
