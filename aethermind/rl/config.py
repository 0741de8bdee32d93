"""RLConfig: every knob of an `aethermind rl` run, typed, from flat YAML plus `--set` overrides.

The same strict rules as training (`training.config`): unknown keys and bad values are a
one-line `ConfigError` naming the key, before any model is loaded. It knows nothing about
models or rewards beyond names; `rl.loop` interprets it.
Usage: `cfg = load_rl_config("configs/rl_cpu.yaml", ["max_steps=20"])`.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from aethermind.inference.sampling import SEED_RANGE
from aethermind.rl.rewards import parse_rewards
from aethermind.rl.sources import parse_families
from aethermind.training.config import (
    ConfigError,
    Dashboard,
    OptimizerName,
    check_types,
    coerce_to,
    matches,
    read_mapping,
)

Source = Literal["synth", "jsonl", "both"]


@dataclass(frozen=True, kw_only=True)
class RLConfig:
    # --- what to improve --------------------------------------------------------------------
    model: str = "outputs/final_model"  # a final_model/ folder, a .pt or a Hugging Face folder
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    prompts: Source = "synth"  # synth (built-in families) | jsonl (prompt_file) | both
    prompt_file: str | None = None  # JSONL records with a checkable answer (GSM8K, \boxed{})
    families: str = "all"  # built-in families in the mix, comma-separated; all = every one
    rewards: str = "exact"  # weighted sum: "exact, trace=0.5"; a name of rewards.REWARDS or
    # module:function for your own `(completion_text, record) -> float`
    # --- GRPO ---------------------------------------------------------------------------------
    prompts_per_step: int = 8  # P: prompts per rollout batch (per process)
    group_size: int = 8  # G: answers sampled per prompt
    temperature: float = 1.0  # rollout sampling temperature (top_p off)
    max_new_tokens: int = 256  # per rollout answer
    updates_per_batch: int = 1  # optimizer steps on each rollout batch (ppo_epochs)
    clip_low: float = 0.2  # ratio clipped to [1 - clip_low, 1 + clip_high] (DAPO clip-higher)
    clip_high: float = 0.28
    kl_coef: float = 0.0  # KL penalty to the starting model (k3 estimator); 0 = off, no copy
    scale_advantages: bool = True  # divide group advantages by the group's std (GRPO)
    filter_uncertain: bool = False  # keep only prompts whose group pass rate is in the band,
    min_pass_rate: float = 0.1  # drawing more prompts (up to max_refills batches) to fill P
    max_pass_rate: float = 0.9
    max_refills: int = 2
    guide: bool = False  # a group with no right answer gets the record's reference answer in
    # place of its last one (off-policy guidance): signal where the model cannot solve a prompt
    micro_batch_size: int = 16  # sequences per forward/backward (memory, not maths)
    # --- optimisation ---------------------------------------------------------------------------
    optimizer: OptimizerName = "adamw"  # adamw | muon (as training)
    learning_rate: float = 1e-5
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0  # 0 = no clipping
    max_steps: int = 100  # rollout batches
    # --- bookkeeping ----------------------------------------------------------------------------
    output_dir: str = "outputs/rl"  # metrics.jsonl, reward_curve.png, checkpoints/, final_model/
    checkpoint_every: int = 25  # rollout batches between checkpoints; 0 = only at the end
    keep_checkpoints: int = 3
    log_every: int = 1
    dashboard: Dashboard = "auto"
    seed: int = 42

    def __post_init__(self) -> None:
        check_types(self)
        for name in ("prompts_per_step", "group_size", "max_new_tokens", "updates_per_batch",
                     "micro_batch_size", "max_steps", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                _fail(name, getattr(self, name), "an integer >= 1")
        if self.group_size < 2:
            _fail("group_size", self.group_size, "an integer >= 2 (advantages compare answers "
                  "within a group)")
        for name in ("checkpoint_every", "max_refills"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "an integer >= 0")
        for name in ("temperature", "weight_decay", "max_grad_norm", "kl_coef"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "a number >= 0")
        if not self.learning_rate > 0:
            _fail("learning_rate", self.learning_rate, "a number > 0")
        for name in ("clip_low", "min_pass_rate", "max_pass_rate", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                _fail(name, getattr(self, name), "a number in [0, 1]")
        if self.clip_high < 0:
            _fail("clip_high", self.clip_high, "a number >= 0")
        if self.min_pass_rate > self.max_pass_rate:
            _fail("min_pass_rate", self.min_pass_rate, f"at most max_pass_rate "
                  f"({self.max_pass_rate})")
        if self.prompts != "synth" and not self.prompt_file:
            _fail("prompt_file", self.prompt_file, f"a JSONL path (prompts: {self.prompts})")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1] - 1024:  # + rank
            _fail("seed", self.seed, f"an integer in {SEED_RANGE[0]}..{SEED_RANGE[1] - 1024}")
        try:  # names too, so a typo fails before the model loads
            parse_rewards(self.rewards)
            parse_families(self.families)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.output_dir) / "checkpoints"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def keys() -> list[str]:
    return [f.name for f in fields(RLConfig)]


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config key {name!r} has value {value!r}: expected {allowed}")


def from_dict(data: dict[str, Any], where: str = "config") -> RLConfig:
    """Build an RLConfig; unknown keys are errors (a typo must not silently do nothing)."""
    unknown = sorted(set(data) - set(keys()))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                          f"{', '.join(keys())}")
    hints = typing.get_type_hints(RLConfig)
    data = {k: coerce_to(hints[k], k, v) if isinstance(v, str) and not matches(v, hints[k])
            else v for k, v in data.items()}
    return RLConfig(**data)


def load_rl_config(path: str | Path | None = None, overrides: list[str] | None = None
                   ) -> RLConfig:
    """YAML file (flat mapping) < `--set key=value` overrides; the result is validated."""
    data: dict[str, Any] = read_mapping(path) if path is not None else {}
    hints = typing.get_type_hints(RLConfig)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set max_steps=20")
        if key not in hints:
            raise ConfigError(f"--set {key}: unknown key {key!r}; allowed keys: "
                              f"{', '.join(keys())}")
        data[key] = coerce_to(hints[key], key, raw.strip())
    return from_dict(data, "config" if path is None else str(path))


def dump_yaml(cfg: RLConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
