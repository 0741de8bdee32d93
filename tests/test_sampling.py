"""Sampling: the rules (penalty, top-k, top-p, greedy), `SamplingParams` validation, and the
command-line edge (`add_sampling_args` -> `params_from_args`) that chat and evaluate share."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch

from aethermind.evaluation import evaluate
from aethermind.inference import chat
from aethermind.inference.sampling import (
    NO_TOKEN,
    SamplingParams,
    SamplingValueError,
    add_sampling_args,
    apply_repetition_penalty,
    filter_logits,
    params_from_args,
    sample_next,
    scale_logits,
)


def _parse(*flags: str, greedy: bool = False) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_sampling_args(p, greedy=greedy)
    return p.parse_args(list(flags))


# --- the rules --------------------------------------------------------------------------------
def test_repetition_penalty_rule():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, 2.0)
    assert out.tolist() == [[1.0, -4.0, 1.0]]


def test_temperature_zero_is_argmax_of_the_logits():
    logits = torch.randn(3, 50)
    assert torch.equal(sample_next(logits, SamplingParams(temperature=0)), logits.argmax(-1))


def test_top_k_samples_only_the_k_most_likely():
    logits = torch.randn(1, 100)
    top3 = set(torch.topk(logits, 3).indices[0].tolist())
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=2.0, top_k=3, top_p=None)
    drawn = {int(sample_next(logits, params, gen)) for _ in range(200)}
    assert drawn == top3
    assert int(sample_next(logits, SamplingParams(temperature=1.0, top_k=1), gen)) == \
        int(logits.argmax())


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, None, p))[0].nonzero().flatten().tolist()  # noqa: E731
    assert kept(0.5) == [1]
    assert kept(0.7) == [1, 3]
    assert kept(0.9) == [1, 2, 3]
    assert kept(1.0) == [0, 1, 2, 3]
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=1.0, top_p=0.7)
    assert {int(sample_next(logits, params, gen)) for _ in range(200)} == {1, 3}


def _draws(logits: torch.Tensor, params: SamplingParams, n: int = 100) -> set[int]:
    gen = torch.Generator().manual_seed(0)
    return {int(sample_next(logits, params, gen)) for _ in range(n)}


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-300])
def test_a_tiny_temperature_samples_the_top_tokens_only(temperature):
    """The limit of softmax(logits / T) as T -> 0: uniform over the tied maxima (issue 22)."""
    logits = torch.tensor([[1.0, 3.0, -2.0, 3.0, 2.999]])
    assert _draws(logits, SamplingParams(temperature=temperature, top_p=None)) == {1, 3}
    assert _draws(logits, SamplingParams(temperature=temperature, top_k=2)) == {1, 3}
    nucleus = _draws(logits, SamplingParams(temperature=temperature, top_p=1e-300))
    assert len(nucleus) == 1 and nucleus <= {1, 3}  # the nucleus: one top token


def test_infinite_scores_from_an_extreme_penalty_sample_among_themselves():
    logits = torch.tensor([[1.0, 3.0, -2.0, 0.5]])
    seen = torch.tensor([[True, False, True, True]])  # 1/1e-300 and 0.5/1e-300: both +inf
    params = SamplingParams(temperature=1.0, top_p=None, repetition_penalty=1e-300)
    gen = torch.Generator().manual_seed(0)
    drawn = {int(sample_next(logits, params, gen, seen)) for _ in range(100)}
    assert drawn == {0, 3}


def test_ordinary_temperatures_scale_bit_for_bit_as_a_plain_division():
    logits = torch.randn(4, 300) * 20
    for t in (0.05, 0.7, 1.0, 2.0):
        assert torch.equal(scale_logits(logits, t), logits / t)


@pytest.mark.parametrize("temperature", [0.0, 0.7, 1e-40])
def test_a_row_without_usable_scores_gets_no_token_and_leaves_the_others(temperature):
    logits = torch.randn(3, 50)
    logits[1, 7] = float("nan")
    logits[2] = float("-inf")
    gen = torch.Generator().manual_seed(0)
    params = SamplingParams(temperature=temperature, top_k=5)
    picked = sample_next(logits, params, gen).tolist()
    assert picked[1] == picked[2] == NO_TOKEN and 0 <= picked[0] < 50
    assert picked[0] == int(logits[0].argmax()) or temperature == 0.7


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", float("nan")), ("temperature", float("inf")), ("top_p", float("nan")),
    ("repetition_penalty", float("inf")), ("repetition_penalty", float("nan")),
    ("seed", 2**64), ("seed", -(2**63) - 1), ("seed", 10**30)])
def test_non_finite_values_and_seeds_beyond_64_bits_are_refused_by_name(field, value):
    with pytest.raises(SamplingValueError, match=f"^{field}=") as err:
        SamplingParams(**{field: value})
    assert err.value.field == field
    SamplingParams(seed=2**64 - 1), SamplingParams(seed=-(2**63))  # the edges are fine


def test_sampling_params_reject_bad_values():
    for bad in (dict(temperature=-1), dict(top_p=0.0), dict(top_k=-2),
                dict(repetition_penalty=0), dict(max_new_tokens=-1)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# --- the command-line edge --------------------------------------------------------------------
def test_flag_defaults_are_the_dataclass_defaults():
    assert params_from_args(_parse()) == SamplingParams()


def test_greedy_changes_only_the_temperature_default():
    assert params_from_args(_parse(greedy=True)) == SamplingParams(temperature=0.0)
    assert params_from_args(_parse("--temperature", "0.5", greedy=True)).temperature == 0.5


def test_every_flag_lands_in_its_own_field():
    args = _parse("--max-new-tokens", "9", "--temperature", "0.3", "--top-k", "5", "--top-p",
                  "0.5", "--repetition-penalty", "1.2", "--seed", "3")
    assert params_from_args(args) == SamplingParams(max_new_tokens=9, temperature=0.3, top_k=5,
                                                    top_p=0.5, repetition_penalty=1.2, seed=3)


def test_every_field_has_a_flag():
    """A new SamplingParams field without a flag would make the CLIs fail on every run."""
    args = vars(_parse())
    assert {f.name for f in dataclasses.fields(SamplingParams)} <= set(args)


@pytest.mark.parametrize("flags, message", [
    (("--temperature", "-1"), "temperature=-1.0: must be >= 0 (0 = greedy)"),
    (("--top-p", "0"), "top_p=0.0: must be in (0, 1]"),
    (("--top-k", "-2"), "top_k=-2: must be >= 0 (0 or None = off)"),
    (("--repetition-penalty", "0"), "repetition_penalty=0.0: must be > 0"),
    (("--max-new-tokens", "-1"), "max_new_tokens=-1: must be >= 0"),
])
def test_bad_flag_is_one_line_naming_the_value(flags, message):
    with pytest.raises(ValueError) as err:
        params_from_args(_parse(*flags))
    assert str(err.value) == message


@pytest.mark.parametrize("command", [chat.main, evaluate.main])
def test_commands_refuse_a_bad_value_before_loading_the_model(command, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)  # no data/val.jsonl here, so evaluate checks no default file
    with pytest.raises(SystemExit) as done:
        command(["--model", str(tmp_path / "missing.pt"), "--top-p", "1.5"])
    assert done.value.code == 2
    assert capsys.readouterr().err == "error: top_p=1.5: must be in (0, 1]\n"
