"""Prepacked CPU linears: same outputs as the model, parameters shared, model left untouched."""

from __future__ import annotations

import torch
from torch import nn

from aethermind.model.kv_cache import KVCache
from aethermind.model.packed_linear import PackedLinear, packed_for_cpu
from aethermind.model.transformer import Forge1Model


def test_packed_model_matches_and_shares_parameters(tiny_config):
    model = Forge1Model(tiny_config).eval()
    fast = packed_for_cpu(model)
    if fast is model:  # no oneDNN on this CPU/torch: the fallback is the contract
        return
    assert isinstance(fast.lm_head, PackedLinear) and isinstance(model.lm_head, nn.Linear)
    assert fast.tok_emb.weight is model.tok_emb.weight
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 24))
    with torch.inference_mode():
        torch.testing.assert_close(fast(tokens), model(tokens), atol=1e-5, rtol=1e-4)
        cache = KVCache.for_model(fast, 2, 64)
        pos = torch.arange(21).expand(2, 21)
        fast(tokens[:, :20], pos[:, :20], kv_cache=cache)
        step = fast(tokens[:, 20:21], pos[:, 20:21], kv_cache=cache)
        torch.testing.assert_close(step[:, 0], model(tokens[:, :21])[:, -1], atol=1e-5,
                                   rtol=1e-4)


def test_packing_is_skipped_where_unsupported(tiny_config):
    model = Forge1Model(tiny_config).half()  # fp16 on CPU: not packed
    assert packed_for_cpu(model) is model
