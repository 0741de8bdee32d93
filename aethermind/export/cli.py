"""Export a trained Forge-1: PyTorch .pt, safetensors, a Hugging Face directory, GGUF (guide §7).

`python scripts/export.py --model outputs/final_model/forge1_nano_final.pt --variant nano`
writes the guide's defaults, `outputs/exports/forge1_nano.pt`, `forge1_nano.safetensors` and
`tokenizer/`; `--format hf` adds `forge1_nano_hf/` (loads in `transformers`), `--format gguf
--dtype f16` adds `forge1_nano-f16.gguf` (llama.cpp, Ollama, LM Studio); `--format all` writes
everything. Every file and directory is staged under a temporary name and renamed into place,
so an existing export is replaced whole or not at all. The metadata (variant, config, tokenizer
fingerprint) travels inside each file: the .pt holds `{"model", "model_config", "variant",
"tokenizer_fingerprint"}` like a training checkpoint, safetensors and GGUF carry it in their
headers, the HF directory in config.json. Tied embeddings are stored once and reload tied.
Usage: `paths = export_model("outputs/final_model", formats=("hf",), output="outputs/exports")`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from aethermind.model.config import Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer

FORMATS = ("pytorch", "safetensors", "hf", "gguf")
# "both" is the guide's default (the two weight files + tokenizer/); "all" adds hf and gguf.
FORMAT_CHOICES = (*FORMATS, "both", "all")
FORMAT_SETS = {"both": ("pytorch", "safetensors"), "all": FORMATS}
DEFAULT_OUTPUT = Path("outputs") / "exports"
META_FORMAT = "forge1-export/1"


class ExportError(ValueError):
    """Input that cannot be exported or imported; the message names the problem and the fix."""


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


def variant_of(cfg: Forge1Config) -> str:
    """The preset whose shapes `cfg` has, or "custom" (names the exported files)."""
    return cfg.preset_name() or "custom"


# --- atomic files and directories ---------------------------------------------------------
@contextmanager
def staged_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    Works for a file or a directory: an existing `final` is moved aside, the new one renamed in,
    then the old one deleted, so `final` is always either the old export or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp{os.getpid()}")
    old = final.with_name(f".{final.name}.old{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_file():
            os.chmod(tmp, 0o644)  # some writers (safetensors) create files owner-only
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    finally:
        _remove(tmp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


# --- .pt and safetensors ------------------------------------------------------------------
def _weights(model: Forge1Model) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def save_pytorch(model: Forge1Model, meta: ExportMeta, path: Path) -> Path:
    """Shaped like a training checkpoint (`model`, `model_config`, `tokenizer_fingerprint`), so
    `chat --model` reads it too; torch.save keeps a tied tensor's storage once."""
    state = {"model": _weights(model), "model_config": meta.config, "variant": meta.variant,
             "tokenizer_fingerprint": meta.tokenizer_fingerprint, "format": META_FORMAT}
    with staged_path(path) as tmp:
        torch.save(state, tmp)
    return path


def save_safetensors(model: Forge1Model, meta: ExportMeta, path: Path) -> Path:
    """Forge-1 tensor names; with tied embeddings lm_head.weight is left out (stored once)."""
    from safetensors.torch import save_file

    sd = _weights(model)
    if model.config.tie_embeddings:
        sd.pop("lm_head.weight")
    with staged_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp),
                  metadata=meta.to_strings())
    return path


def read_export(path: str | Path) -> tuple[dict[str, torch.Tensor], ExportMeta]:
    """(full state dict, metadata) of a .pt or .safetensors export; tied weights re-shared."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"export not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = ExportMeta.from_strings(f.metadata() or {})
            sd = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no iter)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "model" not in state:
            raise ExportError(f"{path} is not a Forge-1 export (no 'model' entry)")
        meta = ExportMeta.from_strings({
            "format": state.get("format"), "variant": state.get("variant"),
            "config": json.dumps(state.get("model_config")),
            "tokenizer_fingerprint": state.get("tokenizer_fingerprint")})
        sd = state["model"]
    if meta.config.get("tie_embeddings", True):
        sd["lm_head.weight"] = sd["tok_emb.weight"]
    return sd, meta


def load_export(path: str | Path) -> tuple[Forge1Model, ExportMeta]:
    """A Forge1Model (eval mode) built from an export's own metadata."""
    sd, meta = read_export(path)
    model = Forge1Model(meta.forge1_config())
    model.load_state_dict(sd)
    return model.eval(), meta


