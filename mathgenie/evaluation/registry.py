"""The benchmark registry (names, Hub ids, sizes), importable without `datasets` so the CLI stays fast to start.
Loading is `mathgenie.evaluation.benchmarks.load_benchmark`."""

from __future__ import annotations

from dataclasses import dataclass

MATHCODER_COMMIT = "d6c91fbd8c02ad9f9669423f4ff331dc1605d126"
_MATHCODER_DATA = f"https://raw.githubusercontent.com/mathllm/MathCoder/{MATHCODER_COMMIT}/data"

MATH_FAMILY = ("math", "math500")  # benchmarks with MATH's level and subject
MATH_SUBJECTS = {  # Hub config of EleutherAI/hendrycks_math -> subject name in MATH's "type" field
    "algebra": "Algebra",
    "counting_and_probability": "Counting & Probability",
    "geometry": "Geometry",
    "intermediate_algebra": "Intermediate Algebra",
    "number_theory": "Number Theory",
    "prealgebra": "Prealgebra",
    "precalculus": "Precalculus",
}


@dataclass(frozen=True)
class Benchmark:
    name: str
    title: str  # as in the paper's table and the model-index
    source: str  # Hub dataset id, or a URL of a JSON-lines file
    split: str = "test"
    configs: tuple[str | None, ...] = (None,)
    rows: int | None = None  # expected full size, to warn about a wrong mirror
    description: str = ""


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        Benchmark("gsm8k", "GSM8K", "openai/gsm8k", configs=("main",), rows=1319,
                  description="Grade-school word problems, test split."),
        Benchmark("math", "MATH", "EleutherAI/hendrycks_math", configs=tuple(MATH_SUBJECTS), rows=5000,
                  description="Competition mathematics (Hendrycks et al.), all 5,000 test problems."),
        Benchmark("math500", "MATH-500", "HuggingFaceH4/MATH-500", rows=500,
                  description="The 500-problem MATH test subset of PRM800K."),
        Benchmark("svamp", "SVAMP", "ChilleD/SVAMP", split="train+test", rows=1000,
                  description="All 1,000 SVAMP problems (MathCoder evaluates on all of them)."),
        Benchmark("simuleq", "SimulEq", f"{_MATHCODER_DATA}/simuleq_test_post.jsonl", split="train", rows=514,
                  description="ALG514 simultaneous equations, MathCoder's test file."),
        Benchmark("mathematics", "Mathematics", f"{_MATHCODER_DATA}/mathematics_test_post.jsonl", split="train",
                  rows=1000, description="1,000 DeepMind Mathematics questions, MathCoder's test file."),
    ]
}


def parse_benchmarks(text: str | list[str] | None) -> list[str]:
    """``"gsm8k,math500"`` / ``["gsm8k"]`` / ``"all"`` / None -> validated benchmark names."""
    if text is None or text == "all" or text == ["all"]:
        return list(BENCHMARKS)
    names = [n.strip() for part in ([text] if isinstance(text, str) else text) for n in part.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise KeyError(f"unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)} or 'all'")
    return names
