"""A Hugging Face `LlamaForCausalLM` directory from Forge-1, and back (`aethermind import-hf`).

The directory holds config.json, model.safetensors, generation_config.json (its
`eos_token_id` list is `chat_format.STOP_TOKENS`, so `generate` stops where our engine does, and
it samples with our defaults, `SamplingParams`'s temperature and top-p, as `chat` does),
tokenizer.json (`Forge1Tokenizer.export_json`: the think tags are not special there, so decoded
text keeps them; an adopted Hub tokenizer stays in its own style, with the Forge-1 special
tokens appended), tokenizer_config.json, special_tokens_map.json and the chat template (the
variant with {% generation %} markers) twice, as chat_template.jinja and inside
tokenizer_config.json, because some loaders read only one.
Weight names come from `hf_convert`; `transformers` is not needed to write or read it. The
Forge-1 metadata rides in config.json under "forge1".
Usage: `write_hf_dir(model, tok, ExportMeta.of(model, tok), Path("out/forge1_nano_hf"))`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from aethermind.artifacts.exported import (
    ExportError,
    ExportMeta,
    save_safetensors_file,
    variant_of,
)
from aethermind.artifacts.layout import WEIGHTS_GLOB, final_dir, write_final
from aethermind.inference.sampling import SamplingParams
from aethermind.model.config import Forge1Config
from aethermind.model.hf_convert import from_hf, from_hf_config_dict, to_hf
from aethermind.model.resize import resize_vocab
from aethermind.model.transformer import Forge1Model
from aethermind.runtime.files import remove_stale_temp_files, staged_path
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import HF_CHAT_TEMPLATE
from aethermind.text.special_tokens import VISIBLE_TOKENS
from aethermind.text.tokenizer import Forge1Tokenizer

WEIGHTS = "model.safetensors"


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def tokenizer_files(tok: Forge1Tokenizer, max_seq_len: int) -> dict[str, str]:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json, chat_template.jinja.

    The think tags are ordinary added tokens there (`special_tokens.VISIBLE_TOKENS`), so
    `decode(skip_special_tokens=True)` keeps the thinking splittable; the template is the one
    with {% generation %} markers (TRL's assistant_only_loss).
    """
    bos, eos, pad = cf.SPECIAL_TOKENS[:3]
    extra = [s for s in cf.SPECIAL_TOKENS[3:] if s not in VISIBLE_TOKENS]
    special = {"bos_token": bos, "eos_token": eos, "pad_token": pad,
               "additional_special_tokens": extra}
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **special,
              "add_bos_token": False, "add_eos_token": False,  # the template writes <|bos|>
              "clean_up_tokenization_spaces": False, "model_max_length": max_seq_len,
              "chat_template": HF_CHAT_TEMPLATE}
    return {"tokenizer.json": tok.export_json(),
            "tokenizer_config.json": _dump(config),
            "special_tokens_map.json": _dump(special),
            "chat_template.jinja": HF_CHAT_TEMPLATE}


def generation_defaults() -> dict[str, Any]:
    """generation_config.json's sampling: `SamplingParams`'s defaults, so `generate` answers
    as `aethermind chat` does (top_k: transformers' own default is 50, ours is off)."""
    d = SamplingParams()
    return {"do_sample": d.temperature > 0, "temperature": d.temperature,
            "top_p": 1.0 if d.top_p is None else d.top_p, "top_k": d.top_k or 0,
            "repetition_penalty": d.repetition_penalty}


def write_hf_dir(model: Forge1Model, tok: Forge1Tokenizer, meta: ExportMeta,
                 directory: Path) -> Path:
    """Fill `directory` (the caller stages it) with a transformers-loadable Llama model."""
    cfg = model.config
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    hf_sd, hf_cfg = to_hf(sd, cfg)
    ids = {"bos_token_id": tok.bos_id, "eos_token_id": cf.stop_ids(tok), "pad_token_id": tok.pad_id}
    hf_cfg = {**hf_cfg, **ids, "torch_dtype": "float32", "forge1": meta.to_strings()}
    directory.mkdir(parents=True, exist_ok=True)
    weights = {k: v.contiguous().float() for k, v in hf_sd.items()}
    save_safetensors_file(weights, directory / WEIGHTS, {"format": "pt"})
    files = {"config.json": _dump(hf_cfg),
             "generation_config.json": _dump({**ids, **generation_defaults()}),
             **tokenizer_files(tok, cfg.max_seq_len)}
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / f"{WEIGHTS}.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
    elif (directory / WEIGHTS).is_file():
        shards = [WEIGHTS]
    else:
        raise ExportError(f"no {WEIGHTS} (or {WEIGHTS}.index.json) in {directory}: save the "
                          "model with save_pretrained(..., safe_serialization=True)")
    sd: dict[str, torch.Tensor] = {}
    for shard in shards:
        try:
            sd.update(safetensors.torch.load_file(str(directory / shard)))
        except (safetensors.SafetensorError, OSError) as err:  # empty, truncated, foreign
            raise ExportError(f"{directory / shard}: not readable as safetensors ({err})"
                              ) from None
    return {k: v.float() for k, v in sd.items()}


