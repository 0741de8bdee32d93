"""Optimizer groups and the learning-rate schedule."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from aethermind.model.transformer import Forge1Model
from aethermind.training.optim import (
    build_optimizer,
    lr_at,
    orthogonalize,
    param_groups,
    set_lr,
    warmup_steps_for,
)


def test_no_weight_decay_on_norms_and_embeddings(tiny_config):
    model = Forge1Model(tiny_config)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    plain = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "tok_emb.weight" in plain and "norm.weight" in plain
    assert all("norm" in n or n == "tok_emb.weight" for n in plain)
    assert {"layers.0.attn.wqkv.weight", "layers.1.mlp.w_down.weight"} <= decayed
    # Tied lm_head is the embedding: every parameter appears exactly once.
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_untied_lm_head_decays(tiny_config):
    tiny_config.tie_embeddings = False
    model = Forge1Model(tiny_config)
    decay, _ = param_groups(model, 0.1)
    assert any(p is model.lm_head.weight for p in decay["params"])


def test_fused_adamw_on_cpu_steps(tiny_config):
    model = Forge1Model(tiny_config)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    assert opt.defaults.get("fused") is True
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 8))
    before = model.layers[0].attn.wqkv.weight.detach().clone()
    model(tokens, targets=tokens).backward()
    opt.step()
    assert not torch.equal(before, model.layers[0].attn.wqkv.weight)


def test_warmup_is_linear_then_cosine_reaches_the_floor():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr_ratio=0.1, schedule="cosine")
    assert lr_at(0, **kw) == pytest.approx(0.1)
    assert lr_at(9, **kw) == pytest.approx(1.0)
    assert lr_at(60, **kw) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110, **kw) == pytest.approx(0.1)
    assert lr_at(500, **kw) == pytest.approx(0.1)  # never below the floor
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))


def test_linear_and_constant_schedules():
    kw = dict(max_lr=2.0, warmup_steps=0, total_steps=100, min_lr_ratio=0.0)
    assert lr_at(50, schedule="linear", **kw) == pytest.approx(1.0)
    assert lr_at(99, schedule="constant", **kw) == 2.0
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_at(0, schedule="step", **kw)


def test_warmup_steps_from_ratio():
    assert warmup_steps_for(1000, 0.02) == 20
    assert warmup_steps_for(10, 0.02) == 1
    assert warmup_steps_for(10, 0.0) == 0
    assert math.isclose(lr_at(0, max_lr=1.0, warmup_steps=0, total_steps=10, min_lr_ratio=0.1,
                              schedule="cosine"), 1.0)


# --- Muon ---------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_orthogonalize_sets_every_singular_value_near_one(shape):
    gen = torch.Generator().manual_seed(0)
    k = min(shape)
    u, _ = torch.linalg.qr(torch.randn(shape[0], k, generator=gen))
    v, _ = torch.linalg.qr(torch.randn(shape[1], k, generator=gen))
    g = u @ torch.diag(torch.logspace(0, 2, k)) @ v.T  # directions 100x apart in size
    s = torch.linalg.svdvals(orthogonalize(g))
    assert s.min() > 0.5 and s.max() < 1.5
    assert orthogonalize(g).shape == g.shape


def _muon(model):
    return build_optimizer(model, lr=2e-3, weight_decay=0.1, betas=(0.9, 0.95), name="muon")


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest(tiny_config):
    tiny_config.tie_embeddings = False
    model = Forge1Model(tiny_config)
    opt = _muon(model)
    names = {id(p): n for n, p in model.named_parameters()}
    on_muon = {names[id(p)] for p in opt.param_groups[0]["params"]}
    on_adamw = {names[id(p)] for g in opt.param_groups[1:] for p in g["params"]}
    assert "layers.0.attn.wqkv.weight" in on_muon and "layers.1.mlp.w_down.weight" in on_muon
    assert {"lm_head.weight", "tok_emb.weight", "norm.weight"} <= on_adamw
    assert not on_muon & on_adamw and len(on_muon | on_adamw) == len(names)


def test_muon_steps_lower_the_loss_and_set_lr_reaches_both_halves(tiny_config):
    torch.manual_seed(0)
    model = Forge1Model(tiny_config)
    opt = _muon(model)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 16))
    losses = []
    for _ in range(8):
        loss = model(tokens, targets=tokens)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5
    set_lr(opt, 5e-4)
    assert all(g["lr"] == 5e-4 for g in opt.param_groups)
    assert all(g["lr"] == 5e-4 for g in opt._adamw.param_groups)


def test_muon_state_dict_round_trip_continues_exactly(tiny_config):
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 16))

    def run(model, opt, steps):
        for _ in range(steps):
            model(tokens, targets=tokens).backward()
            opt.step()
            opt.zero_grad()

    torch.manual_seed(0)
    a = Forge1Model(tiny_config)
    opt_a = _muon(a)
    run(a, opt_a, 3)
    b = Forge1Model(tiny_config)
    b.load_state_dict(a.state_dict())
    opt_b = _muon(b)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as torch.load would give it
    assert all("momentum_buffer" in opt_b.state[p] for p in opt_b.param_groups[0]["params"])
    run(a, opt_a, 2)
    run(b, opt_b, 2)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
