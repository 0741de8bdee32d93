"""Bad inputs and injected faults through the real command line: one JSON line per case.

Each case builds its own scratch folder, runs the command a user would (preprocess, pack,
tokenizer, train, chat, evaluate, colab_setup) and records the exit status, whether a Python
traceback appeared, the first lines the user sees, and whether data survived. The table in
docs/bad_inputs.md was made from its output on this branch and on the commit before issue 8.
Usage: `python bench/bad_inputs.py <repo root> <scratch dir> <final_model .pt> [NAME,NAME]`
(the model: any `final_model/forge1_*_final.pt`, e.g. from the CPU quick test; the optional
list runs only the cases whose names contain one of the words). It never touches <repo root>.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
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


def case(name):
    def deco(f):
        CASES.append((name, f))
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


for name, fn in CASES:
    if ONLY and not any(o in name for o in ONLY):
        continue
    d = WORK / f"c{CASES.index((name, fn)):02d}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    try:
        res = fn(d)
    except Exception as e:  # noqa: BLE001
        res = (None, "", f"HARNESS ERROR {e!r}", 0)
    rc, out, err = res[0], res[1], res[2]
    note = res[4] if len(res) > 4 else ""
    lines = [ln for ln in (err + "\n" + out).splitlines() if ln.strip()]
    key = [ln for ln in lines if any(w in ln.lower() for w in (
        "error", "warning", "cannot", "skipp", "interrupt", "stopp", "refus", "in use", "saved",
        "not ", "no usable", "ctrl-c", "wrote", "packed", "traceback", "exception"))]
    print(json.dumps({"case": name, "rc": rc, "traceback": "Traceback" in err + out,
                      "lines": key[:4] or lines[-2:], "note": note,
                      "secs": round(res[3], 1)}), flush=True)
