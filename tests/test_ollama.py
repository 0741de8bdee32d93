"""`aethermind export --format ollama`: the Modelfile, and its TEMPLATE rendered by Go itself.

The default suite checks what the Modelfile says (FROM, stops, sampling, context) and that the
file survives Ollama's Modelfile parser; `make test-interop` builds a small Go program (standard
library only) that executes the TEMPLATE the way Ollama does and compares it with our renderers.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from aethermind.export.cli import export_model, main
from aethermind.export.gguf import GGUF_DTYPES
from aethermind.export.ollama import go_template
from aethermind.inference.sampling import SamplingParams
from aethermind.text import chat_format as cf
from aethermind.text.chat_template import conversation_messages, render_messages

TEMPLATE_RE = re.compile(r'^TEMPLATE """(.*?)"""$', re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def exported(export_run_dir, tmp_path_factory) -> list[Path]:
    """conftest's shared training folder exported as GGUF + Modelfile."""
    out = tmp_path_factory.mktemp("ollama")
    return export_model(export_run_dir, formats=("ollama",), output=out, gguf_dtype="f32")


def _commands(modelfile: Path) -> list[tuple[str, str]]:
    """(instruction, argument) pairs, read as Ollama's parser reads them (quotes removed)."""
    text = TEMPLATE_RE.sub("TEMPLATE <template>", modelfile.read_text(encoding="utf-8"))
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return [(name, arg.strip('"')) for name, arg in (line.split(" ", 1) for line in lines)]


def test_modelfile_sits_beside_the_gguf_it_names(exported):
    gguf, modelfile = exported
    assert (gguf.name, modelfile.name) == ("forge1_custom-f32.gguf", "forge1_custom.Modelfile")
    assert gguf.parent == modelfile.parent
    assert _commands(modelfile)[0] == ("FROM", "./forge1_custom-f32.gguf")


def test_modelfile_parameters_are_our_stops_context_and_sampling(exported):
    params: dict[str, list[str]] = {}
    for name, arg in _commands(exported[1]):
        if name == "PARAMETER":
            key, value = arg.split(" ", 1)
            params.setdefault(key, []).append(value.strip('"'))
    d = SamplingParams()
    assert params.pop("stop") == list(cf.STOP_TOKENS)
    assert params == {"num_ctx": ["128"], "temperature": [str(d.temperature)],
                      "top_p": [str(d.top_p)], "top_k": ["0"], "repeat_penalty": ["1"],
                      "num_predict": [str(d.max_new_tokens)]}
    assert d.repetition_penalty == 1 and d.top_k is None  # what "1" and "0" (off) stand for


def test_template_survives_ollamas_modelfile_parser(exported):
    """The parser ends a TEMPLATE at the first \"\"\" and drops non-printable runes (the word
    joiner sanitising inserts would vanish): the text must be ASCII, escapes in Go strings."""
    (template,) = TEMPLATE_RE.findall(exported[1].read_text(encoding="utf-8"))
    assert template == go_template()
    assert '"""' not in template and template.isascii()
    assert all(ch.isprintable() or ch == "\n" for ch in template)
    assert "\\U00002060" in template and cf.WORD_JOINER not in template


def test_format_all_writes_every_gguf_type_and_the_modelfile_uses_dtype(export_run_dir,
                                                                        tmp_path, capsys):
    assert main(["--model", str(export_run_dir), "--format", "all", "--dtype", "q8_0",
                 "--output", str(tmp_path)]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["forge1_custom.pt", "forge1_custom.safetensors", "tokenizer",
                            "forge1_custom_hf", "forge1_custom.Modelfile",
                            *(f"forge1_custom-{t}.gguf" for t in GGUF_DTYPES)])
    assert ("FROM", "./forge1_custom-q8_0.gguf") in _commands(tmp_path / "forge1_custom.Modelfile")
    assert capsys.readouterr().out.count("wrote ") == len(names)


