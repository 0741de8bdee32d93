"""Packed-row attention: the dense document mask and FlexAttention's block mask agree."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from aethermind.model import attention
from aethermind.model.attention import (
    attend,
    document_block_mask,
    document_causal_mask,
    document_mask,
    resolve_backend,
)


def random_doc_ids(B: int, T: int, seed: int) -> torch.Tensor:
    """Rows of consecutive documents with random lengths (as the packer writes them)."""
    g = torch.Generator().manual_seed(seed)
    starts = (torch.rand(B, T, generator=g) < 0.04).long()
    starts[:, 0] = 0
    return starts.cumsum(dim=1)


def qkv(B: int, H: int, H_kv: int, T: int, D: int, seed: int = 0, device: str = "cpu",
        dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    shapes = ((B, H, T, D), (B, H_kv, T, D), (B, H_kv, T, D))
    return [torch.randn(s, generator=g).to(device=device, dtype=dtype) for s in shapes]


def flex(q, k, v, doc_ids):
    with warnings.catch_warnings():  # eager flex warns that it is the unfused reference
        warnings.simplefilter("ignore", UserWarning)
        return attend(q, k, v, document_block_mask(doc_ids))


def test_dense_mask_is_causal_within_each_document():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2]])
    mask = document_causal_mask(doc_ids)
    assert mask.shape == (1, 1, 6, 6)
    expected = torch.tensor([[1, 0, 0, 0, 0, 0],
                             [1, 1, 0, 0, 0, 0],
                             [1, 1, 1, 0, 0, 0],
                             [0, 0, 0, 1, 0, 0],
                             [0, 0, 0, 1, 1, 0],
                             [0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)


@pytest.mark.parametrize(("T", "heads"), [(100, (4, 2)), (256, (4, 2)), (64, (4, 4))],
                         ids=["gqa-100", "gqa-256", "mha-64"])
def test_flex_forward_equals_dense(T, heads):
    H, H_kv = heads
    doc_ids = random_doc_ids(3, T, seed=T)
    q, k, v = qkv(3, H, H_kv, T, 16, seed=T)
    dense = F.scaled_dot_product_attention(q, k, v, attn_mask=document_causal_mask(doc_ids),
                                           enable_gqa=True)
    assert (doc_ids.max(dim=1).values > 0).all()  # every row really holds several documents
    torch.testing.assert_close(flex(q, k, v, doc_ids), dense, atol=2e-6, rtol=1e-5)


def test_block_mask_skips_blocks_that_cross_documents():
    # Two 128-token documents: the kernel must visit the two diagonal blocks and skip the
    # lower-left one, which is what makes packed rows as cheap per token as unpacked ones.
    doc_ids = torch.cat([torch.zeros(1, 128), torch.ones(1, 128)], dim=1).long()
    blocks = document_block_mask(doc_ids).to_dense()[0, 0]
    assert torch.equal(blocks.bool(), torch.eye(2, dtype=torch.bool))


def test_selector_keeps_the_dense_mask_on_cpu():
    doc_ids = random_doc_ids(2, 32, seed=0)
    assert resolve_backend("auto", torch.device("cpu")) == "dense"
    assert torch.equal(document_mask(doc_ids), document_causal_mask(doc_ids))
    assert not isinstance(document_mask(doc_ids, "flex"), torch.Tensor)
    with pytest.raises(ValueError, match="choose one of auto, dense, flex"):
        resolve_backend("flash", torch.device("cpu"))


def test_selector_picks_flex_on_ampere_or_newer_with_triton(monkeypatch):
    cuda = torch.device("cuda", 0)
    real = attention.importlib.util.find_spec
    monkeypatch.setattr(attention.importlib.util, "find_spec",
                        lambda name: object() if name == "triton" else real(name))
    monkeypatch.setattr(attention.torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert resolve_backend("auto", cuda) == "flex"  # H100
    monkeypatch.setattr(attention.torch.cuda, "get_device_capability", lambda device: (7, 5))
    assert resolve_backend("auto", cuda) == "dense"  # T4: too little shared memory
    monkeypatch.setattr(attention.torch.cuda, "get_device_capability", lambda device: (8, 6))
    monkeypatch.setattr(attention.importlib.util, "find_spec",
                        lambda name: None if name == "triton" else real(name))
    assert resolve_backend("auto", cuda) == "dense"  # e.g. a Windows wheel without Triton
    assert resolve_backend("dense", cuda) == "dense"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_flex_gradients_equal_dense_on_cuda(dtype):
    doc_ids = random_doc_ids(2, 256, seed=1).cuda()
    tensors = [t.requires_grad_() for t in qkv(2, 4, 2, 256, 64, device="cuda", dtype=dtype)]
    grad_out = torch.randn(2, 4, 256, 64, device="cuda", dtype=dtype)
    dense = F.scaled_dot_product_attention(*tensors, attn_mask=document_causal_mask(doc_ids),
                                           enable_gqa=True)
    dense_grads = torch.autograd.grad(dense, tensors, grad_out)
    fast = attend(*tensors, document_mask(doc_ids))
    fast_grads = torch.autograd.grad(fast, tensors, grad_out)
    tol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(fast, dense, **tol)
    for a, b in zip(fast_grads, dense_grads, strict=True):
        torch.testing.assert_close(a, b, **tol)


def test_model_flex_path_equals_dense_path(tiny_config):
    from aethermind.model.transformer import Forge1Model

    model = Forge1Model(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 96))
    doc_ids = random_doc_ids(2, 96, seed=3)
    logits = {}
    for backend in ("dense", "flex"):
        model.attention_backend = backend
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            logits[backend] = model(tokens, doc_ids=doc_ids)
    torch.testing.assert_close(logits["flex"], logits["dense"], atol=1e-5, rtol=1e-5)
    # and the mask matters: without it, tokens would see the earlier documents of their row
    assert not torch.allclose(model(tokens), logits["dense"], atol=1e-3)


def test_train_config_attention_key_is_validated():
    from aethermind.training.config import ConfigError, TrainConfig

    assert TrainConfig().attention == "auto"
    with pytest.raises(ConfigError, match="'attention' has value 'flash': expected one of auto"):
        TrainConfig(attention="flash")


def test_compiled_model_traces_the_flex_path_as_one_graph(tiny_config):
    # `compile: true` + packed rows on a GPU: the block mask and FlexAttention must trace into
    # the model's graph (fullgraph fails on any graph break). Dynamo only ("eager" backend):
    # the capture is what can break; inductor's kernels are the GPU's business.
    from aethermind.model.transformer import Forge1Model

    model = Forge1Model(tiny_config).eval()
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 64))
    doc_ids = random_doc_ids(2, 64, seed=4)
    with torch.no_grad():
        model.attention_backend = "dense"
        dense = model(tokens, doc_ids=doc_ids)
        model.attention_backend = "flex"
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(tokens, doc_ids=doc_ids), dense, atol=1e-5, rtol=1e-5)


def test_model_attends_through_the_tested_dispatch(tiny_config, monkeypatch):
    # What this file checks of `attend` is what the model computes: every layer calls it, for
    # unpacked rows (causal), packed rows (document mask) and KV-cache decoding (slot mask).
    from aethermind.model import transformer
    from aethermind.model.kv_cache import KVCache

    masks = []

    def spy(q, k, v, mask=None):
        masks.append("causal" if mask is None else tuple(mask.shape))
        return attend(q, k, v, mask)

    monkeypatch.setattr(transformer, "attend", spy)
    cfg, n = tiny_config, tiny_config.n_layers
    model = transformer.Forge1Model(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (2, 16))
    cache = KVCache(n, 2, cfg.n_kv_heads, 32, cfg.head_dim)
    with torch.no_grad():
        model(tokens)
        model(tokens, doc_ids=random_doc_ids(2, 16, seed=5), targets=tokens)
        model(tokens[:, :1], torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)
    assert masks == ["causal"] * n + [(2, 1, 16, 16)] * n + [(2, 1, 1, 32)] * n


@pytest.mark.parametrize("head_dim", [16, attention.CPU_BF16_MIN_HEAD_DIM])
def test_narrow_heads_attend_in_fp32_under_cpu_autocast(head_dim):
    """bf16 CPU training (autocast): heads narrower than CPU_BF16_MIN_HEAD_DIM attend in fp32
    (torch's CPU kernels are slower in bf16 there), giving the fp32 attention of the same
    inputs cast back to bf16, with gradients in the inputs' dtype; wider heads stay in bf16."""
    torch.manual_seed(0)
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2], [0, 1, 1, 1, 1, 1, 2, 2]])
    mask = document_causal_mask(doc_ids)
    q, k, v = (torch.randn(2, h, 8, head_dim, dtype=torch.bfloat16, requires_grad=True)
               for h in (4, 2, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attend(q, k, v, mask)
    in_fp32 = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                             enable_gqa=True).to(torch.bfloat16)
    in_bf16 = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    assert not torch.equal(in_fp32, in_bf16)  # so the check below tells the two apart
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, in_fp32 if head_dim < attention.CPU_BF16_MIN_HEAD_DIM else in_bf16)
    y.float().sum().backward()
    assert q.grad.dtype == torch.bfloat16 and k.grad is not None
