"""The GRPO loop: rollout -> score -> group advantages -> clipped updates, resumable.

`rl(cfg)` runs `setup` (device, seed, starting model, optimizer, prompt source, resume), the
loop, then teardown (final checkpoint, `final_model/` in the layout chat/evaluate/export/serve
read, reward PNG). One step = one rollout batch: P prompts x G answers (each process its own
prompts under torchrun), groups whose answers all score the same dropped (their advantage is 0
everywhere), then `updates_per_batch` optimizer steps on the rest with the clipped ratio
against the rollout policy. A checkpoint holds the weights, optimizer and prompt position
(which also seeds the rollouts, `rollout.sample_seeds`), so a run stopped by a signal (or
kill -9, from its last checkpoint) resumes exactly.
Usage: `rl(load_rl_config("configs/rl_cpu.yaml"))` or `aethermind rl --config ...`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from aethermind.artifacts import checkpoint as ckpt
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.artifacts.loading import load_model
from aethermind.inference.sampling import SamplingParams
from aethermind.model.config import PRESETS
from aethermind.rl import sources
from aethermind.rl.config import ConfigError, RLConfig, dump_yaml
from aethermind.rl.dashboard import RLDashboard, plot_rewards
from aethermind.rl.loss import pad_batch, policy_loss, token_logprobs
from aethermind.rl.rewards import Reward, parse_rewards
from aethermind.rl.rollout import Group, advantages, rollout
from aethermind.runtime import dist
from aethermind.runtime.files import atomic_text
from aethermind.training.dashboard import MetricsWriter
from aethermind.training.errors import TrainingError
from aethermind.training.optim import build_optimizer
from aethermind.training.signals import StopFlag
from aethermind.training.state import claim_checkpoint_dir, output_lock


@dataclass
class RLRun:
    cfg: RLConfig
    ctx: dist.DistContext
    model: torch.nn.Module  # the bare policy: rollouts and checkpoints
    wrapped: torch.nn.Module  # DDP-wrapped under torchrun: what the update runs
    ref: torch.nn.Module | None  # the frozen starting model, only when kl_coef > 0
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    source: sources.PromptSource
    rewards: list[tuple[str, float, Reward]]
    variant: str
    step: int
    dash: RLDashboard
    metrics: MetricsWriter | None


# --- setup ------------------------------------------------------------------------------------
def _variant_of(cfg: Any) -> str:
    return next((name for name, shape in PRESETS.items()
                 if all(getattr(cfg, k) == v for k, v in shape.items() if k != "max_seq_len")),
                "custom")


def _pools(cfg: RLConfig) -> list[list[dict[str, Any]]]:
    pools = []
    if cfg.prompts in ("synth", "both"):
        pools += sources.synth_records(sources.parse_families(cfg.families), seed=cfg.seed)
    if cfg.prompts in ("jsonl", "both"):
        pools += sources.jsonl_records(cfg.prompt_file)
    return pools


def setup(cfg: RLConfig, *, resume: bool = False, overwrite: bool = False) -> RLRun:
    """Device, seed, model, optimizer, prompts, resume, dashboard (see `train.setup`'s order)."""
    try:
        ctx = dist.setup(cfg.device)
    except ValueError as err:  # a device name select_device does not know
        raise ConfigError(f"config key 'device': {err}") from None
    dist.seed_everything(cfg.seed, ctx.rank)
    if dist.is_main():
        claim_checkpoint_dir(cfg.checkpoint_path, resume, overwrite)
    dist.barrier()
    try:
        pools = _pools(cfg)  # first: a bad prompt file fails before the model loads
        model, tokenizer = load_model(cfg.model, device=ctx.device)
    except ValueError as err:  # LoadError, a prompt file without usable records
        raise TrainingError(str(err)) from None
    ref = copy.deepcopy(model).eval().requires_grad_(False) if cfg.kl_coef > 0 else None
    model.train()
    optimizer = build_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                                betas=(cfg.beta1, cfg.beta2), name=cfg.optimizer)
    source = sources.PromptSource(pools, cfg.seed, ctx.rank, ctx.world_size)
    step = 0
    found = ckpt.latest_valid(cfg.checkpoint_path) if resume else None
    if found is not None:
        path, state = found
        if state["tokenizer_fingerprint"] != tokenizer.fingerprint():
            raise TrainingError(f"cannot resume from {path}: it was trained with another "
                                "tokenizer than the model in `model:`")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            source.load_state_dict(state["sampler"])
        except (RuntimeError, ValueError, KeyError) as err:  # another model, optimizer, seed
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise TrainingError(f"cannot resume from {path}: {first}") from None
        ckpt.set_rng_state(state["rng"])
        step = state["step"]
        dist.log0("resumed from %s (step %d)", path, step)
    wrapped = dist.wrap_model(model, ctx)
    if dist.is_main():
        atomic_text(dump_yaml(cfg), Path(cfg.output_dir) / "rl_config.yaml")
    main = dist.is_main()
    metrics = MetricsWriter(Path(cfg.output_dir) / "metrics.jsonl",
                            resume_step=step if resume else None) if main else None
    dash = RLDashboard(cfg.max_steps, mode=cfg.dashboard, log_every=cfg.log_every,
                       start_step=step, enabled=main)
    return RLRun(cfg, ctx, model, wrapped, ref, tokenizer, optimizer, source,
                 parse_rewards(cfg.rewards), _variant_of(model.config), step, dash, metrics)


