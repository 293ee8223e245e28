"""The two training recipes on TRL's `SFTTrainer`: load the base model and data (Hub or local), build exact token ids
and loss masks, pack, train (resuming if asked), save, push with a model card.

>>> from mathgenie.training import MathGenieLMConfig, train
>>> result = train(MathGenieLMConfig(model_name_or_path="Qwen/Qwen2.5-1.5B", dataset_name="me/mathgenie-verified",
...                                   push_repo_id="me/MathGenieLM-1.5B", push_tag="v1"))
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from mathgenie.training.config import BacktranslationConfig, MathGenieLMConfig, _RecipeConfig
from mathgenie.training.data import (
    DataSource,
    backtranslation_dataset,
    drop_long,
    lce_dataset,
    load_mix_source,
    load_source,
)

logger = logging.getLogger(__name__)

FINAL_DIR = "model"  # the trained model + tokenizer, under output_dir (checkpoints are output_dir/checkpoint-N)


@dataclass
class BaseModel:
    name: str
    revision: str | None  # resolved sha on the Hub, None for a local folder


@dataclass
class TrainResult:
    model_dir: Path
    global_step: int
    train_summary: dict[str, Any]
    base_model: BaseModel
    sources: list[DataSource]
    hyperparameters: dict[str, Any]
    push: Any = None  # mathgenie.upload.PushResult when pushed


def load_base(config: _RecipeConfig):
    """Tokenizer and model at the resolved revision, with the recipe's tokens and chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mathgenie.training.lce import add_lce_tokens
    from mathgenie.training.packing import resolve_attn_implementation

    name = config.model_name_or_path
    revision = None
    if not Path(name).expanduser().exists():
        from huggingface_hub import HfApi

        try:
            revision = HfApi().model_info(name, revision=config.model_revision).sha
        except Exception as e:
            raise ValueError(f"model_name_or_path={name!r} (revision {config.model_revision!r}) is neither a local "
                             f"folder nor reachable on the Hub: {e}") from e
    elif config.model_revision not in (None, "main"):  # "main", the YAML default, is no constraint on a folder
        raise ValueError(f"model_name_or_path={name!r} is a local folder; `model_revision` only applies to Hub repos")
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=config.trust_remote_code)
    dtype = config.model_dtype if config.model_dtype == "auto" else getattr(torch, config.model_dtype)
    attn = resolve_attn_implementation(config.attn_implementation)
    init_kwargs = {"dtype": dtype, "attn_implementation": attn, "trust_remote_code": config.trust_remote_code,
                   **(config.model_init_kwargs or {})}  # explicit model_init_kwargs win
    init_kwargs.pop("revision", None)
    model = AutoModelForCausalLM.from_pretrained(name, revision=revision, **init_kwargs)
    if isinstance(config, MathGenieLMConfig) and config.add_lce_tokens:
        added = add_lce_tokens(tokenizer, model)
        logger.info("LCE tokens: %d added, vocabulary %d, embeddings %d", len(added), len(tokenizer),
                    model.get_input_embeddings().num_embeddings)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    logger.info("base model %s at %s (%s, %s attention)", name, revision or "local folder", model.dtype,
                model.config._attn_implementation)
    return model, tokenizer, BaseModel(name, revision)


def build_dataset(config: _RecipeConfig, tokenizer) -> tuple[datasets.Dataset, list[DataSource]]:
    """Token ids + labels (-100 where no loss) of every training sequence, longer ones than ``max_length`` dropped.
    The LCE recipes read their `mix` (one `DataSource` per source, with the samples it gave)."""
    if isinstance(config, BacktranslationConfig):
        from mathgenie.training.backtranslation import resolve_prompt_format

        ds, source = load_source(config.dataset_name, config=config.dataset_config, split=config.dataset_split,
                                 revision=config.dataset_revision, num_proc=config.dataset_num_proc)
        ds = _first(ds, config.max_samples)
        ds = backtranslation_dataset(
            ds, tokenizer, name=config.dataset_name,
            prompt_format=resolve_prompt_format(config.prompt_format, tokenizer),
            question_column=config.question_column, solution_column=config.solution_column,
            num_proc=config.dataset_num_proc)
        return _finish(ds, "completion_mask", config, config.dataset_name), [source]
    sources, parts = [], []
    for mix_source in config.mix_sources():
        if mix_source.weight == 0:
            logger.info("mix: %s has weight 0, not loaded", mix_source.name)
            continue
        ds, source = load_mix_source(mix_source, num_proc=config.dataset_num_proc)
        ds = lce_dataset(
            _first(ds, config.max_samples), tokenizer, name=mix_source.name, kind=mix_source.kind,
            system_prompt=config.system_prompt,
            exclude_verdicts=(config.exclude_verdicts if mix_source.exclude_verdicts is None
                              else list(mix_source.exclude_verdicts)),
            require_finished=(config.require_finished if mix_source.require_finished is None
                              else mix_source.require_finished),
            weight=mix_source.weight, seed=config.data_seed if config.data_seed is not None else config.seed,
            num_proc=config.dataset_num_proc)
        samples = len(ds)
        ds = _finish(ds, "assistant_masks", config, mix_source.name)
        source.mix = {"name": mix_source.name, "kind": mix_source.kind, "weight": mix_source.weight,
                      "samples": samples, "sequences": len(ds)}
        logger.info("mix: %s (%s, weight %s): %d rows -> %d samples, %d sequences kept", mix_source.name,
                    mix_source.kind, mix_source.weight, source.num_rows, samples, len(ds))
        parts.append(ds)
        sources.append(source)
    return datasets.concatenate_datasets(parts), sources


