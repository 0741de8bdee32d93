"""`aethermind rl`: a toy run where the reward rises, exact resume after SIGINT, strict config.

The starting model is a random tiny model (no training); the toy task is a reward a random
model does not earn (`_rl_helpers.fours`), so a rising reward is the policy gradient's doing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _infer_helpers import make_tokenizer, save_final, tiny_config

from aethermind.artifacts.loading import load_model
from aethermind.inference.sampling import SamplingParams
from aethermind.model.transformer import Forge1Model
from aethermind.rl import loop, rollout, sources
from aethermind.rl.cli import main as rl_main
from aethermind.rl.config import ConfigError, dump_yaml, keys, load_rl_config
from aethermind.rl.rewards import parse_rewards
from aethermind.text import chat_format as cf
from aethermind.training.dashboard import read_metrics

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> str:
    tok = make_tokenizer()
    torch.manual_seed(0)
    model = Forge1Model(tiny_config(tok))
    return str(save_final(model, tok, tmp_path_factory.mktemp("rl_start")).parent)


def _config(model: str, out, **overrides):
    base = dict(model=model, device="cpu", prompts="jsonl", rewards="_rl_helpers:fours",
                prompts_per_step=4, group_size=8, max_new_tokens=8, temperature=1.0,
                learning_rate=1e-2, max_steps=4, checkpoint_every=0, dashboard="off",
                output_dir=str(out), seed=3)
    base.update(overrides)
    prompts = out.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"question": f"What is {i}+{i}?",
                                           "answer": f"#### {2 * i}"}) + "\n"
                               for i in range(1, 9)), encoding="utf-8")
    base["prompt_file"] = str(prompts)
    return load_rl_config(None, [f"{k}={v}" for k, v in base.items()])


def test_reward_rises_on_a_task_the_random_model_cannot_do(random_model, tmp_path):
    cfg = _config(random_model, tmp_path / "run", max_steps=12)
    result = loop.rl(cfg)
    assert result["status"] == "completed"
    records = [json.loads(line) for line in
               (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["reward_mean"] for r in records[:3]) / 3
    last = sum(r["reward_mean"] for r in records[-3:]) / 3
    assert first < 0.02 and last > 0.2, (first, last)  # measured: 0.001 -> 0.26
    assert (tmp_path / "run" / "final_model" / "config.json").is_file()
    assert (tmp_path / "run" / "reward_curve.png").is_file()


def test_resume_after_sigint_gives_the_same_losses(random_model, tmp_path, monkeypatch):
    cfg = dict(updates_per_batch=2, kl_coef=0.1, rewards="_rl_helpers:letters")
    whole = loop.rl(_config(random_model, tmp_path / "a", **cfg))["losses"]
    real_update, calls = loop.update, []

    def update_then_sigint(run, kept):
        out = real_update(run, kept)
        calls.append(1)
        if len(calls) == 2:  # Ctrl-C during step 2: it finishes, checkpoints, stops
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(loop, "update", update_then_sigint)
    first = loop.rl(_config(random_model, tmp_path / "b", **cfg))
    monkeypatch.setattr(loop, "update", real_update)
    assert first["status"] == "interrupted" and first["step"] == 2
    rest = loop.rl(_config(random_model, tmp_path / "b", **cfg), resume=True)
    assert rest["status"] == "completed"
    assert first["losses"] + rest["losses"] == pytest.approx(whole, rel=1e-6, abs=1e-9)
    assert len(whole) == 4 and all(abs(loss) > 1e-6 for loss in whole)


def _records() -> dict[str, dict]:
    """A short chat record, a long sort record (its reference is past an 8-token budget) and a
    GSM8K-style record (no reference trace)."""
    pools = sources.synth_records(sources.parse_families("chat,sort"), per_family=1)
    chat, sort = (pool[0] for pool in pools)
    return {"chat": chat, "sort": sort, "gsm": {"question": "What is 3+4?", "answer": "#### 7"}}


@pytest.mark.parametrize("guide", [False, True])
def test_guide_gives_an_all_wrong_group_the_reference_answer(random_model, guide):
    model, tok = load_model(random_model)
    records = _records()
    budget = len(rollout.reference_answer(records["chat"], tok))
    assert len(rollout.reference_answer(records["sort"], tok)) > budget
    params = SamplingParams(max_new_tokens=budget, temperature=1.0, top_p=None)
    groups = rollout.rollout(model, tok, list(enumerate(records.values())), 4, params, 0,
                             parse_rewards("exact"), guide)
    got = {name: g for name, g in zip(records, groups, strict=True)}
    for name, g in got.items():  # a random model is never right
        assert [s.correct for s in g.samples[:3]] == [False] * 3
        assert g.samples[-1].reference == (guide and name == "chat"), name
    chat = got["chat"].samples[-1]
    if guide:
        ids, mask = cf.encode(cf.Conversation(turns=[cf.Turn(
            records["chat"]["question"], records["chat"]["answer"], None)]), tok)
        assert chat.completion == [i for i, m in zip(ids, mask, strict=True) if m]
        assert chat.correct and chat.reward == 1.0 and got["chat"].has_signal
        assert rollout.advantages(got["chat"], True)[-1] > 1.0
    else:
        assert not chat.correct and not got["chat"].has_signal


# A group of 12 with one reference passes 1/12 < min_pass_rate: the uncertain filter must
# still keep a guided group (guidance exists for exactly the groups that filter would drop).
@pytest.mark.parametrize("group, uncertain", [(4, False), (12, True)])
def test_guided_run_learns_from_the_reference_and_reports_only_samples(random_model, tmp_path,
                                                                      group, uncertain):
    cfg = _config(random_model, tmp_path / "run", prompts="synth", families="chat",
                  rewards="exact", guide="true", max_new_tokens=48, max_steps=4,
                  learning_rate=3e-3, group_size=group, prompts_per_step=2,
                  filter_uncertain=uncertain, max_refills=0)
    assert loop.rl(cfg)["status"] == "completed"
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    # Every group is all wrong: it is guided (a reference within 48 tokens) or has no signal.
    assert sum(r["guided"] for r in records) >= 2
    for r in records:
        assert r["accuracy"] == 0.0 and r["reward_mean"] == 0.0  # the samples' own figures
        assert r["guided"] + r["zero_signal"] == 1.0
        assert r["groups_kept"] == r["guided"] * r["groups"]
        assert math.isfinite(r["loss"]) and (abs(r["loss"]) > 0) == (r["guided"] > 0)


@pytest.mark.parametrize("line, key", [("group_size: 1\n", "group_size"),
                                       ("rewards: exact, bogus\n", "bogus"),
                                       ("learning_rat: 1e-4\n", "learning_rat"),
                                       ("families: add, nope\n", "nope")])
def test_bad_config_is_one_line_before_any_work(tmp_path, capsys, line, key):
    path = tmp_path / "rl.yaml"
    path.write_text(f"model: {tmp_path / 'missing'}\n{line}", encoding="utf-8")
    assert rl_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and key in err and "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_unusable_device_model_or_prompts_are_one_line(tmp_path, capsys):
    for sets, code, words in ((["device=gpu0"], 2, "device"), ([], 1, "not found"),
                              (["prompts=jsonl", f"prompt_file={tmp_path / 'no.jsonl'}"], 1,
                               "prompt_file")):
        args = ["--output", str(tmp_path / "out"), "--set", f"model={tmp_path / 'none'}"]
        assert rl_main(args + [a for s in sets for a in ("--set", s)]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err


def test_the_rl_keys_are_frozen_and_the_shipped_config_loads():
    # Adding or renaming a key is a deliberate edit here, as for training's keys.
    assert keys() == [
        "model", "device", "prompts", "prompt_file", "families", "rewards", "prompts_per_step",
        "group_size", "temperature", "max_new_tokens", "updates_per_batch", "clip_low",
        "clip_high", "kl_coef", "scale_advantages", "filter_uncertain", "min_pass_rate",
        "max_pass_rate", "max_refills", "guide", "micro_batch_size", "optimizer", "learning_rate",
        "weight_decay", "beta1", "beta2", "max_grad_norm", "max_steps", "output_dir",
        "checkpoint_every", "keep_checkpoints", "log_every", "dashboard", "seed"]
    cfg = load_rl_config(REPO / "configs" / "rl_cpu.yaml")
    assert cfg.rewards == "exact, trace=0.5" and cfg.families == "all"


def test_config_reads_yaml_number_text(tmp_path):
    path = tmp_path / "rl.yaml"
    path.write_text("learning_rate: 3e-5\n", encoding="utf-8")
    assert load_rl_config(path).learning_rate == 3e-5
    with pytest.raises(ConfigError, match="prompt_file"):
        load_rl_config(None, ["prompts=jsonl"])


def test_two_processes_match_one_process(random_model, tmp_path):
    """torchrun x 2 with P prompts each = one process with 2P: each rank draws its own
    prompts, the loss is normalised by the global token count, DDP averages the rest."""
    cfg = dict(rewards="_rl_helpers:letters", max_steps=2, updates_per_batch=2)
    single = loop.rl(_config(random_model, tmp_path / "one", prompts_per_step=4, **cfg))
    two = _config(random_model, tmp_path / "two", prompts_per_step=2, **cfg)
    (tmp_path / "rl.yaml").write_text(dump_yaml(two), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "scripts" / "rl.py"), "--config", str(tmp_path / "rl.yaml")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["groups"] for r in records] == [4, 4]  # 2 prompts on each of 2 ranks
    assert [r["loss"] for r in records] == pytest.approx(single["losses"], rel=1e-4, abs=1e-7)
    one = torch.load(tmp_path / "one" / "final_model" / "forge1_custom_final.pt")
    both = torch.load(tmp_path / "two" / "final_model" / "forge1_custom_final.pt")
    assert all(torch.allclose(one[k], both[k], atol=1e-4) for k in one)  # measured 1.3e-5
