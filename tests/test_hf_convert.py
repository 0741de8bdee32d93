"""Same weights -> same logits as Hugging Face LlamaForCausalLM, in both directions."""

from __future__ import annotations

import pytest
import torch

from aethermind.model.config import Forge1Config
from aethermind.model.hf_convert import from_hf, to_hf
from aethermind.model.transformer import Forge1Model

transformers = pytest.importorskip("transformers")


def _cfg(tied: bool) -> Forge1Config:
    return Forge1Config(vocab_size=512, dim=96, n_layers=3, n_heads=6, n_kv_heads=2,
                        ffn_dim=256, max_seq_len=96, rope_theta=50000.0, norm_eps=1e-6,
                        tie_embeddings=tied)


@pytest.mark.parametrize("tied", [True, False])
def test_forge_weights_give_hf_llama_logits(tied):
    cfg = _cfg(tied)
    ours = Forge1Model(cfg).eval()
    hf_sd, hf_cfg = to_hf(ours.state_dict(), cfg)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_cfg)).eval()
    missing, unexpected = ref.load_state_dict(hf_sd, strict=False)
    assert unexpected == [] and missing == (["lm_head.weight"] if tied else [])
    tokens = torch.randint(0, cfg.vocab_size, (2, 80))
    with torch.no_grad():
        diff = (ours(tokens) - ref(tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_hf_llama_weights_give_forge_logits():
    cfg = _cfg(True)
    _, hf_cfg = to_hf(Forge1Model(cfg).state_dict(), cfg)
    ref = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_cfg)).eval()
    sd, back_cfg = from_hf(ref.state_dict(), ref.config.to_dict())
    assert back_cfg.matches(cfg) == [] and back_cfg.rope_theta == cfg.rope_theta
    ours = Forge1Model(back_cfg).eval()
    ours.load_state_dict(sd)
    tokens = torch.randint(0, cfg.vocab_size, (1, 64))
    with torch.no_grad():
        diff = (ours(tokens) - ref(tokens).logits).abs().max().item()
    assert diff <= 1e-4


def test_round_trip_is_lossless():
    cfg = _cfg(False)
    sd = Forge1Model(cfg).state_dict()
    back, back_cfg = from_hf(*to_hf(sd, cfg))
    assert back_cfg == cfg
    assert all(torch.equal(back[k], v) for k, v in sd.items())


def test_unsupported_hf_features_are_refused():
    _, hf_cfg = to_hf(Forge1Model(_cfg(True)).state_dict(), _cfg(True))
    with pytest.raises(ValueError, match="attention_bias"):
        from_hf({}, hf_cfg | {"attention_bias": True})
