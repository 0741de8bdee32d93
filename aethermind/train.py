"""`aethermind train`: the one training loop (guide sections 4 and 10), resumable and crash-safe.

`train(cfg)` runs setup (device, seed, tokenizer, data, model, optimizer, resume), then the loop
(lr, micro-batch accumulation, clip, step, log, eval, save), then teardown (final checkpoint,
final_model/ export, loss PNG), and returns metrics. The same code runs as one process or as K
under `torchrun --nproc_per_node=K` (DDP, or FSDP2 with `fsdp: true`).
Loss: summed cross-entropy over loss-bearing tokens divided by the step's global count of such
tokens, so K processes x A micro-batches give exactly the gradient of one big batch.
Usage: `python scripts/train.py --config configs/local_config.yaml --variant nano [--resume]`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import math
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from aethermind import checkpoint as ckpt
from aethermind import dist
from aethermind.config import VARIANTS, Forge1Config
from aethermind.dashboard import Dashboard, MetricsWriter, memory_text, plot_losses
from aethermind.losses import summed_loss as compute_loss  # tests patch this name
from aethermind.model import Forge1Model
from aethermind.optim import build_optimizer, lr_at, set_lr, warmup_steps_for
from aethermind.tokenizer import Forge1Tokenizer
from aethermind.train_config import ConfigError, TrainConfig, dump_yaml, load_config


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line meant for the user."""


