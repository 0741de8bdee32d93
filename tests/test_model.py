"""Forge1Model: shapes, parameter counts, causality, RoPE/GQA against naive math, KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aethermind.model.config import Forge1Config
from aethermind.model.kv_cache import KVCache
from aethermind.model.transformer import Forge1Model


def expected_params(cfg: Forge1Config) -> int:
    """Closed form: per layer 2 norms + wq,wk,wv,wo + gate,up,down; then final norm + tied emb."""
    hd = cfg.head_dim
    attn = cfg.dim * (cfg.n_heads * hd + 2 * cfg.n_kv_heads * hd) + cfg.n_heads * hd * cfg.dim
    per_layer = 2 * cfg.dim + attn + 3 * cfg.dim * cfg.ffn_dim
    emb = cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)
    return cfg.n_layers * per_layer + cfg.dim + emb


@pytest.mark.parametrize("variant", ["tiny", "nano", "mini"])
def test_parameter_counts_match_formula(variant):
    cfg = Forge1Config.from_variant(variant, vocab_size=32000)
    with torch.device("meta"):
        model = Forge1Model(cfg)
    total, body = model.num_parameters(), model.num_parameters(exclude_embeddings=True)
    print(f"{variant}: {total:,} parameters ({body:,} without embeddings)")
    assert total == expected_params(cfg)
    assert total - body == 32000 * cfg.dim
    if variant == "nano":
        assert 95e6 < total < 130e6
    if variant == "mini":
        assert 290e6 < total < 360e6
    if variant == "tiny":
        assert 1e6 < total < 5e6


def test_forward_shapes_and_loss_ignores_minus_100(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (3, 17))
    targets = torch.randint(0, tiny_config.vocab_size, (3, 17))
    targets[:, :5] = -100
    logits = model(tokens)
    assert logits.shape == (3, 17, tiny_config.vocab_size)
    keep = targets != -100
    manual = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(model(tokens, targets=targets), manual)


def test_no_bias_and_tied_embeddings(tiny_config):
    model = Forge1Model(tiny_config)
    assert model.lm_head.weight is model.tok_emb.weight
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    reloaded = Forge1Model(tiny_config)
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.lm_head.weight is reloaded.tok_emb.weight
    torch.testing.assert_close(reloaded.lm_head.weight, model.tok_emb.weight)


def test_causality_future_tokens_do_not_change_the_past(tiny_config):
    model = Forge1Model(tiny_config).eval()
    a = torch.randint(0, tiny_config.vocab_size, (1, 20))
    b = a.clone()
    b[:, 12:] = torch.randint(0, tiny_config.vocab_size, (1, 8))
    torch.testing.assert_close(model(a)[:, :12], model(b)[:, :12])


def _naive_forward_attention(model: Forge1Model, x: torch.Tensor) -> torch.Tensor:
    """Layer 0's attention written out: per-pair rotation, repeated KV heads, explicit softmax."""
    cfg, attn = model.config, model.layers[0].attn
    B, T, _ = x.shape
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    wq, wk, wv = attn.wqkv.weight.split([H * D, Hkv * D, Hkv * D])
    q = (x @ wq.T).view(B, T, H, D)
    k = (x @ wk.T).view(B, T, Hkv, D)
    v = (x @ wv.T).view(B, T, Hkv, D)

    def rotate(t: torch.Tensor) -> torch.Tensor:
        out = t.clone()
        half = D // 2
        for pos in range(T):
            for i in range(half):
                angle = pos / (cfg.rope_theta ** (2 * i / D))
                c, s = math.cos(angle), math.sin(angle)
                a, b = t[:, pos, :, i], t[:, pos, :, i + half]
                out[:, pos, :, i] = a * c - b * s
                out[:, pos, :, i + half] = a * s + b * c
        return out

    q, k = rotate(q), rotate(k)
    k = k.repeat_interleave(H // Hkv, dim=2)
    v = v.repeat_interleave(H // Hkv, dim=2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
    scores = scores.masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
    y = torch.einsum("bhts,bshd->bthd", scores.softmax(-1), v).reshape(B, T, H * D)
    return y @ attn.wo.weight.T


def test_rope_and_gqa_match_naive_reference(tiny_config):
    model = Forge1Model(tiny_config).eval()
    x = torch.randn(2, 9, tiny_config.dim)
    attn = model.layers[0].attn
    ours = attn(x, model.rope_cos[:9], model.rope_sin[:9], None, None)
    torch.testing.assert_close(ours, _naive_forward_attention(model, x), atol=1e-5, rtol=1e-4)


def test_kv_cache_decode_equals_full_forward(tiny_config):
    model = Forge1Model(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 30))
    full = model(tokens)
    cache = KVCache.for_model(model, batch_size=2, max_len=64)
    pos = torch.arange(30).expand(2, 30)
    pieces = [model(tokens[:, :10], pos[:, :10], kv_cache=cache),
              model(tokens[:, 10:16], pos[:, 10:16], kv_cache=cache)]
    pieces += [model(tokens[:, t:t + 1], pos[:, t:t + 1], kv_cache=cache) for t in range(16, 30)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


def test_rows_at_different_positions_share_a_decode_step(tiny_config):
    """Per-row positions: a long and a short sequence decode together, each as if alone, and
    stale cache slots past a row's position (a longer earlier occupant) stay invisible."""
    model = Forge1Model(tiny_config).eval()
    long = torch.randint(0, tiny_config.vocab_size, (1, 20))
    short = torch.randint(0, tiny_config.vocab_size, (1, 6))
    cache = KVCache.for_model(model, batch_size=2, max_len=32)
    stale = torch.randint(0, tiny_config.vocab_size, (1, 25))  # slot 1's previous sequence
    model(stale, torch.arange(25)[None], kv_cache=cache.window(slice(1, 2), 25))
    model(long[:, :19], torch.arange(19)[None], kv_cache=cache.window(slice(0, 1), 19))
    model(short[:, :5], torch.arange(5)[None], kv_cache=cache.window(slice(1, 2), 5))
    step = torch.cat([long[:, -1:], short[:, -1:]])  # last tokens, fed at positions 19 and 5
    got = model(step, torch.tensor([[19], [5]]), kv_cache=cache)[:, 0]
    torch.testing.assert_close(got[0], model(long)[0, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], model(short)[0, -1], atol=1e-5, rtol=1e-5)


def test_a_cache_needs_positions_and_packed_rows_no_cache(tiny_config):
    model = Forge1Model(tiny_config).eval()
    cache = KVCache.for_model(model, batch_size=1, max_len=8)
    tokens = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="explicit positions"):
        model(tokens, kv_cache=cache)
    with pytest.raises(ValueError, match="doc_ids"):
        model(tokens, torch.arange(3)[None], kv_cache=cache, doc_ids=torch.zeros_like(tokens))


def test_doc_ids_isolate_packed_documents(tiny_config):
    model = Forge1Model(tiny_config).eval()
    first = torch.randint(0, tiny_config.vocab_size, (1, 7))
    second = torch.randint(0, tiny_config.vocab_size, (1, 9))
    packed = torch.cat([first, second], dim=1)
    doc_ids = torch.tensor([[0] * 7 + [1] * 9])
    logits = model(packed, doc_ids=doc_ids)
    # RoPE is relative, so the second document sees exactly what it would see alone.
    torch.testing.assert_close(logits[:, 7:], model(second), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits[:, :7], model(first), atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_same_gradients(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 16))
    model(tokens, targets=tokens).backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_gradient_checkpointing(True)
    model(tokens, targets=tokens).backward()
    for a, p in zip(plain, model.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad)


def test_init_matches_docstring_table():
    cfg = Forge1Config(vocab_size=4096, dim=256, n_layers=8, n_heads=4, n_kv_heads=2,
                       ffn_dim=1024, max_seq_len=64, init_std=0.02)
    model = Forge1Model(cfg)
    resid = 0.02 / math.sqrt(2 * cfg.n_layers)
    assert model.tok_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for layer in model.layers:
        assert layer.attn.wqkv.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert layer.mlp.w_gate_up.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert layer.attn.wo.weight.std().item() == pytest.approx(resid, rel=0.05)
        assert layer.mlp.w_down.weight.std().item() == pytest.approx(resid, rel=0.05)
        assert torch.all(layer.attn_norm.weight == 1) and torch.all(layer.mlp_norm.weight == 1)
    assert torch.all(model.norm.weight == 1)


def test_too_long_sequence_is_a_clear_error(tiny_config):
    model = Forge1Model(tiny_config)
    with pytest.raises(ValueError, match="exceeds the context length 128"):
        model(torch.zeros(1, 129, dtype=torch.long))


def test_tiny_model_overfits_one_batch(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model(tokens[:, :-1], targets=tokens[:, 1:])
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 5.5
    assert loss.item() < 0.5


def test_bf16_forward_runs_and_stays_close(tiny_config):
    model = Forge1Model(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (1, 12))
    ref = model(tokens)
    low = model.to(torch.bfloat16)(tokens)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() < 0.1


def test_fused_loss_path_matches_logits_path(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 40))
    targets = tokens.roll(-1, dims=1)
    targets[0, :10] = -100
    loss = F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten(), ignore_index=-100)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    fused = model(tokens, targets=targets)
    fused.backward()
    torch.testing.assert_close(fused, loss)
    for a, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, a, atol=1e-6, rtol=1e-4)


def test_fused_loss_with_no_loss_tokens_is_zero_not_nan(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (1, 8))
    loss = model(tokens, targets=torch.full_like(tokens, -100))
    loss.backward()
    assert loss.item() == 0.0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
