"""Devices, precision fallbacks, seeding, rank-0 logging, and 2-process DDP == 1 process."""

from __future__ import annotations

import platform
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aethermind.runtime import dist
from aethermind.training import train
from aethermind.training.dashboard import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_train import make_cfg, write_chats, write_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def assets(tmp_path_factory, tiny_tokenizer_dir):
    root = tmp_path_factory.mktemp("dist_assets")
    return SimpleNamespace(tok=str(tiny_tokenizer_dir),
                           train=str(write_chats(root / "train.jsonl", 96, seed=0)),
                           val=str(write_chats(root / "val.jsonl", 16, seed=1)),
                           cache=str(root / "cache"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the no-GPU fallback")
def test_cuda_without_a_gpu_falls_back_to_cpu_with_a_warning():
    with pytest.warns(UserWarning, match="no CUDA GPU is available: running on the CPU"):
        assert dist.select_device("cuda").type == "cpu"
    assert dist.select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("native", [False, True])
def test_cpu_trains_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    """bf16 on a CPU without it in hardware is emulated, slower than fp32: fp32 with a warning
    there; with AMX or AVX512-BF16 the run takes bf16. fp16 always falls back on a CPU."""
    monkeypatch.setattr(dist, "cpu_bf16_native", lambda: native)
    cpu = torch.device("cpu")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert dist.resolve_precision("bf16", cpu) == ("bf16" if native else "fp32")
        assert dist.cpu_precision() == ("bf16" if native else "fp32")
    assert any("bf16 needs a GPU or a CPU with bf16 in hardware" in str(w.message)
               for w in seen) != native
    with pytest.warns(UserWarning, match="precision fp16 needs a GPU: using fp32"):
        assert dist.resolve_precision("fp16", cpu) == "fp32"
    assert dist.resolve_precision("fp32", cpu) == "fp32"


def test_cpu_bf16_native_reads_the_cpu_flags(monkeypatch):
    for amx, avx512_bf16 in ((False, False), (True, False), (False, True)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        assert dist.cpu_bf16_native() == (amx or avx512_bf16)


@pytest.mark.parametrize(("capability", "expected"), [((7, 5), "fp16"), ((8, 0), "bf16")])
def test_bf16_on_a_card_that_only_emulates_it_trains_in_fp16(monkeypatch, capability, expected):
    """A T4 (7.5) "supports" bf16 by slow emulation (`is_bf16_supported()` says True): the run
    takes fp16 with loss scaling there, and bf16 from Ampere (8.0) on."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert dist.resolve_precision("bf16", torch.device("cuda")) == expected
    assert any("no bf16" in str(w.message) for w in seen) == (expected == "fp16")


# Frees a 64 MB tensor, then allocates 32 MB and prints that allocation's page faults. By default
# glibc gave the 64 MB back to the OS (above its 32 MiB largest mmap threshold), so the 32 MB
# are mapped and zeroed afresh; with freed memory kept, they come from the freed block.
_FAULTS = """
import resource, sys, torch
from aethermind.runtime import dist
if sys.argv[1] == "setup":
    dist.setup("cpu")
big = torch.ones(16_000_000)
del big
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
small = torch.ones(8_000_000)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_cpu_setup_reuses_freed_memory_instead_of_faulting_it_in_again():
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FAULTS, mode], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        return int(out.split()[-1])

    assert faults("plain") > 5_000  # 32 MB of 4 KiB pages, mapped and zeroed again
    assert faults("setup") < 500  # the heap's freed block, reused


def test_seed_everything_is_reproducible():
    dist.seed_everything(7)
    a = torch.rand(3)
    dist.seed_everything(7)
    assert torch.equal(a, torch.rand(3))
    dist.seed_everything(7, rank=1)
    assert not torch.equal(a, torch.rand(3))


def test_only_rank_0_logs(monkeypatch, caplog):
    monkeypatch.setenv("RANK", "1")
    assert not dist.is_main()
    with caplog.at_level("INFO", logger="aethermind"):
        dist.log0("hidden")
        monkeypatch.setenv("RANK", "0")
        dist.log0("shown")
    assert [r.getMessage() for r in caplog.records] == ["shown"]


def test_single_process_context_is_not_distributed(monkeypatch):
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    ctx = dist.setup("cpu")
    assert (ctx.rank, ctx.world_size, ctx.distributed) == (0, 1, False)
    model = torch.nn.Linear(2, 2)
    assert dist.wrap_model(model, ctx) is model and dist.unwrap(model) is model


@pytest.mark.parametrize("fsdp", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["ddp", "fsdp2"])
def test_two_processes_match_one_process(assets, tmp_path, fsdp):
    # Same global batch (2 x 2 accumulation = 4 rows), split over 2 gloo processes.
    cfg = make_cfg(assets, tmp_path / "one", batch_size=2, gradient_accumulation_steps=2,
                   max_steps=5, val_data=assets.val, eval_every=5)
    single = train.train(cfg)
    ddp_cfg = cfg.replace(output_dir=str(tmp_path / "two"), fsdp=fsdp)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "scripts" / "train.py"), "--config",
         str(write_yaml(ddp_cfg, tmp_path / "ddp.yaml"))],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]  # rank 0 alone writes
    for a, r in zip(single["losses"], records, strict=True):
        assert abs(a - r["loss"]) <= 1e-5
    assert abs(single["val_loss"] - records[-1]["val_loss"]) <= 1e-5
    one = torch.load(tmp_path / "one" / "final_model" / "forge1_tiny_final.pt")
    two = torch.load(tmp_path / "two" / "final_model" / "forge1_tiny_final.pt")
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)
    assert proc.stdout.count("step      5/5") <= 1  # rank-0-only logging