class StopFlag:
    """SIGINT/SIGTERM set a flag; the loop saves a checkpoint at the step boundary and exits."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopFlag:
        if not _in_main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- setup helpers --------------------------------------------------------------------------
def load_tokenizer(cfg: TrainConfig) -> Forge1Tokenizer:
    """default | train (once, cached under output_dir/tokenizer) | a directory."""
    if cfg.tokenizer == "default":
        return Forge1Tokenizer()
    if cfg.tokenizer != "train":
        try:
            return Forge1Tokenizer(cfg.tokenizer)
        except FileNotFoundError as err:
            raise TrainingError(f"tokenizer: {err}") from None
    tok_dir = Path(cfg.output_dir) / "tokenizer"
    if (tok_dir / "tokenizer.json").is_file():
        return Forge1Tokenizer(tok_dir)
    if dist.is_main():
        from aethermind.data.tokenizer_train import read_jsonl_texts

        dist.log0("training a %d-token tokenizer on %s", cfg.tokenizer_vocab_size, cfg.train_data)
        tok = Forge1Tokenizer.train(read_jsonl_texts(Path(cfg.train_data), "text"),
                                    cfg.tokenizer_vocab_size)
        tok.save(tok_dir)
    dist.barrier()
    return Forge1Tokenizer(tok_dir)


def build_shards(cfg: TrainConfig, path: str, split: str, tokenizer: Forge1Tokenizer) -> Path:
    """Tokenize + pack `path` once (rank 0 first, the others then hit the cache)."""
    from aethermind.data.pack import ensure_shards

    if not Path(path).is_file():
        raise TrainingError(f"{split}_data {path}: file not found; create it with "
                            "`python data/preprocess.py` or `aethermind data synth`")
    kwargs = dict(context_length=cfg.context_length, layout=cfg.layout, workers=cfg.num_workers)
    if dist.is_main():
        ensure_shards(path, tokenizer, cfg.cache_path / split, **kwargs)
    dist.barrier()
    return ensure_shards(path, tokenizer, cfg.cache_path / split, **kwargs)


def check_resumable(state: dict[str, Any], path: Path, variant: str,
                    tokenizer: Forge1Tokenizer) -> None:
    """Refuse to continue a run with a different model size or tokenizer."""
    saved = state["config"]
    if saved.get("variant") != variant:
        raise TrainingError(f"cannot resume: {path} is a {saved.get('variant')} run but "
                            f"--variant {variant} was asked; use --variant {saved.get('variant')} "
                            "or a new output_dir/checkpoint_dir")
    if state["tokenizer_fingerprint"] != tokenizer.fingerprint():
        raise TrainingError(f"cannot resume: {path} was trained with tokenizer "
                            f"{state['tokenizer_fingerprint']} but this run's is "
                            f"{tokenizer.fingerprint()}; use the same tokenizer setting or a new "
                            "output_dir/checkpoint_dir")


def model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, fsdp: bool
                ) -> tuple[dict, dict | None]:
    """Full (unsharded) model and optimizer state dicts; under FSDP a collective, on the CPU."""
    if fsdp:
        from torch.distributed.checkpoint import state_dict as dcp

        options = dcp.StateDictOptions(full_state_dict=True, cpu_offload=True)
        if optimizer is None:
            return dcp.get_model_state_dict(model, options=options), None
        return dcp.get_state_dict(model, optimizer, options=options)
    return dist.unwrap(model).state_dict(), optimizer and optimizer.state_dict()


def load_model_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     state: dict[str, Any], fsdp: bool) -> None:
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))
        return
    dist.unwrap(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])


def no_sync(model: torch.nn.Module, sync: bool) -> contextlib.AbstractContextManager:
    """Skip the gradient all-reduce on all but the last micro-batch of a step."""
    if sync:
        return contextlib.nullcontext()
    if hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(False)

        @contextlib.contextmanager
        def _restore():
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)

        return _restore()
    return contextlib.nullcontext()


def evaluate(model: torch.nn.Module, shard_dir: Path, cfg: TrainConfig, ctx: dist.DistContext,
             autocast: Any) -> float:
    """Token-weighted validation loss over the first `eval_batches` batches, split over ranks
    (the same rows as one process would see, so K processes report the same number)."""
    from aethermind.data.loader import BatchLoader

    loader = BatchLoader(shard_dir, cfg.batch_size, seed=cfg.seed, shuffle=False,
                         rank=ctx.rank, world_size=ctx.world_size,
                         loss_on_all_tokens=cfg.loss_on_all_tokens)
    totals = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    model.eval()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= max(1, cfg.eval_batches // ctx.world_size):
                break
            tokens, targets, doc_ids = to_device(batch, ctx.device, cfg.pin_memory)
            with autocast:
                totals[0] += compute_loss(model, tokens, targets, doc_ids).double()
            totals[1] += (targets != -100).sum()
    model.train()
    dist.all_reduce_sum(totals)
    return (totals[0] / totals[1].clamp(min=1)).item()


def to_device(batch: dict[str, Any], device: torch.device, pin: bool
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    def move(t: torch.Tensor | None) -> torch.Tensor | None:
        if t is None:
            return None
        t = torch.as_tensor(t)
        if pin and device.type == "cuda":
            t = t.pin_memory()
        return t.to(device, non_blocking=pin)

    return move(batch["tokens"]), move(batch["targets"]), move(batch.get("doc_ids"))


def _micro_batches(loader: Any):
    """Endless stream of micro-batches across epochs (the loader tracks epoch and offset)."""
    while True:
        yield from loader


# --- the loop -------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, stop_after: int | None = None
          ) -> dict[str, Any]:
    """Train per `cfg`; returns {status, step, losses, val_loss, final_model, ...}.

    `stop_after` ends this call after that many optimizer steps, exactly as SIGINT would
    (checkpoint, then return with status "interrupted"); tests and time-boxed sessions use it.
    """
    from aethermind.data.loader import BatchLoader

    if cfg.variant is None:
        raise ConfigError("no variant: pass --variant " + "|".join(VARIANTS) +
                          " or set variant: in the config")
    if cfg.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise TrainingError("tensorboard: true needs the tensorboard package: "
                            "pip install tensorboard (or set tensorboard: false)")
    # ------------------------------------------------------------------ setup: device + seed
    ctx = dist.setup(cfg.device)
    precision = dist.resolve_precision(cfg.precision, ctx.device)
    if ctx.device.type == "cuda":  # the guide's troubleshooting tells users to look for this
        dist.log0("Using GPU: %s", torch.cuda.get_device_name(ctx.device))
    dist.seed_everything(cfg.seed, 0)  # same init on every rank; data is sharded by the loader
    out_dir, ckpt_dir = Path(cfg.output_dir), cfg.checkpoint_path
    main_proc = dist.is_main()
    if ctx.world_size > 1 and cfg.gradient_accumulation_steps % ctx.world_size:
        raise ConfigError(f"config key 'gradient_accumulation_steps' has value "
                          f"{cfg.gradient_accumulation_steps}: must be a multiple of the "
                          f"{ctx.world_size} processes, which keeps the global batch")
    accum = cfg.gradient_accumulation_steps // ctx.world_size  # per process
    # ------------------------------------------------------------------ setup: tokenizer + data
    tokenizer = load_tokenizer(cfg)
    model_cfg = Forge1Config.from_variant(cfg.variant,
                                          vocab_size=tokenizer.get_vocab_size_padded())
    if cfg.context_length > model_cfg.max_seq_len:
        raise ConfigError(f"config key 'context_length' has value {cfg.context_length}: the "
                          f"{cfg.variant} variant allows at most {model_cfg.max_seq_len}")
    found = ckpt.latest_valid(ckpt_dir) if resume else None
    if found is not None:  # refuse a mismatched resume before any expensive work
        check_resumable(found[1], found[0], cfg.variant, tokenizer)
    elif resume:
        warnings.warn(f"--resume: no valid checkpoint in {ckpt_dir}; starting from step 0",
                      stacklevel=2)
    train_shards = build_shards(cfg, cfg.train_data, "train", tokenizer)
    val_shards = build_shards(cfg, cfg.val_data, "val", tokenizer) if cfg.val_data else None
    loader = BatchLoader(train_shards, cfg.batch_size, seed=cfg.seed, shuffle=True,
                         rank=ctx.rank, world_size=ctx.world_size,
                         loss_on_all_tokens=cfg.loss_on_all_tokens)
    steps_per_epoch = max(1, len(loader) // accum)
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    # ------------------------------------------------------------------ setup: model + optimizer
    model = Forge1Model(model_cfg).to(ctx.device)
    model.set_gradient_checkpointing(cfg.gradient_checkpointing)
    model.attention_backend = cfg.attention
    wrapped = torch.compile(model) if cfg.compile else model
    wrapped = dist.wrap_model(wrapped, ctx, fsdp=cfg.fsdp)
    # After wrapping: FSDP2 swaps parameters for sharded DTensors, which the optimizer must hold.
    optimizer = build_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2),
                                fused=None if not cfg.fsdp else False)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=precision == "fp16")
    amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
    autocast = torch.autocast(ctx.device.type, dtype=amp_dtype or torch.float32,
                              enabled=amp_dtype is not None)
    # ------------------------------------------------------------------ setup: resume
    step, rng = 0, None
    if found is not None:
        path, state = found
        found = None  # let the state be freed once it is loaded
        load_model_state(wrapped, optimizer, state, cfg.fsdp)
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        try:
            loader.load_state_dict(state["loader"])
        except ValueError as err:  # e.g. another number of processes or another data file
            raise TrainingError(f"cannot resume from {path}: {err}") from None
        step, rng = state["step"], state["rng"]
        dist.log0("resumed from %s (step %d)", path, step)
        del state
    if main_proc:
        ckpt.atomic_text(dump_yaml(cfg), ckpt_dir / "train_config.yaml")
    if rng is not None:
        ckpt.set_rng_state(rng)  # last, after everything that draws random numbers at setup
    dist.log0("Forge-1 %s: %.1fM parameters, %s, %s, %d steps (%d per epoch), "
              "global batch %d x %d tokens", cfg.variant, model.num_parameters() / 1e6,
              ctx.device, precision, total_steps, steps_per_epoch,
              cfg.batch_size * cfg.gradient_accumulation_steps, cfg.context_length)
    # ------------------------------------------------------------------ setup: dashboard
    metrics_out = MetricsWriter(out_dir / "metrics.jsonl",
                                resume_step=step if resume else None) if main_proc else None
    dash = Dashboard(total_steps, out_dir, mode=cfg.dashboard, log_every=cfg.log_every,
                     start_step=step, tensorboard=cfg.tensorboard, enabled=main_proc)

    def save(at_step: int) -> None:
        model_sd, optim_sd = model_state(wrapped, optimizer, cfg.fsdp)
        if not main_proc:
            return
        state = {"step": at_step, "model": model_sd, "optimizer": optim_sd,
                 "scaler": scaler.state_dict(), "loader": loader.state_dict(),
                 "rng": ckpt.rng_state(), "config": cfg.to_dict(),
                 "model_config": model_cfg.to_dict(),
                 "tokenizer_fingerprint": tokenizer.fingerprint()}
        path = ckpt.save_checkpoint(state, ckpt_dir, at_step, keep=cfg.keep_checkpoints)
        dash.message(f"checkpoint saved: {path}")

    # ------------------------------------------------------------------ loop
    warmup = warmup_steps_for(total_steps, cfg.warmup_ratio)
    batches = _micro_batches(loader)
    losses: list[float] = []
    val_loss = None
    status, bad_steps, last_saved, start_step = "completed", 0, step, step
    wrapped.train()
    with StopFlag() as stop, contextlib.closing(dash):  # the live view stops even on errors
        while step < total_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, max_lr=cfg.learning_rate, warmup_steps=warmup,
                       total_steps=total_steps, min_lr_ratio=cfg.min_lr_ratio,
                       schedule=cfg.lr_scheduler)
            set_lr(optimizer, lr)
            micro = [to_device(next(batches), ctx.device, cfg.pin_memory) for _ in range(accum)]
            # Normalise by the step's global count of loss tokens (not per micro-batch means).
            counts = torch.stack([(t != -100).sum() for _, t, _ in micro]).sum().double()
            n_tokens = dist.all_reduce_sum(counts).clamp(min=1)
            loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
            for i, (tokens, targets, doc_ids) in enumerate(micro):
                with no_sync(wrapped, i == accum - 1), autocast:
                    loss = compute_loss(wrapped, tokens, targets, doc_ids)
                scaler.scale(loss * (ctx.world_size / n_tokens)).backward()
                loss_sum += loss.detach().double()
            step_loss = (dist.all_reduce_sum(loss_sum) / n_tokens).item()
            grad_norm = float("nan")
            if math.isfinite(step_loss):
                scaler.unscale_(optimizer)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.max_grad_norm or float("inf")))
            finite = math.isfinite(step_loss) and (math.isfinite(grad_norm) or
                                                   precision == "fp16")  # scaler skips inf
            if finite:
                scaler.step(optimizer)
                scaler.update()
                bad_steps = 0
            else:
                bad_steps += 1
                dash.message(f"step {step + 1}: non-finite loss/gradients ({step_loss}); step "
                             f"skipped ({bad_steps} in a row, stop at {cfg.max_bad_steps})")
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if bad_steps >= cfg.max_bad_steps:
                status = "diverged"
                break
            # -------------------------------------------------------------- log / eval / save
            losses.append(step_loss)
            now = time.perf_counter()
            tokens_seen = cfg.batch_size * cfg.context_length * accum * ctx.world_size
            record = {"step": step, "loss": step_loss if finite else None, "lr": lr,
                      "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
                      "tokens_per_s": tokens_seen / (now - t0), "steps_per_s": 1 / (now - t0),
                      "epoch": loader.epoch}
            if val_shards is not None and (step == total_steps or (
                    cfg.eval_every and step % cfg.eval_every == 0)):
                eval_model = wrapped if cfg.fsdp else dist.unwrap(wrapped)
                val_loss = evaluate(eval_model, val_shards, cfg, ctx, autocast)
                record["val_loss"] = val_loss
            if metrics_out is not None:
                metrics_out.write(record)
            dash.update({**record, "memory": memory_text(ctx.device)})
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                save(step)
                last_saved = step
            if ctx.world_size > 1:  # every rank must agree to stop at the same step
                flag = torch.tensor(float(stop.signum is not None), device=ctx.device)
                if dist.all_reduce_sum(flag).item() and stop.signum is None:
                    stop.signum = signal.SIGTERM
            asked = stop.signum is not None or (stop_after and step - start_step >= stop_after)
            if asked and step < total_steps:  # on the last step, finishing is the clean exit
                status = "interrupted"
                break
    # ------------------------------------------------------------------ teardown
    final_path = None
    if status != "diverged" and last_saved != step:
        save(step)
    if status == "completed":
        final_sd = model_state(wrapped, None, cfg.fsdp)[0]  # a collective under FSDP
        if main_proc:
            final_path = ckpt.export_final(final_sd, model_cfg, tokenizer, out_dir, cfg.variant)
            dash.message(f"final model: {final_path}")
    if metrics_out is not None:
        metrics_out.close()
        plot_losses(out_dir / "metrics.jsonl", out_dir / "loss_curve.png")
    dist.barrier()
    result = {"status": status, "step": step, "losses": losses, "val_loss": val_loss,
              "final_model": final_path, "signal": stop.signum, "total_steps": total_steps}
    if status == "diverged":
        result["message"] = (f"training stopped at step {step}: {bad_steps} non-finite losses "
                             f"in a row; the last good checkpoint is in {ckpt_dir} (lower "
                             "learning_rate or use bf16/fp32, then --resume)")
    return result


# --- command line ---------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="training YAML, e.g. configs/local_config.yaml")
    parser.add_argument("--variant", choices=VARIANTS, help="model size (default: the config's)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest valid checkpoint in checkpoint_dir")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set max_steps=20 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dist.setup_logging()
    with dist.plain_warnings():
        try:
            cfg = load_config(args.config, args.set, args.variant)
            result = train(cfg, resume=args.resume)
        except (ConfigError, TrainingError) as err:
            print(f"aethermind train: {err}", file=sys.stderr)
            return 2 if isinstance(err, ConfigError) else 1
        finally:
            dist.teardown()
    if result["status"] == "diverged":
        print(f"aethermind train: {result['message']}", file=sys.stderr)
        return 1
    if result["status"] == "interrupted" and result["signal"] is not None:
        dist.log0("interrupted at step %d: checkpoint saved; continue with --resume",
                  result["step"])
        return 128 + int(result["signal"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
