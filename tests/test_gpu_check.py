"""bench/gpu_check.py: the GPU check's --smoke run on the CPU, so it cannot rot between GPU runs."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def numbers(value, path=""):
    """Every (path, number) leaf of a JSON value; bools are flags, not figures."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from numbers(v, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, value


def test_smoke_run_reports_every_section_with_finite_figures(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert tuple(sections) == gpu_check.SECTIONS
    assert gpu_check.failures(sections) == []  # no section and no case inside one failed
    for name, section in sections.items():
        assert section["status"] == "ok", (name, section.get("traceback"))
        assert f"| {name} " in proc.stdout  # one table, a row per section
    leaves = list(numbers(sections))
    assert len(leaves) > 40
    bad = [(p, v) for p, v in leaves if not math.isfinite(v)]
    assert not bad, bad
    speed = sections["train_speed"]
    for case in ("bf16_eager", "fp16_eager", "bf16_compiled"):
        assert speed[case]["forge_tok_s"] > 0 and speed[case]["hf_tok_s"] > 0
        # Same weights and batch: Forge-1 and HF start from the same loss (ln V at init).
        first = speed[case]["first_loss_forge"], speed[case]["first_loss_hf"]
        assert abs(first[0] - first[1]) < 0.05 and abs(first[0] - math.log(512)) < 0.5
    attn = sections["packed_attention"]
    assert attn["fp32"]["out_max_diff"] < 1e-5  # flex == dense where it runs (CPU: forward)
    assert attn["unpacked"]["tok_s"] > 0 and attn["packed_dense"]["vs_unpacked"] > 0
    assert attn["skipped"]  # the CPU cannot do flex backward: said, not hidden
    for precision in ("bf16", "fp16"):
        curve = sections["loss_curve"][precision]
        assert curve["finite"] == 1.0 and curve["falling"] == 1.0, curve
    assert sections["memory"]["plan_gb"] > 0
    for batch in ("batch1", "batch8"):
        assert sections["decode"][batch]["forge_tok_s"] > 0


def test_a_failing_section_or_case_is_reported_and_the_rest_still_run(gpu_check):
    def broken():
        raise RuntimeError("CUDA out of memory")

    ok_case = {"forge_tok_s": 2.0, "hf_tok_s": 1.0, "ratio": 2.0}
    results = gpu_check.run_guarded({
        "env": broken,
        "peak": lambda: {"bf16_tflops": 1.0, "fp16_tflops": 1.0},
        "train_speed": lambda: {"batch": 2, "context": 8, "bf16_eager": ok_case,
                                "fp16_eager": ok_case, "bf16_compiled": gpu_check.guard(broken)},
    })
    assert results["env"]["status"] == "error"
    assert "RuntimeError: CUDA out of memory" in results["env"]["error"]
    assert results["peak"]["status"] == "ok" and results["peak"]["bf16_tflops"] == 1.0
    assert results["train_speed"]["status"] == "ok"  # one case failed, the others stand
    assert gpu_check.failures(results) == ["env", "train_speed.bf16_compiled"]
    table = gpu_check.format_table(gpu_check.table_rows(results, smoke=True))
    assert "| env " in table and "CUDA out of memory" in table
    assert "bf16_compiled 2x8: ERROR" in table and "2 vs HF 1 tok/s = 2.00x" in table


def test_bad_arguments_are_one_line_errors(gpu_check, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gpu_check.main(["--smoke", "--only", "peak,warp_speed"])
    assert exit_info.value.code == 2
    assert "unknown section(s) warp_speed: choose from env, peak" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            gpu_check.main([])
        assert "no CUDA GPU visible" in capsys.readouterr().err