def _first(ds: datasets.Dataset, n: int | None) -> datasets.Dataset:
    return ds if n is None else ds.select(range(min(n, len(ds))))


def _finish(ds: datasets.Dataset, mask_column: str, config: _RecipeConfig, name: str) -> datasets.Dataset:
    """Labels from the mask; sequences with nothing to train on or longer than ``max_length`` dropped."""
    num_proc = config.dataset_num_proc
    ds = ds.map(_labels, fn_kwargs={"mask_column": mask_column}, remove_columns=[mask_column], num_proc=num_proc)
    before = len(ds)
    ds = ds.filter(lambda labels: any(t != -100 for t in labels), input_columns=["labels"], num_proc=num_proc)
    if len(ds) < before:
        logger.warning("%s: dropped %d sequences with no token to train on", name, before - len(ds))
    return drop_long(ds, config.max_length, name, num_proc)


def count_tokens(ds: datasets.Dataset) -> tuple[int, int]:
    """(tokens, tokens with a loss) of a tokenized dataset, counted in Arrow."""
    import pyarrow.compute as pc

    labels = pc.list_flatten(ds.with_format("arrow")["labels"])
    return len(labels), pc.sum(pc.not_equal(labels, -100)).as_py() or 0


def _labels(row, mask_column):
    return {"labels": [t if m else -100 for t, m in zip(row["input_ids"], row[mask_column])]}


def make_trainer(config: _RecipeConfig, model, tokenizer, train_dataset: datasets.Dataset):
    """TRL's `SFTTrainer` on the pre-tokenized data. Packing goes through TRL's padding-free path for varlen attention
    kernels, and through `PackedRowsCollator` rows for SDPA/eager (see `packing.py`)."""
    from trl import SFTTrainer, pack_dataset

    from mathgenie.training.packing import PackedRowsCollator, is_varlen, packed_rows_trainer_class

    args, collator, trainer_class = config, None, SFTTrainer
    attn = model.config._attn_implementation
    if config.packing and not is_varlen(attn):
        train_dataset = pack_dataset(train_dataset, config.max_length, config.packing_strategy,
                                     {"num_proc": config.dataset_num_proc})
        args = copy.copy(config)  # TRL must not pack again nor flatten the rows
        args.packing, args.padding_free = False, False
        # torch.compile wants one shape: pad every row to max_length instead of to the batch's longest
        pad_to = config.max_length if config.torch_compile else config.pad_to_multiple_of
        collator = PackedRowsCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=pad_to)
        trainer_class = packed_rows_trainer_class()
        logger.info("packing: %d rows of <= %d tokens, one block-diagonal mask per row (%s attention)",
                    len(train_dataset), config.max_length, attn)
    elif config.packing:
        logger.info("packing: TRL padding-free batches with %s varlen attention", attn)
    return trainer_class(model=model, args=args, data_collator=collator, train_dataset=train_dataset,
                         processing_class=tokenizer)


def resolve_checkpoint(config: _RecipeConfig) -> str | None:
    """``resume_from_checkpoint``: a checkpoint folder, or ``latest`` (the newest under output_dir, error if none),
    or ``auto`` (the newest if any, else start fresh: for preemptible jobs)."""
    from transformers.trainer_utils import get_last_checkpoint

    value = config.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    if value in ("latest", "auto", "true", "True"):
        last = get_last_checkpoint(config.output_dir) if Path(config.output_dir).is_dir() else None
        if last is None and value != "auto":
            raise ValueError(f"resume_from_checkpoint={value!r} but {config.output_dir} has no checkpoint-N folder; "
                             "use `auto` to start fresh when there is none")
        return last
    if not Path(value).is_dir():
        raise ValueError(f"resume_from_checkpoint={value!r} is not a folder; give a checkpoint-N folder, `latest` or "
                         "`auto`")
    return value


