"""Score a model on the identity pairs (`data.identity`): greedy exact match of each answer.

The issue-20 identity demo's measure: after fine-tuning on the 20 pairs, the answers must come
back word for word (after stripping whitespace; any thinking before the answer is ignored).
Usage: `python -m aethermind.evaluation.identity --model outputs/identity_full/final_model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from aethermind.artifacts.loading import LoadError, add_model_args, load_model
from aethermind.data.identity import load_pairs
from aethermind.inference.engine import Engine
from aethermind.inference.sampling import SamplingParams
from aethermind.inference.thinking import parse_completion
from aethermind.text import chat_format as cf


def identity_accuracy(engine: Engine, tok: Any, max_new_tokens: int = 64) -> dict[str, Any]:
    """{"accuracy", "correct", "n", "samples"} of greedy answers to the identity questions."""
    pairs = load_pairs()
    prompts = [cf.encode_prompt(cf.Conversation(), q, tok) for q, _ in pairs]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
    gens = engine.generate_batch(prompts, params, cf.stop_ids(tok))
    samples = []
    for (question, expected), gen in zip(pairs, gens, strict=True):
        got = parse_completion(gen.tokens, tok)[1].strip()
        samples.append({"question": question, "expected": expected, "answer": got,
                        "correct": got == expected})
    correct = sum(s["correct"] for s in samples)
    return {"accuracy": correct / len(samples), "correct": correct, "n": len(samples),
            "samples": samples}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m aethermind.evaluation.identity",
                                description=__doc__.splitlines()[0])
    add_model_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        model, tok = load_model(args.model, args.variant, args.tokenizer, args.device)
    except LoadError as err:
        print(f"identity: {err}", file=sys.stderr)
        return 1
    result = identity_accuracy(Engine(model, max_batch_size=20), tok)
    for s in result["samples"]:
        print(("ok   " if s["correct"] else "MISS ") + json.dumps(
            {"q": s["question"], "got": s["answer"]}, ensure_ascii=False))
    print(f"identity exact match: {result['correct']}/{result['n']} "
          f"({result['accuracy']:.0%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
