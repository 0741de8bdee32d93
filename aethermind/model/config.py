"""Forge1Config: the model's shape, its presets and their validation.

It knows nothing about training or data; those configs live in `train_config.py`.
Usage: `cfg = Forge1Config.nano(); cfg.vocab_size = tok.get_vocab_size_padded()`.

The dataclass is mutable on purpose: the guide's snippet assigns `config.vocab_size` after
construction. `validate()` runs in `__post_init__` and again whenever a model is built.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

# The presets: the one list of variants (CLI choices, config validation and loading read it).
PRESETS: dict[str, dict[str, int]] = {
    # About 2M parameters with the default vocab: trains in minutes on a CPU.
    "tiny": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=352, max_seq_len=512),
    "nano": dict(dim=768, n_layers=12, n_heads=12, n_kv_heads=4, ffn_dim=2048, max_seq_len=1024),
    "mini": dict(dim=1024, n_layers=24, n_heads=16, n_kv_heads=4, ffn_dim=2816,
                 max_seq_len=2048),
}
VARIANTS = tuple(PRESETS)
SHAPE_FIELDS = ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim")


@dataclass(kw_only=True)
class Forge1Config:
    vocab_size: int = 32000  # tokenizer vocab rounded up to a multiple of 64
    dim: int = 768  # model width C
    n_layers: int = 12
    n_heads: int = 12  # query heads H
    n_kv_heads: int = 4  # key/value heads H_kv (GQA); must divide n_heads
    ffn_dim: int = 2048  # SwiGLU hidden width
    max_seq_len: int = 1024  # context length; sizes the RoPE tables
    rope_theta: float = 10000.0  # RoPE base frequency (HF Llama default)
    norm_eps: float = 1e-5  # RMSNorm epsilon
    dropout: float = 0.0  # residual dropout, training only
    init_std: float = 0.02  # std of the normal init; residual projections are scaled down
    tie_embeddings: bool = True  # lm_head shares tok_emb's weight

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        """Raise ValueError naming the field and the rule it breaks."""
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim",
                     "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Forge1Config.{name}={value!r}: must be a positive integer")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"Forge1Config.{name}={value!r}: must be a positive finite "
                                 "number")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"Forge1Config.dropout={self.dropout!r}: must be in [0, 1)")
        if self.dim % self.n_heads:
            raise ValueError(
                f"Forge1Config.dim={self.dim}: must be divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"Forge1Config.n_heads={self.n_heads}: must be divisible by "
                             f"n_kv_heads={self.n_kv_heads} (grouped-query attention)")
        if self.head_dim % 2:
            raise ValueError(f"Forge1Config.head_dim={self.head_dim} (dim/n_heads): must be even "
                             "for rotary embeddings")

    # --- presets ------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> Forge1Config:
        return cls.from_variant("tiny", **overrides)

    @classmethod
    def nano(cls, **overrides: Any) -> Forge1Config:
        return cls.from_variant("nano", **overrides)

    @classmethod
    def mini(cls, **overrides: Any) -> Forge1Config:
        return cls.from_variant("mini", **overrides)

    @classmethod
    def from_variant(cls, variant: str, **overrides: Any) -> Forge1Config:
        """The preset `variant` (a key of PRESETS) with `overrides` applied."""
        if variant not in PRESETS:
            raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        return cls(**{**PRESETS[variant], **overrides})

    def preset_name(self) -> str | None:
        """The preset this shape is (vocab aside), or None for a custom shape."""
        for name, preset in PRESETS.items():
            if all(getattr(self, k) == v for k, v in preset.items() if k in SHAPE_FIELDS):
                return name
        return None

    # --- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Forge1Config:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"Forge1Config: unknown key(s) {', '.join(unknown)}; "
                             f"allowed: {', '.join(sorted(known))}")
        return cls(**data)

    def matches(self, other: Forge1Config) -> list[str]:
        """Names of shape fields that differ (empty when weights are interchangeable)."""
        return [n for n in SHAPE_FIELDS if getattr(self, n) != getattr(other, n)]
