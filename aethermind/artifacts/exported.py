"""The `aethermind export` weight files: their metadata, writers, and the safetensors reader.

Both files carry what a loader needs besides the tensors (`ExportMeta`: the variant, the full
model config, the tokenizer fingerprint):
- `forge1_<variant>.pt` is shaped like a training checkpoint (`{"model", "model_config",
  "tokenizer_fingerprint", "variant", "format"}`), so `loading`'s one .pt reader reads it as
  it reads a checkpoint; torch.save keeps a tied tensor's storage once.
- `forge1_<variant>.safetensors` holds Forge-1 tensor names and `ExportMeta.to_strings()` in
  its header; with tied embeddings `lm_head.weight` is left out and re-shared on reading.
The HF directory and GGUF writers (`export/hf.py`, `export/gguf.py`) put the same metadata in
config.json and GGUF keys. Every file is written through `runtime.files.staged_path`.
Usage: `save_safetensors(model, ExportMeta.of(model, tok), path)`;
`sd, meta = read_safetensors(path)`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import safetensors
import safetensors.torch
import torch

from aethermind.model.config import Forge1Config
from aethermind.runtime.files import atomic_torch_save, staged_path, writer_errors

if TYPE_CHECKING:
    from aethermind.model.transformer import Forge1Model
    from aethermind.text.tokenizer import Forge1Tokenizer

META_FORMAT = "forge1-export/1"


class ExportError(ValueError):
    """Input that cannot be exported or imported; the message names the problem and the fix."""


def variant_of(cfg: Forge1Config) -> str:
    """The preset whose shapes `cfg` has, or "custom" (names the exported files)."""
    return cfg.preset_name() or "custom"


@dataclass(frozen=True)
class ExportMeta:
    """What a loader needs besides the tensors: the shape, its preset name, the tokenizer."""

    variant: str
    config: dict[str, Any]
    tokenizer_fingerprint: str

    @classmethod
    def of(cls, model: Forge1Model, tokenizer: Forge1Tokenizer) -> ExportMeta:
        return cls(variant_of(model.config), model.config.to_dict(), tokenizer.fingerprint())

    def to_strings(self) -> dict[str, str]:
        """Flat str -> str form for safetensors and GGUF headers."""
        return {"format": META_FORMAT, "variant": self.variant,
                "config": json.dumps(self.config, sort_keys=True),
                "tokenizer_fingerprint": self.tokenizer_fingerprint}

    @classmethod
    def from_strings(cls, data: dict[str, str]) -> ExportMeta:
        if data.get("format") != META_FORMAT:
            raise ExportError(f"not a Forge-1 export (metadata format {data.get('format')!r}, "
                              f"expected {META_FORMAT!r})")
        return cls(data["variant"], json.loads(data["config"]), data["tokenizer_fingerprint"])

    def forge1_config(self) -> Forge1Config:
        return Forge1Config.from_dict(self.config)


def _weights(model: Forge1Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_pytorch(model: Forge1Model, meta: ExportMeta, path: Path) -> Path:
    """Shaped like a training checkpoint, so `chat --model` reads it too."""
    state = {"model": _weights(model), "model_config": meta.config, "variant": meta.variant,
             "tokenizer_fingerprint": meta.tokenizer_fingerprint, "format": META_FORMAT}
    return atomic_torch_save(state, path)


def save_safetensors(model: Forge1Model, meta: ExportMeta, path: Path) -> Path:
    """Forge-1 tensor names; with tied embeddings lm_head.weight is left out (stored once)."""
    sd = _weights(model)
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight")
    with staged_path(path) as tmp:
        save_safetensors_file({k: v.contiguous() for k, v in sd.items()}, tmp,
                              meta.to_strings())
    return path


def save_safetensors_file(tensors: dict[str, torch.Tensor], path: Path,
                          metadata: dict[str, str]) -> None:
    """`safetensors.torch.save_file`, whose full-disk errors (SafetensorError, RuntimeError)
    become an OSError naming the disk, as every other write failure is."""
    with writer_errors(path, RuntimeError, safetensors.SafetensorError):
        safetensors.torch.save_file(tensors, str(path), metadata=metadata)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], ExportMeta]:
    """(full state dict, metadata) of a .safetensors export; tied weights re-shared."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"export not found: {path}")
    with safetensors.safe_open(str(path), framework="pt") as f:
        meta = ExportMeta.from_strings(f.metadata() or {})
        sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    if meta.config.get("tie_embeddings", True):
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    return sd, meta