def read_hf_dir(directory: str | Path) -> tuple[dict[str, torch.Tensor], Forge1Config,
                                                 Forge1Tokenizer]:
    """(Forge-1 state dict, config, tokenizer) from a Llama directory and its tokenizer.json.

    A Forge-1 tokenizer must fit the weights as they are. A foreign one (a Hub Llama's) is
    adopted (`Forge1Tokenizer.added_specials`) and the embedding (and an untied head) resized
    to it (`resize.resize_vocab`): its ids keep their rows, the new special tokens get new ones.
    """
    directory = Path(directory)
    config_file = directory / "config.json"
    if not config_file.is_file():
        raise ExportError(f"no config.json in {directory}: pass a Hugging Face model directory")
    try:
        hf_cfg = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:  # empty, not JSON, not UTF-8
        raise ExportError(f"{config_file} is not a JSON config ({err})") from None
    if not isinstance(hf_cfg, dict):
        raise ExportError(f"{config_file} holds a {type(hf_cfg).__name__}, not a config "
                          "object")
    if hf_cfg.get("model_type") != "llama":
        raise ExportError(f"{config_file}: model_type {hf_cfg.get('model_type')!r}; only Llama "
                          "(LlamaForCausalLM) directories convert to Forge-1")
    try:  # the config alone first: a bad one fails before gigabytes of weights are read
        from_hf_config_dict(hf_cfg)
    except KeyError as err:
        raise ExportError(f"{config_file} lacks {err}") from None
    except (ValueError, TypeError) as err:
        raise ExportError(f"{config_file}: {err}") from None
    if not (directory / "tokenizer.json").is_file() and (directory / "tokenizer.model").is_file():
        raise ExportError(f"{directory} has a SentencePiece tokenizer.model but no "
                          "tokenizer.json: write one with transformers' AutoTokenizer."
                          "from_pretrained(folder).save_pretrained(folder)")
    try:
        tok = Forge1Tokenizer(directory)
        sd, cfg = from_hf(_read_weights(directory), hf_cfg)
    except (FileNotFoundError, ValueError) as err:
        raise ExportError(f"{directory}: {err}") from None
    except KeyError as err:
        raise ExportError(f"{directory}: weights lack tensor {err}") from None
    if tok.added_specials:  # a Hub tokenizer just adopted: its new ids need rows
        known = tok.get_vocab_size() - len(tok.added_specials)
        try:
            sd, cfg = resize_vocab(sd, cfg, tok.get_vocab_size_padded(), known)
        except ValueError as err:
            raise ExportError(f"{directory}: {err}") from None
    if tok.get_vocab_size_padded() != cfg.vocab_size:
        raise ExportError(f"{directory}: the tokenizer has {tok.get_vocab_size()} tokens but the "
                          f"model's vocabulary is {cfg.vocab_size}; they must belong together")
    model = Forge1Model(cfg)  # catches shape errors before anything is written
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:  # torch lists every mismatch on its own line: name the first
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ExportError(f"{directory}: weights do not fit the config "
                          f"({lines[min(1, len(lines) - 1)]})") from None
    return sd, cfg, tok


def import_hf(directory: str | Path, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write `output/final_model/` (the layout `chat`, `evaluate` and `export` read). An
    existing one (a trained model, perhaps) is refused unless `overwrite`, then replaced whole
    or not at all. Temp files a killed earlier writer left in `output` are removed first."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file: pass a directory")
    target = final_dir(output)
    if target.exists() and not overwrite and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"--output {output} already holds a model ({target}): pass "
                          "--overwrite to replace it, or another --output")
    sd, cfg, tok = read_hf_dir(directory)
    remove_stale_temp_files(output)
    with staged_path(target) as tmp:
        write_final(sd, cfg, tok, tmp, variant_of(cfg))
    return next(final_dir(output).glob(WEIGHTS_GLOB))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="aethermind import-hf",
        description="Make a Forge-1 checkpoint from a Hugging Face Llama directory: one "
                    "`aethermind export --format hf` wrote (and someone fine-tuned), or a Hub "
                    "Llama such as SmolLM2 or TinyLlama, which keeps its own tokenizer with the "
                    "Forge-1 special tokens added.")
    p.add_argument("--model", type=Path, help="the Hugging Face model directory")
    # The positional spelling from before every command took --model: still accepted, not shown
    # (no type=: argparse would convert the SUPPRESS default and overwrite --model with it).
    p.add_argument("model", nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--output", type=Path, default=Path("outputs") / "imported",
                   help="writes OUTPUT/final_model/ (default: outputs/imported)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a model already in OUTPUT/final_model/ (refused without it)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if args.model is None:
        p.error("the following arguments are required: --model")
    try:
        path = import_hf(Path(args.model), args.output, overwrite=args.overwrite)
    except ExportError as err:
        p.exit(2, f"error: {err}\n")
    except OSError as err:
        p.exit(2, f"error: cannot write to {args.output}: {err.strerror or err}; pass a "
                  "writable --output\n")
    print(f"wrote {path} (chat with it: aethermind chat --model {path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