def summarize_log_history(log_history: list[dict]) -> dict[str, Any]:
    """The training-loss summary of the model card: first/last/min loss, steps, tokens, runtime, and the loss curve
    (at most 20 points)."""
    losses = [(h["step"], h["loss"]) for h in log_history if "loss" in h]
    final = next((h for h in reversed(log_history) if "train_runtime" in h), {})
    summary: dict[str, Any] = {"logged_steps": len(losses)}
    if losses:
        stride = max(1, len(losses) // 20)
        curve = losses[::stride]
        if curve[-1] != losses[-1]:
            curve.append(losses[-1])
        summary.update(first_loss=losses[0][1], last_loss=losses[-1][1], min_loss=min(v for _, v in losses),
                       loss_curve=[(s, round(v, 4)) for s, v in curve])
    tokens = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    if tokens:
        summary["num_tokens"] = int(tokens[-1])
    for key in ("train_loss", "train_runtime", "train_samples_per_second", "epoch", "total_flos"):
        if key in final:
            summary[key] = final[key]
    if log_history:
        summary["global_step"] = max(h.get("step", 0) for h in log_history)
    return summary


HYPERPARAMETER_KEYS = (
    "learning_rate", "lr_scheduler_type", "warmup_steps", "num_train_epochs", "max_steps",
    "per_device_train_batch_size", "gradient_accumulation_steps", "max_length", "packing", "packing_strategy",
    "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm", "optim", "bf16", "model_dtype",
    "gradient_checkpointing", "seed", "attn_implementation", "use_liger_kernel", "torch_compile",
)


def hyperparameters(config: _RecipeConfig, model=None, tokenizer=None) -> dict[str, Any]:
    params = {k: getattr(config, k) for k in HYPERPARAMETER_KEYS}
    params = {k: (v.value if hasattr(v, "value") else v) for k, v in params.items()}
    params["world_size"] = config.world_size
    params["global_batch_size"] = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                                   * config.world_size)
    if model is not None:
        params["attn_implementation"] = model.config._attn_implementation
    if isinstance(config, MathGenieLMConfig):
        params["loss_mask"] = ("assistant text and code blocks with their <|text|>/<|code|>/<|endofblock|> tokens and "
                               "the closing <|endofmessage|>; system, user, <|assistant|> and "
                               "<|execution|>...<|endofblock|> masked")
        params["system_prompt"] = config.system_prompt
        params["mix"] = [s.to_dict() for s in config.mix_sources()]
    else:
        params["loss_mask"] = "completion only (New Problem: ... and its end-of-turn/EOS)"
        from mathgenie.training.backtranslation import resolve_prompt_format

        params["prompt_format"] = (config.prompt_format if tokenizer is None
                                   else resolve_prompt_format(config.prompt_format, tokenizer))
    return params


def train(config: _RecipeConfig) -> TrainResult:
    """Run one recipe end to end; the final model and tokenizer land in ``output_dir/model`` and, with
    ``push_repo_id``, on the Hub with a model card and ``push_tag``."""
    model, tokenizer, base = load_base(config)
    with config.main_process_first(desc="tokenizing the training data"):  # rank 0 fills the datasets cache first
        train_dataset, sources = build_dataset(config, tokenizer)
    num_tokens, num_loss_tokens = count_tokens(train_dataset)
    data_stats = {"num_sequences": len(train_dataset), "sequence_tokens": num_tokens, "loss_tokens": num_loss_tokens}
    logger.info("training on %d sequences, %d tokens (%d with loss)", *data_stats.values())
    trainer = make_trainer(config, model, tokenizer, train_dataset)
    trainer.train(resume_from_checkpoint=resolve_checkpoint(config))

    model_dir = Path(config.output_dir) / FINAL_DIR
    trainer.save_model(str(model_dir))  # every rank: gathers FSDP/ZeRO-3 shards
    summary = {**data_stats, **summarize_log_history(trainer.state.log_history)}
    params = hyperparameters(config, trainer.model, tokenizer)
    result = TrainResult(model_dir, trainer.state.global_step, summary, base, sources, params)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(model_dir))
        (model_dir / "mathgenie_training.json").write_text(json.dumps(
            {"recipe": config.recipe, "base_model": base.__dict__, "datasets": [s.to_dict() for s in sources],
             "hyperparameters": params, "train_summary": summary}, indent=2, default=str))
        if isinstance(config, BacktranslationConfig):  # the prompt format generation must use (back_translate reads it)
            from mathgenie.generation import prompt_format
            from mathgenie.training.backtranslation import prompt_record

            prompt_format.save(model_dir, prompt_record(params["prompt_format"]))
        if config.push_repo_id:
            from mathgenie.training.publish import push_trained_model

            result.push = push_trained_model(result, config)
    trainer.accelerator.wait_for_everyone()
    return result
