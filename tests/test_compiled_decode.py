"""`Engine(compile=True)` (`--compile`, fp32): the torch.compile'd decode step gives the eager
engine's tokens and logits, for one row and for rows of different lengths; bad combinations are
one-line errors before any work; the CLIs take the flag."""

from __future__ import annotations

import pytest
import torch

from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.model.packed_linear import check_compiled_decode
from aethermind.model.transformer import Forge1Model


def test_compiled_decode_gives_the_eager_tokens_and_logits(tiny_config):
    torch.manual_seed(0)
    model = Forge1Model(tiny_config).eval()
    eager = Engine(model, max_batch_size=3)
    compiled = Engine(model, max_batch_size=3, compile=True)
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
        ref = model(ids, positions, kv_cache=compiled.cache.window(slice(0, 2), 8))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_compile_refuses_what_it_cannot_decode_in_one_line():
    for dtype in ("int8", "bf16"):
        with pytest.raises(ValueError, match="--compile takes --dtype fp32"):
            check_compiled_decode(dtype, torch.device("cpu"))
    with pytest.raises(ValueError, match="--compile is a CPU decoding path"):
        check_compiled_decode("fp32", torch.device("cuda", 0))
    with pytest.raises(ValueError, match="choose one of"):
        check_compiled_decode("fp8", torch.device("cpu"))


@pytest.mark.parametrize("command", ["chat", "evaluate"])
def test_cli_refuses_compile_with_int8_before_loading(command, capsys, tmp_path):
    from aethermind.evaluation.evaluate import main as evaluate_main
    from aethermind.inference.chat import main as chat_main

    main = {"chat": chat_main, "evaluate": evaluate_main}[command]
    with pytest.raises(SystemExit) as exit_info:
        main(["--model", str(tmp_path / "missing.pt"), "--compile", "--dtype", "int8"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:")
    assert "--compile takes --dtype fp32" in err  # the flags, not the missing file
