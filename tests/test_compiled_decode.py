"""`Engine(compile=True)` (`--compile`): the torch.compile'd decode step gives the eager
engine's tokens and logits in every dtype, for one row and for rows of different lengths; bad
combinations are one-line errors before any work; the CLIs take the flag; where the one-call C
step runs the model, it compiles nothing."""

from __future__ import annotations

import pytest
import torch

from aethermind.inference.engine import COMPILE_NOT_NEEDED, Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.model import cpu_gemv, packed_linear
from aethermind.model.cpu_decode import DecodeStep
from aethermind.model.packed_linear import DECODE_DTYPES, check_compiled_decode
from aethermind.model.quantize import int8_ops_available
from aethermind.model.transformer import Forge1Model


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each compiled engine here traces Forge1Model.forward again; dynamo stops compiling a
    function after 8 versions and runs it eagerly, which would leave later tests (and
    test_engine's fullgraph check) silently uncompiled."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kernel", ["onednn", "mkl", "bf16", "int8", "ours fp32", "ours int8"])
def test_compiled_decode_gives_the_eager_tokens_and_logits(tiny_config, kernel, monkeypatch):
    """fp32 with both torch kernels a compiled step may pick (whichever measures faster on
    the CPU), torch's bf16 and int8 layers, whose oneDNN calls compile as opaque ops, and our
    own kernels (`cpu_gemv.c`, an opaque op too) where they build."""
    if kernel == "mkl" and not torch._C.has_mkl:
        pytest.skip("no MKL in this torch: the compiled step always takes oneDNN's kernel")
    if kernel == "int8" and not int8_ops_available():
        pytest.skip("no oneDNN int8 linear in this torch")
    if kernel.startswith("ours"):
        if cpu_gemv.kernels() is None:
            pytest.skip("cpu_gemv.c does not build here")
        # A model the one-call C step cannot run (say, an unmerged adapter): compiled, with
        # our kernels as an opaque op.
        monkeypatch.setattr(DecodeStep, "for_model", lambda model, cache: None)
    else:
        monkeypatch.setattr(cpu_gemv, "kernels", lambda: None)
    monkeypatch.setattr(packed_linear, "onednn_beats_mkl", lambda weight: kernel == "onednn")
    dtype = kernel.split()[-1] if kernel.split()[-1] in ("bf16", "int8") else "fp32"
    torch.manual_seed(0)
    model = Forge1Model(tiny_config).eval()
    eager = Engine(model, max_batch_size=3, dtype=dtype)
    compiled = Engine(model, max_batch_size=3, dtype=dtype, compile=True)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compiled, not eager
    packed = type(compiled.model.lm_head) is not torch.nn.Linear
    assert packed == (kernel != "mkl")  # inductor packs the plain model's linears for MKL
    assert compiled.model.tok_emb.weight is model.tok_emb.weight  # shared, not copied
    prompts = [[5, 9, 11], [7, 3, 2, 8, 13, 21, 4], [30]]  # three lengths: rows at positions apart
    params = SamplingParams(max_new_tokens=20, temperature=0.0)
    want = [g.tokens for g in eager.generate_batch(prompts, params)]
    assert [g.tokens for g in compiled.generate_batch(prompts, params)] == want
    assert compiled.generate(prompts[1], params).tokens == want[1]  # one row alone
    # The step itself, against the plain model on the same cache contents.
    ids = torch.tensor([[4], [6]])
    positions = torch.tensor([[3], [7]])
    window = compiled.cache.window(slice(0, 2), 8)
    with torch.inference_mode():
        got = compiled._forward(ids, positions, kv_cache=window)
        ref = eager.model(ids, positions, kv_cache=compiled.cache.window(slice(0, 2), 8))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_compile_refuses_what_it_cannot_decode_in_one_line():
    with pytest.raises(ValueError, match="--compile is a CPU decoding path"):
        check_compiled_decode("fp32", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="choose one of"):
        check_compiled_decode("fp8", torch.device("cpu"))
    assert [check_compiled_decode(d, torch.device("cpu")) for d in DECODE_DTYPES] == list(
        DECODE_DTYPES)


def test_the_kernel_race_runs_on_a_real_weight():
    """The measurement `--compile` starts with: both kernels run on this CPU and one wins."""
    if not torch._C.has_mkl:
        pytest.skip("no MKL in this torch")
    assert isinstance(packed_linear.onednn_beats_mkl(torch.randn(96, 64)), bool)


@pytest.mark.parametrize("command", ["chat", "evaluate"])
def test_cli_takes_compile_with_every_dtype(command, capsys, tmp_path):
    from aethermind.evaluation.evaluate import main as evaluate_main
    from aethermind.inference.chat import main as chat_main

    main = {"chat": chat_main, "evaluate": evaluate_main}[command]
    missing = tmp_path / "missing.pt"
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(missing), "--compile", "--dtype", "int8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert "missing.pt" in err and "--compile" not in err  # the flags pass, the file does not


def test_compile_gives_way_to_the_one_call_c_step(tiny_config):
    """Where our kernels run the model, each eager step is already one C call, faster than a
    compiled one: --compile says so and compiles nothing."""
    if cpu_gemv.kernels() is None:
        pytest.skip("cpu_gemv.c does not build here")
    notices: list[str] = []
    torch._dynamo.utils.counters.clear()
    engine = Engine(Forge1Model(tiny_config).eval(), compile=True, announce=notices.append)
    assert notices == [COMPILE_NOT_NEEDED] and not engine.compiled
    assert engine._c_step is not None
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert len(engine.generate([5, 9], SamplingParams(max_new_tokens=4, temperature=0)).tokens) == 4
