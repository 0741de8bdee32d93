"""The GRPO policy loss: clipped importance ratio, token-level normalisation, optional KL.

Sequences are prompt + completion, right-padded (causal attention: padding after a token never
changes it). Only completion tokens carry loss. The loss of a batch is summed over its tokens
and divided by the rollout batch's token count over all processes (DAPO's token-level
normalisation: a long answer weighs by its tokens, not as one sample), so micro-batches and
processes add up to exactly the full batch's gradient.
Usage: `logp, mask = token_logprobs(model, seqs, device)`; `policy_loss(...)`.
"""

from __future__ import annotations

import torch


def pad_batch(seqs: list[tuple[list[int], list[int]]], device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, T), targets (B, T), completion mask (B, T)) for (prompt, completion) pairs."""
    length = max(len(p) + len(c) for p, c in seqs)
    ids = torch.zeros(len(seqs), length, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.bool)
    for i, (p, c) in enumerate(seqs):
        ids[i, :len(p) + len(c)] = torch.tensor(p + c)
        mask[i, len(p):len(p) + len(c)] = True
    # position t predicts token t + 1: the mask moves with the targets
    return ids[:, :-1].to(device), ids[:, 1:].to(device), mask[:, 1:].to(device)


def token_logprobs(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                   ) -> torch.Tensor:
    """log p(target) at every position (B, T), in float32."""
    logits = model(inputs).float()  # (B, T, V)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]


def policy_loss(new: torch.Tensor, old: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                clip_low: float, clip_high: float, ref: torch.Tensor | None = None,
                kl_coef: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Summed clipped-surrogate loss over masked tokens (B, T); divide by the token count.

    Returns (loss_sum, sums of kl and of clipped tokens, for the log)."""
    ratio = torch.exp(new - old)  # (B, T)
    a = adv[:, None]
    surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip_low, 1 + clip_high) * a)
    per_token = -surrogate
    kl = torch.zeros_like(new)
    if ref is not None:
        # k3 estimator (Schulman): unbiased, always >= 0; grad pulls toward the reference
        delta = ref - new
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + kl_coef * kl
    m = mask.float()
    clipped = ((ratio - 1).abs() > torch.where(a > 0, clip_high, clip_low)).float()
    return (per_token * m).sum(), {"kl": (kl.detach() * m).sum(),
                                   "clipped": (clipped * m).sum()}
