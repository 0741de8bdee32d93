"""`aethermind evaluate`: the JSON report, validation loss, reasoning accuracy, clear errors."""

from __future__ import annotations

import gc
import json
import math
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from _infer_helpers import CONVERSATIONS, make_tokenizer, train_tiny

from aethermind.data import synth
from aethermind.evaluation import evaluate
from aethermind.evaluation.evaluate import (
    ValidationSet,
    main,
    reasoning_accuracy,
    validation_loss,
)
from aethermind.inference.engine import Engine
from aethermind.text import chat_format as cf
from aethermind.text.prompts import GUIDE_PROMPTS, TEST_PROMPTS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained_ckpt(overfit_final):
    """(a fresh copy of the overfit model, its tokenizer, the shared read-only final file)."""
    tok = make_tokenizer()
    return train_tiny(tok), tok, overfit_final


@pytest.fixture
def val_file(tmp_path):
    path = tmp_path / "val.jsonl"
    lines = [json.dumps({"text": cf.render(c)}) for c in CONVERSATIONS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_json_report_has_every_part(trained_ckpt, val_file, tmp_path):
    out = tmp_path / "report.json"
    rc = main(["--model", str(trained_ckpt[2]), "--val", str(val_file), "--n-test", "6",
               "--n-phrasing", "12", "--n-beyond", "5", "--n-rewordings", "3",
               "--max-new-tokens", "12", "--batch-size", "4", "--json", str(out)])
    assert rc == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    # issue 18's splits: held-out phrasings, past the range, both hidden sets of rewordings
    assert [s["question"] for s in report["phrasing"]["samples"]] == \
        [e.question for e in synth.make_split("phrasing", 12)]
    assert set(report["beyond"]["per_task"]) == set(synth.BEYOND_TASKS)
    assert report["rewordings"]["n"] == report["blind"]["n"] == 3
    assert [r["prompt"] for r in report["prompts"]] == list(TEST_PROMPTS)
    for row in report["prompts"]:
        assert {"used_thinking", "thinking", "answer", "completion_tokens", "seconds",
                "tokens_per_second"} <= set(row)
        assert 0 < row["completion_tokens"] <= 12
    val = report["validation"]
    assert val["documents"] == len(CONVERSATIONS) and val["loss"] < 0.5
    assert math.isclose(val["perplexity"], math.exp(val["loss"]), rel_tol=1e-3)
    reasoning = report["reasoning"]
    samples = reasoning["samples"]
    assert reasoning["n"] == len(samples) == 6
    assert [s["question"] for s in samples] == [e.question for e in synth.make_split("test", 6)]
    for s in samples:  # each verdict is the checker's on the parsed answer
        assert s["correct"] == synth.score(s["question"], s["answer"])
    assert reasoning["correct"] == sum(s["correct"] for s in samples)
    assert reasoning["accuracy"] == round(reasoning["correct"] / 6, 4)
    for task, t in reasoning["per_task"].items():
        mine = [s for s in samples if s["task"] == task]
        assert (t["n"], t["correct"]) == (len(mine), sum(s["correct"] for s in mine))
    assert sum(t["n"] for t in reasoning["per_task"].values()) == 6


def test_test_prompts_are_the_guides():
    """The guide says how many prompts `evaluate` runs and quotes five of them."""
    text = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    section = text[text.index("### Run Evaluation Suite"):text.index("### Manual Testing")]
    count = re.search(r"This runs (\d+) test prompts", section)
    assert count and int(count.group(1)) == len(TEST_PROMPTS)
    quoted = re.findall(r'^- [^(]*\("(.*?)(?:\.\.\.)?"\)', section, re.MULTILINE)
    assert len(quoted) == len(GUIDE_PROMPTS)
    for quote, prompt in zip(quoted, GUIDE_PROMPTS, strict=True):  # the guide writes "60mph"
        assert prompt.replace(" ", "").startswith(quote.replace(" ", "")), (quote, prompt)


def test_validation_loss_scores_response_tokens_only(trained_ckpt, val_file):
    model, tok, _ = trained_ckpt
    val = validation_loss(model, tok, val_file, batch_size=3)
    expected = sum(sum(cf.encode(c, tok)[1][1:]) for c in CONVERSATIONS)
    assert val["tokens"] == expected
    with torch.no_grad():  # one document at a time gives the same mean
        total = 0.0
        for c in CONVERSATIONS:
            ids, mask = cf.encode(c, tok)
            targets = torch.tensor(ids[1:])
            targets[torch.tensor(mask[1:]) == 0] = -100
            loss = torch.nn.functional.cross_entropy(model(torch.tensor([ids[:-1]]))[0], targets,
                                                     ignore_index=-100)
            total += loss.item() * int((targets != -100).sum())
    assert math.isclose(val["loss"], total / expected, rel_tol=1e-3, abs_tol=1e-4)


def test_reasoning_accuracy_uses_score_on_parsed_answers(trained_ckpt, monkeypatch):
    model, tok, _ = trained_ckpt
    # The tiny model always says "The answer is 4."; make "4" the right answer for every task.
    monkeypatch.setattr(synth, "score", lambda q, a: a == "The answer is 4.")
    examples = [synth.SynthExample("add", "What is 2+2?", None, "4"),
                synth.SynthExample("sort", "Sort 3, 1, 2", None, "1, 2, 3")]
    monkeypatch.setattr(synth, "make_split", lambda split, n, seed=0: examples[:n])
    acc = reasoning_accuracy(Engine(model, max_batch_size=2), tok, 2, max_new_tokens=40)
    assert acc["per_task"] == {"add": {"n": 1, "correct": 1, "accuracy": 1.0},
                               "sort": {"n": 1, "correct": 0, "accuracy": 0.0}}
    assert acc["samples"][0]["answer"] == "The answer is 4."
    assert acc["accuracy"] == 0.5


def test_reasoning_accuracy_tells_a_wrong_copy_from_a_wrong_step(trained_ckpt, monkeypatch):
    """Per task, `first_line` is the share whose thinking starts with the reference's copy
    line and `trace` the share that is the reference line for line; a task without reference
    traces gets neither."""
    model, tok, _ = trained_ckpt
    questions = ("What is 45 + 67?", "What is 38 + 19?", "What is 71 + 26?")
    examples = [synth.SynthExample("add", q, synth.solve(q)[1].thinking, synth.solve(q)[1].answer)
                for q in questions] + [synth.SynthExample("chat", "Hi!", None, "Hello!")]
    right = examples[0].thinking
    step_wrong = examples[1].thinking.replace("8+9=17", "8+9=16")
    copy_wrong = examples[2].thinking.replace("71+26:", "71+62:", 1)
    assert step_wrong != examples[1].thinking and copy_wrong != examples[2].thinking
    outputs = iter([(right, "The answer is 112."), (step_wrong, "The answer is 56."),
                    (copy_wrong, "The answer is 97."), ("", "Hello!")])
    monkeypatch.setattr(evaluate, "parse_completion", lambda ids, tok: (*next(outputs), True))
    acc = reasoning_accuracy(Engine(model, max_batch_size=4), tok, max_new_tokens=4,
                             examples=examples)
    assert acc["per_task"]["add"] == {"n": 3, "correct": 2, "accuracy": 0.6667,
                                      "first_line": 0.6667, "trace": 0.3333}
    assert set(acc["per_task"]["chat"]) == {"n", "correct", "accuracy"}


def _run_script(*args):
    return subprocess.run([sys.executable, "scripts/evaluate.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flag", ["--n-test", "--n-phrasing", "--n-beyond", "--n-rewordings"])
@pytest.mark.parametrize("value", ["-1", "1000001"])
def test_split_sizes_out_of_range_are_one_line_errors(flag, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "nowhere.pt", flag, value])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"{flag} {value}: must be between 0 and" in err


def test_missing_checkpoint_is_one_line_error(tmp_path):
    """The guide's script as a process: exit code and stderr as a user sees them."""
    proc = _run_script("--model", str(tmp_path / "none.pt"), "--variant", "nano")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: checkpoint not found")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_wrong_variant_is_one_line_error(trained_ckpt, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--model", str(trained_ckpt[2]), "--variant", "nano"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--variant nano does not match" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_report_table_wraps_words_not_letters_at_80_columns():
    """At 80 columns every line fits and no word of a prompt, thinking or answer is split (eight
    columns used to fold every ~10 characters: "Photosynth / esis"); model text is not markup."""
    import io

    from rich.console import Console

    from aethermind.evaluation import evaluate

    thinking = "Let me think step by step. 15 * 23 = 15 * 20 + 15 * 3 = 300 + 45 = 345."
    answer = "Photosynthesis turns sunlight into chemical energy; sorted: [1, 2, 5, 8, 9]."
    rows = [{"prompt": p, "used_thinking": i % 2 == 0, "thinking": thinking if i % 2 == 0
             else "", "answer": answer, "completion_tokens": 123, "seconds": 12.34,
             "tokens_per_second": 9.97} for i, p in enumerate(TEST_PROMPTS)]
    console = Console(width=80, file=io.StringIO(), color_system=None)
    evaluate._print_report({"prompts": rows}, console)
    lines = console.file.getvalue().splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    for text in (*TEST_PROMPTS, thinking, answer):
        for word in text.split():
            assert any(word in line for line in lines), word
    assert sum("123 tok" in line for line in lines) == len(TEST_PROMPTS)


def test_an_unusable_validation_file_leaves_no_temporary_folder(tmp_path, monkeypatch):
    """The folder is removed at once, not by the garbage collector later (whose warning then
    lands in whatever command runs next in the process)."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="no usable documents"):
            ValidationSet(empty, make_tokenizer(), 64)
        gc.collect()
    assert list(scratch.iterdir()) == []
    assert not [w for w in caught if "Implicitly cleaning up" in str(w.message)]
