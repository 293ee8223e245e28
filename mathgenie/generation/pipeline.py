"""The pipeline: the stages of `mathgenie.generation.stages.STAGES` in order, then the push::

    from mathgenie.generation.config import load_config
    from mathgenie.generation.pipeline import Pipeline
    funnel = Pipeline(load_config("configs/demo.yaml")).run()             # every stage, then push if enabled
    Pipeline(cfg, shard=Shard(1, 8)).run(["seed", "augment", "back_translate", "solve", "verify"])
    Pipeline(cfg, stages=[*STAGES, MY_STAGE]).run()                       # a stage defined in your code

Each stage is a `Stage` whose ``run`` maps a `StageRun` to rows; this class only wires them: it reads the input
stage's rows of this shard (`mathgenie.shards.StageStore`), loads the engine a stage needs (one at a time; a stage
with the same model reuses it), gives the stage its request cache (``{output_dir}/cache/{stage}/requests-{shard}.jsonl``),
and writes the result with a manifest. A stage whose manifest exists with the same config hash is skipped, so rerunning
after a crash (even ``kill -9``) resumes at the first unfinished stage, and inside it every finished request comes
from the cache.

The config hash of a stage covers its own config, its model, the global seed and the hash of the stage before it
(`mathgenie.generation.stage.hash_input`), so changing e.g. ``solve.n`` reruns solve and what follows (replaying every
request that did not change from the cache).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import datasets

from mathgenie.config import config_hash
from mathgenie.generation.cache import RequestCache
from mathgenie.generation.config import ModelConfig, PipelineConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.funnel import StageStats, write_funnel
from mathgenie.generation.card_rules import filter_rules
from mathgenie.generation.publish import card_params, push_stages, pushed_names
from mathgenie.generation.stage import Stage, StageRun, check_registry, hash_input, model_for, section
from mathgenie.generation.stages import PUSH, STAGES, stage_named
from mathgenie.generation.stages.metamath import AUGMENTERS
from mathgenie.shards import Shard, StageStore

logger = logging.getLogger(__name__)


def stage_hashes(cfg: PipelineConfig, stages: Sequence[Stage] = STAGES) -> dict[str, str]:
    """The config hash of every stage (each includes the one of its input stage)."""
    hashes: dict[str, str] = {}
    for stage in stages:
        parts = hash_input(cfg, stage)
        hashes[stage.name] = config_hash(parts if stage.input is None else {"up": hashes[stage.input], **parts})
    return hashes


def load_model(model: ModelConfig) -> Engine:
    """The default engine factory: resolve the revision (so rows and caches name a commit), then `load_engine`."""
    from mathgenie.generation.engines import load_engine
    from mathgenie.generation.models import resolved_revision

    spec = model.spec()
    spec = dataclasses.replace(spec, revision=resolved_revision(spec) or spec.revision)
    return load_engine(spec, model.backend, **model.engine_kwargs)


def make_sandbox(cfg: PipelineConfig):
    from mathgenie.execution import Sandbox

    s = cfg.sandbox
    return Sandbox(timeout=s.timeout, memory_mb=s.memory_mb, max_output_chars=s.max_output_chars,
                   num_workers=s.num_workers)


def check_steps(names: Sequence[str], stages: Sequence[Stage] = STAGES) -> list[str]:
    """``names`` (stages and ``push``) in pipeline order; an unknown name is an error that lists the valid ones."""
    valid = [s.name for s in stages] + [PUSH]
    unknown = [n for n in names if n not in valid]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; expected some of {valid}")
    return [n for n in valid if n in names]


class Pipeline:
    def __init__(self, config: PipelineConfig, *, shard: Shard = Shard(), stages: Sequence[Stage] = STAGES,
                 engine_factory: Callable[[ModelConfig], Engine] | None = None,
                 sandbox_factory: Callable | None = None):
        self.config, self.shard = config, shard
        self.stages = check_registry(stages)
        self.root = Path(config.output_dir)
        self.hashes = stage_hashes(config, self.stages)
        self._engine_factory = engine_factory or load_model
        self._owns_engines = engine_factory is None
        self._sandbox_factory = sandbox_factory or (lambda: make_sandbox(config))
        self._engine: Engine | None = None
        self._engine_key: str | None = None
        self._sandbox = None

    def stage(self, name: str) -> Stage:
        return stage_named(name, self.stages)

    def store(self, stage: Stage) -> StageStore:
        return StageStore(self.root, stage.output)

    # -- resources ----------------------------------------------------------------------------------------------------
    def engine(self, stage: Stage) -> Engine:
        model = model_for(self.config, stage)
        key = config_hash(model)
        if self._engine is None or self._engine_key != key:
            self._close_engine()
            logger.info("%s: loading %s (backend %s)", stage.name, model.model, model.backend)
            self._engine, self._engine_key = self._engine_factory(model), key
        return self._engine

    def sandbox(self):
        if self._sandbox is None:
            self._sandbox = self._sandbox_factory()
        return self._sandbox

    def _close_engine(self) -> None:
        if self._engine is not None and self._owns_engines:
            self._engine.close()
        self._engine = self._engine_key = None

    def close(self) -> None:
        self._close_engine()
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None

    # -- running ------------------------------------------------------------------------------------------------------
    def run(self, names: Sequence[str] | None = None) -> list[StageStats]:
        """Run the stages ``names`` (default: all, in order, then push if ``push.enabled``) for this shard; returns
        the funnel of what is on disk."""
        default = names is None
        names = check_steps([s.name for s in self.stages] + [PUSH] if default else names, self.stages)
        if default and not self.config.push.enabled:
            names.remove(PUSH)
        if self.shard.count > 1 and PUSH in names:
            if not default:
                raise ValueError("push reads every shard: run `mathgenie run CONFIG --stages push` without --shard")
            logger.info("shard %s: skipping push; after all shards finish, run `mathgenie run CONFIG --stages push` "
                        "without --shard", self.shard)
            names.remove(PUSH)
        if PUSH in names:
            pushed_names(self.config, self.stages)  # a bad push.names fails before any stage runs
        try:
            for stage in self.stages:
                if stage.name in names:
                    self.run_stage(stage.name)
        finally:
            self.close()
        if PUSH in names:
            self.push()
        if self.shard.count > 1:  # this shard's own numbers; the merged funnel comes with the push (or funnel())
            return self.funnel(self.shard)
        funnel = self.funnel()
        if funnel:
            write_funnel(funnel, self.root)
        return funnel

    def run_stage(self, name: str) -> StageStats:
        stage = self.stage(name)
        store, h = self.store(stage), self.hashes[name]
        shard = self.shard if stage.sharded else Shard()  # a stage built whole is filtered by shard when read
        if store.is_done(shard, h):
            logger.info("%s: shard %s already done (%d rows), skipping", name, shard, store.manifest(shard)["rows"])
            return StageStats.from_dict(store.manifest(shard)["stats"])
        ctx = StageRun(rows=self._input(stage), config=section(self.config, stage), pipeline=self.config,
                       stats=StageStats(stage=name), template=model_for(self.config, stage).template)
        if stage.input is not None and not len(ctx.rows):  # an empty shard: nothing to do, but it must be marked done
            empty = datasets.Dataset.from_dict({k: [] for k in stage.features}, features=stage.features)
            return self._write(stage, store, shard, empty, ctx)
        ctx.engine = self.engine(stage) if stage.wants_engine(ctx.config, ctx.rows) else None
        ctx.sandbox = self.sandbox() if stage.needs_sandbox else None
        logger.info("%s: shard %s, %d input rows", name, shard, len(ctx.rows))
        cache_dir = self.root / "cache" / name  # a stage that may use an engine gets its request cache
        cache = RequestCache(cache_dir / f"requests-{shard.suffix}.jsonl", read_dir=cache_dir) \
            if stage.uses_engine() else contextlib.nullcontext()
        with cache as ctx.cache, ctx.stats.timer():
            out = stage.run(ctx)
        return self._write(stage, store, shard, out, ctx)

    def _input(self, stage: Stage) -> datasets.Dataset:
        if stage.input is None:
            return datasets.Dataset.from_dict({})
        up = self.stage(stage.input)
        return self.store(up).read(self.hashes[up.name], self.shard)

    def _write(self, stage: Stage, store: StageStore, shard: Shard, ds: datasets.Dataset, ctx: StageRun) -> StageStats:
        stats = ctx.stats
        if "prompt_id" in ds.column_names:  # MathGenie's Table 1 prompts vs MetaMath's augmenters, for comparisons
            for prompt_id in ds["prompt_id"]:
                method = prompt_id if prompt_id in AUGMENTERS else "mathgenie"
                stats.rows_by_method[method] = stats.rows_by_method.get(method, 0) + 1
        model = {"model": ctx.engine.spec.model, "revision": ctx.engine.spec.revision} if ctx.engine else None
        manifest = {"stage": stage.name, "input": stage.input, "config_hash": self.hashes[stage.name],
                    "config": dataclasses.asdict(ctx.config), "model": model, "stats": stats.to_dict(),
                    "report": ctx.report, "card": self._card(stage, model),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        store.write(shard, ds.cast(stage.features) if ds.features != stage.features else ds, manifest)
        logger.info("%s: shard %s wrote %d rows (%s)", stage.name, shard, len(ds),
                    ", ".join(f"{k}={v}" for k, v in sorted(stats.dropped.items())) or "nothing dropped")
        return stats

    def _card(self, stage: Stage, resolved: dict | None) -> dict:
        """What the stage's dataset card shows about how its rows were made (kept in its manifest, so `mathgenie
        push DIR` can publish the folder with the same card)."""
        return {"description": stage.description, "params": card_params(self.config, stage, resolved),
                "filter_rules": filter_rules(self.config, stage.name)}

    # -- funnel and push ----------------------------------------------------------------------------------------------
    def funnel(self, shard: Shard | None = None) -> list[StageStats]:
        """Stats of every stage with a complete output, summed over shards (or of one ``shard``'s outputs)."""
        out = []
        for stage in self.stages:
            store = self.store(stage)
            if shard is not None:
                own = shard if stage.sharded else Shard()
                if store.is_done(own, self.hashes[stage.name]):
                    out.append(StageStats.from_dict(store.manifest(own)["stats"]))
                continue
            group = store.manifests(self.hashes[stage.name])
            if group:
                total = StageStats(stage=stage.name)
                for m in group:
                    total = total + StageStats.from_dict(m["stats"])
                out.append(total)
        return out

    def push(self) -> dict:
        return push_stages(self)
