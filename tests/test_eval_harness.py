"""`aethermind eval`: the tiny suite through lm-eval against the project's own pipeline, the
prompts thinking on/off produce, the offline one-line error, the bench card's centring."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aethermind.data import synth
from aethermind.evaluation import bench_card, tiny_tasks
from aethermind.evaluation.suites import SUITES, Benchmark
from aethermind.text import chat_format as cf

ROOT = Path(__file__).resolve().parents[1]
# Families with short traces, so a 2-layer model overfits them in seconds.
TRAINED_TASKS = ("add", "sub", "capital", "chat")
LIMIT = len(synth.TASKS)  # the first document of every family (the file is round-robin)


# --- the bench card's arithmetic ----------------------------------------------------------------
def test_centring_matches_hand_computed_numbers():
    benches = (Benchmark("a", "A", "acc,none", 0.25, False),
               Benchmark("b", "B", "acc_norm,none", 0.5, False),
               Benchmark("c", "C", "exact_match,strict", 0.0, True))
    results = {"a": {"acc,none": 0.40, "acc_stderr,none": 0.05},
               "b": {"acc_norm,none": 0.60, "acc_norm_stderr,none": 0.02},
               "c": {"exact_match,strict": 0.10, "exact_match_stderr,strict": "N/A"}}
    table = bench_card.rows(benches, results, {"a": 100})
    # (0.40 - 0.25) / 0.75 = 0.2; (0.60 - 0.5) / 0.5 = 0.2; (0.10 - 0) / 1 = 0.1
    assert [r["centred"] for r in table] == [0.2, 0.2, 0.1]
    assert bench_card.centred_mean(table) == pytest.approx(0.1667, abs=1e-4)
    assert [r["stderr"] for r in table] == [0.05, 0.02, None]
    assert table[0]["n"] == 100 and table[1]["n"] is None
    assert bench_card.centred(0.25, 0.25) == 0.0 and bench_card.centred(1.0, 0.5) == 1.0
    with pytest.raises(ValueError):
        bench_card.centred(0.5, 1.0)


def test_card_markdown_shows_every_score_and_reference(tmp_path):
    table = bench_card.rows(SUITES["tiny"].benchmarks,
                            {"aethermind_tiny_mc": {"acc,none": 0.5, "acc_stderr,none": 0.05},
                             "aethermind_tiny_gen": {"exact_match,none": 0.25}}, {})
    card = {"suite": "tiny", "think": "on", "lm_eval_version": "0.4.13", "device": "cpu",
            "seconds": 12.0, "commit": "abc", "scores": table,
            "centred_mean": bench_card.centred_mean(table),
            "think_fidelity": {"n": 4, "think_closed": 0.75, "fidelity": 0.5},
            "model": {"path": "m.pt", "variant": "tiny", "params": 1000,
                      "tokens_trained": 2048}, "references": bench_card.reference_dicts()}
    js, md = bench_card.write_card(card, tmp_path)
    text = md.read_text(encoding="utf-8")
    assert "| 50.0 | 5.0 | 25.0 | 33.3 |" in text  # (0.5 - 0.25) / 0.75
    assert "Centred mean (CORE-style): 29.2%" in text  # (33.3 + 25) / 2
    assert "2,048 tokens trained" in text and "SmolLM2-135M" in text and "GPT-2 124M" in text
    assert js.is_file()


# --- the shipped tiny tasks -----------------------------------------------------------------------
def test_shipped_tiny_documents_are_what_the_builder_makes():
    assert tiny_tasks.read_docs(tiny_tasks.GEN_FILE) == tiny_tasks.gen_docs()
    assert tiny_tasks.read_docs(tiny_tasks.MC_FILE) == tiny_tasks.mc_docs()


def test_tiny_choices_hold_exactly_one_answer_the_scorer_accepts():
    for doc in tiny_tasks.read_docs(tiny_tasks.MC_FILE):
        assert len(doc["choices"]) == tiny_tasks.N_CHOICES == round(1 / SUITES["tiny"]
                                                                  .benchmarks[0].baseline)
        right = [synth.score(doc["question"], c) for c in doc["choices"]]
        assert right.index(True) == doc["gold"] and right.count(True) == 1


def test_suite_datasets_are_the_ones_lm_eval_reads():
    pytest.importorskip("lm_eval")
    import yaml
    from lm_eval.tasks import TaskManager

    index = TaskManager().task_index
    for bench in SUITES["standard"].benchmarks:
        cfg: dict = {}
        path = Path(index[bench.task].yaml_path)
        while True:  # follow `include:` the way lm-eval does, the including file winning
            text = path.read_text(encoding="utf-8")
            own = yaml.safe_load("\n".join(ln for ln in text.splitlines() if "!function" not in ln))
            cfg = {**own, **cfg}
            if "include" not in own:
                break
            path = path.parent / own["include"]
        assert bench.datasets == ((cfg["dataset_path"], cfg.get("dataset_name")),), bench.task


# --- offline without the datasets: one line -----------------------------------------------------
def test_missing_datasets_offline_is_one_line(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    run = subprocess.run([sys.executable, "-m", "aethermind.cli", "eval", "--suite", "standard",
                          "--model", str(tmp_path / "never_read.pt")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: no network and not in the Hugging Face cache: "
                               "Rowan/hellaswag, allenai/ai2_arc:ARC-Easy")
    assert "openai/gsm8k:main" in lines[0] and "--suite standard --download" in lines[0]


@pytest.mark.parametrize(("extra", "message"), [
    (["--limit", str(2**64)], "error: --limit 18446744073709551616: must be at least 1"),
    (["--output", "/proc/forge1-card"], "error: --output /proc/forge1-card: cannot create it"),
])
def test_bad_limit_or_output_is_one_line_before_any_evaluation(overfit_final, monkeypatch,
                                                                capsys, extra, message):
    """Checked before the suite runs (it used to run minutes, then fail to write; a huge
    --limit was a traceback from inside lm-eval)."""
    from aethermind.evaluation import eval_cli

    def never(*args, **kwargs):
        raise AssertionError("the suite ran before the options were checked")

    monkeypatch.setattr(eval_cli, "run_suite", never)
    with pytest.raises(SystemExit) as exit_:
        eval_cli.main(["--model", str(overfit_final), "--suite", "tiny", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith(message), err


# --- lm-eval against the project's own pipeline ---------------------------------------------------
def _trained_docs() -> list[dict]:
    docs = tiny_tasks.read_docs(tiny_tasks.GEN_FILE)[:LIMIT]
    return [d for d in docs if d["task"] in TRAINED_TASKS]


@functools.cache
def _overfit_model():
    """A 2-layer model overfit on the held-out answers (with their traces) of four families."""
    from aethermind.model.config import Forge1Config
    from aethermind.model.transformer import Forge1Model
    from aethermind.text.tokenizer import Forge1Tokenizer

    convs = []
    for doc in _trained_docs():
        sol = synth.solve(doc["question"])[1]
        convs.append(cf.Conversation(turns=[cf.Turn(doc["question"], sol.answer, sol.thinking)]))
    tok = Forge1Tokenizer.train([cf.render(c) for c in convs] * 4, vocab_size=420)
    torch.manual_seed(0)
    model = Forge1Model(Forge1Config(vocab_size=tok.get_vocab_size_padded(), dim=64, n_layers=2,
                                     n_heads=4, n_kv_heads=2, ffn_dim=176, max_seq_len=320))
    rows = [cf.encode(c, tok)[0] for c in convs]
    T = max(map(len, rows))
    tokens = torch.full((len(rows), T), tok.pad_id)
    targets = torch.full((len(rows), T), -100)
    for i, ids in enumerate(rows):
        tokens[i, :len(ids)] = torch.tensor(ids)
        targets[i, :len(ids) - 1] = torch.tensor(ids[1:])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(160):
        loss = model(tokens, targets=targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    assert loss.item() < 0.1, f"did not overfit (loss {loss.item():.3f})"
    return model.eval(), tok


@functools.cache
def _lm_eval_run(think: bool) -> dict:
    from aethermind.evaluation.harness import run_suite

    model, tok = _overfit_model()
    tiny = SUITES["tiny"]
    gen_only = dataclasses.replace(tiny, benchmarks=tiny.benchmarks[1:])
    return run_suite(model, tok, gen_only, think=think, batch_size=8, limit=LIMIT)


@pytest.fixture
def one_thread():
    """Tiny ops on a shared, busy CPU stall on OpenMP barriers; one thread is 10x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _project_answers(think: bool, questions: list[str]) -> list[tuple[str, bool]]:
    """(answer, whether the completion is well formed) from the chat's own pipeline."""
    from aethermind.inference.engine import Engine
    from aethermind.inference.sampling import SamplingParams
    from aethermind.inference.thinking import parse_completion

    model, tok = _overfit_model()
    max_new = min(SUITES["tiny"].max_gen_toks, model.config.max_seq_len // 2)
    prompts = [cf.encode_prompt(cf.Conversation(), q, tok, think=think) for q in questions]
    gens = Engine(model, max_batch_size=8).generate_batch(
        prompts, SamplingParams(max_new_tokens=max_new, temperature=0.0),
        cf.stop_ids(tok))
    assistant, end_think = tok.special_ids[cf.ASSISTANT], tok.special_ids[cf.END_THINK]

    def formed(ids: list[int]) -> bool:
        """One <|assistant|>, and only blank text before it since the prompt or <|/think|>."""
        if ids.count(assistant) != 1 or (think and ids.count(end_think) != 1):
            return False
        start = ids.index(end_think) + 1 if think else 0
        return start <= ids.index(assistant) and not tok.decode(
            ids[start:ids.index(assistant)]).strip()

    return [(parse_completion(g.tokens, tok, think=think)[1], formed(list(g.tokens)))
            for g in gens]


@pytest.mark.parametrize("think", [True, False], ids=["think-on", "think-off"])
def test_tiny_exact_match_through_lm_eval_equals_project_scorer(think, one_thread):
    """Every well-formed completion gives lm-eval the answer the chat parser gives, and the
    same exact-match. (Malformed ones may differ: see the harness docstring.)"""
    pytest.importorskip("lm_eval")
    out = _lm_eval_run(think)
    samples = sorted(out["samples"]["aethermind_tiny_gen"], key=lambda s: s["doc_id"])
    ours = _project_answers(think, [s["doc"]["question"] for s in samples])
    formed = [(s, answer) for s, (answer, tagged) in zip(samples, ours, strict=True) if tagged]
    assert formed
    for s, answer in formed:
        assert s["filtered_resps"][0].strip() == answer, s["doc"]["question"]
        assert s["exact_match"] == float(synth.score(s["doc"]["question"], answer))
    lm_eval_em = out["results"]["aethermind_tiny_gen"]["exact_match,none"]
    assert lm_eval_em == pytest.approx(sum(s["exact_match"] for s in samples) / len(samples))
    if think:  # the trained families are answered: not an all-wrong vs all-wrong comparison
        assert sum(s["exact_match"] for s, _ in formed) >= 2, ours


@pytest.mark.parametrize("think", [True, False], ids=["think-on", "think-off"])
def test_think_on_off_prompts_are_the_exported_templates(think, one_thread):
    pytest.importorskip("lm_eval")
    from aethermind.text.chat_template import render_messages

    _, tok = _overfit_model()
    for s in _lm_eval_run(think)["samples"]["aethermind_tiny_gen"]:
        context = s["arguments"][0][0]
        question = s["doc"]["question"]
        assert context == render_messages([{"role": "user", "content": question}],
                                          add_generation_prompt=True, enable_thinking=think)
        assert tok.encode(context, allow_special=True) == cf.encode_prompt(
            cf.Conversation(), question, tok, think=think)
