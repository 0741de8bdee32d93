"""`aethermind rl`: improve a trained model with GRPO on answers that can be checked.

Reads an RL YAML (`configs/rl_cpu.yaml`; keys in `rl.config.RLConfig`), runs `rl.loop.rl`,
and maps errors to one line and an exit code: 2 for a bad config or flag, 1 for a run that
cannot go on, 128 + signal after a signal (a checkpoint is written; `--resume` continues).
Usage: `aethermind rl --config configs/rl_cpu.yaml --set model=outputs/demo/final_model`.
"""

from __future__ import annotations

import argparse
import sys

from aethermind.rl.config import load_rl_config
from aethermind.rl.loop import rl
from aethermind.runtime import dist
from aethermind.training.config import ConfigError, add_run_args
from aethermind.training.errors import TrainingError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aethermind rl", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="RL YAML, e.g. configs/rl_cpu.yaml")
    parser.add_argument("--model", help="starting model: final_model/ folder, .pt or Hugging "
                                        "Face folder (overrides the config's model:)")
    parser.add_argument("--output", help="output folder (overrides the config's output_dir:)")
    add_run_args(parser, "output_dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    dist.setup_logging()
    overrides = list(args.set)
    overrides += [f"model={args.model}"] if args.model else []
    overrides += [f"output_dir={args.output}"] if args.output else []
    with dist.plain_warnings():
        try:
            cfg = load_rl_config(args.config, overrides)
            result = rl(cfg, resume=args.resume, overwrite=args.overwrite)
        except (ConfigError, TrainingError, OSError) as err:
            print(f"aethermind rl: {err}", file=sys.stderr)
            return 2 if isinstance(err, ConfigError) else 1
        except KeyboardInterrupt:
            print("aethermind rl: stopped at once; checkpoints written so far are intact "
                  "(continue with --resume)", file=sys.stderr)
            return 130
        finally:
            dist.teardown()
    if result["status"] == "interrupted" and result["signal"] is not None:
        dist.log0("interrupted at step %d: checkpoint saved; continue with --resume",
                  result["step"])
        return 128 + int(result["signal"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
