"""What a pipeline stage is. Each module of `mathgenie.generation.stages` declares one `Stage`; the ordered registry
`mathgenie.generation.stages.STAGES` is all the pipeline, the Ray executor, the push, the cards and the CLI know
about stages. A stage's ``run`` gets a `StageRun` (its input rows of one shard, its config section, the engine,
Sandbox and request cache it asked for) and returns its output rows::

    def run(ctx: StageRun) -> datasets.Dataset:
        kept = ctx.rows.filter(lambda q: len(q) < ctx.config.max_chars, input_columns="question")
        ctx.stats.rows_in, ctx.stats.rows_out = len(ctx.rows), len(kept)
        ctx.stats.drop("too_long", len(ctx.rows) - len(kept))
        return kept

    LENGTH_FILTER = Stage(name="length_filter", input="verify", output="short", features=VERIFIED_FEATURES,
                          config_class=LengthFilterConfig, run=run)
    Pipeline(cfg, stages=[*STAGES, LENGTH_FILTER]).run()

Nothing a stage does may cross seed families (every row keeps its ``seed_id``), so the union of its shards' outputs is
its unsharded output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import datasets

from mathgenie.generation.cache import RequestCache
from mathgenie.generation.config import ModelConfig, PipelineConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.funnel import StageStats


@dataclass
class StageRun:
    """What a stage's ``run`` gets for one shard."""

    rows: datasets.Dataset  # the input stage's rows of this shard (empty for a stage without input)
    config: Any  # this stage's config section (an instance of its ``config_class``)
    pipeline: PipelineConfig  # the whole run's config, for settings shared by stages
    stats: StageStats  # to fill: rows in/out, drop reasons, tokens (the engine helpers count requests)
    engine: Engine | None = None  # loaded when the stage says it needs one
    sandbox: Any = None  # a `mathgenie.execution.Sandbox` when ``needs_sandbox``
    cache: RequestCache | None = None  # this stage's request cache (resume), for stages with an engine
    template: str = "chat"  # how prompts reach the stage's model (`ModelConfig.template`)
    report: dict = field(default_factory=dict)  # anything the stage wants kept in its manifest and shown in its card

    @property
    def random_seed(self) -> int:
        return self.pipeline.random_seed

    @property
    def max_in_flight(self) -> int:
        return self.pipeline.max_in_flight


@dataclass(frozen=True)
class Stage:
    """One pipeline stage, declared once."""

    name: str  # config section, `--stages` name, funnel row
    input: str | None  # the stage whose output rows it reads; None: it makes its own rows (the seed)
    output: str  # its folder under output_dir (`mathgenie.shards.StageStore`) and dataset name
    features: datasets.Features  # the schema of its rows
    config_class: type  # its config section; `PipelineConfig` has a field named after the stage
    run: Callable[[StageRun], datasets.Dataset]
    needs_engine: bool | Callable[[Any, datasets.Dataset], bool] = False  # or (config, rows) -> bool
    needs_sandbox: bool = False
    sharded: bool = True  # False: built whole once (the seed); readers take their shard from it
    model_from: str | None = None  # a stage whose model is this one's default (verify: solve's, M_code does both)
    unhashed: tuple[str, ...] = ()  # fields of its config that change speed, not rows (kept out of the hash)
    hash_extra: Callable[[PipelineConfig], dict] | None = None  # other settings its rows depend on
    hash_parts: Callable[[PipelineConfig], dict] | None = None  # replaces the default hash input entirely
    push_name: str | None = None  # its Hub dataset name when the run is pushed (None: not pushed by default)
    description: str = ""  # what its rows are, for the dataset card
    card_params: Callable[[PipelineConfig], dict] | None = None  # prompts and formats shown in its card
    card_section: Callable[[list[dict]], dict[str, str]] | None = None  # card sections from its shards' reports

    def uses_engine(self) -> bool:
        return self.needs_engine is not False

    def wants_engine(self, config: Any, rows: datasets.Dataset) -> bool:
        if not len(rows) or not self.uses_engine():
            return False
        return self.needs_engine if isinstance(self.needs_engine, bool) else bool(self.needs_engine(config, rows))


def section(cfg: PipelineConfig, stage: Stage) -> Any:
    """The stage's config section: ``cfg.<name>``, or the config class's defaults for a stage `PipelineConfig` has
    no field for (a stage added in user code)."""
    value = getattr(cfg, stage.name, None)
    return value if isinstance(value, stage.config_class) else stage.config_class()


def model_for(cfg: PipelineConfig, stage: Stage) -> ModelConfig:
    """The stage's own ``model``, else that of its ``model_from`` stage, else the top-level ``model``."""
    for name in (stage.name, stage.model_from):
        model = getattr(getattr(cfg, name, None) if name else None, "model", None)
        if model is not None:
            return model
    return cfg.model


def hash_input(cfg: PipelineConfig, stage: Stage) -> dict:
    """What the stage's config hash covers besides the hash of its input stage: its own config (the model as
    resolved), the global seed when it samples, and ``hash_extra``."""
    if stage.hash_parts is not None:
        return stage.hash_parts(cfg)
    config = dataclasses.asdict(section(cfg, stage))
    for key in ("model", *stage.unhashed):
        config.pop(key, None)
    parts = {"config": config}
    if stage.uses_engine():
        parts |= {"model": dataclasses.asdict(model_for(cfg, stage)), "seed": cfg.random_seed}
    if stage.hash_extra is not None:
        parts |= stage.hash_extra(cfg)
    return parts


def check_registry(stages: Sequence[Stage]) -> tuple[Stage, ...]:
    """``stages`` as a tuple, checked: unique names and outputs, every input an earlier stage."""
    seen: set[str] = set()
    outputs: set[str] = set()
    for stage in stages:
        if stage.name in seen or stage.name == "push" or stage.output in outputs:
            raise ValueError(f"stage {stage.name!r}: its name or output {stage.output!r} is taken (or is 'push')")
        if stage.input is not None and stage.input not in seen:
            raise ValueError(f"stage {stage.name!r} reads {stage.input!r}, which is not an earlier stage; stages are "
                             f"{[s.name for s in stages]}")
        seen.add(stage.name)
        outputs.add(stage.output)
    return tuple(stages)
