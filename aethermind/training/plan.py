"""`aethermind plan`: will this config fit my GPU? The guide's memory budget, computed.

Counts bytes from the model shape and the run config, per component: weights, gradients and
AdamW states (fp32 masters under mixed precision, as torch.amp keeps them), activations with
and without gradient checkpointing, the logits, and CUDA overhead; then a verdict for a GPU
size. It is an estimate (the activation count follows this model's saved tensors per block),
not a measurement; it builds the model on the meta device, so it costs no memory itself.
Usage: `aethermind plan --config configs/local_config.yaml --variant nano --gpu-gb 4`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import torch

from aethermind.model.config import VARIANTS, Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer
from aethermind.training.config import ConfigError, TrainConfig, load_config

CUDA_OVERHEAD = 0.5 * 2**30  # CUDA context + cuBLAS workspaces, outside max_memory_allocated
FRAGMENTATION = 0.10  # caching-allocator slack on top of live tensors


@dataclass(frozen=True)
class Budget:
    params: int
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


def count_params(cfg: Forge1Config) -> int:
    with torch.device("meta"):
        return Forge1Model(cfg).num_parameters()


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
    per_block = block_activation_bytes(cfg, act) * tokens
    # Logits: low-precision output, its fp32 copy for the loss, and log-softmax's saved output.
    logits = tokens * cfg.vocab_size * (act + 4 + 4) if act == 2 else tokens * cfg.vocab_size * 8
    checkpointed = cfg.n_layers * 4 * cfg.dim * tokens + per_block  # block inputs + one block
    return Budget(params=P, weights=4 * P, gradients=4 * P, optimizer=8 * P,
                  activations=cfg.n_layers * per_block, activations_ckpt=checkpointed,
                  logits=logits, overhead=CUDA_OVERHEAD)


def _gb(x: float) -> str:
    return f"{x / 2**30:6.2f} GB"


def format_table(b: Budget, cfg: Forge1Config, train: TrainConfig, variant: str,
                 gpu_gb: float) -> str:
    rows = [
        ("Model weights (fp32 masters)", b.weights, b.weights),
        ("Gradients (fp32)", b.gradients, b.gradients),
        ("Optimizer states (AdamW, 2 x fp32)", b.optimizer, b.optimizer),
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
    limit = gpu_gb * 2**30
    used = b.total(train.gradient_checkpointing)
    mode = "with" if train.gradient_checkpointing else "without"
    out.append("")
    if used <= limit:
        out.append(f"Verdict: fits a {gpu_gb:g} GB GPU {mode} gradient checkpointing "
                   f"({used / 2**30:.2f} GB of {gpu_gb:g} GB).")
    elif b.total(True) <= limit:
        out.append(f"Verdict: does NOT fit {gpu_gb:g} GB as configured ({used / 2**30:.2f} GB); "
                   "it fits with gradient_checkpointing: true.")
    else:
        out.append(f"Verdict: does NOT fit a {gpu_gb:g} GB GPU even with checkpointing "
                   f"({b.total(True) / 2**30:.2f} GB): lower batch_size or context_length, "
                   "or use a smaller variant.")
    return "\n".join(out)


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aethermind plan", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML (configs/local_config.yaml)")
    parser.add_argument("--variant", choices=VARIANTS, help="model size (default: the config's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set batch_size=1")
    parser.add_argument("--gpu-gb", type=float, default=4.0, help="GPU memory in GB (default 4)")
    args = parser.parse_args(argv)
    try:
        train = load_config(args.config, args.set, args.variant)
    except ConfigError as err:
        parser.error(str(err))
    if train.variant is None:
        parser.error(f"no variant: pass --variant {'|'.join(VARIANTS)} or set variant: in the "
                     "config")
    cfg = model_config(train, train.variant)
    if train.context_length > cfg.max_seq_len:
        parser.error(f"context_length={train.context_length} exceeds the {train.variant} "
                     f"variant's max_seq_len={cfg.max_seq_len}")
    print(format_table(estimate(cfg, train), cfg, train, train.variant, args.gpu_gb))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
