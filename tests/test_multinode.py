"""Two torchrun agents as two "nodes" on localhost (c10d rendezvous, gloo) == one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aethermind.training import train
from aethermind.training.dashboard import read_metrics

sys.path.insert(0, str(Path(__file__).parent))
from test_dist import assets  # noqa: E402, F401  (the module fixture: tokenizer + chats)
from test_train import make_cfg, write_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(rendezvous: str, node_rank: int, port: int, config: Path) -> list[str]:
    """What a user types on each machine (README), 127.0.0.1 standing in for node 0's address.

    c10d: the agents meet through a store on the endpoint and number themselves (torchrun
    ignores --node-rank there). static: the classic --node-rank + --master-addr form.
    """
    if rendezvous == "c10d":
        how = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
               "--rdzv-id=forge1-multinode-test"]
    else:
        how = [f"--node-rank={node_rank}", "--master-addr=127.0.0.1", f"--master-port={port}"]
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1",
            *how, str(REPO / "scripts" / "train.py"), "--config", str(config)]


@pytest.mark.parametrize("rendezvous", ["c10d", pytest.param("static", marks=pytest.mark.slow)])
def test_two_nodes_match_one_process(assets, tmp_path, rendezvous):  # noqa: F811
    # Global batch 4 rows per step (2 x 2 accumulation) in both runs: one process, or one
    # process on each of two "nodes" that meet through the c10d store on node 0.
    cfg = make_cfg(assets, tmp_path / "one", batch_size=2, gradient_accumulation_steps=2,
                   max_steps=4)
    single = train.train(cfg)
    config = write_yaml(cfg.replace(output_dir=str(tmp_path / "two")), tmp_path / "nodes.yaml")
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    nodes = [subprocess.Popen(node_command(rendezvous, rank, port, config), cwd=tmp_path, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=240) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, (_, err) in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, err[-3000:]
    # One world of 2 processes, not two runs of 1: exactly one node holds rank 0 and logs.
    assert sum("Forge-1 tiny:" in out + err for out, err in outputs) == 1
    records = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # global rank 0 alone writes
    for a, r in zip(single["losses"], records, strict=True):
        assert abs(a - r["loss"]) <= 1e-5
    one = torch.load(tmp_path / "one" / "final_model" / "forge1_tiny_final.pt")
    two = torch.load(tmp_path / "two" / "final_model" / "forge1_tiny_final.pt")
    assert all(torch.allclose(one[k], two[k], atol=1e-5) for k in one)
