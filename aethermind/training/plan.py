"""`aethermind plan`: will this config fit my GPU? The guide's memory budget, computed.

Counts bytes from the model shape and the run config, per component: weights, gradients and
AdamW states (fp32 masters under mixed precision, as torch.amp keeps them), activations with
and without gradient checkpointing, the logits, and CUDA overhead; then a verdict for a GPU
size. It is an estimate (the activation count follows this model's saved tensors per block),
not a measurement; it builds the model on the meta device, so it costs no memory itself.
With `lora:` only the adapters get gradients and AdamW states; the frozen weights still sit in
fp32, and each adapter saves its r-wide intermediate (and, with dropout, its input) per token.
Usage: `aethermind plan --config configs/local_config.yaml --variant nano --gpu-gb 4`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass

import torch

from aethermind.artifacts.exported import variant_of
from aethermind.artifacts.loading import LoadError, load_model
from aethermind.model.config import VARIANTS, Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training import lora
from aethermind.training.config import ConfigError, LoraSettings, TrainConfig, load_config

CUDA_OVERHEAD = 0.5 * 2**30  # CUDA context + cuBLAS workspaces, outside max_memory_allocated
FRAGMENTATION = 0.10  # caching-allocator slack on top of live tensors


@dataclass(frozen=True)
class Budget:
    params: int
    trainable: int  # parameters with gradients and optimizer states (LoRA: the adapters)
    weights: float  # bytes
    gradients: float
    optimizer: float
    activations: float  # without checkpointing
    activations_ckpt: float  # with checkpointing
    logits: float
    overhead: float

    def total(self, checkpointing: bool) -> float:
        acts = self.activations_ckpt if checkpointing else self.activations
        live = self.weights + self.gradients + self.optimizer + acts + self.logits
        return live * (1 + FRAGMENTATION) + self.overhead

    def fixed(self) -> float:
        """The part no batch or context size changes: weights, gradients and optimizer states
        with their allocator slack, plus the CUDA context."""
        return (self.weights + self.gradients + self.optimizer) * (1 + FRAGMENTATION) \
            + self.overhead


def count_params(cfg: Forge1Config) -> int:
    with torch.device("meta"):
        return Forge1Model(cfg).num_parameters()


def count_lora(cfg: Forge1Config, settings: LoraSettings) -> int:
    """Adapter parameters `lora.add_adapters` would add (built on the meta device)."""
    with torch.device("meta"):
        model = Forge1Model(cfg)
        lora.add_adapters(model, settings)
    return lora.trainable_count(model)


def lora_activation_bytes(cfg: Forge1Config, settings: LoraSettings, act: int) -> float:
    """Bytes per token one block's adapters save for backward: the r-wide A output, and the
    dropped-out input when dropout is on (without dropout the base layer's saved input is
    shared)."""
    width = {"o_proj": cfg.n_heads * cfg.head_dim, "down_proj": cfg.ffn_dim}
    inputs = sum(width.get(t, cfg.dim) for t in settings.targets) if settings.dropout else 0
    return act * (inputs + settings.r * len(settings.targets))


def block_activation_bytes(cfg: Forge1Config, act: int) -> float:
    """Bytes saved for backward by one block per token (act = bytes of a compute element).

    The residual stream stays fp32 under autocast (4 bytes). Per block: two RMSNorms save their
    fp32 input and output (2 x 2 x 4C) plus the low-precision copy fed to the next matmul (2 x
    act C); attention saves q, k, v and its output, and wo its input (act x (3C + 2 kv)); the
    MLP saves the fused gate/up output, silu(gate) and w_down's input (act x 4F).
    Flash/memory-efficient SDPA keeps no T x T matrix, only a logsumexp per head (4H).
    """
    C, F, kv = cfg.dim, cfg.ffn_dim, cfg.n_kv_heads * cfg.head_dim
    norms = 2 * (2 * 4 * C + act * C)
    attn = act * (3 * C + 2 * kv) + 4 * cfg.n_heads
    mlp = act * 4 * F
    return norms + attn + mlp


def estimate(cfg: Forge1Config, train: TrainConfig) -> Budget:
    P = count_params(cfg)
    act = 4 if train.precision == "fp32" else 2
    tokens = train.batch_size * train.context_length
    per_token = block_activation_bytes(cfg, act)
    trainable = P
    if train.lora is not None:
        trainable = count_lora(cfg, train.lora)
        per_token += lora_activation_bytes(cfg, train.lora, act)
        P += trainable  # the adapters are weights too
    per_block = per_token * tokens
    # Logits: low-precision output, its fp32 copy for the loss, and log-softmax's saved output.
    logits = tokens * cfg.vocab_size * (act + 4 + 4) if act == 2 else tokens * cfg.vocab_size * 8
    checkpointed = cfg.n_layers * 4 * cfg.dim * tokens + per_block  # block inputs + one block
    return Budget(params=P, trainable=trainable, weights=4 * P, gradients=4 * trainable,
                  optimizer=8 * trainable,
                  activations=cfg.n_layers * per_block, activations_ckpt=checkpointed,
                  logits=logits, overhead=CUDA_OVERHEAD)


def _gb(x: float) -> str:
    return f"{x / 2**30:6.2f} GB"


def format_table(b: Budget, cfg: Forge1Config, train: TrainConfig, variant: str,
                 gpu_gb: float) -> str:
    which = "" if train.lora is None else f", LoRA {b.trainable / 1e6:.2f}M"
    rows = [
        ("Model weights (fp32 masters)", b.weights, b.weights),
        (f"Gradients (fp32{which})", b.gradients, b.gradients),
        (f"Optimizer states (AdamW, 2 x fp32{which})", b.optimizer, b.optimizer),
        (f"Activations ({train.batch_size} x {train.context_length}, {train.precision})",
         b.activations, b.activations_ckpt),
        (f"Logits + loss (vocab {cfg.vocab_size})", b.logits, b.logits),
        (f"Allocator slack ({FRAGMENTATION:.0%})",
         FRAGMENTATION * (b.total(False) - b.overhead) / (1 + FRAGMENTATION),
         FRAGMENTATION * (b.total(True) - b.overhead) / (1 + FRAGMENTATION)),
        ("CUDA context + workspaces", b.overhead, b.overhead),
        ("Total", b.total(False), b.total(True)),
    ]
    out = [f"Memory budget: Forge-1 {variant} ({b.params / 1e6:.1f}M parameters), "
           f"batch {train.batch_size} x {train.context_length} tokens, {train.precision}",
           "", f"| {'Component':<40} | {'no checkpointing':>16} | {'checkpointing':>13} |",
           f"|{'-' * 42}|{'-' * 17}:|{'-' * 14}:|"]
    out += [f"| {name:<40} | {_gb(a):>16} | {_gb(c):>13} |" for name, a, c in rows]
    out += ["", *verdict(cfg, train, variant, gpu_gb)]
    return "\n".join(out)


def max_batch_size(cfg: Forge1Config, train: TrainConfig, limit: float,
                   checkpointing: bool) -> int:
    """The largest batch_size at train.context_length whose total fits `limit` bytes (0: none).

    Activations and logits are counted per token in `estimate`, so they grow linearly with the
    batch: one row's cost at batch 1 gives the answer without a search.
    """
    one = estimate(cfg, dataclasses.replace(train, batch_size=1))
    per_row = one.total(checkpointing) - one.fixed()
    return max(0, math.floor((limit - one.fixed()) / per_row))


def verdict(cfg: Forge1Config, train: TrainConfig, variant: str, gpu_gb: float) -> list[str]:
    """What fits `gpu_gb` and what to change: advice that can work, never "lower the batch" when
    the weights and optimizer alone are too big."""
    limit, ctx, bs = gpu_gb * 2**30, train.context_length, train.batch_size
    b = estimate(cfg, train)
    if b.fixed() > limit:
        return _cannot_fit(cfg, train, variant, gpu_gb, b)
    with_ckpt = max_batch_size(cfg, train, limit, True)
    without = max_batch_size(cfg, train, limit, False)
    if with_ckpt == 0:
        one = estimate(cfg, dataclasses.replace(train, batch_size=1))
        per_token = (one.total(True) - one.fixed()) / ctx
        tokens = math.floor((limit - one.fixed()) / per_token)
        return [f"Verdict: does NOT fit a {gpu_gb:g} GB GPU even at batch_size 1 with "
                f"checkpointing ({_gb(one.total(True)).strip()}): at batch_size 1, "
                f"context_length up to {tokens} fits."]
    used = b.total(train.gradient_checkpointing)
    mode = "with" if train.gradient_checkpointing else "without"
    if used <= limit:
        lines = [f"Verdict: fits a {gpu_gb:g} GB GPU {mode} gradient checkpointing "
                 f"({used / 2**30:.2f} GB of {gpu_gb:g} GB)."]
    elif not train.gradient_checkpointing and b.total(True) <= limit:
        lines = [f"Verdict: does NOT fit {gpu_gb:g} GB as configured ({used / 2**30:.2f} GB); "
                 "it fits with gradient_checkpointing: true."]
    else:
        if train.gradient_checkpointing or not without:
            change = f"set batch_size to {with_ckpt} with gradient_checkpointing: true"
        else:
            change = (f"set batch_size to {without}, or to {with_ckpt} with "
                      "gradient_checkpointing: true")
        lines = [f"Verdict: does NOT fit {gpu_gb:g} GB as configured ({used / 2**30:.2f} GB): "
                 f"{change} (and raise gradient_accumulation_steps to keep the effective "
                 "batch)."]
    if without == 0:
        lines.append(f"At context_length {ctx}, gradient checkpointing is needed (without it not "
                     f"even batch_size 1 fits); with it, batch_size up to {with_ckpt} fits.")
        return lines
    lines.append(f"At context_length {ctx}, batch_size up to {without} fits without gradient "
                 f"checkpointing and up to {with_ckpt} with it.")
    if train.gradient_checkpointing and bs <= without:
        lines.append(f"Checkpointing is not needed at batch_size {bs}: gradient_checkpointing: "
                     "false skips the recomputation and trains faster.")
    return lines


def _cannot_fit(cfg: Forge1Config, train: TrainConfig, variant: str, gpu_gb: float,
                b: Budget) -> list[str]:
    limit = gpu_gb * 2**30
    static = b.weights + b.gradients + b.optimizer
    smallest = estimate(cfg, dataclasses.replace(train, batch_size=1)).total(True)
    lines = [f"Verdict: Forge-1 {variant} cannot train on a {gpu_gb:g} GB GPU at any batch size "
             f"or context length: its weights, gradients and optimizer states alone take "
             f"{static / 2**30:.2f} GB ({b.fixed() / 2**30:.2f} GB with allocator slack and the "
             "CUDA context)."]
    need = f"a GPU of at least {math.ceil(smallest / 2**30 * 10) / 10:g} GB"  # rounded up
    smaller = _smaller_fit(cfg, train, limit)
    if smaller is None:
        lines.append(f"No smaller variant fits {gpu_gb:g} GB either; {variant} needs {need} "
                     "(batch_size 1, checkpointing).")
    else:
        name, ctx, n = smaller
        lines.append(f"What fits: the {name} variant (--variant {name}), batch_size up to {n} "
                     f"at context_length {ctx} with gradient checkpointing; or, for {variant}, "
                     f"{need} (batch_size 1, checkpointing).")
    return lines


def _smaller_fit(cfg: Forge1Config, train: TrainConfig, limit: float
                 ) -> tuple[str, int, int] | None:
    """The largest variant with fewer parameters than `cfg` that fits `limit` with checkpointing
    at the run's context (capped at its max_seq_len): (name, context_length, top batch_size)."""
    best: tuple[int, str, int, int] | None = None
    for name in VARIANTS:
        other = Forge1Config.from_variant(name, vocab_size=cfg.vocab_size)
        params = count_params(other)
        if params >= count_params(cfg) or (best is not None and params <= best[0]):
            continue
        ctx = min(train.context_length, other.max_seq_len)
        n = max_batch_size(other, dataclasses.replace(train, context_length=ctx), limit, True)
        if n >= 1:
            best = (params, name, ctx, n)
    return None if best is None else best[1:]