# --- one step ---------------------------------------------------------------------------------
def collect(run: RLRun) -> tuple[list[Group], list[Group]]:
    """(every group rolled out, the groups kept for the update). With `filter_uncertain`, up to
    `max_refills` more prompt batches are drawn until P groups have a pass rate in the band (or
    were guided)."""
    cfg = run.cfg
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                            top_p=None)
    rolled: list[Group] = []
    kept: list[Group] = []
    for refill in range(cfg.max_refills + 1):
        batch = rollout(run.model, run.tokenizer, run.source.take(cfg.prompts_per_step),
                        cfg.group_size, params, cfg.seed, run.rewards, cfg.guide)
        rolled += batch
        for g in batch:
            in_band = cfg.min_pass_rate <= g.pass_rate <= cfg.max_pass_rate
            # a guided group is all wrong by construction: the band would drop it, which is
            # what guidance exists for
            if g.has_signal and (g.guided or in_band or not cfg.filter_uncertain):
                kept.append(g)
        if not cfg.filter_uncertain or len(kept) >= cfg.prompts_per_step or refill == \
                cfg.max_refills:
            break
    return rolled, kept[:cfg.prompts_per_step]


def _global_max(n: int, device: torch.device) -> int:
    t = torch.tensor(n, device=device)
    if tdist.is_available() and tdist.is_initialized():
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return int(t.item())


def update(run: RLRun, kept: list[Group]) -> dict[str, float]:
    """`updates_per_batch` clipped-ratio optimizer steps on the kept groups; mean stats."""
    cfg, device = run.cfg, run.ctx.device
    rows = [(s.prompt, s.completion, a) for g in kept
            for s, a in zip(g.samples, advantages(g, cfg.scale_advantages), strict=True)]
    chunks = [rows[i:i + cfg.micro_batch_size] for i in range(0, len(rows), cfg.micro_batch_size)]
    n_micro = _global_max(len(chunks), device)
    tokens = dist.all_reduce_sum(torch.tensor(float(sum(len(c) for _, c, _ in rows)),
                                              device=device)).item()
    if tokens == 0:  # no process kept a group: nothing to learn from this batch
        return {"loss": 0.0, "kl": 0.0, "clip_frac": 0.0, "grad_norm": 0.0}
    batches = []
    with torch.no_grad():  # the rollout policy's (and the reference's) log-probs, once
        for chunk in chunks:
            inputs, targets, mask = pad_batch([(p, c) for p, c, _ in chunk], device)
            old = token_logprobs(run.model, inputs, targets)
            ref = token_logprobs(run.ref, inputs, targets) if run.ref is not None else None
            adv = torch.tensor([a for _, _, a in chunk], device=device, dtype=torch.float32)
            batches.append((inputs, targets, mask, old, ref, adv))
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss, kl, clipped, grad norm
    for _ in range(cfg.updates_per_batch):
        for i in range(n_micro):
            with dist.no_sync(run.wrapped, i == n_micro - 1):
                if i < len(batches):
                    inputs, targets, mask, old, ref, adv = batches[i]
                    new = token_logprobs(run.wrapped, inputs, targets)
                    loss, extra = policy_loss(new, old, adv, mask, cfg.clip_low, cfg.clip_high,
                                              ref, cfg.kl_coef)
                    totals[:3] += torch.stack([loss.detach(), extra["kl"], extra["clipped"]])
                else:  # fewer micro-batches here than elsewhere: join the all-reduce anyway
                    loss = run.wrapped(torch.zeros(1, 1, dtype=torch.long, device=device)).sum()
                    loss = loss * 0.0
                (loss * (run.ctx.world_size / tokens)).backward()
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(),
                                              cfg.max_grad_norm or float("inf"))
        totals[3] += norm.double()
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
    dist.all_reduce_sum(totals[:3])
    n = cfg.updates_per_batch
    return {"loss": totals[0].item() / tokens / n, "kl": totals[1].item() / tokens / n,
            "clip_frac": totals[2].item() / tokens / n, "grad_norm": totals[3].item() / n}


