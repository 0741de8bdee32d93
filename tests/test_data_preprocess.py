"""Schema adapters and preprocess: every hub schema, cleaning rules, counts, split, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aethermind.data import preprocess, schemas
from aethermind.data.preprocess import PreprocessConfig
from aethermind.text.chat_format import DEFAULT_SYSTEM_PROMPT, WORD_JOINER, contains_special, parse

ASSETS = Path(__file__).parent / "assets" / "data"
ROOT = Path(__file__).resolve().parent.parent


def _rows(name: str) -> list:
    out = []
    for line in (ASSETS / name).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            out.append(None)
    return out


# --- schema adapters ----------------------------------------------------------------------
def test_openhermes_keeps_system_turn_and_answers_without_thinking():
    conv = schemas.to_conversation(_rows("openhermes.jsonl")[0])
    assert conv.system == "You are a cheerful gardening helper."
    assert len(conv.turns) == 1 and conv.turns[0].thinking is None


def test_openhermes_without_system_gets_default_and_keeps_every_turn():
    conv = schemas.to_conversation(_rows("openhermes.jsonl")[1])
    assert conv.system == DEFAULT_SYSTEM_PROMPT
    assert [t.assistant for t in conv.turns] == ["11 is prime (so is 13).", "After 13 comes 17."]


def test_empty_answer_leaves_no_pair():
    with pytest.raises(schemas.Dropped, match="no_pair"):
        schemas.to_conversation(_rows("openhermes.jsonl")[2])


def test_whitespace_turn_dropped_and_text_nfc_stripped():
    conv = schemas.to_conversation(_rows("openhermes.jsonl")[7])
    assert conv.turns[0].user == "Caf\u00e9 is spelled how?"  # NFC: one code point
    assert conv.turns[0].assistant == "It is spelled caf\u00e9."


def test_special_token_strings_in_data_are_neutralised():
    conv = schemas.to_conversation(_rows("openhermes.jsonl")[6])
    assert not contains_special(conv.turns[0].user) and WORD_JOINER in conv.turns[0].user


def test_wrong_types_are_malformed():
    with pytest.raises(schemas.Malformed):
        schemas.to_conversation(_rows("openhermes.jsonl")[5])
    with pytest.raises(schemas.Malformed):
        schemas.to_conversation(_rows("platypus.jsonl")[2])
    with pytest.raises(schemas.Malformed):
        schemas.to_conversation(["not", "a", "dict"])


def test_platypus_appends_nonempty_input():
    plain, with_input = (schemas.to_conversation(r) for r in _rows("platypus.jsonl")[:2])
    assert plain.turns[0].user == "Explain why ice floats on water."
    assert with_input.turns[0].user.endswith("\n\nThe meeting moved from Tuesday to Thursday "
                                             "because the room was booked.")


def test_openthoughts_markers_become_think_block_and_system_is_replaced():
    conv = schemas.to_conversation(_rows("openthoughts.jsonl")[0])
    assert conv.system == DEFAULT_SYSTEM_PROMPT
    assert conv.turns[0].thinking == "A spider has 8 legs.\n\n3 * 8 = 24."
    assert conv.turns[0].assistant == "Three spiders have 24 legs."


def test_openthoughts_without_markers_is_a_no_think_answer():
    conv = schemas.to_conversation(_rows("openthoughts.jsonl")[1])
    assert conv.turns[0].thinking is None and conv.turns[0].assistant == "Rapid."


def test_openthoughts_unbalanced_markers_are_dropped():
    with pytest.raises(schemas.Dropped, match="unbalanced_markers"):
        schemas.to_conversation(_rows("openthoughts.jsonl")[2])


def test_gsm8k_working_is_thinking_without_annotations_and_final_is_answer():
    conv = schemas.to_conversation(_rows("gsm8k.jsonl")[0])
    assert conv.turns[0].thinking == ("Mia has 4 * 6 = 24 pencils.\n"
                                      "After giving 5 away she has 24 - 5 = 19.")
    assert conv.turns[0].assistant == "The answer is 19."
    with pytest.raises(schemas.Malformed, match="####"):
        schemas.to_conversation(_rows("gsm8k.jsonl")[1])


def test_messages_schema_system_and_multi_turn():
    first, multi, lonely = _rows("messages.jsonl")
    assert schemas.to_conversation(first).system == "Answer in one short sentence."
    assert len(schemas.to_conversation(multi).turns) == 2
    with pytest.raises(schemas.Dropped):
        schemas.to_conversation(lonely)


# --- preprocess ---------------------------------------------------------------------------
@pytest.fixture
def run(tmp_path, default_tokenizer):
    def _run(**kw):
        cfg = PreprocessConfig(raw_dir=ASSETS, output=tmp_path / "train.jsonl", **kw)
        return {s.name: s for s in preprocess.preprocess(cfg, default_tokenizer)}, cfg
    return _run


def test_counts_per_dataset_and_reason(run):
    stats, _ = run(val_fraction=0.0)
    got = {n: (s.read, s.kept, dict(s.dropped)) for n, s in stats.items()}
    assert got == {
        "openhermes": (8, 4, {"no_pair": 1, "duplicate": 1, "malformed": 2}),
        "platypus": (3, 2, {"malformed": 1}),
        "openthoughts": (3, 2, {"unbalanced_markers": 1}),
        "gsm8k": (2, 1, {"malformed": 1}),
        "messages": (3, 2, {"no_pair": 1}),
    }
    assert stats["openhermes"].malformed_at == [f"{ASSETS / 'openhermes.jsonl'}:5",
                                                f"{ASSETS / 'openhermes.jsonl'}:6"]
    assert list(stats)[:3] == ["openhermes", "platypus", "openthoughts"]


def test_output_is_valid_forge1_text_split_deterministically(run, tmp_path):
    run(val_fraction=0.3)
    train = (tmp_path / "train.jsonl").read_text(encoding="utf-8")
    val = (tmp_path / "val.jsonl").read_text(encoding="utf-8")
    run(val_fraction=0.3)
    assert (tmp_path / "train.jsonl").read_text(encoding="utf-8") == train
    texts = [json.loads(line)["text"] for line in (train + val).splitlines()]
    assert len(texts) == 11 == len(set(texts)) and val
    for text in texts:
        parse(text)
    assert not list(tmp_path.glob(".*.tmp*"))


def test_max_samples_caps_each_dataset(run):
    stats, _ = run(max_samples=1)
    assert all(s.kept == 1 for s in stats.values())


def test_token_limit_drops_and_counts(run):
    stats, _ = run(max_tokens=60)
    assert sum(s.dropped["too_long"] for s in stats.values()) > 0
    assert stats["gsm8k"].dropped["too_long"] == 1


def test_think_limit_drops_long_traces_whole_and_keeps_the_rest(run, tmp_path,
                                                                 default_tokenizer):
    unlimited, _ = run(val_fraction=0.0)
    stats, _ = run(val_fraction=0.0, max_think_tokens=8)
    dropped = sum(s.dropped["think_too_long"] for s in stats.values())
    assert dropped > 0
    assert sum(s.kept for s in stats.values()) == sum(s.kept for s in unlimited.values()) - dropped
    kept = [parse(json.loads(line)["text"])
            for line in (tmp_path / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    traces = [t.thinking for conv in kept for t in conv.turns if t.thinking]
    # Dropped, never truncated: what is left is whole traces within the limit.
    assert all(len(default_tokenizer.encode(t)) <= 8 for t in traces)
    assert stats["openhermes"].dropped["think_too_long"] == 0  # no thinking: never dropped


def test_missing_input_file_is_a_clear_error(tmp_path, capsys):
    rc = preprocess.main(["--input", str(tmp_path / "nope.jsonl"), "--output",
                          str(tmp_path / "t.jsonl")])
    assert rc == 1 and "input file not found" in capsys.readouterr().err
    rc = preprocess.main(["--raw-dir", str(tmp_path / "empty"), "--output",
                          str(tmp_path / "t.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1 and "download_datasets.py" in err and "synth" in err


def test_command_line_is_the_config(tmp_path, monkeypatch):
    """Every PreprocessConfig field is a flag whose default is the field's default."""
    seen = []
    monkeypatch.setattr(preprocess, "preprocess", lambda cfg, tok: seen.append(cfg) or [])
    monkeypatch.setattr(preprocess, "print_summary", lambda stats, cfg: None)
    assert preprocess.main([]) == 0
    assert seen.pop() == PreprocessConfig()
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert preprocess.main(["--raw-dir", "r", "--output", "o/t.jsonl", "--val-output", "v.jsonl",
                            "--max-samples", "7", "--max-tokens", "0", "--val-fraction", "0.5",
                            "--input", str(a), "--input", str(b)]) == 0
    assert seen.pop() == PreprocessConfig(
        raw_dir=Path("r"), output=Path("o/t.jsonl"), val_output=Path("v.jsonl"), max_samples=7,
        max_tokens=0, val_fraction=0.5, inputs=(a, b))


def test_guide_script_runs_from_repo_root(tmp_path):
    out = tmp_path / "train.jsonl"
    proc = subprocess.run(
        [sys.executable, "data/preprocess.py", "--max-samples", "100", "--raw-dir", str(ASSETS),
         "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "openthoughts" in proc.stdout and "total" in proc.stdout
    lines = out.read_text(encoding="utf-8").splitlines() + \
        (tmp_path / "val.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 11 and all(parse(json.loads(x)["text"]) for x in lines)
