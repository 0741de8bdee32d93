"""Prepacked CPU linears: same outputs as the model, parameters shared, model left untouched;
bf16 and int8 weights close to fp32, and greedy answers of a trained model unchanged by them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _infer_helpers import fit_conversations, make_tokenizer, tiny_config
from torch import nn

from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.model.cpu_gemv import GemvLinear
from aethermind.model.kv_cache import KVCache
from aethermind.model.packed_linear import (
    DECODE_DTYPES,
    Bf16Linear,
    PackedLinear,
    check_decode_dtype,
    packed_for_cpu,
)
from aethermind.model.quantize import (
    Int8Linear,
    int8_full_range,
    int8_ops_available,
    quantize_rows,
)
from aethermind.model.transformer import Forge1Model
from aethermind.text import chat_format as cf
from aethermind.text.prompts import TEST_PROMPTS


def test_packed_model_matches_and_shares_parameters(tiny_config, cpu_kernels):
    model = Forge1Model(tiny_config).eval()
    fast = packed_for_cpu(model)
    if fast is model:  # no oneDNN on this CPU/torch: the fallback is the contract
        assert cpu_kernels == "torch"
        return
    kind = GemvLinear if cpu_kernels == "ours" else PackedLinear
    assert isinstance(fast.lm_head, kind) and isinstance(model.lm_head, nn.Linear)
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


def test_bf16_without_onednn_reads_bf16_weights_through_torch(tiny_config):
    """The bf16 path of CPUs that oneDNN cannot prepack bf16 for (AVX2-only ones)."""
    w = torch.randn(40, 64)
    layer = Bf16Linear(w)
    assert layer.w.dtype == torch.bfloat16 and layer.w.data_ptr() != w.data_ptr()
    x = torch.randn(2, 3, 64)
    got = layer(x)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 40)
    torch.testing.assert_close(got, F.linear(x.bfloat16(), w.bfloat16()).float())
    assert 0 < _relative_error(got, F.linear(x, w)) < 1e-2


def _relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize(("dtype", "bound"), [("bf16", 1e-2), ("int8", 3e-2)])
def test_low_precision_logits_stay_close_to_fp32(tiny_config, dtype, bound, cpu_kernels):
    model = Forge1Model(tiny_config).eval()
    fast = packed_for_cpu(model, dtype)
    if fast is model:  # int8's op is missing here: packed_for_cpu warned and kept fp32
        assert dtype == "int8" and not int8_ops_available() and cpu_kernels == "torch"
        return
    # bf16 works on every CPU: oneDNN's prepacked kernel, or torch's bf16 matmul without it.
    kinds = ((GemvLinear,) if cpu_kernels == "ours" else
             (Int8Linear,) if dtype == "int8" else (PackedLinear, Bf16Linear))
    assert isinstance(fast.layers[0].mlp.w_down, kinds)
    tokens = torch.randint(0, tiny_config.vocab_size, (2, 24))
    with torch.inference_mode():
        want, got = model(tokens), fast(tokens)
    assert got.dtype == torch.float32
    error = _relative_error(got, want)
    assert 0 < error < bound, error  # 0 would mean the low-precision weights were not used


def test_int8_weights_round_trip_within_half_a_step():
    w = torch.randn(48, 96)
    q, scale = quantize_rows(w)
    assert q.dtype == torch.int8 and int(q.abs().max()) == 127
    assert bool(((q.float() * scale[:, None] - w).abs() <= scale[:, None] / 2 + 1e-7).all())


@pytest.mark.skipif(not int8_ops_available(), reason="no oneDNN int8 linear in this torch")
def test_int8_rows_do_not_depend_on_the_rest_of_the_batch():
    layer = Int8Linear(torch.randn(40, 64) * 0.05)
    x = torch.randn(1, 64)
    alone = layer(x)
    # A row 1000x larger would swamp a per-tensor activation scale.
    batched = layer(torch.cat([x, 1000 * torch.randn(3, 64)]))[:1]
    assert torch.equal(alone, batched)
    assert _relative_error(alone, F.linear(x, layer_weight(layer))) < 2e-2


@pytest.mark.skipif(not int8_ops_available(), reason="no oneDNN int8 linear in this torch")
def test_int8_activations_never_saturate_the_cpus_products():
    """Without VNNI (AVX2), u8 x s8 pair sums saturate at 32,767; the probe sees it and the
    layer then quantizes activations to 7 bits, which is exact at the worst case everywhere."""
    worst = torch.ones(1, 64)  # activation code at the top against weights at +127
    assert Int8Linear(torch.ones(8, 64), full_range=False)(worst)[0, 0].item() == pytest.approx(64)
    chosen = Int8Linear(torch.ones(8, 64))  # range picked by the probe
    assert chosen.levels == (127 if int8_full_range() else 63)
    assert chosen(worst)[0, 0].item() == pytest.approx(64)
    layer = Int8Linear(torch.randn(40, 64) * 0.05, full_range=False)
    x = torch.randn(5, 64)
    assert _relative_error(layer(x), F.linear(x, layer_weight(layer))) < 3e-2


def layer_weight(layer: Int8Linear) -> torch.Tensor:
    """The dequantized weight a layer multiplies by (its int8 values times their scales)."""
    eye = torch.eye(layer.in_features)
    return layer(eye).T  # (out, in): row j of the identity picks column j


def test_dtype_other_than_fp32_is_refused_on_a_gpu_in_one_line():
    with pytest.raises(ValueError, match="CPU decoding path"):
        check_decode_dtype("int8", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="choose one of"):
        check_decode_dtype("fp16", torch.device("cpu"))
    assert check_decode_dtype("fp32", torch.device("cuda", 0)) == "fp32"


# Answers the test model learns for the guide's prompts: trained to a low loss, its greedy
# tokens are decided by wide margins, as a trained model's are on what it knows.
GUIDE_ANSWERS = ("15 * 23 = 345.", "60 mph * 2.5 h = 150 miles.",
                 "Code flows line by line, bugs hide in the quiet loops, tests bring the dawn.",
                 "Paris.", "1, 2, 5, 8, 9", "7 + 8 = 15.", "3 - 1 = 2 apples.",
                 "I am Forge-1, a small assistant.")


def test_guide_prompts_get_the_same_greedy_answers_in_every_dtype(cpu_kernels):
    """The accuracy guard of issue 24: bf16 and int8 weights must not change what a trained
    model answers (greedy) to the guide's prompts, on our kernels or torch's."""
    tok = make_tokenizer()
    model = Forge1Model(tiny_config(tok))
    chats = [cf.Conversation(turns=[cf.Turn(p, a)]) for p, a in zip(TEST_PROMPTS, GUIDE_ANSWERS,
                                                                      strict=True)]
    assert fit_conversations(model, tok, 150, conversations=chats) < 0.05
    prompts = [cf.encode_prompt(cf.Conversation(), p, tok, think=False) for p in TEST_PROMPTS]
    params = SamplingParams(max_new_tokens=72, temperature=0.0)
    stops = cf.stop_ids(tok)
    answers = {d: Engine(model.eval(), dtype=d).generate_batch(prompts, params, stops)
               for d in DECODE_DTYPES}
    for gen, answer in zip(answers["fp32"], GUIDE_ANSWERS, strict=True):
        assert answer in tok.decode(gen.tokens)  # fp32 learnt them: its margins are wide
    for dtype in DECODE_DTYPES[1:]:
        assert [g.tokens for g in answers[dtype]] == [g.tokens for g in answers["fp32"]], dtype
