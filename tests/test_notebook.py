"""The Colab notebook: generated from one source, its commands the guide's, its T4 settings fit
the memory planner, its helpers work, and (marker `notebook`) it runs top to bottom in smoke mode.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import pytest

from aethermind.runtime import dist
from aethermind.training import notebook as nbh
from aethermind.training import plan
from aethermind.training.config import load_config

REPO = Path(__file__).resolve().parents[1]
T4_MIB = 15_360  # nvidia-smi's figure for a T4
COLAB_T4_GIB = 14.7  # what torch reports as total memory on a Colab T4 (the tighter check)


def _builder():
    spec = importlib.util.spec_from_file_location("build_colab", REPO / "notebooks" /
                                                  "build_colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_cells(nb: dict) -> list[str]:
    return [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]


def test_committed_notebook_is_the_generators_output():
    assert _builder().main(["--check"]) == 0, "run python notebooks/build_colab.py"


def test_parameters_cell_is_tagged_and_comes_first():
    code = [c for c in _builder().build()["cells"] if c["cell_type"] == "code"]
    assert code[0]["metadata"]["tags"] == ["parameters"]
    first = code[0]["source"]
    assert "SMOKE = False" in first and "CONFIG = 'configs/colab_config.yaml'" in first


@pytest.mark.parametrize("smoke", [False, True], ids=["t4", "smoke"])
def test_every_notebook_command_appears_verbatim_in_the_guide_or_readme(smoke):
    """Rendered with the notebook's settings; in smoke mode without its --set/eval extras, which
    only shorten the run."""
    b = _builder()
    docs = (REPO / "docs" / "guide.md").read_text(encoding="utf-8") + \
        (REPO / "README.md").read_text(encoding="utf-8")
    values = b.settings(smoke)
    if smoke:
        values.update(SETS="", EVAL_ARGS="")
    shown = {"synth", "plan", "train", "evaluate", "export_hf", "export_gguf"} if smoke \
        else set(b.COMMANDS) - {"synth"}
    missing = [b.command(n, values) for n in sorted(shown) if b.command(n, values) not in docs]
    assert not missing, f"not in docs/guide.md or README.md: {missing}"


def test_notebook_runs_no_command_but_the_generators():
    """Every command string a cell holds is one of COMMANDS (no hand-written second copy)."""
    b = _builder()
    allowed = {b._f(n) for n in b.COMMANDS}
    starts = ("python ", "aethermind ", "git clone")
    found = []
    for source in _code_cells(b.build()):
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.Constant, ast.JoinedStr)):
                text = ast.get_source_segment(source, node) or ""
                if text.lstrip("f").strip("\"'").startswith(starts):
                    found.append(text)
    assert found and set(found) <= allowed, set(found) - allowed
    assert len(set(found)) == len(b.COMMANDS)  # and every command is used


def test_t4_settings_fit_the_memory_planner(capsys):
    b = _builder()
    values = b.settings(False)
    precision = dist.gpu_precision((7, 5))
    sets = [*values["EXTRA_SETS"], *(["precision=bf16"] if precision == "bf16" else [])]
    cfg = load_config(str(REPO / values["CONFIG"]), sets, values["VARIANT"])
    assert (precision, cfg.precision) == ("fp16", "fp16")  # fp16 + GradScaler: no bf16 on a T4
    need = plan.estimate(plan.model_config(cfg, cfg.variant), cfg).total(
        cfg.gradient_checkpointing)
    assert need <= COLAB_T4_GIB * 2**30 < T4_MIB * 2**20
    plan.main(["--config", str(REPO / values["CONFIG"]), "--variant", values["VARIANT"],
               "--gpu-gb", f"{values['GPU_GB']:g}"])
    assert "Verdict: fits a 15 GB GPU" in capsys.readouterr().out


def test_gpu_precision_is_bf16_from_ampere_and_fp16_before():
    assert [dist.gpu_precision(c) for c in [(6, 1), (7, 5), (8, 0), (8, 9), (9, 0)]] == \
        ["fp16", "fp16", "bf16", "bf16", "bf16"]


def _py(code: str) -> str:
    return f"{sys.executable} -c {json.dumps(code)}"


def test_run_command_streams_and_returns_output(capsys):
    out = nbh.run_command(_py("print('one'); print('two')"))
    assert out == "one\ntwo\n" and "one\ntwo\n" in capsys.readouterr().out


def test_run_command_raises_on_failure():
    with pytest.raises(nbh.CommandFailed, match="exited with code 3"):
        nbh.run_command(_py("import sys; sys.exit(3)"))


def test_interrupting_the_cell_passes_ctrl_c_to_the_child(tmp_path, capsys):
    """The stop button: the child gets SIGINT, finishes (a checkpoint in train), then we stop."""
    script = tmp_path / "child.py"
    script.write_text("import signal, sys, time\n"
                      "def bye(*a):\n    print('saved on SIGINT', flush=True)\n    sys.exit(0)\n"
                      "signal.signal(signal.SIGINT, bye)\nprint('child up', flush=True)\n"
                      "time.sleep(60)\n")

    def stop() -> None:
        if "child up" in capsys.readouterr().out:
            raise KeyboardInterrupt

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        nbh._watch(f"{sys.executable} {script}", stop, refresh_s=0.2)
    assert time.monotonic() - started < 30
    assert "saved on SIGINT" in capsys.readouterr().out


def test_an_interrupt_after_the_child_ended_does_not_wait_forever():
    def stop() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        nbh._watch(_py("print(1)"), stop, refresh_s=30)


def test_live_curve_draws_when_metrics_grow_and_skips_a_half_written_line(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    curve = nbh._LiveCurve(metrics)
    curve()  # no file yet: nothing drawn
    assert not curve.png.exists()
    metrics.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n{"step": 3, "lo')
    curve()
    assert not curve.png.exists()
    metrics.write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "loss": 4.0}\n')
    curve()
    assert curve.png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.notebook
@pytest.mark.timeout(400)
def test_notebook_runs_top_to_bottom_in_smoke_mode(tmp_path, monkeypatch):
    """CI's run: the parameters cell followed by an injected `SMOKE = True` (as papermill
    injects), every cell executed in a real kernel; any cell error fails the test."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    # A scratch repo root, so the run writes data/ and outputs/ there, not into the checkout.
    for name in ("aethermind", "scripts", "configs", "model", "inference"):
        (tmp_path / name).symlink_to(REPO / name)
    (tmp_path / "data").mkdir()
    for script in (REPO / "data").glob("*.py"):
        (tmp_path / "data" / script.name).symlink_to(script)
    nb = nbformat.reads((REPO / "notebooks" / "forge1_colab.ipynb").read_text(encoding="utf-8"),
                        as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        "SMOKE = True", metadata={"tags": ["injected-parameters"]}))
    # The kernel runs this interpreter's environment: its bin/ first on PATH (python and the
    # aethermind console script), this checkout importable.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    started = time.monotonic()
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    elapsed = time.monotonic() - started
    print(f"notebook smoke run: {elapsed:.0f} s")
    outputs = {i: c.get("outputs", []) for i, c in enumerate(nb.cells) if c.cell_type == "code"}
    train = next(i for i, c in enumerate(nb.cells) if "train_live(" in c.source)
    assert any("image/png" in o.get("data", {}) for o in outputs[train]), "no live loss curve"
    text = "".join(o.get("text", "") for outs in outputs.values() for o in outs)
    assert "Verdict: fits a 15 GB GPU" in text and "final model:" in text
    assert "Forge-1:" in text and "validation: loss" in text
    exports = tmp_path / "outputs" / "exports"
    assert (exports / "forge1_tiny_hf.zip").is_file()
    assert (exports / "forge1_tiny-q8_0.gguf").is_file()
