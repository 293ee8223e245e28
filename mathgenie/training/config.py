"""One config dataclass per training recipe: TRL's `SFTConfig` plus where the model and data come from and where the
result goes. Parsed from YAML with command-line overrides by `trl.TrlParser` (see `cli.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers.trainer_utils import SchedulerType
from trl import SFTConfig

from mathgenie import schema

MODEL_DTYPES = ["float32", "bfloat16", "float16", "auto"]


@dataclass
class _RecipeConfig(SFTConfig):
    """Fields shared by the recipes. Defaults that differ from `SFTConfig` are the MathGenie paper's (§3.1)."""

    recipe: str = field(default="", metadata={"help": "Which recipe this config is for (set by each subclass)."})

    # Parameters that control the model
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model: a Hub repo id or a local checkpoint folder. Required."}
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of the base model on the Hub (resolved to a sha)."}
    )
    model_dtype: str = field(
        default="float32",
        metadata={
            "help": "Dtype of the weights the optimizer updates. `float32` with `bf16: true` is mixed precision "
            "(bf16 matmuls, fp32 master weights): at lr 2e-5 pure-bf16 weights would round most updates away.",
            "choices": MODEL_DTYPES,
        },
    )
    attn_implementation: str = field(
        default="auto",
        metadata={
            "help": "Attention kernel: `auto` (flash_attention_2 when the flash-attn package and a GPU are there, "
            "else sdpa), `sdpa`, `eager`, `flash_attention_2`, `flash_attention_3`, `flex_attention` or a Hub "
            "kernel id. Varlen kernels (flash, flex) train on padding-free flattened batches; sdpa/eager on packed "
            "rows with one block-diagonal mask per row. Either way no token attends across examples."
        },
    )

    # Parameters that control the data
    dataset_name: str | None = field(
        default=None, metadata={"help": "Training data: a Hub dataset repo id or a local path. Required."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Config (subset) of `dataset_name`."})
    dataset_split: str = field(default="train", metadata={"help": "Split of `dataset_name`."})
    dataset_revision: str | None = field(
        default=None, metadata={"help": "Branch, tag or commit of `dataset_name` (resolved to a sha for the card)."}
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N rows of each dataset (quick runs)."}
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Sequences (packed rows when packing) per optimizer step over all devices. When set, "
            "`gradient_accumulation_steps` is derived: global / (per_device_train_batch_size * world size)."
        },
    )

    # Parameters that control the push
    push_repo_id: str | None = field(
        default=None, metadata={"help": "Hub model repo to push the trained model to (with a model card)."}
    )
    push_tag: str | None = field(
        default=None, metadata={"help": "Tag created on the pushed commit, e.g. `v1`: load it with revision=tag."}
    )
    push_branch: str = field(default="main", metadata={"help": "Branch the model is committed to."})

    def __post_init__(self):
        if self.bf16 is None and not self.fp16 and not self.use_cpu:
            # TRL turns bf16 on unconditionally, which transformers rejects on a machine without a bf16 GPU
            from transformers.utils import is_torch_bf16_gpu_available

            self.bf16 = is_torch_bf16_gpu_available()
        super().__post_init__()
        for name in ("model_name_or_path", "dataset_name"):
            if name == "dataset_name" and getattr(self, "mix", None):
                continue  # the LCE recipes' `mix` names its datasets
            if not getattr(self, name):
                raise ValueError(
                    f"`{name}` is required: set it in the YAML config or pass `--{name} REPO_ID_OR_PATH`"
                )
        if self.packing and self.packing_strategy == "wrapped":
            raise ValueError("packing_strategy='wrapped' cuts examples and lets them attend to each other; use 'bfd' "
                             "(drops overflow; mathgenie drops over-long examples before packing) or 'bfd_split'")
        if self.push_tag and not self.push_repo_id:
            raise ValueError(
                f"`push_tag` ({self.push_tag!r}) is set but `push_repo_id` is not; set the repo to push to"
            )
        if self.global_batch_size is not None:
            per_step = self.per_device_train_batch_size * self.world_size
            if self.global_batch_size % per_step:
                raise ValueError(
                    f"`global_batch_size` ({self.global_batch_size}) is not a multiple of per_device_train_batch_size "
                    f"({self.per_device_train_batch_size}) x world size ({self.world_size}); change one of them"
                )
            self.gradient_accumulation_steps = self.global_batch_size // per_step


@dataclass
class BacktranslationConfig(_RecipeConfig):
    """M_backtrans: learns ``Create a New Problem based on the Solution: {s}`` → ``New Problem: {q}`` on any dataset
    with a question and a solution (the seed), loss on the completion and EOS only."""

    recipe: str = field(default="backtranslation", metadata={"help": "Recipe name.", "choices": ["backtranslation"]})
    output_dir: str | None = field(
        default="outputs/backtranslation", metadata={"help": "Checkpoints, logs and the final model (`model/`)."}
    )
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    solution_column: str = field(default="solution", metadata={"help": "Column holding the solution."})
    prompt_format: str = field(
        default="auto",
        metadata={
            "help": "`chat`: instruction as the user turn of the base model's chat template; `plain`: raw "
            "`instruction\\n` + `New Problem: ...` + EOS; `auto`: chat if the base tokenizer has a template.",
            "choices": ["auto", "chat", "plain"],
        },
    )

    # Paper defaults (MathGenie trains M_backtrans with the same recipe as MathGenieLM; epochs follow MathCoder)
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=50, metadata={"help": "Linear warm-up steps (a float < 1 is a ratio)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training data."})
    max_length: int | None = field(
        default=2048, metadata={"help": "Longest sequence (and packed row length); longer pairs are dropped."}
    )
    packing: bool = field(default=True, metadata={"help": "Pack sequences into rows of `max_length` tokens."})
    per_device_train_batch_size: int = field(default=4, metadata={"help": "Rows per device per micro-step."})
    global_batch_size: int | None = field(
        default=64, metadata={"help": "Rows per optimizer step over all devices (derives gradient accumulation)."}
    )


