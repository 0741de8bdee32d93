"""Our CPU matrix-vector kernels (`cpu_gemv.c`): they build wherever a C compiler and AVX2 exist,
compute exactly what their weight format says (fp32, bf16, q8 blocks) for any shape, row count
and thread count, keep each row independent of the batch, and a machine that cannot build them
gets None, not an error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from aethermind.model import cpu_gemv
from aethermind.model.config import Forge1Config
from aethermind.model.cpu_gemv import GemvLinear, pack_weight, quantize_blocks
from aethermind.model.packed_linear import packed_for_cpu
from aethermind.model.transformer import Forge1Model, RMSNorm


def _cpu_has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


@pytest.fixture
def kernels() -> cpu_gemv.Kernels:
    k = cpu_gemv.kernels()
    if k is None:
        pytest.skip("cpu_gemv.c does not build here")
    return k


def test_kernels_build_where_a_compiler_and_avx2_exist():
    """CI's machines have both: a None here would silently send decode back to torch's
    kernels (2-3x slower in int8) while every other test still passed."""
    if cpu_gemv.compiler() is None or not _cpu_has_avx2_fma():
        pytest.skip("no C compiler or no AVX2/FMA: torch's kernels are the contract here")
    assert cpu_gemv.kernels() is not None


def _q8_reference(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """What q8 promises, computed another way: both sides quantized per 32 values, integer dot
    products per block (exact in float64), times both blocks' scales."""
    wq, ws = quantize_blocks(w)
    xq, xs = quantize_blocks(x)
    n, k = w.shape
    dots = torch.einsum("mbi,nbi->mnb", xq.double().view(-1, k // 32, 32),
                        wq.double().view(n, k // 32, 32))
    return (dots * xs.double()[:, None, :] * ws.double()[None]).sum(-1).float()


@pytest.mark.parametrize(("n", "k"), [(40, 64), (37, 96), (5, 32), (130, 352), (1, 64)])
@pytest.mark.parametrize("rows", [1, 3, 4, 9])
def test_each_format_computes_what_it_promises(kernels, n, k, rows):
    """Rows past a tile of 4 (37, 5, 1), K not a multiple of 16, several input rows: fp32 is
    F.linear, bf16 is F.linear on bf16-rounded weights, int8 is llama.cpp's q8_0 arithmetic."""
    w, x = torch.randn(n, k), torch.randn(rows, k)
    got = {d: GemvLinear(w, d, kernels)(x) for d in ("fp32", "bf16", "int8")}
    torch.testing.assert_close(got["fp32"], F.linear(x, w), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got["bf16"], F.linear(x, w.bfloat16().float()), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(got["int8"], _q8_reference(x, w), atol=1e-4, rtol=1e-4)
    assert got["int8"].shape == got["bf16"].shape == (rows, n)


def test_k_that_is_not_a_multiple_of_the_block_is_padded_with_zeros(kernels):
    w, x = torch.randn(12, 45), torch.randn(2, 45)
    layer = GemvLinear(w, "int8", kernels)
    want = _q8_reference(F.pad(x, (0, 19)), F.pad(w, (0, 19)))
    torch.testing.assert_close(layer(x), want, atol=1e-4, rtol=1e-4)
    assert layer(x.view(1, 2, 45)).shape == (1, 2, 12)  # leading dims kept


def test_rows_do_not_depend_on_the_rest_of_the_batch_or_the_threads(kernels):
    """A sequence's output must not change with its batch neighbours (the engine's promise),
    nor with the thread count: each output row is one thread's sum, in one order."""
    w = torch.randn(301, 132) * 0.05  # a tail of one row past the tiles; K not a multiple of 8
    x = torch.randn(8, 132)
    for dtype in ("fp32", "bf16", "int8"):
        layer = GemvLinear(w, dtype, kernels)
        alone = torch.cat([layer(row[None]) for row in x])
        for m in range(2, 9):  # pairs, fours (fp32), and what is left of them
            batched = layer(torch.cat([x[:m], 1000 * torch.randn(8 - m, 132)]))[:m]
            assert torch.equal(alone[:m], batched), (dtype, m)
        torch.set_num_threads(2)  # conftest restores one thread
        assert torch.equal(layer(x), alone), dtype
        torch.set_num_threads(1)


def test_bf16_and_int8_tiles_hold_the_weights(kernels):
    """The layouts the C code reads: bf16 tiles of 4 rows x 16, int8 steps of 4 fp32 scales
    then 4 x 32 codes, rows and columns padded with zeros."""
    w = torch.randn(6, 40)
    tiles = pack_weight(w, "bf16")  # (8 rows / 4, 48 / 16, 4, 16)
    assert tiles.shape == (2, 3, 4, 16)
    assert torch.equal(tiles[0, 1, 2], w[2, 16:32].bfloat16())
    assert torch.equal(tiles[1, 2, 1, :8], w[5, 32:40].bfloat16())
    assert not tiles[1, :, 2:].any() and not tiles[:, 2, :, 8:].any()
    steps = pack_weight(w, "int8")  # (8 / 4, 64 / 32, 16 + 128)
    codes, scales = quantize_blocks(F.pad(w, (0, 24, 0, 2)))
    assert steps.shape == (2, 2, 144)
    assert torch.equal(steps[1, 0, :16].view(torch.float32), scales[4:8, 0])
    assert torch.equal(steps[1, 0, 16 + 32:16 + 64], codes[5, :32])
    assert pack_weight(w, "fp32").data_ptr() == w.data_ptr()  # fp32 shares the weight


def test_int8_weights_round_trip_within_half_a_step():
    w = torch.randn(8, 64) * torch.logspace(-3, 1, 64)  # blocks of very different sizes
    codes, scales = quantize_blocks(w)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == 127
    back = codes.float().view(8, 2, 32) * scales[..., None]
    assert bool(((back.view(8, 64) - w).abs() <= scales.repeat_interleave(32, 1) / 2 + 1e-7)
                .all())


def test_many_fp32_rows_go_to_torch_on_the_same_weight(kernels, monkeypatch):
    """A prefill's many rows: torch's matrix-matrix kernel, which beats a loop over rows."""
    w = torch.randn(16, 32)
    layer = GemvLinear(w, "fp32", kernels)
    monkeypatch.setattr(kernels, "gemv", lambda *a: pytest.fail("the kernel ran"))
    x = torch.randn(cpu_gemv.GEMV_MAX_ROWS + 1, 32)
    torch.testing.assert_close(layer(x), F.linear(x, w))


def test_a_machine_without_a_compiler_gets_none(monkeypatch, tmp_path):
    monkeypatch.setattr(cpu_gemv, "compiler", lambda: None)
    assert cpu_gemv.kernels.__wrapped__() is None


def test_an_arm_machine_gets_none_without_building_or_warning(monkeypatch, recwarn):
    """No AVX2 to build for (an Apple Silicon Mac, a Graviton): torch's kernels, quietly."""
    monkeypatch.setattr(cpu_gemv.platform, "machine", lambda: "arm64")
    monkeypatch.setattr(cpu_gemv, "build", lambda *a: pytest.fail("it tried to build"))
    assert cpu_gemv.kernels.__wrapped__() is None
    assert not recwarn.list


def test_a_failed_build_leaves_no_library_behind_and_warns(tmp_path, monkeypatch):
    with pytest.raises(subprocess.CalledProcessError):
        cpu_gemv.build("false", tmp_path)  # a "compiler" that always fails
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cpu_gemv, "compiler", lambda: "false")
    monkeypatch.setattr(cpu_gemv, "cache_dir", lambda: tmp_path)
    with pytest.warns(UserWarning, match="could not build aethermind's CPU kernels with false"):
        assert cpu_gemv.kernels.__wrapped__() is None


def test_a_built_library_is_reused(tmp_path):
    cc = cpu_gemv.compiler()
    if cc is None:
        pytest.skip("no C compiler")
    first = cpu_gemv.build(cc, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cpu_gemv.build(cc, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_rms_norm_in_one_call_matches_torch(kernels):
    """Eager decode's norms (torch's rms_norm is six ops on CPU): the same values, bf16 inputs
    handed to the model's own norm, and a packed model uses it."""
    norm = RMSNorm(45, 1e-5)
    norm.weight.data = torch.randn(45)
    layer = cpu_gemv.GemvRMSNorm(norm, kernels)
    x = torch.randn(2, 3, 45) * 7
    torch.testing.assert_close(layer(x), norm(x), atol=1e-6, rtol=1e-5)
    assert torch.equal(layer(x.bfloat16()), norm(x.bfloat16()))
    model = Forge1Model(Forge1Config.tiny(vocab_size=128, n_layers=1)).eval()
    fast = packed_for_cpu(model)
    assert isinstance(fast.norm, cpu_gemv.GemvRMSNorm)
    assert fast.norm.norm.weight is model.norm.weight  # shared, not copied
