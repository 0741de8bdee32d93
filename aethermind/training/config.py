"""TrainConfig: every knob of a training run, typed, loaded from flat YAML plus `--set` overrides.

Precedence: field defaults < the YAML file < `--set key=value` (and `--variant`). Unknown keys and
bad values raise `ConfigError` naming the key, the value and what is allowed, before any work
starts. It knows nothing about models or data beyond names; `train.py` interprets it.
The one nested key is `lora:` (a mapping `{r, alpha, dropout, targets}`, strict like the
rest; `--set lora.r=16`, `--set lora.targets=q_proj,v_proj`, `--set lora=null`).
Usage: `cfg = load_config("configs/cpu_config.yaml", ["max_steps=20"], variant="tiny")`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from aethermind.data.pack import LAYOUTS, Layout
from aethermind.inference.sampling import SEED_RANGE
from aethermind.model.attention import Backend as AttentionBackend
from aethermind.model.config import VARIANTS
from aethermind.training.lora import LORA_TARGETS


class ConfigError(ValueError):
    """A bad config key or value; the message is one line meant for the user."""


Precision = Literal["fp32", "fp16", "bf16"]
Scheduler = Literal["cosine", "linear", "constant"]
OptimizerName = Literal["adamw", "muon"]
Dashboard = Literal["auto", "rich", "plain", "off"]


@dataclass(frozen=True, kw_only=True)
class LoraSettings:
    """`lora:` in the training config: train low-rank adapters (through peft) on a frozen
    `init_from` model instead of every weight. Targets use Hugging Face Llama's module names."""

    r: int = 8  # adapter rank
    alpha: float = 16.0  # the update is scaled by alpha / r (peft's lora_alpha)
    dropout: float = 0.05  # dropout on the adapters' input (peft's lora_dropout)
    targets: tuple[str, ...] = LORA_TARGETS  # a subset of LORA_TARGETS; default all seven

    def __post_init__(self) -> None:
        if isinstance(self.targets, str):  # `--set lora.targets=q_proj,v_proj`
            object.__setattr__(self, "targets", tuple(t.strip() for t in
                                                      self.targets.split(",") if t.strip()))
        if isinstance(self.targets, list):  # YAML lists
            object.__setattr__(self, "targets", tuple(self.targets))
        r, alpha, dropout = self.r, self.alpha, self.dropout
        if not isinstance(r, int) or isinstance(r, bool) or r < 1:
            _fail("lora.r", r, "an integer >= 1")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or \
                not 0 < alpha < math.inf:
            _fail("lora.alpha", alpha, "a number > 0")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or \
                not 0 <= dropout < 1:
            _fail("lora.dropout", dropout, "a number in [0, 1)")
        bad = [t for t in self.targets if t not in LORA_TARGETS]
        if bad or not self.targets or len(set(self.targets)) != len(self.targets):
            _fail("lora.targets", list(self.targets), "a non-empty list without repeats of "
                  + ", ".join(LORA_TARGETS))

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "alpha": self.alpha, "dropout": self.dropout,
                "targets": list(self.targets)}

    @classmethod
    def from_dict(cls, data: Any) -> LoraSettings:
        if not isinstance(data, dict):
            raise ConfigError(f"config key 'lora' has value {data!r}: expected a mapping with "
                              f"keys {', '.join(lora_keys())} (or null)")
        unknown = sorted(set(data) - set(lora_keys()))
        if unknown:
            raise ConfigError(f"lora: unknown key {unknown[0]!r}; allowed keys: "
                              f"{', '.join(lora_keys())}")
        return cls(**data)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    # --- what to train ----------------------------------------------------------------------
    variant: str | None = None  # model preset, a key of config.PRESETS; --variant overrides;
    # with init_from it may be left out (the source's shape is used) or must match the source
    init_from: str | None = None  # start from these weights (final_model/, .pt or HF Llama
    # folder): weights only, fresh optimizer, schedule and data position; --resume wins
    lora: LoraSettings | None = None  # train LoRA adapters on the frozen init_from weights
    train_data: str = "data/train.jsonl"  # JSONL with a "text" field per line
    val_data: str | None = None  # JSONL for the validation loss; None = no validation
    tokenizer: str = "default"  # "default" (bundled) | "train" (once, on train_data) | a dir
    tokenizer_vocab_size: int = 8000  # vocab size when tokenizer: train
    data_cache_dir: str | None = None  # token shards; None = <output_dir>/cache
    layout: Layout = LAYOUTS[0]  # one of data.pack.LAYOUTS: packed (doc-masked rows), padded (one
    # chat a row) or bestfit (whole chats best-fit into doc-masked rows: the demo's choice)
    loss_on_all_tokens: bool = False  # False = loss on assistant tokens only (the chat mask)
    # --- hardware and precision -------------------------------------------------------------
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps; falls back to CPU with a warning
    precision: Precision = "fp32"  # fp16 uses GradScaler; CPU: fp16 falls back to fp32, and
    # bf16 too unless the CPU has bf16 in hardware (dist.cpu_bf16_native: AMX, AVX512-BF16)
    gradient_checkpointing: bool = False  # recompute blocks in backward: less memory, ~25% slower
    # torch.compile: true = the whole model (~35 s to compile the tiny preset on a CPU); blocks
    # = each transformer block in place (every block runs the same code, so one graph serves
    # them all: ~20 s cold on a CPU, and the loss keeps skipping prompt rows; the demo's choice)
    compile: bool | Literal["blocks"] = False
    attention: AttentionBackend = "auto"  # packed rows: auto (flex on Ampere+) | dense | flex
    fsdp: bool = False  # under torchrun: shard with FSDP2 instead of replicating with DDP
    num_workers: int = 2  # processes for tokenizing/packing the data on the first run
    pin_memory: bool = False  # page-locked host batches for faster CUDA copies
    # --- batch and optimisation -------------------------------------------------------------
    batch_size: int = 8  # sequences per micro-batch per process
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step (global, see dist)
    context_length: int = 512  # tokens per row; must be <= the variant's max_seq_len
    optimizer: OptimizerName = "adamw"  # adamw | muon (Muon on hidden matrices, AdamW rest)
    learning_rate: float = 3e-4  # peak LR
    min_lr_ratio: float = 0.1  # cosine/linear decay floor as a fraction of the peak
    warmup_ratio: float = 0.02  # fraction of the total steps spent warming up linearly
    lr_scheduler: Scheduler = "cosine"
    weight_decay: float = 0.1  # AdamW decay on matrices only (not norms or embeddings)
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = 1.0  # clip threshold; 0 = no clipping
    epochs: int = 1  # passes over the data when max_steps is 0
    max_steps: int = 0  # optimizer steps; 0 = epochs x steps per epoch
    max_bad_steps: int = 3  # consecutive non-finite losses that stop the run
    # --- bookkeeping ------------------------------------------------------------------------
    output_dir: str = "outputs"  # metrics, plots, final_model/ go here
    checkpoint_dir: str | None = None  # None = <output_dir>/checkpoints
    checkpoint_every: int = 500  # optimizer steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 3  # newest checkpoints kept on disk
    eval_every: int = 500  # optimizer steps between validation losses; 0 = only at the end
    eval_batches: int = 20  # validation batches per evaluation (in total over processes)
    log_every: int = 10  # optimizer steps between plain log lines
    dashboard: Dashboard = "auto"  # auto = Rich on a terminal, plain lines otherwise
    tensorboard: bool = False  # also write TensorBoard events (needs `pip install tensorboard`)
    seed: int = 42

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f.name, value, _hints()[f.name])
            if isinstance(value, float) and not math.isfinite(value):  # inf lr trains NaNs
                _fail(f.name, value, "a finite number")
        positive = ("batch_size", "gradient_accumulation_steps", "context_length",
                    "tokenizer_vocab_size", "keep_checkpoints", "epochs", "eval_batches",
                    "log_every", "max_bad_steps")
        for name in positive:
            if getattr(self, name) < 1:
                _fail(name, getattr(self, name), "an integer >= 1")
        for name in ("max_steps", "checkpoint_every", "eval_every", "num_workers"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "an integer >= 0")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                _fail(name, getattr(self, name), "a number >= 0")
        if not self.learning_rate > 0:
            _fail("learning_rate", self.learning_rate, "a number > 0")
        for name in ("min_lr_ratio", "warmup_ratio", "beta1", "beta2"):
            if not 0 <= getattr(self, name) <= 1:
                _fail(name, getattr(self, name), "a number in [0, 1]")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1] - 1024:  # + rank in seed_everything
            _fail("seed", self.seed, f"an integer in {SEED_RANGE[0]}..{SEED_RANGE[1] - 1024}")
        if self.variant is not None and self.variant not in VARIANTS:
            _fail("variant", self.variant, "one of " + ", ".join(VARIANTS))
        if self.lora is not None and self.init_from is None:
            _fail("lora", self.lora.to_dict(), "init_from set too (adapters train on top of "
                  "existing weights; random frozen weights learn nothing useful)")
        if self.init_from is not None and self.tokenizer == "train":
            _fail("tokenizer", "train", "the init_from model's tokenizer (its folder, or "
                  "default) with init_from: its weights know only its own token ids")
        if self.lora is not None and self.fsdp:
            _fail("fsdp", True, "false with lora (LoRA runs replicate the model with DDP; "
                  "its frozen weights need no sharded optimizer state)")
        if self.fsdp and self.optimizer == "muon":
            _fail("optimizer", self.optimizer, "adamw with fsdp: true (Muon orthogonalizes "
                  "whole matrices, FSDP shards them; DDP works with muon)")
        dev = self.device
        if not (dev in ("auto", "cpu", "cuda", "mps") or
                (dev.startswith("cuda:") and dev[5:].isdigit())):
            _fail("device", dev, "auto, cpu, cuda, cuda:N or mps")

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint_dir or Path(self.output_dir) / "checkpoints")

    @property
    def cache_path(self) -> Path:
        return Path(self.data_cache_dir or Path(self.output_dir) / "cache")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["lora"] = self.lora and self.lora.to_dict()  # targets as a list: plain YAML
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


