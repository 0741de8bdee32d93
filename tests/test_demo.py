"""`aethermind demo` (what `make demo` runs), shrunk: a tiny model generating a few tokens runs
every stage through the same wiring, and each stage's output is checked against its inputs."""

from __future__ import annotations

import json

import pytest

from aethermind import demo
from aethermind.config import PRESETS
from aethermind.dashboard import read_metrics
from aethermind.data import synth
from aethermind.prompts import TEST_PROMPTS


def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys, monkeypatch):
    # The wiring, not the learning, is under test: a one-layer "tiny", short rows, few
    # validation chats (the 16k-token output layer is most of the cost) keep it to seconds.
    monkeypatch.setitem(PRESETS, "tiny", dict(dim=32, n_layers=1, n_heads=2, n_kv_heads=1,
                                              ffn_dim=64, max_seq_len=256))
    real_config, real_synth = demo._train_config, synth.write_synth
    monkeypatch.setattr(demo, "_train_config", lambda *a, **k: real_config(*a, **k).replace(
        batch_size=2, context_length=64, eval_batches=1))
    monkeypatch.setattr(synth, "write_synth", lambda *a, **k: real_synth(*a, **k | {"n_val": 8}))
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--steps", "2", "--n-train", "100", "--n-test", "3",
                    "--max-new-tokens", "4"])
    assert rc == 0
    final = out / "final_model" / "forge1_tiny_final.pt"
    assert final.is_file() and (out / "final_model" / "tokenizer" / "tokenizer.json").is_file()
    assert json.loads((out / "final_model" / "config.json").read_text())["dim"] == 32
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    report = json.loads((out / "eval.json").read_text())
    assert [r["prompt"] for r in report["prompts"]] == list(TEST_PROMPTS)
    assert all(0 < r["completion_tokens"] <= 4 for r in report["prompts"])
    val_lines = (out / "data" / "val.jsonl").read_text(encoding="utf-8").splitlines()
    assert report["validation"]["documents"] == len(val_lines) == 8
    reasoning = report["reasoning"]
    assert reasoning["n"] == 3 == sum(t["n"] for t in reasoning["per_task"].values())
    assert reasoning["correct"] == sum(s["correct"] for s in reasoning["samples"])
    transcript = (out / "chat_transcript.md").read_text()
    assert transcript.count("**you:**") == len(demo.CHAT_SCRIPT)
    assert all(f"**you:** {message}" in transcript for message in demo.CHAT_SCRIPT)
    assert "done in" in capsys.readouterr().out


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a demo directory"):
        demo.main(["--out", str(tmp_path), "--steps", "1"])
    assert (tmp_path / "precious.txt").read_text() == "keep me"
