"""Pipeline configuration: one dataclass per stage (the ``config_class`` of its `mathgenie.generation.stages` entry),
composed into `PipelineConfig`, loaded by the one config system (`mathgenie.config`: YAML + ``section.field=value``
overrides, an unknown key is an error naming the key and the file). The defaults are the offline demo's model and seed
(SmolLM2-135M-Instruct, the bundled seed sample) with the paper's stage settings where the paper gives them;
``configs/*.yaml`` override what differs::

    cfg = load_config("configs/demo.yaml", ["augment.rounds=1", "solve.n=2"])
    print(format_help(PipelineConfig))  # every field with its help text
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from mathgenie.config import ConfigError, check_choice, check_positive, load_yaml
from mathgenie.generation.engine import ModelSpec

EVAL_SETS = ["gsm8k", "math", "math500", "svamp", "simuleq", "mathematics"]  # the benchmarks of `mathgenie eval`


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
        check_choice("backend", self.backend, ("auto", "vllm", "transformers", "openai"))
        check_choice("template", self.template, ("auto", "chat", "raw"))

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
            check_choice("augment.methods[]", m, ("mathgenie", "ansaug", "rephrase", "self_verification", "fobar"))
        if not self.methods:
            raise ConfigError("augment.methods=[]: give at least one method, e.g. ['mathgenie']")
        check_positive("augment.rounds", self.rounds)
        check_positive("augment.n", self.n)
        check_positive("augment.prompts_per_solution", self.prompts_per_solution, allow_none=True)
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
        check_positive("back_translate.n", self.n)


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
        check_choice("solve.format", self.format, ("lce", "markdown"))
        check_positive("solve.n", self.n)
        check_positive("solve.max_blocks", self.max_blocks)
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
                              "`mathgenie.generation.stages.verify.classify_verdict`.",
                              "choices": ["keywords", "boxed", "keywords+boxed"]})
    keep_unknown: bool = field(default=True, metadata={"help": "Keep a solution whose verdict is 'unknown' (paper: "
                               "only solutions verified as wrong are discarded)."})
    max_blocks: int = field(default=8, metadata={"help": "Most model-written blocks per rationale."})
    format: str | None = field(default=None, metadata={"help": "Rationale format; None = solve.format."})
    few_shot: bool | None = field(default=None, metadata={"help": "None = solve.few_shot."})

    def __post_init__(self):
        check_choice("verify.consistency", self.consistency, ("unanimous", "majority", "none"))
        check_choice("verify.verdict_rule", self.verdict_rule, ("keywords", "boxed", "keywords+boxed"))
        if self.format is not None:
            check_choice("verify.format", self.format, ("lce", "markdown"))


@dataclass
class SandboxConfig:
    timeout: float = field(default=10.0, metadata={"help": "Seconds per code block."})
    memory_mb: int = field(default=2048, metadata={"help": "Memory limit of a sandbox worker."})
    max_output_chars: int = field(default=2000, metadata={"help": "Execution output kept per block."})
    num_workers: int | None = field(default=None, metadata={"help": "Sandbox worker processes (None = #CPUs)."})


@dataclass
class DecontaminateConfig:
    eval_sets: list[str] = field(default_factory=lambda: list(EVAL_SETS), metadata={"help": "Drop every question "
                                 "that overlaps the test questions of these eval sets (exact text, a shared word "
                                 "13-gram, or a MinHash near-duplicate); [] checks nothing and keeps every row."})
    minhash: bool = field(default=True, metadata={"help": "Also drop near-duplicates of eval questions (MinHash LSH, "
                          "Jaccard >= 0.8 over word 5-grams); false keeps the exact and n-gram rules only."})
    index: str | None = field(default=None, metadata={"help": "Eval index file (.npz of hashes, built by `python -m "
                              "mathgenie.evaluation.eval_index`); None = the index shipped with mathgenie."})

    def __post_init__(self):
        for name in self.eval_sets:
            if self.index is None:
                check_choice("decontaminate.eval_sets[]", name, tuple(EVAL_SETS))


@dataclass
class PushConfig:
    enabled: bool = field(default=False, metadata={"help": "Push every stage to the Hub at the end of the run."})
    org: str = field(default="org", metadata={"help": "Hub namespace of the pushed datasets."})
    names: dict = field(default_factory=dict, metadata={"help": "Hub dataset name per stage output, overriding the "
                        "stages' own (seed: mathgenie-seed, augmented: mathgenie-augmented, back_translated: "
                        "mathgenie-back-translated, solved: mathgenie-solved, decontaminated: mathgenie-verified); "
                        "null = do not push it."})
    tag: str | None = field(default=None, metadata={"help": "Tag put on all pushed datasets (None = "
                            "'run-<config hash>')."})


@dataclass
class RayConfig:
    """How `mathgenie.scale.ray_executor.run_on_ray` spreads the pipeline over a Ray cluster."""

    address: str | None = field(default=None, metadata={"help": "Ray cluster to join: 'auto' (the cluster `ray "
                                "start` made on this machine), 'HOST:PORT' of its head, or None (Ray's default: "
                                "$RAY_ADDRESS, else a cluster started on this machine, else a new local Ray for this "
                                "run). Run the driver on a cluster node; output_dir must be on storage every node "
                                "mounts at the same path."})
    num_shards: int | None = field(default=None, metadata={"help": "Shards of every stage: the unit of work and of "
                                   "retry (more shards than replicas balance the load). None = the count already on "
                                   "disk for this run, else 4 per replica. Keep it fixed across reruns."})
    num_replicas: int | None = field(default=None, metadata={"help": "Engine replicas (Ray actors) per stage. None = "
                                     "as many as the cluster holds, node by node."})
    num_gpus_per_replica: float | None = field(default=None, metadata={"help": "GPUs per replica. None = the "
                                               "stage model's tensor_parallel_size x pipeline_parallel_size "
                                               "(engine_kwargs) when the cluster has GPUs, else 0."})
    num_cpus_per_replica: float | None = field(default=None, metadata={"help": "CPUs per replica; its Sandbox runs "
                                               "on them (sandbox.num_workers defaults to this). None = the node's "
                                               "CPUs per GPU x GPUs per replica; 1 on a CPU-only cluster."})
    max_restarts: int = field(default=3, metadata={"help": "How often Ray restarts a replica whose process died and "
                              "retries its shard (which resumes from the request cache). -1 = forever."})
    runtime_env: dict = field(default_factory=dict, metadata={"help": "Ray runtime_env of the job (env_vars, pip, "
                              "...). HF_ENDPOINT and the offline switches of the driver are forwarded; HF_TOKEN is "
                              "not (secrets stay out of Ray's job metadata): set it where `ray start` runs."})

    def __post_init__(self):
        for name in ("num_shards", "num_replicas"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"ray.{name}={value!r}: give a positive integer or null")
        for name in ("num_gpus_per_replica", "num_cpus_per_replica"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ConfigError(f"ray.{name}={value!r}: give a number >= 0 or null")
        if self.num_cpus_per_replica == 0 and not self.num_gpus_per_replica:
            raise ConfigError("ray.num_cpus_per_replica=0 with no GPUs: a replica needs some resource; give >= 1")
        if not isinstance(self.max_restarts, int) or self.max_restarts < -1:
            raise ConfigError(f"ray.max_restarts={self.max_restarts!r}: give an integer >= 0, or -1 for no limit")


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
        check_positive("limit", self.limit, allow_none=True)
        check_positive("max_in_flight", self.max_in_flight)
        check_choice("executor", self.executor, ("local", "ray"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> PipelineConfig:
    """YAML file (optional) + ``key=value`` overrides → `PipelineConfig`. The command line wins."""
    return load_yaml(PipelineConfig, path, overrides)
