"""`aethermind serve` as a program: start-up line, the web page, one-line errors, shutdown."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from _serve_helpers import random_checkpoint, request

from aethermind.cli import main as aethermind
from aethermind.serve.server import bind

ROOT = Path(__file__).resolve().parents[1]


def _serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aethermind.cli", "serve", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return random_checkpoint(tmp_path_factory.mktemp("cli"))


def test_serve_command_starts_serves_the_page_and_stops_cleanly(ckpt):
    proc = _serve("--model", str(ckpt.parent), "--port", "0", "--device", "cpu")
    try:
        line = proc.stdout.readline()
        m = re.fullmatch(r"serving (\S+) on (http://127\.0\.0\.1:\d+) \(.*\)\n", line)
        assert m, line + proc.stderr.read() if proc.poll() is not None else line
        name, url = m.groups()
        assert name == ckpt.stem
        status, headers, page = request(url + "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert 'id="think-mode"' in page and 'id="new-chat"' in page
        # Works offline: nothing is loaded from another host.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
        assert json.loads(request(url + "/health")[2])["model"] == ckpt.stem
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_serve_command_serves_a_hugging_face_folder_under_its_name(ckpt, tmp_path):
    from aethermind.artifacts.exported import ExportMeta
    from aethermind.artifacts.loading import load_model
    from aethermind.export.hf import write_hf_dir

    model, tok = load_model(ckpt)
    folder = write_hf_dir(model, tok, ExportMeta.of(model, tok), tmp_path / "forge1_tiny_hf")
    proc = _serve("--model", str(folder), "--port", "0", "--device", "cpu")
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving forge1_tiny_hf on "), line + (
            proc.stderr.read() if proc.poll() is not None else "")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        models = json.loads(request(url + "/v1/models")[2])["data"]
        assert [m["id"] for m in models] == ["forge1_tiny_hf"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)


@pytest.mark.parametrize("case", ["no checkpoint", "port taken", "bad port", "bad origin",
                                  "bad body limit"])
def test_serve_command_errors_are_one_line(ckpt, tmp_path, capsys, monkeypatch, case):
    """In-process (the program's own start-up is the test above); a server that starts instead
    of refusing fails here at once rather than blocking the test."""
    import uvicorn

    def started(*args, **kwargs):
        raise AssertionError("the server started instead of refusing")

    monkeypatch.setattr(uvicorn.Server, "run", started)
    args = ["--model", str(ckpt), "--device", "cpu"]
    held = None
    if case == "no checkpoint":
        args[1] = str(tmp_path / "missing.pt")
    elif case == "port taken":
        held = bind("127.0.0.1", 0)
        args += ["--port", str(held.getsockname()[1])]
    elif case == "bad origin":
        args += ["--allow-origin", "app.example.org"]  # no scheme: no browser sends that
    elif case == "bad body limit":
        args += ["--max-body-bytes", "0"]
    else:
        args += ["--port", "70000"]
    try:
        with pytest.raises(SystemExit) as exit_:
            aethermind(["serve", *args])
    finally:
        if held is not None:
            held.close()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert {"no checkpoint": "checkpoint not found", "port taken": "cannot listen on",
            "bad port": "--port 70000", "bad origin": "--allow-origin app.example.org: give",
            "bad body limit": "--max-body-bytes 0: must be at least 1"}[case] in message