@dataclass
class MathGenieLMConfig(_RecipeConfig):
    """MathGenieLM: SFT on a mix of LCE samples (`mix.py`: code-integrated solutions and verification rationales of
    the seed and of the verified AugData), MathCoder's loss mask, packing with no attention across examples."""

    recipe: str = field(default="mathgenie-lm", metadata={"help": "Recipe name.", "choices": ["mathgenie-lm"]})
    output_dir: str | None = field(
        default="outputs/mathgenie-lm", metadata={"help": "Checkpoints, logs and the final model (`model/`)."}
    )
    mix: list[dict] | None = field(
        default=None,
        metadata={"help": "The training mix: a list of sources, each `{name, dataset, kind: solutions|verifications, "
                          "weight, config, split, revision, format: rows|mathcoder, exclude_verdicts, "
                          "require_finished}` (see mathgenie/training/mix.py), set in the YAML. Replaces "
                          "`dataset_name`."},
    )
    seed_dataset_name: str | None = field(
        default=None, metadata={"help": "Without `mix`: extra LCE solutions (question + blocks, or messages)."})
    seed_dataset_config: str | None = field(default=None, metadata={"help": "Config of `seed_dataset_name`."})
    seed_dataset_split: str = field(default="train", metadata={"help": "Split of `seed_dataset_name`."})
    seed_dataset_revision: str | None = field(default=None, metadata={"help": "Revision of `seed_dataset_name`."})
    system_prompt: str = field(
        default=schema.DEFAULT_SYSTEM,
        metadata={"help": "System text of every training conversation (MathCoder's default is empty). The solve and "
                          "verify stages must use the same (`solve.system`)."},
    )
    add_lce_tokens: bool = field(
        default=True,
        metadata={
            "help": "Add the 8 LCE special tokens, resize the embeddings and set the LCE chat template. Turn off "
            "only for a base model that already has them (a MathGenieLM checkpoint)."
        },
    )
    exclude_verdicts: list[str] = field(
        default_factory=lambda: ["wrong"],
        metadata={"help": "Drop rows whose `verdict` is one of these (MathGenie keeps what the verifier did not "
                          "reject); a mix source's own `exclude_verdicts` wins."},
    )
    require_finished: bool = field(
        default=True, metadata={"help": "Drop rows whose `finish_reason` is not `endofmessage` (cut solutions)."}
    )

    # Paper defaults (MathGenie §3.1 / Limitations; epochs from MathCoder)
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={"help": "Learning-rate schedule."})
    warmup_steps: float = field(default=50, metadata={"help": "Linear warm-up steps (a float < 1 is a ratio)."})
    num_train_epochs: float = field(default=3.0, metadata={"help": "Epochs over the training data."})
    max_length: int | None = field(
        default=4096, metadata={"help": "Longest sequence (and packed row length); longer examples are dropped."}
    )
    packing: bool = field(default=True, metadata={"help": "Pack sequences into rows of `max_length` tokens."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Rows per device per micro-step."})
    global_batch_size: int | None = field(
        default=64, metadata={"help": "Rows per optimizer step over all devices (derives gradient accumulation)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.seed_dataset_revision and not self.seed_dataset_name:
            raise ValueError("`seed_dataset_revision` is set but `seed_dataset_name` is not")
        if self.mix and (self.dataset_name or self.seed_dataset_name):
            raise ValueError("`mix` and `dataset_name`/`seed_dataset_name` both name training data; put every "
                             "dataset in `mix` (or drop `mix` to train on `dataset_name`)")
        self.mix_sources()  # fail on a bad mix at parse time, not after the model is loaded

    def mix_sources(self) -> list:
        """The `mix.MixSource` list: `mix`, or ``dataset_name`` (+ ``seed_dataset_name``) as solution sources."""
        from mathgenie.training.mix import MixSource, parse_mix

        if self.mix:
            return parse_mix(self.mix)
        sources = [MixSource("data", self.dataset_name, config=self.dataset_config, split=self.dataset_split,
                             revision=self.dataset_revision)]
        if self.seed_dataset_name:
            sources.append(MixSource("seed", self.seed_dataset_name, config=self.seed_dataset_config,
                                     split=self.seed_dataset_split, revision=self.seed_dataset_revision))
        return sources


@dataclass
class MCodeConfig(MathGenieLMConfig):
    """M_code, the candidate-solution generator and verifier (MathGenie §2): SFT on D_code's code-integrated solutions
    and its (question, solution) → verification-rationale samples in one run, with MathCoder's recipe (§3.1 of
    MathCoder: lr 2e-5, cosine, 50 warm-up steps, global batch 128, context 2048, 3 epochs) and loss mask."""

    recipe: str = field(default="mcode", metadata={"help": "Recipe name.", "choices": ["mcode"]})
    output_dir: str | None = field(
        default="outputs/mcode", metadata={"help": "Checkpoints, logs and the final model (`model/`)."}
    )
    max_length: int | None = field(
        default=2048, metadata={"help": "Longest sequence (and packed row length); longer examples are dropped."}
    )
    global_batch_size: int | None = field(
        default=128, metadata={"help": "Rows per optimizer step over all devices (derives gradient accumulation)."}
    )


RECIPES: dict[str, type[_RecipeConfig]] = {"backtranslation": BacktranslationConfig, "mathgenie-lm": MathGenieLMConfig,
                                           "mcode": MCodeConfig}
