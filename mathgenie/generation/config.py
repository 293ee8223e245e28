"""Pipeline configuration: one dataclass per stage, composed into `PipelineConfig`, loaded from YAML with command-line
overrides (``section.field=value``, the value parsed as YAML). Unknown keys are an error that names the key and lists
the valid ones. The defaults are the offline demo's model and seed (SmolLM2-135M-Instruct, the bundled seed sample)
with the paper's stage settings where the paper gives them; ``configs/*.yaml`` override what differs::

    cfg = load_config("configs/demo.yaml", ["augment.rounds=1", "solve.n=2"])
    print(format_help())  # every field with its help text
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mathgenie.generation.engine import ModelSpec
from mathgenie.scale.config import RayConfig

STAGES = ("seed", "augment", "back_translate", "solve", "verify", "decontaminate", "push")
# directory / dataset name of each stage's output
STAGE_OUTPUT = {"seed": "seed", "augment": "augmented", "back_translate": "back_translated", "solve": "solved",
                "verify": "verified"}


class ConfigError(ValueError):
    """A bad configuration value or key; the message names the key, the value and the fix."""


def _choices(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r}: expected one of {list(choices)}")


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{name}={value!r}: give a positive number")


@dataclass
class ModelConfig:
    """Which model a stage uses and how it is loaded."""

    model: str = field(default="smollm2", metadata={"help": "Hub repo id, local checkpoint dir, .gguf file, or "
                                                     "'smollm2' (the bundled SmolLM2-135M-Instruct)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) to pin."})
    backend: str = field(default="auto", metadata={"help": "Engine backend.", "choices": ["auto", "vllm",
                                                                                         "transformers", "openai"]})
    template: str = field(default="auto", metadata={"help": "How prompts reach the model: 'chat' (the tokenizer's "
                          "chat template), 'raw' (the prompt text as is, e.g. a model SFT-ed on prompt-completion "
                          "pairs) or 'auto' (what the model was trained with, from its mathgenie_prompt.json; else "
                          "chat).", "choices": ["auto", "chat", "raw"]})
    max_model_len: int = field(default=4096, metadata={"help": "Context length given to the engine."})
    engine_kwargs: dict = field(default_factory=dict, metadata={"help": "Extra keyword arguments of the engine "
                                "(e.g. gpu_memory_utilization, tensor_parallel_size, base_url)."})

    def __post_init__(self):
        _choices("backend", self.backend, ("auto", "vllm", "transformers", "openai"))
        _choices("template", self.template, ("auto", "chat", "raw"))

    def spec(self) -> ModelSpec:
        return ModelSpec(model=self.model, revision=self.revision, max_model_len=self.max_model_len)


@dataclass
class SeedConfig:
    sources: list[dict] = field(default_factory=list, metadata={"help": "Seed sources, each the fields of "
                                "`mathgenie.builders.seed.SeedSource` (name, path_or_repo, config, split, format). "
                                "Empty = the sample bundled with mathgenie."})
    split: str = field(default="train", metadata={"help": "Which split of the seed to augment."})
    limit_per_source: int | None = field(default=None, metadata={"help": "Keep the first N rows of each source."})


@dataclass
class _SamplingConfig:
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature (0 = greedy)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling."})
    max_tokens: int = field(default=512, metadata={"help": "Maximum new tokens per request."})
    model: ModelConfig | None = field(default=None, metadata={"help": "This stage's model; None = the top-level "
                                                                       "`model`."})


@dataclass
class AugmentConfig(_SamplingConfig):
    methods: list[str] = field(default_factory=lambda: ["mathgenie"], metadata={"help": "Augmenters: 'mathgenie' "
                               "(iterative solution rewriting, Table 1), and MetaMath's augmenters 'ansaug', "
                               "'rephrase', 'self_verification', 'fobar'. Several may run side by side."})
    rounds: int = field(default=3, metadata={"help": "K: round k rewrites round k-1's outputs (paper Fig. 4 shows 3)."})
    prompts: list[str] = field(default_factory=lambda: ["1", "2", "3", "4"], metadata={"help": "Table 1 prompt ids."})
    prompts_per_solution: int | None = field(default=1, metadata={"help": "Prompts applied to each solution per "
                                             "round, drawn per solution from `prompts` by a hash (None = all); the "
                                             "family of a seed grows as (prompts_per_solution*n)^round."})
    n: int = field(default=1, metadata={"help": "Samples per (solution, prompt), per MetaMath rephrase and AnsAug answers per question."})
    dedup_threshold: float = field(default=0.9, metadata={"help": "Drop a new solution whose word 3-gram Jaccard "
                                   "similarity to its seed or an earlier member of its family is at least this (1.0 = "
                                   "exact duplicates only, after whitespace/case normalization)."})
    min_chars: int = field(default=20, metadata={"help": "Drop outputs shorter than this."})
    max_backward_per_seed: int = field(default=2, metadata={"help": "FOBAR / self-verification: questions per seed "
                                       "(one per masked number, first N numbers)."})
    metamath_answer_paths: bool = field(default=True, metadata={"help": "MetaMath's rule: every MetaMath question "
                                        "gets a chain-of-thought answer path (its 8-shot prompts) and is kept only "
                                        "when the path reaches the expected answer (the seed's; the masked number for "
                                        "FOBAR/SV); the path is the row's solution. False: questions unchecked, the "
                                        "seed's solution kept, FOBAR needs no model."})

    def __post_init__(self):
        for m in self.methods:
            _choices("augment.methods[]", m, ("mathgenie", "ansaug", "rephrase", "self_verification", "fobar"))
        if not self.methods:
            raise ConfigError("augment.methods=[]: give at least one method, e.g. ['mathgenie']")
        _positive("augment.rounds", self.rounds)
        _positive("augment.n", self.n)
        _positive("augment.prompts_per_solution", self.prompts_per_solution, allow_none=True)
        if not 0 < self.dedup_threshold <= 1:
            raise ConfigError(f"augment.dedup_threshold={self.dedup_threshold}: give a value in (0, 1]")


@dataclass
class BackTranslateConfig(_SamplingConfig):
    max_tokens: int = field(default=256, metadata={"help": "Maximum new tokens per question."})
    n: int = field(default=1, metadata={"help": "Questions per augmented solution."})
    min_chars: int = field(default=15, metadata={"help": "Drop questions shorter than this."})
    max_chars: int = field(default=2000, metadata={"help": "Drop questions longer than this."})
    require_question_cue: bool = field(default=True, metadata={"help": "Drop a 'question' with no '?' and none of "
                                       "find/compute/calculate/determine/what/how/... (it asks nothing)."})

    def __post_init__(self):
        _positive("back_translate.n", self.n)


@dataclass
class SolveConfig(_SamplingConfig):
    n: int = field(default=3, metadata={"help": "Solutions per question (>= 2 for the consistency filter; "
                                                 "MathCoder used 3)."})
    max_blocks: int = field(default=16, metadata={"help": "Most model-written blocks (text + code) per solution "
                                                           "(MathCoder's harness: 16)."})
    format: str = field(default="lce", metadata={"help": "'lce': MathCoder's <|text|>/<|code|>/<|execution|> "
                        "prompt (for LCE-trained models); 'markdown': the chat template and ```python fences (any "
                        "instruct model); both are stored as LCE blocks.", "choices": ["lce", "markdown"]})
    system: str | None = field(default=None, metadata={"help": "System prompt; None = the format's default "
                               "(empty for a MathCoder-trained model with format lce, see few_shot)."})
    few_shot: bool = field(default=False, metadata={"help": "Prepend a one-shot example (markdown) or the LCE "
                           "instruction + example (lce), for models never trained on the format."})
    max_live: int = field(default=1024, metadata={"help": "Solutions in flight at once in the generate/execute loop."})
    round_decimals: int | None = field(default=None, metadata={"help": "Round decimals longer than this many places "
                                       "in each model-written block before keeping and running it (MathCoder's "
                                       "evaluation harness: 6); None leaves blocks as written."})

    def __post_init__(self):
        _choices("solve.format", self.format, ("lce", "markdown"))
        _positive("solve.n", self.n)
        _positive("solve.max_blocks", self.max_blocks)
        if self.round_decimals is not None and self.round_decimals < 0:
            raise ConfigError(f"solve.round_decimals={self.round_decimals!r}: give a number of places >= 0, or null")


@dataclass
class VerifyConfig(_SamplingConfig):
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature of the rationale (0 = greedy)."})
    consistency: str = field(default="unanimous", metadata={"help": "Answer-consistency rule: 'unanimous' drops a "
                             "question unless all its answers agree (paper); 'majority' keeps the solutions with "
                             "the majority answer if more than half agree; 'none' skips the filter.",
                             "choices": ["unanimous", "majority", "none"]})
    rationale: bool = field(default=True, metadata={"help": "Generate the code-integrated verification rationale."})
    verdict_rule: str = field(default="keywords+boxed", metadata={"help": "How a rationale becomes a verdict: see "
                              "`mathgenie.generation.verify.classify_verdict`.",
                              "choices": ["keywords", "boxed", "keywords+boxed"]})
    keep_unknown: bool = field(default=True, metadata={"help": "Keep a solution whose verdict is 'unknown' (paper: "
                               "only solutions verified as wrong are discarded)."})
    max_blocks: int = field(default=8, metadata={"help": "Most model-written blocks per rationale."})
    format: str | None = field(default=None, metadata={"help": "Rationale format; None = solve.format."})
    few_shot: bool | None = field(default=None, metadata={"help": "None = solve.few_shot."})

    def __post_init__(self):
        _choices("verify.consistency", self.consistency, ("unanimous", "majority", "none"))
        _choices("verify.verdict_rule", self.verdict_rule, ("keywords", "boxed", "keywords+boxed"))
        if self.format is not None:
            _choices("verify.format", self.format, ("lce", "markdown"))


@dataclass
class SandboxConfig:
    timeout: float = field(default=10.0, metadata={"help": "Seconds per code block."})
    memory_mb: int = field(default=2048, metadata={"help": "Memory limit of a sandbox worker."})
    max_output_chars: int = field(default=2000, metadata={"help": "Execution output kept per block."})
    num_workers: int | None = field(default=None, metadata={"help": "Sandbox worker processes (None = #CPUs)."})


@dataclass
class DecontaminateConfig:
    function: str | None = field(default=None, metadata={"help": "'module:function' taking (verified Dataset, "
                                 "config dict) and returning the kept Dataset; None skips the stage."})
    options: dict = field(default_factory=dict, metadata={"help": "Passed to the function as its second argument."})


@dataclass
class PushConfig:
    enabled: bool = field(default=False, metadata={"help": "Push every stage to the Hub at the end of the run."})
    org: str = field(default="org", metadata={"help": "Hub namespace of the pushed datasets."})
    names: dict = field(default_factory=lambda: {"seed": "mathgenie-seed", "augmented": "mathgenie-augmented",
                        "back_translated":
                        "mathgenie-back-translated", "solved": "mathgenie-solved", "verified": "mathgenie-verified"},
                        metadata={"help": "Dataset name of each stage (a stage missing here is not pushed)."})
    tag: str | None = field(default=None, metadata={"help": "Tag put on all pushed datasets (None = "
                            "'run-<config hash>')."})


@dataclass
class PipelineConfig:
    output_dir: str = field(default="outputs/mathgenie", metadata={"help": "Where stage outputs, caches, manifests "
                                                                             "and the funnel go."})
    random_seed: int = field(default=0, metadata={"help": "Global seed; every request's sampling seed derives from "
                                                           "it."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N seed rows (before sharding)."})
    max_in_flight: int = field(default=256, metadata={"help": "Text-stage requests handed to the engine at once "
                               "(results are cached as they finish)."})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Default model of every stage."})
    seed: SeedConfig = field(default_factory=SeedConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    back_translate: BackTranslateConfig = field(default_factory=BackTranslateConfig)
    solve: SolveConfig = field(default_factory=SolveConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    decontaminate: DecontaminateConfig = field(default_factory=DecontaminateConfig)
    push: PushConfig = field(default_factory=PushConfig)
    executor: str = field(default="local", metadata={
        "help": "'local' (this process; --shard I/N runs one slice, e.g. a Slurm array task) or 'ray' (all shards "
                "on a Ray cluster, see `ray`).", "choices": ["local", "ray"]})
    ray: RayConfig = field(default_factory=RayConfig, metadata={"help": "Ray executor settings (executor: ray)."})

    def __post_init__(self):
        _positive("limit", self.limit, allow_none=True)
        _positive("max_in_flight", self.max_in_flight)
        _choices("executor", self.executor, ("local", "ray"))

    def model_for(self, stage: str) -> ModelConfig:
        """The model of ``stage``; the verifier defaults to the solver's model (M_code does both in the paper)."""
        section = getattr(self, stage)
        if section.model is not None:
            return section.model
        if stage == "verify" and self.solve.model is not None:
            return self.solve.model
        return self.model

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------------
# Loading: YAML dict -> dataclasses, with type checks and unknown-key errors
# ---------------------------------------------------------------------------------------------------------------------


