"""Export a trained Forge-1: PyTorch .pt, safetensors, a Hugging Face directory, GGUF, Ollama.

`python scripts/export.py --model outputs/final_model/forge1_nano_final.pt --variant nano`
writes the guide's defaults, `outputs/exports/forge1_nano.pt`, `forge1_nano.safetensors` and
`tokenizer/`; `--format hf` adds `forge1_nano_hf/` (loads in `transformers`), `--format gguf
--dtype f16` adds `forge1_nano-f16.gguf` (llama.cpp, LM Studio), `--format ollama` that GGUF
plus `forge1_nano.Modelfile` beside it (`ollama create -f`; one per variant, so models of two
sizes in one folder keep their own); `--format all` writes every format and every GGUF weight
type, the Modelfile using the `--dtype` one. `--dtype` is the GGUF weight type
(default f16) and nothing else: with no GGUF output it is refused before any work, not
ignored. Every file and directory is staged and renamed into place (`runtime.files`), so an
existing export is replaced whole or not at all. `--adapter DIR` merges a PEFT LoRA folder
(what a `lora:` run writes to <output_dir>/adapter/, HF module names) into the weights first
(W + alpha / r * B @ A, `training.lora`), so every format carries the fine-tuned model.
The checkpoint is checked first (`loading.load_verified`: CRC32s, names, shapes, finite
values), a killed export's temp files in `--output` are removed, and a `tokenizer/` that other
exports in `--output` still need is never replaced by another model's tokenizer.
This module is the command only: the .pt/safetensors format is `artifacts.exported`, the HF
directory `export.hf`, GGUF `export.gguf`, the Modelfile `export.ollama`; the model is loaded
as `chat` loads it.
Usage: `paths = export_model("outputs/final_model", formats=("hf",), output="outputs/exports")`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast, get_args

import torch

from aethermind.artifacts.exported import ExportError, ExportMeta, save_pytorch, save_safetensors
from aethermind.artifacts.loading import LoadError, add_model_args, load_verified
from aethermind.export.gguf import (
    DEFAULT_GGUF_DTYPE,
    GGUF_DTYPES,
    GgufDtype,
    gguf_pre_tokenizer,
    write_gguf,
)
from aethermind.export.hf import write_hf_dir
from aethermind.export.ollama import write_modelfile
from aethermind.runtime.files import remove_stale_temp_files, staged_path
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.lora import merge, read_adapter

Format = Literal["pytorch", "safetensors", "hf", "gguf", "ollama"]
FORMATS: tuple[Format, ...] = get_args(Format)
# "both" is the guide's default (the two weight files + tokenizer/); "all" adds the others, and
# with them every GGUF weight type (`--format all` in `main`).
FORMAT_CHOICES = (*FORMATS, "both", "all")
FORMAT_SETS: dict[str, tuple[Format, ...]] = {"both": ("pytorch", "safetensors"), "all": FORMATS}
GGUF_FORMATS = ("gguf", "ollama")  # the formats that write a GGUF (the Modelfile's FROM)
DEFAULT_OUTPUT = Path("outputs") / "exports"


# --- the command ----------------------------------------------------------------------------
def output_paths(output: Path, variant: str, gguf_dtype: GgufDtype = DEFAULT_GGUF_DTYPE
                 ) -> dict[str, Path]:
    """Where each format goes (one definition for the CLI, the tests and the README)."""
    return {"pytorch": output / f"forge1_{variant}.pt",
            "safetensors": output / f"forge1_{variant}.safetensors",
            "tokenizer": output / "tokenizer",
            "hf": output / f"forge1_{variant}_hf",
            "gguf": output / f"forge1_{variant}-{gguf_dtype}.gguf",
            "ollama": output / f"forge1_{variant}.Modelfile"}


def resolve_gguf_dtype(formats: Sequence[str], gguf_dtype: str | None) -> GgufDtype:
    """The GGUF weight type to use: the one check of `--dtype`, before any work is done.

    It only applies to GGUF (the .pt, safetensors and HF files are always float32), so a
    dtype asked for without a GGUF output is refused rather than silently ignored.
    """
    if gguf_dtype is None:
        return DEFAULT_GGUF_DTYPE
    if gguf_dtype not in GGUF_DTYPES:
        raise ExportError(f"--dtype {gguf_dtype}: choose one of {', '.join(GGUF_DTYPES)}")
    if not set(GGUF_FORMATS) & set(formats):
        raise ExportError(f"--dtype {gguf_dtype} sets the GGUF weight type, but this export "
                          f"writes no GGUF ({', '.join(formats)} are float32): add --format "
                          "gguf (or ollama, or all), or drop --dtype")
    return cast(GgufDtype, gguf_dtype)


def export_model(model_path: str | Path, variant: str | None = None,
                 formats: Sequence[Format] = FORMAT_SETS["both"],
                 output: str | Path = DEFAULT_OUTPUT, *, gguf_dtype: GgufDtype | None = None,
                 every_gguf_dtype: bool = False, tokenizer: Any = None, device: str = "cpu",
                 overwrite: bool = False, adapter: str | Path | None = None) -> list[Path]:
    """Load what `chat` loads (on `device`), write each format; returns the paths written.

    `gguf_dtype` is the GGUF weight type (None: DEFAULT_GGUF_DTYPE), the Modelfile's FROM;
    giving one without "gguf" or "ollama" in `formats` raises ExportError.
    `every_gguf_dtype` (`--format all`) also writes a GGUF of every other weight type.
    A file or folder already at a target is replaced only with `overwrite` (`--overwrite`):
    the check runs before anything is written.
    """
    weight_type = resolve_gguf_dtype(formats, gguf_dtype)
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file: pass a directory")
    # What a killed export left, whatever it was writing: litter, not data, so it goes even
    # when this export is refused below.
    remove_stale_temp_files(output)
    model, tok = load_verified(model_path, variant, tokenizer, device,
                               torch_dtype=torch.float32)
    if adapter is not None:
        _merge_adapter(model, adapter)
    if set(GGUF_FORMATS) & set(formats):
        try:  # an adopted Hub tokenizer llama.cpp cannot reproduce: refused before any write
            gguf_pre_tokenizer(tok)
        except ValueError as err:
            raise ExportError(str(err)) from None
    meta = ExportMeta.of(model, tok)
    paths = output_paths(output, variant or meta.variant, weight_type)
    targets = _targets(formats, output, variant or meta.variant, weight_type, every_gguf_dtype)
    taken = [p.name for p in targets if p.exists() or p.is_symlink()]
    if taken and not overwrite:
        raise ExportError(f"{output} already holds {', '.join(taken)}: pass --overwrite to "
                          "replace them, or another --output")
    written: list[Path] = []
    if {"pytorch", "safetensors"} & set(formats):
        _check_shared_tokenizer(paths, formats, tok)
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
    if set(GGUF_FORMATS) & set(formats):
        ggufs = [p for p in targets if p.suffix == ".gguf"]
        for dtype, path in zip(_gguf_dtypes(weight_type, every_gguf_dtype), ggufs, strict=True):
            with staged_path(path) as tmp:
                write_gguf(model, tok, meta, tmp, dtype)
            written.append(path)
    if "ollama" in formats:
        with staged_path(paths["ollama"]) as tmp:
            write_modelfile(tmp, paths["gguf"], model.config, paths["ollama"].name)
        written.append(paths["ollama"])
    return written


def _gguf_dtypes(weight_type: GgufDtype, every: bool) -> tuple[GgufDtype, ...]:
    return GGUF_DTYPES if every else (weight_type,)


def _targets(formats: Sequence[Format], output: Path, variant: str, weight_type: GgufDtype,
             every_gguf_dtype: bool) -> list[Path]:
    """What this export would replace: each format's file or folder, a GGUF per weight type
    (not `tokenizer/`, shared by the .pt and .safetensors exports and guarded by
    `_check_shared_tokenizer`)."""
    paths = output_paths(output, variant)
    targets = [paths[f] for f in formats if f != "gguf"]
    if set(GGUF_FORMATS) & set(formats):
        targets += [output_paths(output, variant, dtype)["gguf"]
                    for dtype in _gguf_dtypes(weight_type, every_gguf_dtype)]
    return targets


def _check_shared_tokenizer(paths: dict[str, Path], formats: Sequence[Format],
                            tok: Any) -> None:
    """The .pt and .safetensors exports of one --output share its `tokenizer/`: refuse to
    replace it with another tokenizer while exports this run does not rewrite still need the
    old one (they would load with the wrong tokenizer; the loader now refuses them)."""
    existing = paths["tokenizer"] / "tokenizer.json"
    if not existing.is_file():
        return
    try:
        old = Forge1Tokenizer(paths["tokenizer"]).fingerprint()
    except ValueError:  # a damaged tokenizer/ binds nothing: replacing it loses nothing
        return
    if old == tok.fingerprint():
        return
    ours = {paths[f] for f in formats if f in ("pytorch", "safetensors")}
    others = sorted(p.name for p in paths["tokenizer"].parent.glob("forge1_*")
                    if p.suffix in (".pt", ".safetensors") and p not in ours)
    if others:
        raise ExportError(f"{paths['tokenizer'].parent} holds {', '.join(others)}, made with "
                          f"another tokenizer ({old}) that this export would replace: pass "
                          "another --output for this model")


def _merge_adapter(model: torch.nn.Module, adapter: str | Path) -> None:
    """Merge the PEFT LoRA folder `adapter` into `model` in place; one-line ExportError when it
    is not one or belongs to another model shape."""
    try:
        tensors, scale = read_adapter(adapter)
        merged = merge(model.state_dict(), model.config, tensors, scale)
        model.load_state_dict(merged)
    except ValueError as err:
        raise ExportError(str(err)) from None
    except (KeyError, RuntimeError) as err:  # a layer the model lacks, or other shapes
        raise ExportError(f"--adapter {adapter}: does not fit this model "
                          f"({str(err).splitlines()[0]}); pass the model it was trained on"
                          ) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aethermind export",
        description="Export a trained Forge-1 to .pt, safetensors, a Hugging Face directory "
                    "GGUF (llama.cpp) or GGUF + Modelfile (Ollama).")
    add_model_args(p)
    p.add_argument("--format", default="both", choices=FORMAT_CHOICES,
                   help="both = pytorch + safetensors (default); ollama = GGUF + Modelfile; "
                        "all = every format and every GGUF type")
    p.add_argument("--dtype", choices=GGUF_DTYPES,
                   help=f"GGUF weight type, only with --format gguf, ollama or all (with all: "
                        f"the one the Modelfile uses) (default: {DEFAULT_GGUF_DTYPE})")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                   help=f"directory to write into (default: {DEFAULT_OUTPUT})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files an earlier export left in --output (default: refuse)")
    p.add_argument("--adapter", type=Path,
                   help="PEFT LoRA folder to merge into the weights first (a lora: run's "
                        "<output_dir>/adapter)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    formats = FORMAT_SETS.get(args.format, (args.format,))
    try:
        paths = export_model(args.model, args.variant, formats, args.output,
                             gguf_dtype=args.dtype, every_gguf_dtype=args.format == "all",
                             tokenizer=args.tokenizer, device=args.device,
                             overwrite=args.overwrite, adapter=args.adapter)
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