# --- the command ----------------------------------------------------------------------------
def output_paths(output: Path, variant: str, dtype: str) -> dict[str, Path]:
    """Where each format goes (one definition for the CLI, the tests and the README)."""
    return {"pytorch": output / f"forge1_{variant}.pt",
            "safetensors": output / f"forge1_{variant}.safetensors",
            "tokenizer": output / "tokenizer",
            "hf": output / f"forge1_{variant}_hf",
            "gguf": output / f"forge1_{variant}-{dtype}.gguf"}


def export_model(model_path: str | Path, variant: str | None = None,
                 formats: Sequence[str] = FORMAT_SETS["both"],
                 output: str | Path = DEFAULT_OUTPUT, *, dtype: str = "f16",
                 tokenizer: Any = None, device: str = "cpu") -> list[Path]:
    """Load what `chat` loads (on `device`), write each format; returns the paths written."""
    from aethermind.artifacts.loading import load_model
    from aethermind.export.gguf import GGUF_DTYPES, write_gguf
    from aethermind.export.hf import write_hf_dir

    if dtype not in GGUF_DTYPES:
        raise ExportError(f"--dtype {dtype}: choose one of {', '.join(GGUF_DTYPES)}")
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file: pass a directory")
    model, tok = load_model(model_path, variant, tokenizer, device, dtype=torch.float32)
    meta = ExportMeta.of(model, tok)
    paths = output_paths(output, variant or meta.variant, dtype)
    written: list[Path] = []
    if {"pytorch", "safetensors"} & set(formats):
        with staged_path(paths["tokenizer"]) as tmp:
            tok.save(tmp)
        written.append(paths["tokenizer"])
    if "pytorch" in formats:
        written.append(save_pytorch(model, meta, paths["pytorch"]))
    if "safetensors" in formats:
        written.append(save_safetensors(model, meta, paths["safetensors"]))
    if "hf" in formats:
        with staged_path(paths["hf"]) as tmp:
            write_hf_dir(model, tok, meta, tmp)
        written.append(paths["hf"])
    if "gguf" in formats:
        with staged_path(paths["gguf"]) as tmp:
            write_gguf(model, tok, meta, tmp, dtype)
        written.append(paths["gguf"])
    return written


def build_parser() -> argparse.ArgumentParser:
    from aethermind.artifacts.loading import add_model_args
    from aethermind.export.gguf import GGUF_DTYPES

    p = argparse.ArgumentParser(
        prog="aethermind export",
        description="Export a trained Forge-1 to .pt, safetensors, a Hugging Face directory "
                    "or GGUF (llama.cpp / Ollama).")
    add_model_args(p)
    p.add_argument("--format", default="both", choices=FORMAT_CHOICES,
                   help="both = pytorch + safetensors (default); all = every format")
    p.add_argument("--dtype", default="f16", choices=GGUF_DTYPES,
                   help="GGUF weight type (default: f16)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"directory to write into (default: {DEFAULT_OUTPUT})")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from aethermind.artifacts.loading import LoadError

    formats = FORMAT_SETS.get(args.format, (args.format,))
    try:
        paths = export_model(args.model, args.variant, formats, args.output,
                             dtype=args.dtype, tokenizer=args.tokenizer, device=args.device)
    except (LoadError, ExportError) as err:
        parser.exit(2, f"error: {err}\n")
    except OSError as err:
        parser.exit(2, f"error: cannot write the export to {args.output}: "
                       f"{err.strerror or err}; pass a writable --output\n")
    for path in paths:
        size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() \
            else path.stat().st_size
        print(f"wrote {path} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
