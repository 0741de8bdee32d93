"""Download: offline message, local sources (JSONL, parquet), reuse, atomic writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aethermind.data import download

ASSETS = Path(__file__).parent / "assets" / "data"
ROOT = Path(__file__).resolve().parent.parent


def test_offline_prints_one_clear_line_and_keeps_existing_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "platypus.jsonl").write_text('{"keep": "me"}\n')
    rc = download.main(["100", "--raw-dir", str(raw)])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1
    assert "teknium/OpenHermes-2.5" in err and "unreachable" in err and "HF_HUB_OFFLINE" in err
    assert str(raw / "openhermes.jsonl") in err and "--add" in err
    assert (raw / "platypus.jsonl").read_text() == '{"keep": "me"}\n'
    assert sorted(p.name for p in raw.iterdir()) == ["platypus.jsonl"]


def test_guide_script_offline_exits_nonzero_without_traceback():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "data/download_datasets.py", "100"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "OpenHermes-2.5" in proc.stderr


def test_unreachable_hub_is_detected_fast(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HTTPS_PROXY", raising=False)
    monkeypatch.delenv("https_proxy", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(download.socket, "create_connection", refuse)
    assert "cannot connect" in download.hub_offline_reason(timeout=0.5)
    # Behind a proxy a direct connection says nothing: the libraries go through the proxy.
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert download.hub_offline_reason(timeout=0.5) is None
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # asked for offline: that wins over a proxy
    assert download.hub_offline_reason(timeout=0.5) == "HF_HUB_OFFLINE=1 is set"


def test_local_jsonl_is_copied_unchanged_then_reused(tmp_path, capsys):
    raw = tmp_path / "raw"
    args = ["2", "--only", "none", "--add", f"chat={ASSETS / 'messages.jsonl'}", "--raw-dir",
            str(raw)]
    assert download.main(args) == 0
    rows = [json.loads(x) for x in (raw / "chat.jsonl").read_text().splitlines()]
    source = [json.loads(x) for x in (ASSETS / "messages.jsonl").read_text().splitlines()]
    assert rows == source[:2]
    assert "wrote 2 records" in capsys.readouterr().out
    assert download.main(args) == 0
    assert "reused 2 records" in capsys.readouterr().out
    edited = tmp_path / "edited.jsonl"
    edited.write_text((ASSETS / "messages.jsonl").read_text())
    args[4] = f"chat={edited}"
    assert download.main(args) == 0 and "wrote 2" in capsys.readouterr().out
    os.utime(edited, ns=(1, 1))
    assert download.main(args) == 0 and "wrote 2" in capsys.readouterr().out


def test_local_parquet_source(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [json.loads(x) for x in (ASSETS / "gsm8k.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "gsm.parquet")
    out, count, reused = download.fetch(download.Source("gsm", str(tmp_path / "gsm.parquet")),
                                        None, tmp_path / "raw")
    assert (count, reused) == (2, False)
    assert [json.loads(x) for x in out.read_text().splitlines()] == rows


def test_failed_fetch_leaves_previous_file_intact(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "#### 1"}\n{broken\n')
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "gsm.jsonl").write_text("previous content\n")
    with pytest.raises(download.DownloadError, match="bad.jsonl:2"):
        download.fetch(download.Source("gsm", str(bad)), None, raw)
    assert (raw / "gsm.jsonl").read_text() == "previous content\n"
    assert sorted(p.name for p in raw.iterdir()) == ["gsm.jsonl"]


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert download.main(["--only", "nosuch", "--raw-dir", str(tmp_path)]) == 2
    assert "unknown dataset 'nosuch'" in capsys.readouterr().err
    assert download.main(["--add", "no-equals-sign", "--raw-dir", str(tmp_path)]) == 2
    assert download.main(["0"]) == 2


def test_parse_add_hub_and_local():
    assert download.parse_add("gsm8k=openai/gsm8k:main") == download.Source(
        "gsm8k", "openai/gsm8k", "main")
    assert download.parse_add("mine=x/y.parquet").is_local


def test_hub_source_streams_first_n_records(tmp_path, monkeypatch, capsys):
    import datasets

    calls = []

    def fake_load(path, name=None, *, split, streaming):
        calls.append((path, name, split, streaming))
        return ({"instruction": f"q{i}", "input": "", "output": "a", "data_source": "x"}
                for i in range(1000))

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    monkeypatch.setattr(download, "hub_offline_reason", lambda: None)
    raw = tmp_path / "raw"
    assert download.main(["3", "--only", "platypus", "--raw-dir", str(raw)]) == 0
    assert calls == [("garage-bAInd/Open-Platypus", None, "train", True)]
    assert [json.loads(x)["instruction"] for x in (raw / "platypus.jsonl").read_text()
            .splitlines()] == ["q0", "q1", "q2"]
    assert download.main(["3", "--only", "platypus", "--raw-dir", str(raw)]) == 0
    assert len(calls) == 1 and "reused" in capsys.readouterr().out


def test_hub_library_error_is_one_line(tmp_path, monkeypatch, capsys):
    import datasets

    def boom(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    monkeypatch.setattr(download, "hub_offline_reason", lambda: None)
    assert download.main(["3", "--only", "openthoughts", "--raw-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "ConnectionError" in err and "openthoughts" in err
    assert not list(tmp_path.iterdir())
