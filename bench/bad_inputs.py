"""Bad inputs and injected faults through the real command line: one JSON line per case.

Each case builds its own scratch folder, runs the command a user would (preprocess, pack,
tokenizer, train, chat, evaluate, colab_setup) and records the exit status, whether a Python
traceback appeared, the first lines the user sees, and whether data survived. The table in
docs/bad_inputs.md was made from its output on this branch and on the commit before issue 8.
The groups added for issue 22 probe the server (hostile HTTP requests to a real `aethermind
serve`, whose log is read for tracebacks; rc is then the HTTP status), the web chat (a long
conversation in headless chromium, `bad_inputs_http.py`), export, import-hf and chat. A note
may carry a marker (DATA LOST, SILENTLY WRONG, STALLED, UNSAFE, FAILED, TEMP FILES LEFT); the
last line counts tracebacks, HTTP 500s and each marker over the cases run.
Usage: `python bench/bad_inputs.py <repo root> <scratch dir> <final_model .pt> [NAME,NAME]`
(the model: any `final_model/forge1_*_final.pt`, e.g. from the CPU quick test; the optional
list runs only the cases whose names contain one of the words, `new` the issue-22 groups, e.g.
`new` or `server:,web chat:`). It never touches <repo root>.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TREE = Path(sys.argv[1]).resolve()
WORK = Path(sys.argv[2]).resolve()
MODEL = Path(sys.argv[3]).resolve()
ONLY = sys.argv[4].split(",") if len(sys.argv) > 4 else None
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(TREE), "OMP_NUM_THREADS": "1", "TERM": "dumb",
       "COLUMNS": "200"}
TOK = MODEL.parent / "tokenizer"


def chat_text(i, user=None):
    u = user or f"What is {i} + {i}?"
    return ("<|bos|>\n<|system|>You are Forge-1, a helpful thinking AI assistant.<|/system|>\n"
            f"<|user|>{u}<|/user|>\n<|no_think|>\n<|assistant|>It is {2 * i}.<|/assistant|>\n"
            "\n<|eos|>")


def jl(path, n, start=0, enc="utf-8", extra=""):
    text = "".join(json.dumps({"text": chat_text(i)}) + "\n" for i in range(start, start + n))
    path.write_bytes((text + extra).encode(enc))
    return path


def cfg(d, **kw):
    base = dict(variant="tiny", train_data=str(d / "train.jsonl"), val_data=None,
                tokenizer=str(TOK), device="cpu", batch_size=4, context_length=64,
                max_steps=2, checkpoint_every=1, eval_every=1, log_every=1, dashboard="plain",
                output_dir=str(d / "out"), num_workers=1, learning_rate=1e-3)
    base.update(kw)
    p = d / "run.yaml"
    p.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in base.items()))
    return str(p)


def _sigint_default():  # a background shell starts us with SIGINT ignored; a terminal does not
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run(cmd, cwd, stdin=None, sig_after=None, sig_twice=False, timeout=600):
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdin=subprocess.PIPE,
                            preexec_fn=_sigint_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if sig_after is not None:
        if callable(sig_after):
            sig_after(proc)
        else:
            time.sleep(sig_after)
        proc.send_signal(signal.SIGINT)
        if sig_twice:
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(stdin, timeout=timeout)
    return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), \
        time.time() - t0


CASES = []
NEW = set()  # the names of the issue-22 groups' cases


def case(name, new=False):
    def deco(f):
        CASES.append((name, f))
        if new:
            NEW.add(name)
        return f
    return deco


T = [PY, str(TREE / "scripts" / "train.py"), "--config"]
PRE = [PY, str(TREE / "data" / "preprocess.py")]
CLI = [PY, "-m", "aethermind.cli"]
CHAT = [PY, str(TREE / "scripts" / "chat.py"), "--device", "cpu", "--max-tokens", "3"]
EVAL = [PY, str(TREE / "scripts" / "evaluate.py"), "--n-test", "0", "--max-new-tokens", "2"]


# ---------------- preprocess
@case("preprocess: raw folder missing")
def _(d):
    return run(PRE + ["--raw-dir", "nope"], d)


def _existing(d):
    (d / "data").mkdir(exist_ok=True)
    (d / "data" / "train.jsonl").write_text("GOOD\n")
    (d / "data" / "val.jsonl").write_text("GOOD\n")
    (d / "data" / "raw").mkdir(exist_ok=True)
    return d / "data" / "raw"


def _intact(d):
    return "existing outputs intact" if (d / "data" / "train.jsonl").read_text() == "GOOD\n" \
        and (d / "data" / "val.jsonl").read_text() == "GOOD\n" else "EXISTING OUTPUTS REPLACED"


@case("preprocess: every line malformed, good train/val exist")
def _(d):
    raw = _existing(d)
    (raw / "openhermes.jsonl").write_text("not json\n{\"conversations\": 3}\n")
    r = run(PRE, d)
    return r + (_intact(d),)


@case("preprocess: binary raw file, good train/val exist")
def _(d):
    raw = _existing(d)
    (raw / "openhermes.jsonl").write_bytes(bytes(range(256)) * 40)
    return run(PRE, d) + (_intact(d),)


@case("preprocess: UTF-16 raw file, good train/val exist")
def _(d):
    raw = _existing(d)
    (raw / "platypus.jsonl").write_bytes(
        (json.dumps({"instruction": "Hi", "output": "Hello"}) + "\n").encode("utf-16"))
    return run(PRE, d) + (_intact(d),)


@case("preprocess: UTF-8 with BOM (one valid record)")
def _(d):
    raw = _existing(d)
    (raw / "platypus.jsonl").write_bytes(
        (json.dumps({"instruction": "Name a colour.", "output": "Blue."}) + "\n")
        .encode("utf-8-sig"))
    r = run(PRE + ["--val-fraction", "0"], d)
    kept = (d / "data" / "train.jsonl").read_text().count("Blue")
    return r + (f"{kept} record kept",)


@case('preprocess: "from": [list] in a conversation record')
def _(d):
    raw = _existing(d)
    (raw / "openhermes.jsonl").write_text(
        json.dumps({"conversations": [{"from": ["human"], "value": "hi"}]}) + "\n" +
        json.dumps({"conversations": [{"from": "human", "value": "hi"},
                                      {"from": "gpt", "value": "hello"}]}) + "\n")
    return run(PRE + ["--val-fraction", "0"], d)


@case("preprocess: output folder on a read-only file system (/sys)")
def _(d):
    raw = _existing(d)
    (raw / "platypus.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    return run(PRE + ["--output", "/sys/aethermind/train.jsonl"], d)


@case("preprocess: Ctrl-C while converting 300k records")
def _(d):
    raw = _existing(d)
    line = json.dumps({"instruction": "What is 2 + 2? " * 3, "output": "4 " * 20}) + "\n"
    with (raw / "platypus.jsonl").open("w") as f:
        for i in range(300000):
            f.write(line.replace("2 + 2", f"{i} + 2"))
    r = run(PRE, d, sig_after=3.0)
    left = [p.name for p in (d / "data").iterdir() if ".tmp" in p.name]
    return r + (_intact(d) + (f"; temp files left: {left}" if left else "; no temp files"),)


# ---------------- pack / tokenizer
@case("data pack: empty input file")
def _(d):
    (d / "e.jsonl").write_text("")
    return run(CLI + ["data", "pack", "--input", "e.jsonl", "--output", "sh"], d)


@case("data pack: UTF-16 input")
def _(d):
    jl(d / "u.jsonl", 3, enc="utf-16")
    return run(CLI + ["data", "pack", "--input", "u.jsonl", "--output", "sh"], d)


@case("data pack: binary input")
def _(d):
    (d / "b.jsonl").write_bytes(bytes(range(256)) * 40)
    return run(CLI + ["data", "pack", "--input", "b.jsonl", "--output", "sh"], d)


@case("data pack: UTF-8 with BOM")
def _(d):
    jl(d / "bom.jsonl", 3, enc="utf-8-sig")
    return run(CLI + ["data", "pack", "--input", "bom.jsonl", "--output", "sh"], d)


@case("data pack: invalid UTF-8 byte on line 4")
def _(d):
    jl(d / "x.jsonl", 3)
    with (d / "x.jsonl").open("ab") as f:
        f.write(b'{"text": "caf\xe9"}\n')
    return run(CLI + ["data", "pack", "--input", "x.jsonl", "--output", "sh"], d)


@case("data pack: 2 malformed lines among 10")
def _(d):
    jl(d / "m.jsonl", 8, extra="{broken\n{\"text\": 5}\n")
    return run(CLI + ["data", "pack", "--input", "m.jsonl", "--output", "sh"], d)


@case("data pack: Ctrl-C while packing with 2 workers")
def _(d):
    jl(d / "big.jsonl", 60000)
    r = run(CLI + ["data", "pack", "--input", "big.jsonl", "--output", "sh", "--workers", "2"], d,
            sig_after=4.0)
    left = [p.name for p in d.iterdir() if ".tmp" in p.name]
    return r + ("no half-built shards left" if not left else f"LEFT {left}",)


@case("tokenizer train: UTF-16 input")
def _(d):
    jl(d / "u.jsonl", 3, enc="utf-16")
    return run(CLI + ["tokenizer", "train", "--input", "u.jsonl", "--vocab-size", "400",
                      "--output", "tok"], d)


@case("tokenizer train: malformed line among 30")
def _(d):
    jl(d / "m.jsonl", 30, extra="{oops\n")
    return run(CLI + ["tokenizer", "train", "--input", "m.jsonl", "--vocab-size", "400",
                      "--output", "tok"], d)


# ---------------- train
@case("train: empty train_data")
def _(d):
    (d / "train.jsonl").write_text("")
    return run(T + [cfg(d)], d)


@case("train: binary train_data")
def _(d):
    (d / "train.jsonl").write_bytes(bytes(range(256)) * 40)
    return run(T + [cfg(d)], d)


@case("train: UTF-16 train_data")
def _(d):
    jl(d / "train.jsonl", 20, enc="utf-16")
    return run(T + [cfg(d)], d)


@case("train: UTF-8 BOM train_data")
def _(d):
    jl(d / "train.jsonl", 20, enc="utf-8-sig")
    return run(T + [cfg(d)], d)


@case("train: malformed lines, tokenizer: train")
def _(d):
    jl(d / "train.jsonl", 30, extra="{oops\n[1, 2]\n")
    return run(T + [cfg(d, tokenizer="train", tokenizer_vocab_size=400)], d)


@case("train: 14 conversations, batch 8, context 256 (cpu_config shape), empty val")
def _(d):
    jl(d / "train.jsonl", 14)
    (d / "val.jsonl").write_text("")
    return run(T + [cfg(d, batch_size=8, context_length=256, max_steps=3,
                       val_data=str(d / "val.jsonl"))], d)


@case("train: 3-document validation file, batch 8")
def _(d):
    jl(d / "train.jsonl", 40)
    jl(d / "val.jsonl", 3, start=500)
    return run(T + [cfg(d, batch_size=8, val_data=str(d / "val.jsonl"))], d)


@case("train: --set learning_rate=inf")
def _(d):
    jl(d / "train.jsonl", 20)
    return run(T + [cfg(d), "--set", "learning_rate=inf"], d)


@case("train: learning_rate: .nan in the YAML")
def _(d):
    jl(d / "train.jsonl", 20)
    p = cfg(d)
    Path(p).write_text(Path(p).read_text().replace("learning_rate: 0.001", "learning_rate: .nan"))
    return run(T + [p], d)


@case("train: unknown key in --set")
def _(d):
    return run(T + [cfg(d), "--set", "lerning_rate=1e-3"], d)


@case("train: corrupt tokenizer.json (tokenizer: dir)")
def _(d):
    jl(d / "train.jsonl", 20)
    (d / "tok").mkdir()
    (d / "tok" / "tokenizer.json").write_text('{"version": "1.0", "model":')
    return run(T + [cfg(d, tokenizer=str(d / "tok"))], d)


@case("train: output folder on a read-only file system (/sys)")
def _(d):
    jl(d / "train.jsonl", 20)
    return run(T + [cfg(d, output_dir="/sys/aethermind_out")], d)


@case("train: second run in a used folder without --resume")
def _(d):
    jl(d / "train.jsonl", 20)
    c = cfg(d)
    run(T + [c], d)
    before = sorted(p.name for p in (d / "out" / "checkpoints").glob("step_*"))
    r = run(T + [c], d)
    after = sorted(p.name for p in (d / "out" / "checkpoints").glob("step_*"))
    return r + (f"checkpoints {before} -> {after}",)


@case("train: foreign step_0000900.pt in checkpoints, --resume")
def _(d):
    jl(d / "train.jsonl", 20)
    c = cfg(d, keep_checkpoints=2)
    run(T + [c], d)
    (d / "out" / "checkpoints" / "step_0000900.pt").write_text("junk")
    r = run(T + [c, "--resume", "--set", "max_steps=5"], d)
    left = sorted(p.name for p in (d / "out" / "checkpoints").glob("step_*"))
    return r + (f"checkpoints left: {left}",)


@case("train: --resume an AdamW run with --set optimizer=muon")
def _(d):
    jl(d / "train.jsonl", 20)
    c = cfg(d)
    run(T + [c], d)
    r = run(T + [c, "--resume", "--set", "optimizer=muon", "--set", "max_steps=5"], d)
    left = sorted(p.name for p in (d / "out" / "checkpoints").glob("step_*"))
    return r + (f"checkpoints left: {left}",)


def _wait_ckpt(d, name="step_0000002.pt", limit=240):
    def wait(proc):
        t0 = time.time()
        while not (d / "out" / "checkpoints" / name).exists():
            if proc.poll() is not None or time.time() - t0 > limit:
                return
            time.sleep(0.05)
    return wait


@case("train: two runs in one output folder at the same time")
def _(d):
    jl(d / "train.jsonl", 200)
    c = cfg(d, max_steps=100000, checkpoint_every=2)
    first = subprocess.Popen(T + [c], cwd=d, env=ENV, preexec_fn=_sigint_default,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ckpt(d)(first)
    r = run(T + [c, "--resume"], d)
    first.kill()
    first.wait()
    return r + ("first run unaffected",)


@case("train: kill -9 mid-run, then --resume (stale lock + temp files)")
def _(d):
    jl(d / "train.jsonl", 200)
    c = cfg(d, max_steps=100000, checkpoint_every=2)
    first = subprocess.Popen(T + [c], cwd=d, env=ENV, preexec_fn=_sigint_default,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_ckpt(d)(first)
    first.kill()
    first.wait()
    (d / "out" / "checkpoints" / f".step_0000009.pt.tmp{first.pid}").write_bytes(b"x" * 10)
    r = run(T + [c, "--resume", "--set", "max_steps=4"], d)
    left = [p.name for p in (d / "out" / "checkpoints").iterdir() if ".tmp" in p.name]
    return r + (f"temp files left: {left}",)


@case("train: Ctrl-C during set-up (packing 60k lines)")
def _(d):
    jl(d / "train.jsonl", 60000)
    return run(T + [cfg(d)], d, sig_after=3.0)


@case("train: Ctrl-C while packing the training data (120k lines)")
def _(d):
    jl(d / "train.jsonl", 120000)

    def wait(proc):
        t0 = time.time()
        while not list((d / "out" / "cache" / "train").glob(".train-packed-T64.tmp*")) \
                if (d / "out" / "cache" / "train").is_dir() else True:
            if proc.poll() is not None or time.time() - t0 > 240:
                return
            time.sleep(0.05)
        time.sleep(1.0)
    r = run(T + [cfg(d)], d, sig_after=wait)
    cache = d / "out" / "cache" / "train"
    left = [p.name for p in cache.iterdir()] if cache.is_dir() else []
    return r + (f"cache left: {left}",)


@case("train: Ctrl-C once during training")
def _(d):
    jl(d / "train.jsonl", 200)
    return run(T + [cfg(d, max_steps=100000, checkpoint_every=1000)], d,
               sig_after=_wait_ckpt_metrics(d))


@case("train: Ctrl-C twice during training")
def _(d):
    jl(d / "train.jsonl", 200)
    return run(T + [cfg(d, max_steps=100000, checkpoint_every=1000)], d,
               sig_after=_wait_ckpt_metrics(d), sig_twice=True)


def _wait_ckpt_metrics(d):
    def wait(proc):
        t0 = time.time()
        m = d / "out" / "metrics.jsonl"
        while not (m.exists() and m.stat().st_size > 0):
            if proc.poll() is not None or time.time() - t0 > 240:
                return
            time.sleep(0.05)
    return wait


# ---------------- chat / evaluate / colab
@case("chat: --model /etc/passwd")
def _(d):
    return run(CHAT + ["--model", "/etc/passwd"], d)


@case("chat: --model a missing file")
def _(d):
    return run(CHAT + ["--model", "nope.pt"], d)


def _copy_model(d):
    shutil.copytree(MODEL.parent, d / "final_model")
    return d / "final_model" / MODEL.name


@case("chat: corrupt tokenizer.json beside the model")
def _(d):
    m = _copy_model(d)
    (m.parent / "tokenizer" / "tokenizer.json").write_bytes(b"\x00\x01")
    return run(CHAT + ["--model", str(m)], d, stdin=b"/quit\n")


@case("chat: tokenizer/ missing beside the model")
def _(d):
    m = _copy_model(d)
    shutil.rmtree(m.parent / "tokenizer")
    return run(CHAT + ["--model", str(m)], d, stdin=b"/quit\n")


@case("chat: messages that are special-token strings, /save, non-UTF-8 bytes")
def _(d):
    m = _copy_model(d)
    r = run(CHAT + ["--model", str(m)], d,
            stdin=b"<|eos|>\n<|assistant|>\ncaf\xe9 \xff\n/save\n/quit\n")
    saved = list((d / "chats").glob("*.json"))
    turns = json.loads(saved[0].read_text())["turns"] if saved else []
    return r + (f"{len(turns)} turns saved to <output folder>/chats/",)


@case("chat: /save to a folder, under a file, then /save again")
def _(d):
    m = _copy_model(d)
    (d / "afile").write_text("x")
    (d / "folder").mkdir()
    r = run(CHAT + ["--model", str(m)], d,
            stdin=b"hi\n/save folder\n/save afile/x.json\n/save later.json\n/quit\n")
    return r + (f"in folder: {len(list((d / 'folder').glob('*.json')))}, later.json: "
                f"{(d / 'later.json').exists()}",)


@case("evaluate: --val is UTF-16 (checked before any generation)")
def _(d):
    m = _copy_model(d)
    jl(d / "v.jsonl", 3, enc="utf-16")
    return run(EVAL + ["--model", str(m), "--val", "v.jsonl"], d)


@case("evaluate: --val is an empty file")
def _(d):
    m = _copy_model(d)
    (d / "v.jsonl").write_text("")
    return run(EVAL + ["--model", str(m), "--val", "v.jsonl"], d)


@case("evaluate: --json is a folder")
def _(d):
    m = _copy_model(d)
    jl(d / "v.jsonl", 3)
    (d / "rep").mkdir()
    return run(EVAL + ["--model", str(m), "--val", "v.jsonl", "--json", "rep"], d)


@case("scripts/colab_setup.py outside Colab")
def _(d):
    if "not running in Google Colab" not in (TREE / "scripts" / "colab_setup.py").read_text():
        return (None, "", "not run (this version pip-installs the checkout)", 0)
    return run([PY, str(TREE / "scripts" / "colab_setup.py")], d)


# ---------------- the surfaces added since issue 8 (issue 22): `new` in the list runs only these
# Outcome markers in a case's note, counted by the summary line at the end.
LOST, WRONG, STALL, UNSAFE, FAILED, LITTER = ("DATA LOST", "SILENTLY WRONG", "STALLED",
                                              "UNSAFE", "FAILED", "TEMP FILES LEFT")
EXPORT = CLI + ["export", "--device", "cpu"]
IMPORT = CLI + ["import-hf"]
_SERVER = {}


def server():
    """One `aethermind serve` on MODEL for every server case, started at first use."""
    if "srv" not in _SERVER:
        from bad_inputs_http import Server
        WORK.mkdir(parents=True, exist_ok=True)
        _SERVER["srv"] = Server(CLI + ["serve", "--model", str(MODEL), "--device", "cpu"],
                                WORK / "server.log", ENV, WORK)
    return _SERVER["srv"]


def http_case(send, note=""):
    """(status, body, server log, secs, note): the server's log is where a 500's trace is."""
    srv = server()
    srv.log_since()
    t0 = time.time()
    try:
        status, text = send(srv)
    except OSError as err:  # the server hung up or stalled past the timeout
        status, text = None, f"no reply: {err!r}"
    secs = time.time() - t0
    time.sleep(0.5)  # the server logs a failure after it replied: keep it with this case
    if callable(note):
        note = note(status, text)
    return status, text[:400], srv.log_since(), secs, note


def chat_body(content="What is 2 + 2?", **kw):
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **kw}


HOSTILE = {  # name -> request body (a str is sent as is: JSON with NaN or a surrogate escape)
    "temperature 1e-40 (tiny positive)": chat_body(temperature=1e-40),
    "temperature 1e-40, streamed": chat_body(temperature=1e-40, stream=True),
    "seed NaN": json.dumps(chat_body()).replace('"max_tokens"', '"seed": NaN, "max_tokens"'),
    "seed 2**70": chat_body(seed=2 ** 70),
    "seed -1": chat_body(seed=-1),
    "lone surrogate in a message": json.dumps(chat_body("caf\\ud800")).replace("\\\\ud800",
                                                                              "\\ud800"),
    "messages is a string": {"messages": "hi"},
    "content is a number": {"messages": [{"role": "user", "content": 5}]},
    "temperature is a string": chat_body(temperature="hot"),
    "max_tokens 1e30 (a float)": chat_body(max_tokens=1e30),
    "max_tokens is true": chat_body(max_tokens=True),
    "top_k 10**30": chat_body(top_k=10 ** 30),
    "top_p 1e-45": chat_body(top_p=1e-45),
    "repetition_penalty 1e-45": chat_body(repetition_penalty=1e-45),
    "stop is a number": chat_body(stop=5),
    "chat_template_kwargs is a list": chat_body(chat_template_kwargs=[1]),
    "unknown model": chat_body(model="gpt-4o"),
    "body is a JSON list": "[1, 2]",
}


def _hostile(body):
    return lambda d: http_case(lambda srv: srv.post(body))


for _name, _body in HOSTILE.items():
    case(f"server: {_name}", new=True)(_hostile(_body))


@case("server: temperature 1e-40 while another client's greedy stream runs", new=True)
def _(d):
    def send(srv):
        thread, greedy = srv.stream_in_thread(chat_body("Hello", max_tokens=60, temperature=0))
        while greedy["events"] < 2 and thread.is_alive():
            time.sleep(0.02)
        status, text = srv.post(chat_body(temperature=1e-40, max_tokens=30))
        thread.join(300)
        ok = greedy["done"] and not greedy["error"]
        return status, text + ("" if ok else f"\nother client's stream: server_error "
                               f"{greedy['error']}")
    return http_case(send, lambda s, t: "other client's stream intact"
                     if "other client" not in t else f"{FAILED}: other client's stream cut")


@case("server: 10 MB request body while another client polls /health", new=True)
def _(d):
    waits, rss = [], []

    def send(srv):
        rss.append(srv.rss_mb())
        stop = threading.Event()
        poller = srv.health_latency(stop, waits)
        time.sleep(0.3)
        try:
            return srv.post(chat_body("word " * 2_000_000), timeout=300)
        finally:
            stop.set()
            poller.join(130)
            rss.append(srv.rss_mb())

    def note(status, text):
        worst = max(waits, default=0.0)
        stalled = f"{STALL}: " if worst > 2 else ""
        return (f"{stalled}/health waited up to {worst:.1f} s; server memory {rss[0]:.0f} -> "
                f"{rss[-1]:.0f} MB")
    return http_case(send, note)


@case("server: text/plain POST from another origin (CORS simple request)", new=True)
def _(d):
    return http_case(lambda srv: srv.post(chat_body(), headers={
        "Content-Type": "text/plain", "Origin": "http://evil.example"}),
        lambda s, t: f"{UNSAFE}: any web page can drive the server" if s == 200 else "refused")


@case("server: wrong Host header (DNS rebinding)", new=True)
def _(d):
    return http_case(lambda srv: srv.post(chat_body(), headers={"Host": "evil.example:80"}),
                     lambda s, t: f"{UNSAFE}: answered for another host name" if s == 200
                     else "refused")


# ---------------- web chat
@case("web chat: 12 turns, each about a sixth of the context", new=True)
def _(d):
    from bad_inputs_http import web_chat_turns
    srv = server()
    ctx = json.loads(srv.request("GET", "/v1/models")[1])["data"][0]["max_model_len"]
    message = "word " * max(1, ctx // 6)
    t0 = time.time()
    try:
        shown = web_chat_turns(srv.url, [message] * 12, d / "profile")
    except RuntimeError as err:
        return (None, "", f"not run ({err})", 0)
    died = f"{FAILED}: the conversation died at turn {shown['turns'] + 1}; " \
        if shown["errors"] else ""
    note = (f"{died}{shown['turns']} of 12 turns answered, messages sent per request "
            f"{shown['sent']}, {len(shown['notes'])} answers said old turns were dropped")
    return (0 if not shown["errors"] else 1, "\n".join(shown["errors"][:2]), srv.log_since(),
            time.time() - t0, note)


# ---------------- export / import-hf
def _sha(path):
    import hashlib
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _temp_files(folder):
    found = [p for p in Path(folder).rglob(".*") if ".tmp" in p.name or ".old" in p.name]
    size = sum(f.stat().st_size for p in found for f in ([p] if p.is_file() else p.rglob("*"))
               if f.is_file())
    return found, size


def _flip_tensor_bytes(pt):
    """Flip 4 KB in the middle of the largest tensor record: the zip still opens."""
    import zipfile
    with zipfile.ZipFile(pt) as z:
        info = max(z.infolist(), key=lambda i: i.file_size)
    with open(pt, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
        start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(start)
        data = bytes(b ^ 0x5A for b in f.read(4096))
        f.seek(start)
        f.write(data)


@case("export: corrupted .pt (4 KB flipped inside a tensor)", new=True)
def _(d):
    m = _copy_model(d)
    _flip_tensor_bytes(m)
    r = run(EXPORT + ["--model", str(m), "--output", "exp"], d)
    return r + (f"{WRONG}: the corrupted checkpoint was exported" if r[0] == 0
                else "refused",)


@case("export: truncated .pt", new=True)
def _(d):
    m = _copy_model(d)
    m.write_bytes(m.read_bytes()[: m.stat().st_size // 2])
    return run(EXPORT + ["--model", str(m), "--output", "exp"], d)


@case("export: --output already holds a model file of the same name", new=True)
def _(d):
    m = _copy_model(d)
    run(EXPORT + ["--model", str(m), "--output", "exp"], d)
    mine = sorted((d / "exp").glob("forge1_*.pt"))
    for p in mine:
        p.write_bytes(b"the user's own model, trained for a week")
    r = run(EXPORT + ["--model", str(m), "--output", "exp"], d)
    kept = all(p.read_bytes().startswith(b"the user's own") for p in mine)
    return r + ("existing model intact" if kept else f"{LOST}: {mine[0].name} replaced "
                "without --overwrite",)


_MODEL_B = """
import random, sys
from pathlib import Path
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.artifacts.loading import load_model
from aethermind.artifacts.exported import variant_of
from aethermind.model.config import PRESETS, Forge1Config
from aethermind.model.transformer import Forge1Model
from aethermind.text.tokenizer import Forge1Tokenizer
model_a, tok_a = load_model(sys.argv[1], device="cpu")
rng = random.Random(0)
words = ["".join(rng.choice("qxzjkvwy") for _ in range(rng.randint(2, 7))) for _ in range(4000)]
texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(3000)]
tok = Forge1Tokenizer.train(texts, vocab_size=tok_a.get_vocab_size())
# Another variant than A's, so the two exports' files have different names.
shape = PRESETS["tiny"] if variant_of(model_a.config) == "custom" else dict(
    dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64, max_seq_len=64)