def from_dict(cls: type, data: dict, path: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; every key is checked against the fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section {path!r}" if path else "at the top level"
        raise ConfigError(f"unknown config key(s) {unknown} {where}; valid keys: {sorted(fields)}. Remove them or "
                          "fix the spelling (`mathgenie run --help-config` lists every field).")
    kwargs = {name: _convert(hints[name], value, f"{path}.{name}" if path else name) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or 'config'}: {e}") from e


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, path)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value or {}, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}={value!r}: expected a list")
        (item,) = typing.get_args(tp) or (Any,)
        return [_convert(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}={value!r}: expected a mapping")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}={value!r}: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}={value!r}: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"{path}={value!r}: expected a string")
        return str(value)
    return value


def apply_override(data: dict, override: str) -> None:
    """``"section.field=value"`` → sets ``data[section][field]`` (value parsed as YAML: numbers, lists, null)."""
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected KEY=VALUE, e.g. solve.n=4 or augment.prompts=[1,3]")
    key, raw = override.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """YAML file (optional) + ``key=value`` overrides → `PipelineConfig`. The command line wins."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config sections")
    for override in overrides:
        apply_override(data, override)
    try:
        return from_dict(PipelineConfig, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (dataclasses are converted)."""
    if dataclasses.is_dataclass(obj):
        obj = dataclasses.asdict(obj)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def format_help(cls: type = PipelineConfig, prefix: str = "") -> str:
    """Every field of the config with its default and help text (``mathgenie run --help-config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines.append(f"\n[{name}]" + (f"  {f.metadata['help']}" if "help" in f.metadata else ""))
            lines.append(format_help(tp, name + "."))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        choices = f" choices={f.metadata['choices']}" if "choices" in f.metadata else ""
        lines.append(f"  {name} = {default!r}{choices}\n      {f.metadata.get('help', '')}")
    return "\n".join(lines)
