"""LoRA through peft on Forge-1: adapters under Hugging Face Llama's names, merged for export.

`add_adapters(model, settings)` freezes the model and injects peft LoRA layers into the
projections named by `settings.targets` (HF names: q_proj ... down_proj, `LORA_TARGETS`).
Forge-1 fuses q/k/v and gate/up into one matmul each; a targeted fused projection is first
split into its HF parts (`SplitLinear`, same output) so each part gets its own adapter, exactly
as peft would on `LlamaForCausalLM`. `adapter_tensors` names the trained A/B matrices as PEFT
saves them for the HF export (`save_adapter` writes adapter_config.json +
adapter_model.safetensors, loadable with `PeftModel.from_pretrained(hf_model, folder)`),
`base_state_dict` gives back the frozen Forge-1 weights, and `merge` adds B @ A * alpha / r
into a Forge-1 state dict through `hf_convert` (the one name map), which is also how
`aethermind export --adapter` merges an adapter folder read back from disk (`read_adapter`,
no peft needed there).
It knows nothing about training loops or checkpoints. peft (and the transformers it imports,
~4 s) is imported only when adapters are added or saved.
Usage: `add_adapters(model, cfg.lora)`; later `merge(base_state_dict(model), model.config,
*adapter_tensors(model))`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Protocol

import safetensors.torch
import torch
from torch import nn

from aethermind.model.config import Forge1Config
from aethermind.model.hf_convert import FUSED_MAP, NAME_MAP, from_hf, to_hf


class LoraSettings(Protocol):
    """What this module reads of `config.LoraSettings` (the config imports this module's
    `LORA_TARGETS`, so it cannot import the config back)."""

    r: int
    alpha: float
    dropout: float
    targets: tuple[str, ...]


ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # what PeftModel puts before the HF module names
ADAPTER_NAME = "default"  # peft's name for a model's only adapter


def _module_map() -> dict[str, str]:
    """Forge-1 module path -> HF module path ({i} = layer) for every projection LoRA may
    target; a fused Forge-1 tensor contributes one `<fused>.<hf leaf>` per part."""
    out: dict[str, str] = {}
    for ours, parts in FUSED_MAP.items():
        for part in parts:
            leaf = part.removesuffix(".weight").rsplit(".", 1)[1]
            out[f"{ours.removesuffix('.weight')}.{leaf}"] = part.removesuffix(".weight")
    for ours, theirs in NAME_MAP.items():
        if "{i}" in ours and (".self_attn." in theirs or ".mlp." in theirs):
            out[ours.removesuffix(".weight")] = theirs.removesuffix(".weight")
    return out


MODULE_MAP = _module_map()
# The one list of LoRA targets (config validation, peft, the HF adapter): HF's leaf names.
LORA_TARGETS: tuple[str, ...] = tuple(hf.rsplit(".", 1)[1] for hf in MODULE_MAP.values())
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


class SplitLinear(nn.Module):
    """A fused bias-free projection as its HF parts (children named q_proj, k_proj, v_proj or
    gate_proj, up_proj), outputs concatenated in that order: the fused layer's output."""

    def __init__(self, fused: nn.Linear, parts: dict[str, int]) -> None:
        super().__init__()
        chunks = fused.weight.detach().split(list(parts.values()), dim=0)
        for name, w in zip(parts, chunks, strict=True):
            part = nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
            part.weight = nn.Parameter(w.clone(), requires_grad=False)
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.children()], dim=-1)  # (B, T, sum of parts)


def _parts(block: nn.Module, fused: str) -> dict[str, int]:
    """HF leaf -> rows of `fused` ("attn.wqkv" or "mlp.w_gate_up") in `block`."""
    if fused == "attn.wqkv":
        attn = block.attn
        return {"q_proj": attn.q_dim, "k_proj": attn.kv_dim, "v_proj": attn.kv_dim}
    ffn = block.mlp.w_gate_up.out_features // 2
    return {"gate_proj": ffn, "up_proj": ffn}


def _peft_pattern(targets: tuple[str, ...]) -> str:
    """A regex peft full-matches against module names: the targeted Forge-1 modules."""
    ours = [o.replace("layers.{i}.", "") for o, h in MODULE_MAP.items()
            if h.rsplit(".", 1)[1] in targets]
    return r"layers\.\d+\.(" + "|".join(re.escape(o) for o in ours) + ")"