cfg = Forge1Config(vocab_size=tok.get_vocab_size_padded(), **shape)
print(write_final(Forge1Model(cfg).state_dict(), cfg, tok, final_dir(sys.argv[2]),
                  variant_of(cfg)))
"""

_FINGERPRINTS = """
import sys
from aethermind.artifacts.loading import load_model
from aethermind.artifacts.checkpoint import torch_load
_, tok = load_model(sys.argv[1], device="cpu")
print(torch_load(sys.argv[1]).get("tokenizer_fingerprint") == tok.fingerprint())
"""


@case("export: two models with different tokenizers into one --output", new=True)
def _(d):
    m = _copy_model(d)
    made = run([PY, "-c", _MODEL_B, str(m), str(d / "b")], d)
    if made[0] != 0:
        return (None, "", f"HARNESS ERROR making model B: {made[2][-300:]}", made[3])
    b = Path(made[1].strip().splitlines()[-1])
    run(EXPORT + ["--model", str(m), "--output", "exp"], d)
    r = run(EXPORT + ["--model", str(b), "--output", "exp"], d)
    b_name = run(EXPORT + ["--model", str(b), "--output", "probe"], d)[1]
    first = [p for p in (d / "exp").glob("forge1_*.pt") if p.name not in b_name]
    if not first:
        return r + ("the first export is gone",)
    check = run([PY, "-c", _FINGERPRINTS, str(first[0])], d)
    same = check[1].strip().endswith("True")
    return r + (f"{first[0].name} still loads with its own tokenizer" if same else
                f"{WRONG}: {first[0].name} now loads with the other model's tokenizer"
                if check[0] == 0 else f"{first[0].name} no longer loads: "
                f"{(check[2].strip().splitlines() or [''])[-1]}",)


@case("export: kill -9 while --format all writes the HF folder, then a plain export", new=True)
def _(d):
    m = _copy_model(d)
    proc = subprocess.Popen(EXPORT + ["--model", str(m), "--output", "exp", "--format", "all"],
                            cwd=d, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not any("_hf" in p.name or ".gguf" in p.name for p in _temp_files(d / "exp")[0]) \
            if (d / "exp").is_dir() else True:
        if proc.poll() is not None or time.time() - t0 > 240:
            break
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    killed, killed_size = _temp_files(d / "exp") if (d / "exp").is_dir() else ([], 0)
    r = run(EXPORT + ["--model", str(m), "--output", "exp"], d)
    left, size = _temp_files(d / "exp")
    return r + ((f"{LITTER}: " if left else "") +
                f"the killed export left {len(killed)} ({killed_size / 1e6:.1f} MB); after "
                f"the re-export {len(left)} ({size / 1e6:.1f} MB)",)


def _hf_export(d):
    m = _copy_model(d)
    run(EXPORT + ["--model", str(m), "--output", "exp", "--format", "hf"], d)
    return next((d / "exp").glob("forge1_*_hf")), m


@case("import-hf: --output holding a trained final_model/", new=True)
def _(d):
    hf, m = _hf_export(d)
    (m.parent / "notes.txt").write_text("my run's notes")
    before = _sha(m)
    r = run(IMPORT + ["--model", str(hf), "--output", str(d)], d)
    intact = (m.parent / "notes.txt").exists() and m.exists() and _sha(m) == before
    return r + ("existing final_model/ intact" if intact else
                f"{LOST}: the trained final_model/ was replaced without --overwrite",)


_ROPE = {"linear": {"type": "linear", "factor": 4.0},
         "dynamic": {"type": "dynamic", "factor": 4.0},
         "yarn": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}}


def _rope_case(kind):
    def fn(d):
        hf, _ = _hf_export(d)
        cfg_path = hf / "config.json"
        hf_cfg = json.loads(cfg_path.read_text())
        hf_cfg.pop("rope_parameters", None)
        hf_cfg["rope_scaling"] = _ROPE[kind]
        cfg_path.write_text(json.dumps(hf_cfg, indent=2))
        r = run(IMPORT + ["--model", str(hf), "--output", "imp"], d)
        if r[0] != 0:
            return r + ("refused",)
        # Dynamic NTK scaling changes nothing within the original context: read exactly when
        # the imported context is capped there; any other imported scaling is a wrong model.
        got = json.loads((d / "imp" / "final_model" / "config.json").read_text())
        got = got.get("model", got).get("max_seq_len")
        exact = kind == "dynamic" and got == hf_cfg["max_position_embeddings"]
        return r + (f"read exactly: context capped at {got}" if exact else
                    f"{WRONG}: read as plain RoPE (context {got})",)
    return fn


for _kind in _ROPE:
    case(f"import-hf: legacy rope_scaling {{'type': '{_kind}'}}", new=True)(_rope_case(_kind))


def _missing_case(name):
    def fn(d):
        hf, _ = _hf_export(d)
        (hf / name).unlink()
        return run(IMPORT + ["--model", str(hf), "--output", "imp"], d)
    return fn


for _file in ("config.json", "model.safetensors", "tokenizer.json"):
    case(f"import-hf: {_file} missing", new=True)(_missing_case(_file))


# ---------------- chat: saving, options, what reaches the terminal
@case("chat: /save onto an existing file", new=True)
def _(d):
    m = _copy_model(d)
    (d / "keep.json").write_text('{"mine": true}')
    r = run(CHAT + ["--model", str(m)], d, stdin=b"hi\n/save keep.json\n/quit\n")
    kept = (d / "keep.json").read_text() == '{"mine": true}'
    return r + ("existing file intact" if kept else f"{LOST}: keep.json overwritten",)


@case("chat: /save onto the checkpoint being chatted with", new=True)
def _(d):
    m = _copy_model(d)
    before = _sha(m)
    r = run(CHAT + ["--model", str(m)], d, stdin=f"hi\n/save {m}\n/quit\n".encode())
    return r + ("checkpoint intact" if _sha(m) == before
                else f"{LOST}: the checkpoint was overwritten by the chat JSON",)


ESC_TEXT = "\x1b[2J\x1b]52;c;aGVsbG8=\x07"  # clear the screen; write the clipboard


def _raw_escapes(r):
    return f"{UNSAFE}: raw ESC reached the terminal" if "\x1b" in r[1] + r[2] \
        else "no raw ESC in the output"


@case("chat: escape sequences in a command, echoed back", new=True)
def _(d):
    m = _copy_model(d)
    (d / "afile").write_text("x")
    r = run(CHAT + ["--model", str(m)], d,
            stdin=f"/{ESC_TEXT}\n/save afile/{ESC_TEXT}.json\n/quit\n".encode())
    return r + (_raw_escapes(r),)


_ESC_MODEL = """
import sys, torch
from aethermind.artifacts.layout import final_dir, write_final
from aethermind.artifacts.loading import load_model
model, tok = load_model(sys.argv[1], device="cpu")
[esc] = tok.encode("\\x1b")
sd = model.state_dict()  # views: in-place edits reach tied weights too
with torch.no_grad():
    for k, v in sd.items():
        if k.endswith(("attn.wo.weight", "mlp.w_down.weight")):
            v.zero_()  # the residual stream stays the token embedding
    sd["norm.weight"].zero_()
    sd["norm.weight"][0] = 1.0  # the output sees only dimension 0 ...
    sd["tok_emb.weight"][:, 0] = 1.0  # ... which is positive for every token
    sd["tok_emb.weight"][esc, 0] = 100.0
    if not model.config.tie_embeddings:
        sd["lm_head.weight"].zero_()
        sd["lm_head.weight"][esc, 0] = 100.0
