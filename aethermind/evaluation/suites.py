"""The benchmark suites of `aethermind eval`: which lm-evaluation-harness tasks, scored how.

Each `Benchmark` names an lm-eval task, the metric the bench card reports, the score a random
guesser gets (the CORE-style centring needs it) and the Hugging Face datasets the task reads
(so a run can say which are missing before it loads a model). `tiny` is shipped with the
package (`aethermind/assets/eval/tiny/`, built by `tiny_tasks`); `standard` and `full` are
lm-eval's own task files, all 0-shot. The dataset names mirror lm-eval 0.4.13's task YAML
(a test reads them back from the installed lm-eval). This module knows nothing about models.
Usage: `for b in SUITES["standard"].benchmarks: print(b.task, b.metric, b.baseline)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TINY_DIR = Path(__file__).parents[1] / "assets" / "eval" / "tiny"
# The 57 MMLU subjects are 57 configs of one dataset: checked (and named) as one.
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge",
    "college_biology", "college_chemistry", "college_computer_science", "college_mathematics",
    "college_medicine", "college_physics", "computer_security", "conceptual_physics",
    "econometrics", "electrical_engineering", "elementary_mathematics", "formal_logic",
    "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics",
    "high_school_mathematics", "high_school_microeconomics", "high_school_physics",
    "high_school_psychology", "high_school_statistics", "high_school_us_history",
    "high_school_world_history", "human_aging", "human_sexuality", "international_law",
    "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition",
    "philosophy", "prehistory", "professional_accounting", "professional_law",
    "professional_medicine", "professional_psychology", "public_relations", "security_studies",
    "sociology", "us_foreign_policy", "virology", "world_religions")


@dataclass(frozen=True)
class Benchmark:
    task: str  # the lm-eval task (or group) name
    label: str  # how the bench card names it
    metric: str  # lm-eval's "metric,filter" key the card reports
    baseline: float  # expected score of random guessing (1 / choices; 0 for exact match)
    generative: bool  # generate_until (chat template, thinking per --think) vs loglikelihood
    datasets: tuple[tuple[str, str | None], ...] = ()  # (HF path, config); () = shipped

    @property
    def metric_name(self) -> str:
        return self.metric.split(",")[0]


@dataclass(frozen=True)
class Suite:
    name: str
    benchmarks: tuple[Benchmark, ...]
    max_gen_toks: int  # room for a think block and the answer line
    include_path: Path | None = None  # folder of task YAML lm-eval must also read
    chat_mc: bool = False  # multiple choice through the chat template (no thinking)


# The multiple-choice metrics follow common reporting: acc_norm (length-normalised) where
# lm-eval computes it and the choices differ in length (HellaSwag, ARC, PIQA), plain acc for
# WinoGrande (partial scoring, one shared continuation) and MMLU (single letters).
_STANDARD = (
    Benchmark("hellaswag", "HellaSwag", "acc_norm,none", 0.25, False,
              (("Rowan/hellaswag", None),)),
    Benchmark("arc_easy", "ARC-Easy", "acc_norm,none", 0.25, False,
              (("allenai/ai2_arc", "ARC-Easy"),)),
    Benchmark("arc_challenge", "ARC-Challenge", "acc_norm,none", 0.25, False,
              (("allenai/ai2_arc", "ARC-Challenge"),)),
    Benchmark("piqa", "PIQA", "acc_norm,none", 0.5, False, (("baber/piqa", None),)),
    Benchmark("winogrande", "WinoGrande", "acc,none", 0.5, False,
              (("allenai/winogrande", "winogrande_xl"),)),
    Benchmark("gsm8k", "GSM8K", "exact_match,flexible-extract", 0.0, True,
              (("openai/gsm8k", "main"),)),
)
_MMLU = Benchmark("mmlu", "MMLU", "acc,none", 0.25, False,
                  tuple(("cais/mmlu", s) for s in MMLU_SUBJECTS))

SUITES = {
    "tiny": Suite("tiny", (
        Benchmark("aethermind_tiny_mc", "Forge-1 held-out (multiple choice)", "acc,none", 0.25,
                  False),
        Benchmark("aethermind_tiny_gen", "Forge-1 held-out (exact match)", "exact_match,none",
                  0.0, True),
    ), max_gen_toks=256, include_path=TINY_DIR, chat_mc=True),
    "standard": Suite("standard", _STANDARD, max_gen_toks=512),
    "full": Suite("full", (*_STANDARD, _MMLU), max_gen_toks=512),
}
