"""An Ollama `Modelfile` for the exported GGUF: the chat template in Go's text/template syntax.

Ollama ignores the GGUF's Jinja template for a model it does not know, so the Modelfile brings
its own TEMPLATE, built here from `chat_format`'s tokens. With Ollama's data (`.System`,
`.Messages` with `.Role`/`.Content`/`.Thinking`, `.Think`, `.IsThinkSet`) it renders exactly
`chat_format.render_prompt` (= the Jinja `chat_template`) for a conversation ending with a user
message (`make test-interop` renders it with Go's text/template and compares):
- `.System` (every system message, joined by Ollama) replaces the default system prompt; empty,
  the default is used. Roles other than user and assistant (tool) are skipped.
- An earlier assistant message's `.Thinking` becomes its think block, as in our format; without
  one the turn renders `<|no_think|>`.
- The think switch: `ollama run --think` / `"think": true` (Ollama's default for a model whose
  template shows thinking) appends `<|think|>\\n`; `--think=false` appends `<|no_think|>\\n`
  and `<|assistant|>`, the token our format always puts next, so that it does not open
  Ollama's answer text; when no switch reaches the template (`.IsThinkSet` false) the model
  chooses. Ollama finds the thinking tags from the think block (`thinking.InferTags`: first and
  last text around `.Thinking`): `<|think|>` and `<|/think|>\\n<|assistant|>`, so the answer
  it returns starts after `<|assistant|>` (its thinking keeps the newline before `<|/think|>`).
- A last assistant message is left open (Ollama continues it), as Ollama's own templates do.
- Message text is sanitised like `chat_format.sanitize`: Ollama tokenizes the whole rendered
  prompt with special-token parsing on (ollama/ollama#15931), so a user typing `<|user|>`
  would otherwise inject the real token. Go templates have no replace function; the `clean`
  template walks the text instead, one nested template call per step (64 bytes where `html`
  changes nothing, 8 bytes without a `<`, else one byte). Go stops at a depth of 100,000, so
  a message of some 100 kB of `<`-dense text is refused, far beyond Forge-1's context.
  `/api/generate` with `raw: true` bypasses templates and so this protection.
PARAMETERs: a stop for each `STOP_TOKENS` entry, num_ctx = the model's context, and sampling
from `SamplingParams` (Ollama's own defaults differ: top_k 40, repeat_penalty 1.1).
Usage: `write_modelfile(Path("out/forge1_nano.Modelfile"), Path("out/forge1_nano-f16.gguf"), cfg)`
(one Modelfile per variant, so a nano and a mini exported into one folder keep their own).
"""

from __future__ import annotations

from pathlib import Path

from aethermind.inference.sampling import SamplingParams
from aethermind.model.config import Forge1Config
from aethermind.text import chat_format as cf

# Byte counts `clean` copies at once when they hold no '<' (the big step asks `html`, which also
# escapes quotes, '&' and '>'; the small one compares each byte). Each step is one nested
# template call and Go stops at a depth of 100,000: big steps keep long messages renderable.
_STEPS = (64, 8)