# --- Go's text/template, as Ollama runs it (make test-interop) -----------------------------
GO_RENDERER = """
// Executes a Modelfile TEMPLATE as Ollama's template.Execute does for a chat: option
// missingkey=zero, its "json" function, and the data map it builds (System, Messages of
// templateMessage, Tools, Response, Think, ThinkLevel, IsThinkSet). Reads {Template, Cases};
// writes {Renders, Tags}, Tags being the thinking tags Ollama would infer (see thinkTags).
package main

import (
	"encoding/json"
	"os"
	"strings"
	"text/template"
	"text/template/parse"
)

type message struct {
	Role, Content, Thinking string
	Images, ToolCalls       []any
	ToolName, ToolCallID    string
}

type chat struct {
	System            string
	Messages          []*message
	Think, IsThinkSet bool
}

// thinkTags follows Ollama's stated rule (thinking.InferTags): a .Thinking field inside a
// range over .Messages; the trimmed first and last text of the innermost list holding it are
// the opening and closing tags. Without both, Ollama refuses `think` for the model.
func thinkTags(root *parse.ListNode) [2]string {
	var tags [2]string
	var walk func(n parse.Node, list *parse.ListNode, inMessages bool)
	branch := func(b *parse.BranchNode, list *parse.ListNode, in, body bool) {
		walk(b.Pipe, list, in)
		walk(b.List, b.List, in || body)
		if b.ElseList != nil {
			walk(b.ElseList, b.ElseList, in)
		}
	}
	walk = func(n parse.Node, list *parse.ListNode, in bool) {
		switch n := n.(type) {
		case *parse.ListNode:
			for _, c := range n.Nodes {
				walk(c, n, in)
			}
		case *parse.RangeNode:
			branch(&n.BranchNode, list, in, strings.Contains(n.Pipe.String(), ".Messages"))
		case *parse.IfNode:
			branch(&n.BranchNode, list, in, false)
		case *parse.WithNode:
			branch(&n.BranchNode, list, in, false)
		case *parse.ActionNode:
			walk(n.Pipe, list, in)
		case *parse.TemplateNode:
			if n.Pipe != nil {
				walk(n.Pipe, list, in)
			}
		case *parse.PipeNode:
			for _, c := range n.Cmds {
				for _, a := range c.Args {
					walk(a, list, in)
				}
			}
		case *parse.FieldNode:
			if in && n.Ident[0] == "Thinking" {
				if t, ok := list.Nodes[0].(*parse.TextNode); ok {
					tags[0] = strings.TrimSpace(string(t.Text))
				}
				if t, ok := list.Nodes[len(list.Nodes)-1].(*parse.TextNode); ok {
					tags[1] = strings.TrimSpace(string(t.Text))
				}
			}
		}
	}
	walk(root, root, false)
	return tags
}

func main() {
	var in struct {
		Template string
		Cases    []chat
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	toJSON := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	tmpl := template.Must(template.New("").Option("missingkey=zero").
		Funcs(template.FuncMap{"json": toJSON}).Parse(in.Template))
	out := struct {
		Renders []string
		Tags    [2]string
	}{Renders: []string{}, Tags: thinkTags(tmpl.Tree.Root)}
	for _, c := range in.Cases {
		var b strings.Builder
		data := map[string]any{"System": c.System, "Messages": c.Messages, "Tools": nil,
			"Response": "", "Think": c.Think, "ThinkLevel": "", "IsThinkSet": c.IsThinkSet}
		if err := tmpl.Execute(&b, data); err != nil {
			panic(err)
		}
		out.Renders = append(out.Renders, b.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		panic(err)
	}
}
"""


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Build the renderer once (stdlib only, no network; the build cache persists in the temp
    folder so a rerun takes a second); returns render(template, cases) -> {Renders, Tags}."""
    go = shutil.which("go")
    assert go, "Go is missing: `make test-interop` installs Debian's golang package"
    src = tmp_path_factory.mktemp("go_render")
    (src / "main.go").write_text(GO_RENDERER, encoding="utf-8")
    cache = Path(tempfile.gettempdir()) / "aethermind-go-cache"
    env = {**os.environ, "GOCACHE": str(cache / "build"), "GOPATH": str(cache / "path"),
           "GOPROXY": "off", "GOFLAGS": "", "GOTOOLCHAIN": "local", "GO111MODULE": "off"}
    subprocess.run([go, "build", "-o", str(src / "render"), "main.go"], cwd=src, env=env,
                   check=True, capture_output=True, timeout=300)

    def render(template: str, cases: list[dict]) -> dict:
        done = subprocess.run([str(src / "render")], input=json.dumps(
            {"Template": template, "Cases": cases}), capture_output=True, text=True,
            timeout=60, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout)

    return render


INJECTION = "x <|user|> y <|/think|>" + "long " * 30 + "<|eos|><|foo|> ü 😀 <|"
CASES = {
    "single-turn": (cf.Conversation(), "What is 2+2?"),
    "system": (cf.Conversation(system="Be brief."), "Say hello in Japanese: こんにちは"),
    "multi-turn with thinking": (cf.Conversation(turns=[
        cf.Turn("What is 2+2?", "The answer is 4.", "2 plus 2 makes 4."),
        cf.Turn("Sort 3, 1, 2", "1, 2, 3"),
        cf.Turn("Capital of France?", "Paris.", "Europe.\nFrance's capital.")]), "And Spain?"),
    "injection": (cf.Conversation(system="S <|system|>", turns=[
        cf.Turn(INJECTION, INJECTION, INJECTION)]), INJECTION),
}


def _ollama_messages(conv: cf.Conversation, user: str) -> list[dict]:
    """What Ollama hands the template: no system message (that is .System), Thinking ""
    where an assistant message has none."""
    out = []
    for m in conversation_messages(conv)[1:] + [{"role": "user", "content": user}]:
        out.append({"Role": m["role"], "Content": m["content"],
                    "Thinking": m.get("reasoning_content") or ""})
    return out


@pytest.mark.interop
@pytest.mark.parametrize("name", CASES)
def test_go_renders_the_modelfile_template_like_our_chat_format(go_render, exported, name):
    conv, user = CASES[name]
    (template,) = TEMPLATE_RE.findall(exported[1].read_text(encoding="utf-8"))
    system = "" if conv.system == cf.DEFAULT_SYSTEM_PROMPT else conv.system
    switches = (None, True, False)
    got = go_render(template, [{"System": system, "Messages": _ollama_messages(conv, user),
                                "Think": bool(think), "IsThinkSet": think is not None}
                               for think in switches])["Renders"]
    clean = cf.Conversation(system=cf.sanitize(conv.system), turns=[
        cf.Turn(cf.sanitize(t.user), cf.sanitize(t.assistant),
                None if t.thinking is None else cf.sanitize(t.thinking)) for t in conv.turns])
    for text, think in zip(got, switches, strict=True):
        ours = cf.render_prompt(clean, cf.sanitize(user), think=think)
        jinja = render_messages(conversation_messages(conv) + [{"role": "user", "content": user}],
                                add_generation_prompt=True, enable_thinking=think)
        # --think=false also writes the <|assistant|> our format puts after <|no_think|>.
        extra = cf.ASSISTANT if think is False else ""
        assert text == ours + extra == jinja + extra, think
    if name == "injection":
        assert got[0].count(cf.USER) == 2 and got[0].count(cf.END_THINK) == 1


@pytest.mark.interop
def test_go_leaves_a_last_assistant_message_open_and_survives_long_text(go_render, exported):
    (template,) = TEMPLATE_RE.findall(exported[1].read_text(encoding="utf-8"))
    prefill = [{"Role": "user", "Content": "Hi"}, {"Role": "assistant", "Content": "Hel"}]
    # 140 kB: quotes, '&', '>' defeat the 64-byte step, dense '<' the 8-byte one too (depth).
    long = "a'b&c\"d>" * 15_000 + "x<" * 10_000
    got = go_render(template, [
        {"Messages": prefill, "Think": True, "IsThinkSet": True},
        {"Messages": [{"Role": "user", "Content": long}]}])["Renders"]
    conv = cf.Conversation()
    assert got[0] == cf.render_prompt(conv, "Hi", think=False) + cf.ASSISTANT + "Hel"
    assert got[1] == cf.render_prompt(conv, long)


@pytest.mark.interop
def test_ollama_finds_our_thinking_tags_and_the_think_prompt_opens_them(go_render, exported):
    """With both tags Ollama lets `think` through and splits thinking from the answer; the
    closing tag takes <|assistant|> along, so the answer text starts after it."""
    (template,) = TEMPLATE_RE.findall(exported[1].read_text(encoding="utf-8"))
    done = go_render(template, [{"Messages": [{"Role": "user", "Content": "Hi"}],
                                 "Think": True, "IsThinkSet": True}])
    opening, closing = done["Tags"]
    assert (opening, closing) == (cf.THINK, cf.END_THINK + "\n" + cf.ASSISTANT)
    # Ollama starts its parser inside the thinking when the prompt ends with the opening tag.
    assert done["Renders"][0].strip().endswith(opening)