def add_adapters(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Freeze `model` (a Forge1Model), split the fused projections that hold a target, and
    inject peft LoRA layers (B = 0: the model's output is unchanged until trained). In place;
    returns the model. Only the adapters' parameters require grad afterwards."""
    from peft import LoraConfig, inject_adapter_in_model

    model.requires_grad_(False)
    for block in model.layers:
        for fused in ("attn.wqkv", "mlp.w_gate_up"):
            parts = _parts(block, fused)
            if set(parts) & set(settings.targets):
                owner, name = fused.split(".")
                linear = getattr(getattr(block, owner), name)
                setattr(getattr(block, owner), name, SplitLinear(linear, parts))
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, bias="none",
                        target_modules=_peft_pattern(settings.targets))
    inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    return model


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _to_hf_module(ours: str) -> str:
    m = _LAYER.match(ours)
    if m is None or f"layers.{{i}}.{m.group(2)}" not in MODULE_MAP:
        raise ValueError(f"{ours}: not a LoRA-targetable Forge-1 module")
    return MODULE_MAP[f"layers.{{i}}.{m.group(2)}"].format(i=m.group(1))


def adapter_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], float]:
    """({HF module path + ".lora_A.weight"/".lora_B.weight": tensor}, scale alpha / r) of a
    model `add_adapters` prepared, detached on the CPU."""
    from peft.tuners.lora import LoraLayer

    out: dict[str, torch.Tensor] = {}
    scale = None
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            hf = _to_hf_module(name)
            out[f"{hf}.lora_A.weight"] = module.lora_A[ADAPTER_NAME].weight.detach().cpu()
            out[f"{hf}.lora_B.weight"] = module.lora_B[ADAPTER_NAME].weight.detach().cpu()
            scale = module.scaling[ADAPTER_NAME]
    assert scale is not None, "the model holds no LoRA layers (add_adapters first)"
    return out, float(scale)


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen Forge-1 weights under their own names (adapters left out, split parts fused
    again): what `add_adapters` started from."""
    sd: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".lora_" not in key:
            sd[key.replace(".base_layer.", ".")] = value.detach()
    for name, module in model.named_modules():
        if isinstance(module, SplitLinear):
            parts = [sd.pop(f"{name}.{child}.weight") for child, _ in module.named_children()]
            sd[f"{name}.weight"] = torch.cat(parts, dim=0)
    return sd


def merge(sd: dict[str, torch.Tensor], cfg: Forge1Config, adapter: dict[str, torch.Tensor],
          scale: float) -> dict[str, torch.Tensor]:
    """A Forge-1 state dict with `adapter` (HF-named A/B pairs) merged: W + scale * B @ A,
    computed in HF's (unfused) layout so the fused tensors need no offsets here."""
    hf, hf_cfg = to_hf(sd, cfg)
    for key, a in adapter.items():
        if not key.endswith(".lora_A.weight"):
            continue
        module = key.removesuffix(".lora_A.weight")
        b = adapter[f"{module}.lora_B.weight"]
        weight = hf[f"{module}.weight"]
        hf[f"{module}.weight"] = weight + (b.double() @ a.double() * scale).to(weight.dtype)
    if cfg.tie_embeddings:  # from_hf re-ties lm_head from the embedding
        hf.pop("lm_head.weight", None)
    merged, _ = from_hf(hf, hf_cfg)
    return {k: v.contiguous() for k, v in merged.items()}


def save_adapter(model: nn.Module, settings: LoraSettings, folder: str | Path,
                 base: str | None = None) -> Path:
    """Write the PEFT adapter folder (adapter_config.json + adapter_model.safetensors) whose
    module names are the HF export's, so `PeftModel.from_pretrained(hf_model, folder)` loads
    it. `base` is recorded as base_model_name_or_path."""
    from peft import LoraConfig

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, _ = adapter_tensors(model)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha,
                        lora_dropout=settings.dropout, bias="none", task_type="CAUSAL_LM",
                        target_modules=sorted(settings.targets),
                        base_model_name_or_path=base)
    config.save_pretrained(str(folder))
    safetensors.torch.save_file({PEFT_PREFIX + k: v.contiguous() for k, v in tensors.items()},
                                str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    return folder


def read_adapter(folder: str | Path) -> tuple[dict[str, torch.Tensor], float]:
    """(HF-named A/B tensors, scale) of a PEFT LoRA folder for a Llama; refuses what a plain
    merge cannot reproduce (DoRA, biases, extra trained modules) with a one-line ValueError."""
    folder = Path(folder)
    config_file, weights = folder / ADAPTER_CONFIG, folder / ADAPTER_WEIGHTS
    if not config_file.is_file() or not weights.is_file():
        raise ValueError(f"--adapter {folder}: expected a PEFT LoRA folder with {ADAPTER_CONFIG} "
                         f"and {ADAPTER_WEIGHTS} (what a `lora:` training run writes)")
    try:
        config: dict[str, Any] = json.loads(config_file.read_text(encoding="utf-8"))
        tensors = safetensors.torch.load_file(str(weights))
    except (ValueError, OSError, safetensors.SafetensorError) as err:
        raise ValueError(f"--adapter {folder}: unreadable ({err})".replace("\n", " ")) from None
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"--adapter {folder}: peft_type {config.get('peft_type')!r}; only "
                         "LORA adapters merge")
    for key, ok in (("use_dora", False), ("bias", "none"), ("fan_in_fan_out", False),
                    ("modules_to_save", None)):
        if config.get(key, ok) not in (ok, [] if ok is None else ok):
            raise ValueError(f"--adapter {folder}: {key}={config[key]!r} cannot be merged "
                             "here; only plain LoRA on the projections")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r < 1 or not isinstance(alpha, (int, float)):
        raise ValueError(f"--adapter {folder}: {ADAPTER_CONFIG} lacks a valid r / lora_alpha")
    scale = alpha / (r ** 0.5 if config.get("use_rslora") else r)
    out = {}
    for key, value in tensors.items():
        name = key.removeprefix(PEFT_PREFIX).replace(f".{ADAPTER_NAME}.", ".")
        if not re.fullmatch(r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight",
                            name):
            raise ValueError(f"--adapter {folder}: tensor {key} is not a LoRA matrix of a "
                             "Llama projection")
        out[name] = value.float()
    return out, float(scale)