def model_config(train: TrainConfig, variant: str) -> Forge1Config:
    """The variant's shape with the vocab of the run's tokenizer (default when not built yet)."""
    vocab = None
    if train.tokenizer not in ("default", "train"):
        try:
            vocab = Forge1Tokenizer(train.tokenizer).get_vocab_size_padded()
        except FileNotFoundError:
            vocab = None
    if vocab is None and train.tokenizer == "train":
        vocab = -(-train.tokenizer_vocab_size // 64) * 64
    if vocab is None:
        vocab = Forge1Tokenizer().get_vocab_size_padded()
    return Forge1Config.from_variant(variant, vocab_size=vocab)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind plan", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML (configs/local_config.yaml)")
    parser.add_argument("--variant", choices=VARIANTS, help="model size (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set batch_size=1")
    parser.add_argument("--gpu-gb", type=float, default=4.0, help="GPU memory in GB (default 4)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        train = load_config(args.config, args.set, args.variant)
    except ConfigError as err:
        parser.error(str(err))
    if train.variant is None and train.init_from is None:
        parser.error(f"no variant: pass --variant {'|'.join(VARIANTS)} or set variant: in the "
                     "config")
    if train.init_from is not None:  # the shape is the source's, as `train` takes it
        try:
            cfg = load_model(train.init_from, train.variant, device="cpu")[0].config
        except LoadError as err:
            parser.error(f"init_from {train.init_from}: {err}")
        variant = variant_of(cfg)
    else:
        cfg, variant = model_config(train, train.variant), train.variant
    if train.context_length > cfg.max_seq_len:
        parser.error(f"context_length={train.context_length} exceeds the {variant} "
                     f"variant's max_seq_len={cfg.max_seq_len}")
    print(format_table(estimate(cfg, train), cfg, train, variant, args.gpu_gb))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