print(write_final(sd, model.config, tok, final_dir(sys.argv[2]), "esc"))
"""


def _esc_model(d):
    m = _copy_model(d)
    made = run([PY, "-c", _ESC_MODEL, str(m), str(d / "esc")], d)
    if made[0] != 0:
        raise RuntimeError(f"making the ESC model: {made[2][-300:]}")
    return made[1].strip().splitlines()[-1]


@case("chat: a model whose every token is ESC", new=True)
def _(d):
    r = run(CHAT + ["--model", _esc_model(d), "--temperature", "0"], d, stdin=b"hi\n/quit\n")
    return r + (_raw_escapes(r),)


@case("evaluate: a model whose every token is ESC", new=True)
def _(d):
    esc = _esc_model(d)
    jl(d / "v.jsonl", 3)
    r = run([PY, str(TREE / "scripts" / "evaluate.py"), "--n-test", "1", "--max-new-tokens",
             "4", "--model", esc, "--val", "v.jsonl"], d)
    return r + (_raw_escapes(r),)


CHAT_OPTIONS = {"--temperature 1e-40": ["--temperature", "1e-40"],
                "--seed 2**70": ["--seed", str(2 ** 70)],
                "--seed nan": ["--seed", "nan"],
                "--top-p nan": ["--top-p", "nan"],
                "--max-new-tokens 10**30": ["--max-new-tokens", str(10 ** 30)],
                "--system with a non-UTF-8 byte": ["--system", "caf\udcff"]}


def _chat_option_case(flags):
    def fn(d):
        m = _copy_model(d)
        r = run(CHAT + ["--model", str(m)] + flags, d, stdin=b"hi\nhello\n/save\n/quit\n")
        saved = list((d / "chats").glob("*.json"))
        turns = len(json.loads(saved[0].read_text())["turns"]) if saved else 0
        began = "You:" in r[1]  # refused before the first prompt: no conversation to lose
        if r[0] != 0 and not began:
            return r + ("refused before the conversation began",)
        lost = f"{LOST}: the conversation, " if r[0] != 0 and turns < 2 else ""
        return r + (f"{lost}{turns} of 2 turns saved",)
    return fn


for _name, _flags in CHAT_OPTIONS.items():
    case(f"chat: {_name}", new=True)(_chat_option_case(_flags))


def _selected(name):
    if not ONLY:
        return True
    return ("new" in ONLY and name in NEW) or any(o in name for o in ONLY if o != "new")


def _key_lines(name, out, err):
    if name.startswith("server:"):  # the reply first (errors in an event stream included)
        lines = [ln for ln in out.splitlines() if ln.strip()]
        errs = [ln for ln in lines if '"error"' in ln]
        return (errs or lines)[:2] + [ln for ln in err.splitlines()
                                      if "Traceback" in ln or "Error" in ln][:2]
    lines = [ln for ln in (err + "\n" + out).splitlines() if ln.strip()]
    key = [ln for ln in lines if any(w in ln.lower() for w in (
        "error", "warning", "cannot", "skipp", "interrupt", "stopp", "refus", "in use", "saved",
        "not ", "no usable", "ctrl-c", "wrote", "packed", "traceback", "exception"))]
    return key[:4] or lines[-2:]


def summary(records):
    """Counts over the cases run: what issue 22's "done when" asks to be zero, and more."""
    def marked(*words):
        return sum(any(w in r["note"] for w in words) for r in records)
    return {"cases": len(records),
            "tracebacks": sum(r["traceback"] for r in records),
            "http_500": sum(r["case"].startswith("server:") and (
                r["rc"] == 500 or "server_error" in r["reply"]) for r in records),
            "data_lost": marked(LOST, "REPLACED"), "silent_wrong": marked(WRONG),
            "stalls_or_hangs": marked(STALL) + sum(r["rc"] is None and "no reply" in r["reply"]
                                                   for r in records),
            "unsafe": marked(UNSAFE), "failed": marked(FAILED), "temp_files_left": marked(LITTER)}


def main():
    records = []
    try:
        for index, (name, fn) in enumerate(CASES):
            if not _selected(name):
                continue
            d = WORK / f"c{index:02d}"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            try:
                res = fn(d)
            except Exception as e:  # noqa: BLE001
                res = (None, "", f"HARNESS ERROR {e!r}", 0)
            rc, out, err = res[0], res[1], res[2]
            note = res[4] if len(res) > 4 else ""
            record = {"case": name, "new": name in NEW, "rc": rc,
                      "traceback": "Traceback" in err + out,
                      "lines": _key_lines(name, out, err), "note": note,
                      "secs": round(res[3], 1)}
            print(json.dumps(record), flush=True)
            records.append({**record, "reply": out})
    finally:
        if "srv" in _SERVER:
            _SERVER["srv"].close()
    print(json.dumps({"summary": summary(records)}), flush=True)


main()