def go_string(text: str) -> str:
    """A Go string literal, ASCII only: Ollama's Modelfile parser drops non-printable runes
    (the word joiner U+2060 among them), so every non-ASCII rune is a \\U escape."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _clean_template() -> str:
    """`{{ template "clean" TEXT }}` prints TEXT with each special-token string broken as
    `chat_format.sanitize` breaks it (`<` + word joiner + the rest). Laid out on lines with
    trim markers (`{{-`, `-}}`), which remove only the layout, never what an action prints."""
    starts = "\n".join(f"        (and (ge (len .) {len(t)}) (eq (slice . 0 {len(t)}) "
                       f"{go_string(t)}))" for t in cf.SPECIAL_TOKENS)
    big, small = _STEPS
    no_lt = " ".join(f'(eq (slice . {i} {i + 1}) "<")' for i in range(small))
    steps = (f"  {{{{- if and (ge (len .) {big}) (eq (html (slice . 0 {big})) (slice . 0 {big})) "
             f"-}}}}\n    {{{{- slice . 0 {big} }}}}{{{{ template \"clean\" (slice . {big}) -}}}}\n"
             f"  {{{{- else if and (ge (len .) {small}) (not (or {no_lt})) -}}}}\n"
             f"    {{{{- slice . 0 {small} }}}}{{{{ template \"clean\" (slice . {small}) -}}}}\n")
    return f"""{{{{- define "clean" -}}}}
{{{{- /* Forge-1's sanitize(): Go templates have no replace, so walk the text. */ -}}}}
{{{{- if . -}}}}
{steps}  {{{{- else -}}}}
    {{{{- if and (eq (slice . 0 1) "<") (or
{starts}) -}}}}
      {{{{- {go_string("<" + cf.WORD_JOINER)} -}}}}
    {{{{- else -}}}}
      {{{{- slice . 0 1 -}}}}
    {{{{- end -}}}}
    {{{{- template "clean" (slice . 1) -}}}}
  {{{{- end -}}}}
{{{{- end -}}}}
{{{{- end -}}}}
"""


def go_template() -> str:
    """The Modelfile TEMPLATE (see the module docstring for what it renders)."""
    nl = "\n"
    think_block = (cf.THINK + nl + '{{template "clean" .Thinking}}' + nl + cf.END_THINK + nl
                   + cf.ASSISTANT)  # one text node after .Thinking: Ollama's closing tag
    answer_head = cf.NO_THINK + nl + cf.ASSISTANT
    return (
        _clean_template()
        + cf.BOS + nl + cf.SYSTEM
        + '{{if .System}}{{template "clean" .System}}{{else}}{{'
        + go_string(cf.DEFAULT_SYSTEM_PROMPT) + "}}{{end}}" + cf.END_SYSTEM + nl
        + '{{$last := ""}}{{range $i, $m := .Messages}}'
        + '{{if eq .Role "user"}}' + cf.USER + '{{template "clean" .Content}}' + cf.END_USER + nl
        + '{{$last = "user"}}'
        + '{{else if eq .Role "assistant"}}'
        + "{{if .Thinking}}" + think_block + "{{else}}" + answer_head + "{{end}}"
        + '{{template "clean" .Content}}'
        + "{{if ne (len (slice $.Messages $i)) 1}}" + cf.END_ASSISTANT + nl + "{{end}}"
        + '{{$last = "assistant"}}{{end}}{{end}}'
        + '{{if eq $last "user"}}{{if .IsThinkSet}}{{if .Think}}' + cf.THINK + nl
        + "{{else}}" + answer_head + "{{end}}{{end}}{{end}}"
    )


def _number(value: float) -> str:
    return f"{value:g}"


def modelfile(gguf: str, cfg: Forge1Config, name: str = "Modelfile") -> str:
    """The Modelfile text; `gguf` is the FROM path as written (relative to the Modelfile),
    `name` the Modelfile's own file name (for the usage line)."""
    template = go_template()
    # The parser ends a """ block at the first """ and drops non-printable runes.
    assert '"""' not in template and template.isascii(), "TEMPLATE must survive the parser"
    d = SamplingParams()
    params = [("num_ctx", str(cfg.max_seq_len)), ("temperature", _number(d.temperature)),
              ("top_p", _number(1.0 if d.top_p is None else d.top_p)),
              ("top_k", str(d.top_k or 0)),  # 0 = off in Ollama as in our sampler
              ("repeat_penalty", _number(d.repetition_penalty)),
              ("num_predict", str(d.max_new_tokens))]  # Ollama's own default: no limit
    lines = [
        "# Forge-1 for Ollama, written by `aethermind export --format ollama`:",
        f"#   ollama create forge1 -f {name} && ollama run forge1",
        "# `ollama run forge1 --think=false` answers directly; --hidethinking hides thinking.",
        f"FROM {gguf}",
        f'TEMPLATE """{template}"""',
        *(f'PARAMETER stop "{token}"' for token in cf.STOP_TOKENS),
        *(f"PARAMETER {name} {value}" for name, value in params),
    ]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, gguf: Path, cfg: Forge1Config, name: str = "Modelfile"
                    ) -> Path:
    """Write the Modelfile to `path` (the caller stages it); FROM names `gguf` beside it."""
    if gguf.parent.resolve() != path.parent.resolve():
        raise ValueError(f"{gguf} must be in the Modelfile's folder {path.parent}")
    path.write_text(modelfile(f"./{gguf.name}", cfg, name), encoding="utf-8")
    return path
