"""Load a trained Forge-1 and its tokenizer for chat, evaluate, serve and export, with one
clear line for every mistake.

What `--model` may name: a `.pt` file, or a folder holding one `forge1_*_final.pt` directly or
in its `final_model/` (`layout.find_final`). A `.pt` is read with weights-only `torch.load`
and may be a plain state dict (the final model), a training checkpoint
(`checkpoints/step_*.pt`) or an `aethermind export` .pt (both wrap the weights under "model"
with their "model_config" and "tokenizer_fingerprint"); a `.safetensors` export is read with
`exported.read_safetensors` (config and fingerprint in its header). A Hugging Face Llama
folder (what `aethermind export --format hf` writes, or a fine-tune of it: config.json with a
`model_type`, the weights and a Forge-1 tokenizer; or a Hub Llama such as SmolLM2, whose
own tokenizer is adopted and the embedding resized to it) is read by `export.hf.read_hf_dir`, the
converter `aethermind import-hf` uses, with its own tokenizer; `find_checkpoint` returns the
folder itself (its name is the model's name), and a path to its model.safetensors means it.
Shape: `config.json` beside the file wins, else the config the file embeds; `--variant` is only
checked against it. Without either, the `--variant` preset, else the preset of the weights'
width, with the weights' vocab size; the tensors' shapes are checked before any allocation.
Tokenizer: `tokenizer/` beside the file wins (a different given one is ignored with a
warning), unless the weights name another tokenizer fingerprint (then it belongs to another
model and is refused); else the one given, else the bundled default (with a warning when
the weights do not name a tokenizer fingerprint). Without `tokenizer/` beside, a tokenizer
whose fingerprint is not the one saved with the weights is refused; any tokenizer whose size
does not fit the model's vocabulary is refused.
`load_verified` adds an integrity check (CRC32s, finite weights) for commands that copy the
weights elsewhere (export). Errors are `LoadError` (a ValueError) whose message names the
problem and the fix, so CLIs print it as one line. `add_model_args` declares the shared
--model/--variant/--tokenizer/--device options.
Usage: `model, tok = load_model("outputs/final_model/forge1_nano_final.pt", "nano")`.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from aethermind.artifacts.checkpoint import torch_load, verify_crc
from aethermind.artifacts.exported import read_safetensors
from aethermind.artifacts.layout import CONFIG_FILE, TOKENIZER_DIR, find_final
from aethermind.export.hf import WEIGHTS as HF_WEIGHTS
from aethermind.export.hf import read_hf_dir
from aethermind.model.config import PRESETS, VARIANTS, Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.runtime.dist import select_device
from aethermind.text.tokenizer import Forge1Tokenizer


class LoadError(ValueError):
    """A checkpoint, variant, tokenizer or device that cannot be used; the message says why."""


def is_hf_dir(path: Path) -> bool:
    """A Hugging Face model folder: config.json naming a `model_type` (ours names none)."""
    config = path / CONFIG_FILE
    try:
        data = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else None
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_type" in data


def find_checkpoint(model_path: str | Path) -> Path:
    """The .pt file: the path itself, or the single final model in a (final_model) dir; or
    a Hugging Face folder (also when given its model.safetensors)."""
    path = Path(model_path)
    if path.is_file():
        hf = path.name == HF_WEIGHTS and is_hf_dir(path.parent)
        return path.parent if hf else path
    found = find_final(path) if path.is_dir() else []
    if not found and path.is_dir() and is_hf_dir(path):
        return path
    if len(found) > 1:
        raise LoadError(f"{found[0].parent} holds several checkpoints "
                        f"({', '.join(f.name for f in found)}): pass one .pt file")
    if found:
        return found[0]
    raise LoadError(f"checkpoint not found: {path} (train one with `aethermind train`, or pass "
                    "--model outputs/final_model/forge1_<variant>_final.pt)")


def _read_checkpoint(ckpt: Path
                     ) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, str | None]:
    """(state dict, the model config a training checkpoint or export embeds or None for a plain
    .pt, the tokenizer fingerprint saved with the weights or None). A .safetensors file is read
    as an `aethermind export` (its header holds the config)."""
    if ckpt.suffix == ".safetensors":
        try:
            sd, meta = read_safetensors(ckpt)
        except Exception as err:  # a foreign or corrupt file: many error types
            raise LoadError(f"cannot read {ckpt} as a Forge-1 export: {err}") from None
        return sd, meta.config, meta.tokenizer_fingerprint
    try:
        obj = torch_load(ckpt)
    except ValueError as err:  # corrupt, foreign or blocked: one line naming what was wrong
        raise LoadError(str(err)) from None
    embedded = fingerprint = None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        embedded = obj.get("model_config")  # a training checkpoint that wraps the weights
        fingerprint = obj.get("tokenizer_fingerprint")
        obj = obj["model"]
    if not isinstance(obj, dict) or "tok_emb.weight" not in obj:
        raise LoadError(f"{ckpt} is not a Forge-1 state dict (no tok_emb.weight); pass the "
                        "forge1_<variant>_final.pt written by `aethermind train`")
    sd = {k.removeprefix("_orig_mod."): v for k, v in obj.items()}
    return sd, embedded if isinstance(embedded, dict) else None, fingerprint


def _check_shapes(sd: dict[str, torch.Tensor], cfg: Forge1Config) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = Forge1Model(cfg)
    ref = model.state_dict()
    missing = sorted(set(ref) - set(sd))
    unexpected = sorted(set(sd) - set(ref))
    bad = [k for k in ref if k in sd and tuple(ref[k].shape) != tuple(sd[k].shape)]
    if missing or unexpected or bad:
        first = (bad or missing or unexpected)[0]
        got = tuple(sd[first].shape) if first in sd else "absent"
        want = tuple(ref[first].shape) if first in ref else "absent"
        raise LoadError(f"{len(missing) + len(unexpected) + len(bad)} tensor(s) differ, "
                        f"e.g. {first}: checkpoint {got}, model {want}")


def _saved_config(ckpt: Path, embedded: dict[str, Any] | None) -> Forge1Config | None:
    """The shape the run saved: config.json beside the .pt, else the checkpoint's own copy."""
    config_file = ckpt.parent / CONFIG_FILE
    where, data = config_file, None
    if config_file.is_file():
        try:
            data = json.loads(config_file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise LoadError(f"{config_file}: invalid model config ({err})") from None
    elif embedded is not None:
        where, data = ckpt, embedded
    if data is None:
        return None
    try:
        return Forge1Config.from_dict(data)
    except (ValueError, TypeError, AttributeError) as err:
        raise LoadError(f"{where}: invalid model config ({err})") from None


def _width_preset(sd: dict[str, torch.Tensor]) -> str | None:
    """The preset whose width the embedding has: a hint when no config was saved (verified by
    `_check_shapes` before use)."""
    dim = int(sd["tok_emb.weight"].shape[1])
    return next((name for name, p in PRESETS.items() if p["dim"] == dim), None)


def _check_variant(cfg: Forge1Config | None, variant: str | None) -> None:
    """`variant` is a preset name and, given a saved `cfg`, that preset's shape."""
    if variant is not None and variant not in VARIANTS:
        raise LoadError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    if cfg is None or variant is None:
        return
    actual = cfg.preset_name()
    preset = Forge1Config.from_variant(variant, vocab_size=cfg.vocab_size)
    diff = preset.matches(cfg)
    if diff:
        detail = ", ".join(f"{n}={getattr(cfg, n)} not {getattr(preset, n)}" for n in diff)
        fix = (f"it is a {actual!r} model: use --variant {actual}" if actual else
               "drop --variant to use its saved config")
        raise LoadError(f"--variant {variant} does not match the checkpoint ({detail}); {fix}")


def _config_for(ckpt: Path, sd: dict[str, torch.Tensor], variant: str | None,
                embedded: dict[str, Any] | None) -> Forge1Config:
    """The model's config, read from what the run saved; `variant` is only checked against it.
    Without a saved config: the `variant` preset (else the one of the weights' width) with the
    weights' vocab."""
    _check_variant(None, variant)  # a known name, before any file is read
    cfg = _saved_config(ckpt, embedded)
    hint = "the saved config does not describe these weights"
    if cfg is not None:
        _check_variant(cfg, variant)
    else:
        actual = _width_preset(sd)
        name = variant or actual
        if name is None:
            raise LoadError(f"no config.json beside {ckpt} and its width matches no preset: "
                            "put the training run's config.json next to it")
        cfg = Forge1Config.from_variant(name, vocab_size=int(sd["tok_emb.weight"].shape[0]))
        hint = (f"it looks like a {actual!r} model: use --variant {actual}"
                if actual and actual != variant else
                "put the training run's config.json next to it")
    try:
        _check_shapes(sd, cfg)
    except LoadError as err:
        raise LoadError(f"checkpoint {ckpt.name} does not fit the "
                        f"{variant or 'configured'} model ({err}); {hint}") from None
    return cfg


def _load_tokenizer(ckpt: Path, tokenizer: Any, fingerprint: str | None = None
                    ) -> Forge1Tokenizer:
    """The tokenizer saved beside the checkpoint wins (contract); else the given; else default
    (said in a warning). A tokenizer whose fingerprint differs from the one saved with the
    weights is refused: its ids would mean other tokens."""
    beside = ckpt.parent / TOKENIZER_DIR
    given = tokenizer
    if given is not None and not isinstance(given, Forge1Tokenizer):
        try:
            given = Forge1Tokenizer(Path(given))
        except (FileNotFoundError, ValueError) as err:
            raise LoadError(f"--tokenizer {tokenizer}: {err}") from None
    if not (beside / "tokenizer.json").is_file():
        tok = given
        if tok is None:
            tok = Forge1Tokenizer()
            if fingerprint is None:
                warnings.warn(f"no tokenizer/ beside {ckpt}: using the bundled default "
                              "tokenizer (pass --tokenizer DIR if the model was trained with "
                              "another)", UserWarning, stacklevel=3)
        if fingerprint is not None and tok.fingerprint() != fingerprint:
            raise LoadError(f"{ckpt} was trained with tokenizer {fingerprint}, not "
                            f"{tok.fingerprint()}: pass the run's tokenizer with --tokenizer "
                            "(e.g. <output_dir>/final_model/tokenizer)")
        return tok
    try:
        saved = Forge1Tokenizer(beside)
    except ValueError as err:  # a corrupt tokenizer.json beside the model
        raise LoadError(str(err)) from None
    if fingerprint is not None and saved.fingerprint() != fingerprint:
        raise LoadError(f"{beside} is tokenizer {saved.fingerprint()}, but {ckpt.name} was "
                        f"trained with {fingerprint}: the folder's tokenizer belongs to another "
                        "model (export each model into its own --output)")
    if given is not None and given.fingerprint() != saved.fingerprint():
        warnings.warn(f"ignoring the given tokenizer: the checkpoint was saved with {beside}, "
                      "which is used instead", UserWarning, stacklevel=3)
    return saved


def _read_hf(folder: Path, variant: str | None, tokenizer: Any
             ) -> tuple[dict[str, torch.Tensor], Forge1Config, Forge1Tokenizer]:
    """A Hugging Face folder through import-hf's converter; its tokenizer wins, like a
    tokenizer/ beside a checkpoint, and --variant is only checked."""
    try:
        sd, cfg, tok = read_hf_dir(folder)
    except ValueError as err:  # ExportError: one line naming the problem
        raise LoadError(f"{err} (convert it with `aethermind import-hf --model {folder}`)"
                        ) from None
    _check_variant(cfg, variant)
    if tokenizer is not None:
        warnings.warn(f"ignoring the given tokenizer: {folder} holds its own, which is used "
                      "instead", UserWarning, stacklevel=3)
    return sd, cfg, tok


def load_model(model_path: str | Path, variant: str | None = None, tokenizer: Any = None,
               device: str | torch.device = "cpu", *, torch_dtype: torch.dtype | None = None
               ) -> tuple[Forge1Model, Forge1Tokenizer]:
    """(model in eval mode on `device`, tokenizer). Raises LoadError with a one-line reason.

    Args:
        model_path: the .pt file, or its final_model/ (or output) directory, or a Hugging
            Face Llama folder (its own tokenizer, Forge-1 special tokens added when missing).
        variant: a preset name (config.VARIANTS), checked against the saved config; needed
            only when no config was saved and the weights' width matches no preset.
        tokenizer: a Forge1Tokenizer or a directory, used when none is saved beside the
            checkpoint; without either, the bundled default.
        device: "cpu", "cuda", "cuda:1", "mps" or "auto"; a GPU that is not there falls back
            to the CPU with a warning (`dist.select_device`).
        torch_dtype: cast the weights to this (None leaves them float32).
    """
    try:
        dev = select_device(device)
    except ValueError as err:
        raise LoadError(str(err)) from None
    ckpt = find_checkpoint(model_path)
    if ckpt.is_dir():
        sd, cfg, tok = _read_hf(ckpt, variant, tokenizer)
    else:
        sd, embedded, fingerprint = _read_checkpoint(ckpt)
        cfg = _config_for(ckpt, sd, variant, embedded)
        tok = _load_tokenizer(ckpt, tokenizer, fingerprint)
    if tok.get_vocab_size() > cfg.vocab_size or tok.get_vocab_size_padded() != cfg.vocab_size:
        raise LoadError(f"tokenizer has {tok.get_vocab_size()} tokens (padded "
                        f"{tok.get_vocab_size_padded()}) but the checkpoint's vocabulary is "
                        f"{cfg.vocab_size}: pass the tokenizer it was trained with "
                        "(--tokenizer outputs/final_model/tokenizer)")
    model = Forge1Model(cfg)
    model.load_state_dict(sd)
    model.to(device=dev, dtype=torch_dtype)
    return model.eval(), tok


def load_verified(model_path: str | Path, variant: str | None = None, tokenizer: Any = None,
                  device: str | torch.device = "cpu", *, torch_dtype: torch.dtype | None = None
                  ) -> tuple[Forge1Model, Forge1Tokenizer]:
    """`load_model` plus an integrity check, for commands that copy the weights elsewhere
    (export): the .pt's CRC32s, and every tensor finite. Names and shapes `load_model` checks
    already. A damaged checkpoint is a LoadError instead of a model that babbles."""
    ckpt = find_checkpoint(model_path)
    try:
        verify_crc(ckpt)
    except ValueError as err:
        raise LoadError(str(err)) from None
    model, tok = load_model(ckpt, variant, tokenizer, device, torch_dtype=torch_dtype)
    for name, tensor in model.state_dict().items():
        if not bool(torch.isfinite(tensor).all()):
            raise LoadError(f"{ckpt}: tensor {name} holds NaN or infinite values (a damaged "
                            "file or a diverged run): use an earlier checkpoint")
    return model, tok


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options every command that loads a trained model shares (chat, evaluate)."""
    p.add_argument("--model", required=True, help="forge1_<variant>_final.pt or its directory")
    p.add_argument("--variant", choices=VARIANTS,
                   help="checked against the checkpoint (optional when config.json is beside it)")
    p.add_argument("--tokenizer", help="tokenizer dir, used if none is saved with the checkpoint")
    p.add_argument("--device", default="auto",
                   help="cpu, cuda, mps or auto (default: auto; a missing GPU falls back to cpu)")
