"""`EvalConfig`: the settings of `mathgenie eval` (one dataclass, help text in each field's metadata). Importable
without torch or `datasets`, so the CLI parser builds its flags from it cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from mathgenie.evaluation.registry import BENCHMARKS, parse_benchmarks


class EvalConfigError(ValueError):
    """A bad evaluation setting; names the field, the value and the fix."""


@dataclass
class EvalConfig:
    # -- model --------------------------------------------------------------------------------------------------------
    model: str = field(default="smollm2", metadata={"help": "Hub repo id, local checkpoint dir, .gguf file, or "
                                                    "'smollm2' (the bundled SmolLM2-135M-Instruct)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) to evaluate."})
    backend: str = field(default="auto", metadata={"help": "Engine backend.",
                                                   "choices": ["auto", "vllm", "transformers", "openai"]})
    max_model_len: int = field(default=2048, metadata={"help": "Context length (MathCoder served 2048 tokens)."})
    engine_kwargs: dict = field(default_factory=dict, metadata={"help": "Extra engine arguments, e.g. "
                                "gpu_memory_utilization, tensor_parallel_size, base_url."})
    # -- data ---------------------------------------------------------------------------------------------------------
    benchmarks: list[str] = field(default_factory=lambda: list(BENCHMARKS), metadata={
        "help": f"Benchmarks to run: {', '.join(BENCHMARKS)} (or 'all')."})
    data_dir: str | None = field(default=None, metadata={"help": "Read <data_dir>/<name>/test.jsonl instead of the "
                                                         "Hub (see mathgenie.evaluation.benchmarks)."})
    limit: int | None = field(default=None, metadata={"help": "Evaluate the first N questions of each benchmark."})
    # -- decoding (MathCoder harness defaults) ------------------------------------------------------------------------
    format: str = field(default="lce", metadata={"help": "'lce': MathCoder's special-token format (models trained on "
                        "LCE data); 'markdown': a chat model writing ```python blocks.", "choices": ["lce", "markdown"]})
    system: str = field(default="", metadata={"help": "System prompt (MathCoder: empty; its "
                        "--syspt prompt is schema.BOXED_SYSTEM)."})
    few_shot: bool = field(default=False, metadata={"help": "Prepend the format's few-shot examples (markdown)."})
    max_tokens: int = field(default=512, metadata={"help": "New tokens per block."})
    max_blocks: int = field(default=16, metadata={"help": "Model-written blocks per solution."})
    round_decimals: int | None = field(default=6, metadata={"help": "Round decimals longer than this many places in "
                                       "each model-written block before it is kept and run, as MathCoder's harness "
                                       "does (6); 'none' turns it off."})
    n: int = field(default=1, metadata={"help": "Samples per question; > 1 scores maj@n (majority answer)."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    verify_rounds: int = field(default=0, metadata={"help": "MathGenie verified inference: verify the solution and "
                               "re-solve it when judged wrong, up to this many rounds (the paper's best: 2)."})
    resolve_temperature: float = field(default=0.7, metadata={"help": "Temperature of re-solves after a 'wrong' "
                                       "verdict (a greedy re-solve would repeat the rejected solution)."})
    random_seed: int = field(default=0, metadata={"help": "Seed of every sampled request."})
    scorer: str = field(default="math-verify", metadata={
        "help": "Scorer of the headline accuracy: 'math-verify' (extracted answer, math-verify with a relative guard) "
                "or 'mathcoder' (MathCoder's find_math_answer/is_equal on the last block, absolute 0.01 tolerance: "
                "the paper's numbers). Both are computed and go into results.json and the model card.",
        "choices": ["math-verify", "mathcoder"]})
    # -- execution ----------------------------------------------------------------------------------------------------
    timeout: float = field(default=6.0, metadata={"help": "Seconds per code block (MathCoder: 6)."})
    sandbox_workers: int | None = field(default=None, metadata={"help": "Sandbox processes (default: CPU count)."})
    # -- outputs ------------------------------------------------------------------------------------------------------
    output_dir: str = field(default="outputs/eval", metadata={"help": "results.json, results.md and "
                            "predictions/<benchmark>.parquet go here."})
    push_card: bool = field(default=False, metadata={"help": "Write the results into the model card's model-index "
                            "on the Hub (a new revision of the model repo)."})
    model_repo: str | None = field(default=None, metadata={"help": "Model repo whose card gets the results "
                                   "(default: --model when it is a Hub repo id)."})
    card_branch: str = field(default="main", metadata={"help": "Branch the card commit goes to."})
    push_predictions: str | None = field(default=None, metadata={"help": "Push the predictions to this dataset repo "
                                         "(one config per benchmark)."})

    def __post_init__(self):
        try:
            self.benchmarks = parse_benchmarks(self.benchmarks)
        except KeyError as e:
            raise EvalConfigError(f"benchmarks: {e.args[0]}") from None
        if self.scorer not in ("math-verify", "mathcoder"):
            raise EvalConfigError(f"scorer={self.scorer!r}: expected 'math-verify' or 'mathcoder'")
        if self.format not in ("lce", "markdown"):
            raise EvalConfigError(f"format={self.format!r}: expected 'lce' or 'markdown'")
        for name in ("n", "max_tokens", "max_blocks", "max_model_len"):
            if getattr(self, name) < 1:
                raise EvalConfigError(f"{name}={getattr(self, name)!r}: give a positive integer")
        if self.round_decimals is not None and self.round_decimals < 0:
            raise EvalConfigError(f"round_decimals={self.round_decimals!r}: give a number of places >= 0, or "
                                  "'none'")
        if self.limit is not None and self.limit < 1:
            raise EvalConfigError(f"limit={self.limit!r}: give a positive number of questions, or leave it unset")
        if self.n > 1 and self.temperature == 0:
            raise EvalConfigError(f"n={self.n} with temperature=0: greedy samples are identical; set a temperature "
                                  "(e.g. 0.7) for maj@n")
        if self.n > 1 and self.verify_rounds:
            raise EvalConfigError("n > 1 (maj@n) and verify_rounds > 0 (verified inference) are two decoding modes; "
                                  "choose one")
        if self.verify_rounds < 0:
            raise EvalConfigError(f"verify_rounds={self.verify_rounds!r}: give 0 (off) or the number of rounds")

    @property
    def mode(self) -> str:
        """How answers were decided, as it appears in the model-index (``metric_name``)."""
        if self.verify_rounds:
            return f"verified inference, k={self.verify_rounds}"
        return f"maj@{self.n}" if self.n > 1 else ("greedy" if self.temperature == 0 else f"T={self.temperature}")

    @classmethod
    def field_help(cls) -> dict[str, dict]:
        return {f.name: dict(f.metadata) for f in fields(cls)}
