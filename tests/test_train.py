"""The training loop: exact resume, crash safety, signals, NaN handling, outputs, golden curve."""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from _train_helpers import make_cfg, write_chats, write_yaml

from aethermind import cli
from aethermind.artifacts import checkpoint as ckpt
from aethermind.model.transformer import Forge1Model
from aethermind.runtime import dist
from aethermind.training import train
from aethermind.training.config import TrainConfig
from aethermind.training.dashboard import Dashboard, read_metrics

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "assets" / "losses_tiny_cpu.txt"


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("train_assets")
    return SimpleNamespace(
        tok=str(tiny_tokenizer_dir),
        train=str(write_chats(root / "train.jsonl", 96, seed=0)),
        val=str(write_chats(root / "val.jsonl", 16, seed=1)),
        cache=str(root / "cache"))


def test_loss_is_summed_over_masked_tokens_only(tiny_config):
    model = Forge1Model(tiny_config)
    tokens = torch.randint(0, tiny_config.vocab_size, (1, 3))
    targets = torch.tensor([[2, -100, 4]])
    logits = model(tokens)
    expected = (torch.nn.functional.cross_entropy(logits[0, [0, 2]], targets[0, [0, 2]],
                                                  reduction="sum"))
    assert torch.allclose(train.compute_loss(model, tokens, targets), expected)


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_resume_gives_the_same_losses_step_for_step(assets, tmp_path, optimizer):
    straight = train.train(make_cfg(assets, tmp_path / "a", max_steps=20, val_data=assets.val,
                                    eval_every=5, optimizer=optimizer))
    cfg = make_cfg(assets, tmp_path / "b", max_steps=20, val_data=assets.val, eval_every=5,
                   optimizer=optimizer)
    first = train.train(cfg, stop_after=10)
    assert first["status"] == "interrupted" and first["step"] == 10
    second = train.train(cfg, resume=True)
    assert second["status"] == "completed" and second["step"] == 20
    assert len(straight["losses"]) == 20
    for a, b in zip(straight["losses"], first["losses"] + second["losses"], strict=True):
        assert abs(a - b) <= 1e-6
    assert abs(straight["val_loss"] - second["val_loss"]) <= 1e-6
    steps = [r["step"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert steps == list(range(1, 21))  # no duplicated or missing lines after the resume


def test_gradient_accumulation_equals_one_big_batch(assets, tmp_path):
    big = train.train(make_cfg(assets, tmp_path / "big", batch_size=4, max_steps=4))
    acc = train.train(make_cfg(assets, tmp_path / "acc", batch_size=2,
                               gradient_accumulation_steps=2, max_steps=4))
    for a, b in zip(big["losses"], acc["losses"], strict=True):
        assert abs(a - b) <= 1e-5


STOP_SIGNALS = [pytest.param(getattr(signal, name), id=name)
                for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]


@pytest.mark.parametrize("signum", STOP_SIGNALS)
def test_stop_signal_saves_a_checkpoint_and_stops_cleanly(assets, tmp_path, monkeypatch, signum):
    """Ctrl-C, kill and a closed terminal all end a run the same way: checkpoint, then stop."""
    calls = {"n": 0}
    real = train.compute_loss

    def loss_then_signal(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(train, "compute_loss", loss_then_signal)
    result = train.train(make_cfg(assets, tmp_path, max_steps=50))
    assert result["status"] == "interrupted" and result["signal"] == signum
    assert result["step"] == 3
    assert ckpt.latest_valid(tmp_path / "checkpoints")[1]["step"] == 3
    assert result["final_model"] is None


def _start(cfg: TrainConfig, tmp_path: Path) -> subprocess.Popen:
    config = write_yaml(cfg, tmp_path / "run.yaml")
    return subprocess.Popen([sys.executable, str(REPO / "scripts" / "train.py"), "--config",
                             str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def test_kill_9_during_training_then_resume_works(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "run", max_steps=10_000, checkpoint_every=3)
    proc = _start(cfg, tmp_path)
    _wait_for(tmp_path / "run" / "checkpoints" / "step_0000003.pt", proc)
    proc.kill()  # SIGKILL: no handler runs, whatever was being written stays half-written
    proc.communicate()
    result = train.train(cfg.replace(max_steps=8), resume=True)
    assert result["status"] == "completed" and result["step"] == 8
    assert len(result["losses"]) < 8  # it continued rather than starting over
    assert (tmp_path / "run" / "final_model" / "forge1_tiny_final.pt").is_file()
    ckpt_dir = tmp_path / "run" / "checkpoints"
    kept = ckpt.list_checkpoints(ckpt_dir)
    assert [int(p.stem.split("_")[1]) for p in kept][-1] == 8
    for path in kept:  # a kill at any moment never leaves a half file under a real name
        assert ckpt.load_checkpoint(path)["step"] == int(path.stem.split("_")[1])
    stray = {p.name for p in ckpt_dir.iterdir()} - {p.name for p in kept} - {"train_config.yaml"}
    assert all(name.endswith(f".tmp{proc.pid}") for name in stray), stray  # the killed run's


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path / "run", max_steps=10_000, checkpoint_every=2)
    proc = _start(cfg, tmp_path)
    _wait_for(tmp_path / "run" / "checkpoints" / "step_0000002.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "interrupted at step" in err and "Traceback" not in err
    path, state = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    assert state["step"] >= 2 and path.name == ckpt.checkpoint_name(state["step"])


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no terminals to hang up here")
def test_closing_the_terminal_saves_a_checkpoint_and_exits_cleanly(assets, tmp_path):
    """A run in a terminal whose window is closed: the kernel sends SIGHUP and every later
    write to the terminal fails (EIO); the run must still save and exit 128 + SIGHUP."""
    import fcntl
    import pty
    import select
    import termios

    # The live dashboard and a log line every step, as a terminal shows them.
    cfg = make_cfg(assets, tmp_path / "run", max_steps=10_000, checkpoint_every=2,
                   dashboard="auto")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "train.py"), "--config",
         str(write_yaml(cfg, tmp_path / "run.yaml"))],
        stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "100"},
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty is its terminal
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    first = tmp_path / "run" / "checkpoints" / "step_0000002.pt"
    try:
        while not first.exists():  # read what it draws, or a full pty buffer would block it
            assert proc.poll() is None and time.monotonic() < deadline, seen[-2000:]
            if select.select([master], [], [], 0.05)[0]:
                seen += os.read(master, 65536)
    finally:
        os.close(master)  # the window closes: SIGHUP, and the terminal is gone
    assert proc.wait(timeout=120) == 128 + signal.SIGHUP, seen[-2000:]
    path, state = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    assert state["step"] >= 2 and path.name == ckpt.checkpoint_name(state["step"])
    assert not (tmp_path / "run" / "final_model").exists()


def test_corrupt_newest_checkpoint_is_skipped_on_resume(assets, tmp_path):
    cfg = make_cfg(assets, tmp_path, max_steps=4, checkpoint_every=2)
    train.train(cfg)
    newest = tmp_path / "checkpoints" / "step_0000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(UserWarning, match="skipping .*step_0000004.pt"):
        result = train.train(cfg.replace(max_steps=6), resume=True)
    assert result["step"] == 6 and len(result["losses"]) == 4  # resumed from step 2


def test_resume_with_another_variant_tokenizer_or_optimizer_is_refused(assets, tmp_path, capsys):
    cfg = make_cfg(assets, tmp_path, max_steps=2)
    train.train(cfg)
    config = write_yaml(cfg, tmp_path / "run.yaml")
    assert train.main(["--config", str(config), "--variant", "nano", "--resume"]) == 1
    assert "cannot resume: " in capsys.readouterr().err
    with pytest.raises(train.TrainingError, match="tiny run but --variant nano"):
        train.train(cfg.replace(variant="nano"), resume=True)
    with pytest.raises(train.TrainingError, match="trained with tokenizer"):
        train.train(cfg.replace(tokenizer="default"), resume=True)
    # Optimizer states do not convert: AdamW's moments are no Muon momentum (was a KeyError).
    with pytest.raises(train.TrainingError, match="trained with optimizer adamw but "
                                                  "optimizer=muon"):
        train.train(cfg.replace(optimizer="muon"), resume=True)


def test_nan_losses_skip_steps_then_stop_with_the_last_checkpoint_intact(
        assets, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = train.compute_loss

    def flaky(*args):  # one micro-batch per step: call n is step n
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 3 or calls["n"] >= 6 else loss

    monkeypatch.setattr(train, "compute_loss", flaky)
    cfg = make_cfg(assets, tmp_path, max_steps=20, checkpoint_every=2, max_bad_steps=3,
                   dashboard="plain")
    rc = train.main(["--config", str(write_yaml(cfg, tmp_path / "run.yaml"))])
    out, err = capsys.readouterr()
    assert rc == 1
    assert "step 3: non-finite loss" in out and "step 4: non-finite" not in out
    assert "stopped at step 8: 3 non-finite losses in a row" in err
    path, state = ckpt.latest_valid(tmp_path / "checkpoints")
    assert state["step"] == 6  # nothing was written for the failing step 8
    assert all(torch.isfinite(t).all() for t in state["model"].values())
    assert not (tmp_path / "final_model").exists()


def test_plain_output_metrics_png_and_final_model(assets, tmp_path, capsys):
    cfg = make_cfg(assets, tmp_path, max_steps=4, log_every=2, val_data=assets.val,
                   eval_every=2, dashboard="auto")
    assert train.main(["--config", str(write_yaml(cfg, tmp_path / "run.yaml"))]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(lines) == 2 and lines[0].startswith("step      2/4 | loss ")
    assert "tok/s" in lines[0] and "val " in lines[0] and "\x1b[" not in out
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert {"step", "loss", "lr", "tokens_per_s", "grad_norm"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    assert [r["step"] for r in records if "val_loss" in r] == [2, 4]
    assert (tmp_path / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    final = tmp_path / "final_model"
    assert {p.name for p in final.iterdir()} == {"forge1_tiny_final.pt", "config.json",
                                                 "tokenizer"}
    saved = yaml.safe_load((tmp_path / "checkpoints" / "train_config.yaml").read_text())
    assert saved["max_steps"] == 4 and saved["variant"] == "tiny"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_rich_dashboard_on_a_terminal(tmp_path):
    stream = _Tty()
    dash = Dashboard(10, tmp_path, mode="auto", stream=stream)
    assert dash.mode == "rich"
    for step in range(1, 4):
        dash.update({"step": step, "loss": 5.0 - step, "lr": 1e-3, "grad_norm": 1.0,
                     "tokens_per_s": 1000.0, "steps_per_s": 2.0, "epoch": 0,
                     "memory": "0.10 GiB RSS"})
    dash.close()
    text = stream.getvalue()
    assert "loss curve" in text and "tokens/s" in text and "3/10" in text


def test_tiny_preset_overfits_one_batch(assets, tmp_path):
    # Four conversations, one per padded row, batch 4: every step sees the same batch.
    data = write_chats(tmp_path / "four.jsonl", 4, seed=3)
    cfg = make_cfg(assets, tmp_path / "run", train_data=str(data), layout="padded",
                   context_length=96, max_steps=40, learning_rate=3e-3, warmup_ratio=0.05,
                   min_lr_ratio=1.0, weight_decay=0.0)
    losses = train.train(cfg)["losses"]
    assert losses[-1] < 0.2 < 2.0 < losses[0]


def test_compile_blocks_gives_the_eager_losses_and_plain_weights(assets, tmp_path):
    """`compile: blocks` compiles each block in place: the same losses as eager, and a final
    model whose weight names carry no torch.compile prefix (it loads like any other)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = train.train(make_cfg(assets, tmp_path / "eager", max_steps=3))["losses"]
    blocks = train.train(make_cfg(assets, tmp_path / "blocks", max_steps=3, compile="blocks"))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # compiled, not eager
    for a, b in zip(eager, blocks["losses"], strict=True):
        assert abs(a - b) <= 1e-4
    def weights(run: str) -> dict[str, torch.Tensor]:
        return torch.load(tmp_path / run / "final_model" / "forge1_tiny_final.pt",
                          map_location="cpu", weights_only=True)
    assert list(weights("blocks")) == list(weights("eager"))


def test_compile_without_a_cpu_compiler_trains_eager_with_one_warning(
        assets, tmp_path, monkeypatch):
    """torch.compile on a CPU builds C++ kernels at the first step; with no compiler the run
    would die there, so it trains eager and says why."""
    monkeypatch.setattr(dist, "cpu_compiler_found", lambda: False)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    with pytest.warns(UserWarning, match="compile needs a C\\+\\+ compiler on the CPU"):
        result = train.train(make_cfg(assets, tmp_path, max_steps=2, compile="blocks"))
    assert result["status"] == "completed"
    assert not torch._dynamo.utils.counters["stats"]["unique_graphs"]


def test_bf16_on_a_cpu_with_it_trains_under_autocast_with_fp32_weights(
        assets, tmp_path, monkeypatch):
    """Where the CPU has bf16 (`dist.cpu_bf16_native`), `precision: bf16` runs the step under
    bf16 autocast: losses near fp32's but not equal to them, weights saved in fp32."""
    monkeypatch.setattr(dist, "cpu_bf16_native", lambda: True)
    fp32 = train.train(make_cfg(assets, tmp_path / "fp32", max_steps=3))["losses"]
    bf16 = train.train(make_cfg(assets, tmp_path / "bf16", max_steps=3, precision="bf16"))
    assert fp32 != bf16["losses"]
    for a, b in zip(fp32, bf16["losses"], strict=True):
        assert abs(a - b) <= 0.02 * a
    saved = torch.load(tmp_path / "bf16" / "final_model" / "forge1_tiny_final.pt",
                       map_location="cpu", weights_only=True)
    assert all(t.dtype == torch.float32 for t in saved.values())


def test_golden_first_losses(assets, tmp_path):
    losses = train.train(make_cfg(assets, tmp_path, max_steps=8))["losses"]
    if os.environ.get("AETHERMIND_UPDATE_GOLDEN"):
        GOLDEN.write_text("".join(f"{x:.6f}\n" for x in losses), encoding="utf-8")
    golden = [float(x) for x in GOLDEN.read_text().split()]
    assert len(golden) == 8
    for got, want in zip(losses, golden, strict=True):
        assert abs(got - want) <= 1e-4, (losses, golden)


def test_guide_config_falls_back_to_cpu_with_one_line_warnings(assets, tmp_path, capsys):
    overrides = [f"{k}={v}" for k, v in dict(
        train_data=assets.train, tokenizer=assets.tok, data_cache_dir=assets.cache,
        output_dir=tmp_path, max_steps=1, context_length=64, gradient_accumulation_steps=1,
        num_workers=1).items()]
    args = ["train", "--config", str(REPO / "configs" / "local_config.yaml"), "--variant",
            "tiny"] + [a for o in overrides for a in ("--set", o)]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "warning: device 'cuda' asked but no CUDA GPU is available" in err
    assert "warning: precision fp16 needs a GPU: using fp32 on the CPU" in err
    assert (tmp_path / "final_model" / "forge1_tiny_final.pt").is_file()


@pytest.mark.slow
def test_guide_nano_command_runs_on_cpu(assets, tmp_path):
    proc = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/local_config.yaml",
         "--variant", "nano", "--set", f"train_data={assets.train}", "--set",
         f"output_dir={tmp_path}", "--set", "max_steps=1", "--set",
         "gradient_accumulation_steps=1", "--set", "context_length=256"],
        cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "final_model" / "forge1_nano_final.pt").is_file()