def _rollout_stats(run: RLRun, rolled: list[Group], kept: list[Group]) -> dict[str, float]:
    """Reward mean/variance, accuracy, zero-signal share, answer length over all processes;
    of the sampled answers only (a guiding reference answer is counted as `guided`)."""
    sampled = [s for g in rolled for s in g.samples if not s.reference]
    rewards = [s.reward for s in sampled]
    t = torch.tensor([len(rewards), sum(rewards), sum(r * r for r in rewards),
                      sum(s.correct for s in sampled), len(rolled),
                      sum(not g.has_signal for g in rolled), len(kept),
                      sum(len(s.completion) for s in sampled), sum(g.guided for g in rolled)],
                     dtype=torch.float64, device=run.ctx.device)
    n, total, squares, correct, groups, flat, kept_n, length, guided = \
        dist.all_reduce_sum(t).tolist()
    mean = total / n
    return {"reward_mean": mean, "reward_var": max(squares / n - mean * mean, 0.0),
            "accuracy": correct / n, "zero_signal": flat / groups, "groups": groups,
            "groups_kept": kept_n, "guided": guided / groups, "answer_tokens": length / n,
            "generated": length}


# --- the loop ---------------------------------------------------------------------------------
def save(run: RLRun) -> None:
    if not dist.is_main():
        return
    state = {"step": run.step, "model": run.model.state_dict(),
             "optimizer": run.optimizer.state_dict(), "sampler": run.source.state_dict(),
             "rng": ckpt.rng_state(), "config": run.cfg.to_dict(),
             "tokenizer_fingerprint": run.tokenizer.fingerprint()}
    try:
        path = ckpt.save_checkpoint(state, run.cfg.checkpoint_path, run.step,
                                    keep=run.cfg.keep_checkpoints)
    except OSError as err:
        raise TrainingError(f"cannot write the step {run.step} checkpoint to "
                            f"{run.cfg.checkpoint_path} ({err.strerror or err})") from None
    run.dash.message(f"checkpoint saved: {path}")


def _stop_asked(run: RLRun, stop: StopFlag) -> bool:
    if run.ctx.world_size > 1:  # every process stops at the same step
        flag = torch.tensor(float(stop.signum is not None), device=run.ctx.device)
        return bool(dist.all_reduce_sum(flag).item())
    return stop.signum is not None


def run_loop(run: RLRun, stop: StopFlag, stop_after: int | None = None
             ) -> tuple[str, list[float]]:
    """Steps until `max_steps`, a signal or `stop_after` steps; (status, this call's losses)."""
    cfg, losses, start, saved = run.cfg, [], run.step, run.step
    while run.step < cfg.max_steps:
        t0 = time.perf_counter()
        rolled, kept = collect(run)
        t1 = time.perf_counter()
        stats = _rollout_stats(run, rolled, kept)
        stats.update(update(run, kept))
        run.step += 1
        losses.append(stats["loss"])
        record = {"step": run.step, **stats, "lr": cfg.learning_rate,
                  "tokens_per_s": stats["generated"] / max(t1 - t0, 1e-9),
                  "seconds": time.perf_counter() - t0}
        if not math.isfinite(stats["loss"]):
            raise TrainingError(f"RL step {run.step}: non-finite loss; the last checkpoint is "
                                f"in {cfg.checkpoint_path} (lower learning_rate)")
        if run.metrics is not None:
            run.metrics.write(record)
        run.dash.update(record)
        if cfg.checkpoint_every and run.step % cfg.checkpoint_every == 0:
            save(run)
            saved = run.step
        asked = _stop_asked(run, stop) or (stop_after and run.step - start >= stop_after)
        if asked and run.step < cfg.max_steps:
            if saved != run.step:
                save(run)
            return "interrupted", losses
    if saved != run.step:
        save(run)
    return "completed", losses


def rl(cfg: RLConfig, *, resume: bool = False, stop_after: int | None = None,
       overwrite: bool = False) -> dict[str, Any]:
    """Run GRPO per `cfg`; returns {status, step, losses, final_model, signal}."""
    with output_lock(cfg.output_dir, "RL run"):
        run = setup(cfg, resume=resume, overwrite=overwrite)
        with StopFlag() as stop, contextlib.closing(run.dash):
            status, losses = run_loop(run, stop, stop_after)
        final = None
        if status == "completed" and dist.is_main():
            final = write_final(run.model.state_dict(), run.model.config, run.tokenizer,
                                final_dir(cfg.output_dir), run.variant)
            run.dash.message(f"final model: {final}")
        if run.metrics is not None:
            run.metrics.close()
            plot_rewards(Path(cfg.output_dir) / "metrics.jsonl",
                         Path(cfg.output_dir) / "reward_curve.png")
        dist.barrier()
        return {"status": status, "step": run.step, "losses": losses, "final_model": final,
                "signal": stop.signum}
