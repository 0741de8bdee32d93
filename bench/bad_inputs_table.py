"""The markdown tables of docs/bad_inputs.md's issue-22 section, from `bad_inputs.py` output.

Usage: `python bench/bad_inputs.py <repo> <scratch> <model.pt> > out.jsonl` then
`python bench/bad_inputs_table.py out.jsonl`: one table per surface (server, web chat, export,
import-hf, chat) of the cases marked new, the outcome as a user meets it (HTTP status or exit
code, whether a traceback appeared, the first line seen, the case's note), then the summary.
"""
import json
import sys

GROUPS = ("server", "web chat", "export", "import-hf", "chat")


def cell(text: str) -> str:
    """One table cell: no pipes or newlines, escapes shown, long lines cut."""
    text = text.replace("|", "\\|").replace("\n", " ").encode("unicode_escape").decode("ascii")
    return text if len(text) <= 200 else text[:197] + "..."


def outcome(record: dict) -> str:
    group = record["case"].split(":", 1)[0]
    status = "no reply" if record["rc"] is None else (
        f"HTTP {record['rc']}" if group == "server" else f"exit {record['rc']}")
    if record["traceback"]:
        status = f"**traceback** ({status})"
    first = record["lines"][0] if record["lines"] else ""
    if group == "server" and record["rc"] == 200:
        first = _answered(first)
    return f"{status}: {cell(first)}" if first else status


def _answered(line: str) -> str:
    """A 200's body in a few words (the whole completion says nothing more)."""
    if line.startswith("data:"):
        return "a streamed answer"
    try:
        choice = json.loads(line)["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        # cut off (the record keeps 400 characters): a completion all the same
        return "an answer" if '"chat.completion"' in line else line
    return f"an answer (finish_reason {choice['finish_reason']})"


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    cases = [r for r in records if r.get("new")]
    for group in GROUPS:
        rows = [r for r in cases if r["case"].split(":", 1)[0] == group]
        if not rows:
            continue
        print(f"#### {group}\n\n| case | outcome | note |\n|---|---|---|")
        for r in rows:
            print(f"| {cell(r['case'].split(':', 1)[1].strip())} | {outcome(r)} | "
                  f"{cell(r['note'])} |")
        print()
    summary = next((r["summary"] for r in records if "summary" in r), None)
    if summary:
        print("Summary over every case run (old and new): "
              + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
