"""`aethermind data ...`: synth and pack end to end, dispatch and one-line errors."""

from __future__ import annotations

import json

from aethermind.cli import main as aethermind
from aethermind.data.loader import BatchLoader
from aethermind.data.pack import read_index


def test_synth_then_pack_then_load(tmp_path, tiny_tokenizer, tiny_tokenizer_dir, capsys):
    assert aethermind(["data", "synth", "--output", str(tmp_path), "--n-train", "60",
                       "--n-val", "10"]) == 0
    chats = len((tmp_path / "train.jsonl").read_text().splitlines())
    assert 30 < chats < 60  # some conversations hold several examples as turns
    assert f"wrote 60 examples in {chats} conversations" in capsys.readouterr().out
    shards = tmp_path / "shards"
    assert aethermind(["data", "pack", "--input", str(tmp_path / "train.jsonl"), "--tokenizer",
                       str(tiny_tokenizer_dir), "--output", str(shards), "--context-length", "64",
                       "--workers", "1"]) == 0
    assert f"packed {chats} documents" in capsys.readouterr().out
    index = read_index(shards)
    assert index["tokenizer_fingerprint"] == tiny_tokenizer.fingerprint()
    assert index["context_length"] == 64 and index["layout"] == "packed"
    batch = next(iter(BatchLoader(shards, 2, tokenizer_fingerprint=tiny_tokenizer.fingerprint())))
    assert batch["tokens"].shape == (2, 64)


def test_pack_missing_input_is_one_line_error(tmp_path, capsys):
    rc = aethermind(["data", "pack", "--input", str(tmp_path / "nope.jsonl"), "--output",
                     str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 1 and "no input file" in err and len(err.strip().splitlines()) == 1


def test_unknown_data_command_and_help(capsys):
    assert aethermind(["data", "frobnicate"]) == 2
    assert "unknown command" in capsys.readouterr().err
    assert aethermind(["data", "--help"]) == 0
    assert "preprocess" in capsys.readouterr().out


def test_synth_jsonl_lines_are_text_objects(tmp_path):
    assert aethermind(["data", "synth", "--output", str(tmp_path), "--n-train", "5",
                       "--n-val", "2"]) == 0
    for line in (tmp_path / "val.jsonl").read_text().splitlines():
        assert set(json.loads(line)) == {"text"}
