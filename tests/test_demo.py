"""`aethermind demo` (what `make demo` runs), shrunk to a few steps: every stage wires up."""

from __future__ import annotations

import json

import pytest

from aethermind import demo


def test_demo_runs_every_stage_and_writes_its_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = demo.main(["--out", str(out), "--steps", "4", "--n-train", "300", "--n-test", "4",
                    "--max-new-tokens", "24"])
    assert rc == 0
    final = out / "final_model" / "forge1_tiny_final.pt"
    assert final.is_file() and (out / "final_model" / "tokenizer" / "tokenizer.json").is_file()
    report = json.loads((out / "eval.json").read_text())
    assert "reasoning" in report or "accuracy" in json.dumps(report)
    transcript = (out / "chat_transcript.md").read_text()
    assert transcript.count("**you:**") == len(demo.CHAT_SCRIPT)
    assert "done in" in capsys.readouterr().out


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="not a demo directory"):
        demo.main(["--out", str(tmp_path), "--steps", "1"])
    assert (tmp_path / "precious.txt").read_text() == "keep me"