# --- loading and overrides ------------------------------------------------------------------
def add_run_args(parser: argparse.ArgumentParser, folder: str) -> None:
    """--resume, --overwrite and --set, the same in `train` and `rl`; `folder` names the config
    key whose checkpoints they act on."""
    parser.add_argument("--resume", action="store_true",
                        help=f"continue from the newest valid checkpoint in {folder}")
    parser.add_argument("--overwrite", action="store_true",
                        help=f"start fresh even though {folder} holds another run's "
                        "checkpoints (deletes them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_steps=20 (repeatable)")


def keys() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def lora_keys() -> list[str]:
    return [f.name for f in fields(LoraSettings)]


def from_dict(data: dict[str, Any], where: str = "config") -> TrainConfig:
    """Build a TrainConfig; unknown keys are errors (a typo must not silently do nothing)."""
    unknown = sorted(set(data) - set(keys()))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; allowed keys: "
                          f"{', '.join(keys())}")
    if isinstance(data.get("lora"), dict):
        data = {**data, "lora": LoraSettings.from_dict(data["lora"])}
    # PyYAML reads `3e-4` (no dot) as a string: coerce text for fields that are not text.
    data = {k: coerce(k, v) if isinstance(v, str) and not _matches(v, _hints()[k]) else v
            for k, v in data.items()}
    return TrainConfig(**data)


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` -> (key, value coerced to the field's type)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set max_steps=20")
    section, dot, sub = key.partition(".")
    if dot and section == "lora":
        if sub not in lora_keys():
            raise ConfigError(f"--set {key}: unknown key {sub!r} of lora; allowed keys: "
                              f"{', '.join(lora_keys())}")
        return key, _coerce_lora(sub, raw.strip())
    if key not in keys():
        raise ConfigError(f"--set {key}: unknown key {key!r}; allowed keys: {', '.join(keys())}")
    if key == "lora":
        if raw.strip().lower() not in ("none", "null", "~", ""):
            raise ConfigError("--set lora: only lora=null (off); set its fields with "
                              "--set lora.r=8 (turns LoRA on with defaults for the others)")
        return key, None
    return key, coerce(key, raw.strip())


def _coerce_lora(sub: str, raw: str) -> Any:
    """`--set lora.<sub>=raw` text -> the field's type (targets stay comma-separated text)."""
    if sub == "targets":
        return raw
    kind = int if sub == "r" else float
    try:
        return kind(raw)
    except ValueError:
        _fail(f"lora.{sub}", raw, "an integer" if kind is int else "a number")
        raise AssertionError from None  # unreachable: _fail raises


def coerce(key: str, raw: str) -> Any:
    """Turn command-line text into the type of `key` (int, float, bool, str or None)."""
    return coerce_to(_hints()[key], key, raw)


def coerce_to(hint: Any, key: str, raw: str) -> Any:
    """Turn text into a value of type `hint` (any config dataclass's field type)."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if type(None) in options and raw.lower() in ("none", "null", "~", ""):
        return None
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is Literal:
            if raw in typing.get_args(option):
                return raw
            continue
        if option is bool:
            low = raw.lower()
            if low in ("true", "yes", "on", "1"):
                return True
            if low in ("false", "no", "off", "0"):
                return False
            continue
        try:
            return option(raw)
        except ValueError:
            continue
    _fail(key, raw, _describe(hint))
    raise AssertionError  # unreachable: _fail raises


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                variant: str | None = None) -> TrainConfig:
    """YAML file (flat mapping) < `--set` overrides < `--variant`; the result is validated."""
    data: dict[str, Any] = read_mapping(path) if path is not None else {}
    where = "config" if path is None else str(path)
    for item in overrides or []:
        key, value = parse_override(item)
        if key.startswith("lora."):  # one field of the mapping; the others keep theirs
            section = data.get("lora")
            data["lora"] = {**(section if isinstance(section, dict) else {}), key[5:]: value}
        else:
            data[key] = value
    if variant is not None:
        data["variant"] = variant
    return from_dict(data, where)


def read_mapping(path: str | Path) -> dict[str, Any]:
    """A config file's flat `key: value` mapping; a missing or malformed file is ConfigError."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--config {path}: file not found (see configs/ for examples)")
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})".replace("\n", " ")) from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a flat mapping of key: value")
    return loaded


def check_types(obj: Any) -> None:
    """Every field of the dataclass `obj` holds its annotated type, floats finite; the first
    that does not is a ConfigError (shared by every strict config: training, RL)."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        value = getattr(obj, f.name)
        _check_type(f.name, value, hints[f.name])
        if isinstance(value, float) and not math.isfinite(value):  # inf lr trains NaNs
            _fail(f.name, value, "a finite number")


def matches(value: Any, hint: Any) -> bool:
    """Whether `value` already has type `hint` (YAML text for a number does not)."""
    return _matches(value, hint)


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# --- type checks ----------------------------------------------------------------------------
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _describe(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if hint is type(None):
        return "null"
    if hint is LoraSettings:
        return "a mapping with keys " + ", ".join(lora_keys())
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}[hint]


def _matches(value: Any, hint: Any) -> bool:
    if _is_union(hint):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _check_type(name: str, value: Any, hint: Any) -> None:
    if not _matches(value, hint):
        _fail(name, value, _describe(hint))


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"config key {name!r} has value {value!r}: expected {allowed}")

