"""The pipeline: seed → augment → back_translate → solve → verify → decontaminate (hook) → push::

    from mathgenie.generation.config import load_config
    from mathgenie.generation.pipeline import Pipeline
    funnel = Pipeline(load_config("configs/demo.yaml")).run()             # everything
    Pipeline(cfg, shard=Shard(1, 8)).run(["seed", "augment", "back_translate", "solve", "verify"])

Each stage is a pure function ``run(dataset, config, engine, ...) -> Dataset`` of its module (`augment`,
`back_translate`, `solve`, `verify`); this class only wires them: it reads the previous stage's rows of this shard
(`shards.StageStore`), loads the engine a stage needs (one at a time; a stage with the same model reuses it), gives
the stage its request cache (``{output_dir}/cache/{stage}/requests-{shard}.jsonl``), and writes the result with a
manifest. A stage whose manifest exists with the same config hash is skipped, so rerunning after a crash (even
``kill -9``) resumes at the first unfinished stage, and inside it every finished request comes from the cache.

The config hash of a stage covers its own config, its model, the global seed and the hash of the stage before it,
so changing e.g. ``solve.n`` reruns solve and verify (replaying every request that did not change from the cache).
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import time
from pathlib import Path
from typing import Callable

import datasets

from mathgenie import schema
from mathgenie.generation import augment, back_translate, solve, verify
from mathgenie.generation.cache import RequestCache
from mathgenie.generation.config import STAGE_OUTPUT, STAGES, ModelConfig, PipelineConfig, config_hash
from mathgenie.generation.engine import Engine
from mathgenie.generation.funnel import StageStats, write_funnel
from mathgenie.generation.shards import Shard, StageStore

logger = logging.getLogger(__name__)

METAMATH = ("ansaug", "rephrase", "self_verification", "fobar")
MODULES = {"augment": augment, "back_translate": back_translate, "solve": solve, "verify": verify}
INPUT_OF = {"augment": "seed", "back_translate": "augment", "solve": "back_translate", "verify": "solve",
            "decontaminate": "verify"}
OUTPUT_OF = {**STAGE_OUTPUT, "decontaminate": "decontaminated"}


def stage_hashes(cfg: PipelineConfig) -> dict[str, str]:
    """The config hash of every stage (each includes the one before it)."""

    def own(stage: str, drop: tuple = ()) -> dict:
        section = dataclasses.asdict(getattr(cfg, stage))
        for key in ("model", *drop):  # the model is hashed as resolved below; `drop` holds speed-only knobs
            section.pop(key, None)
        return {"config": section, "model": dataclasses.asdict(cfg.model_for(stage)), "seed": cfg.random_seed}

    h = {"seed": config_hash({"seed": dataclasses.asdict(cfg.seed), "limit": cfg.limit})}
    h["augment"] = config_hash({"up": h["seed"], **own("augment")})
    h["back_translate"] = config_hash({"up": h["augment"], **own("back_translate")})
    sandbox = dataclasses.asdict(cfg.sandbox)
    sandbox.pop("num_workers")
    h["solve"] = config_hash({"up": h["back_translate"], **own("solve", ("max_live",)), "sandbox": sandbox})
    solver_format = {k: getattr(cfg.solve, k) for k in ("format", "system", "few_shot")}
    h["verify"] = config_hash({"up": h["solve"], **own("verify"), "solver_format": solver_format, "sandbox": sandbox})
    h["decontaminate"] = config_hash({"up": h["verify"], "config": dataclasses.asdict(cfg.decontaminate)})
    return h


def load_model(model: ModelConfig) -> Engine:
    """The default engine factory: resolve the revision (so rows and caches name a commit), then `load_engine`."""
    from mathgenie.generation.models import load_engine, resolved_revision

    spec = model.spec()
    spec = dataclasses.replace(spec, revision=resolved_revision(spec) or spec.revision)
    return load_engine(spec, model.backend, **model.engine_kwargs)


def make_sandbox(cfg: PipelineConfig):
    from mathgenie.execution import Sandbox

    s = cfg.sandbox
    return Sandbox(timeout=s.timeout, memory_mb=s.memory_mb, max_output_chars=s.max_output_chars,
                   num_workers=s.num_workers)


class Pipeline:
    def __init__(self, config: PipelineConfig, *, shard: Shard = Shard(),
                 engine_factory: Callable[[ModelConfig], Engine] | None = None,
                 sandbox_factory: Callable | None = None):
        self.config, self.shard = config, shard
        self.root = Path(config.output_dir)
        self.hashes = stage_hashes(config)
        self._engine_factory = engine_factory or load_model
        self._owns_engines = engine_factory is None
        self._sandbox_factory = sandbox_factory or (lambda: make_sandbox(config))
        self._engine: Engine | None = None
        self._engine_key: str | None = None
        self._sandbox = None

    # -- resources ----------------------------------------------------------------------------------------------------
    def engine(self, stage: str) -> Engine:
        model = self.config.model_for(stage)
        key = config_hash(model)
        if self._engine is None or self._engine_key != key:
            self._close_engine()
            logger.info("%s: loading %s (backend %s)", stage, model.model, model.backend)
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
    def run(self, stages: list[str] | None = None) -> list[StageStats]:
        """Run ``stages`` (default: all, in order) for this shard; returns the funnel of what is on disk."""
        stages = list(STAGES) if stages is None else stages
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage(s) {unknown}; expected some of {list(STAGES)}")
        if self.shard.count > 1 and "push" in stages:
            if stages == list(STAGES):
                logger.info("shard %s: skipping push; after all shards finish, run `mathgenie run CONFIG --stages "
                            "push` without --shard", self.shard)
                stages = [s for s in stages if s != "push"]
            else:
                raise ValueError("push reads every shard: run `mathgenie run CONFIG --stages push` without --shard")
        try:
            for stage in STAGES:
                if stage not in stages:
                    continue
                if stage == "push":
                    self.push()
                elif stage == "decontaminate":
                    self.decontaminate()
                else:
                    self.run_stage(stage)
        finally:
            self.close()
        if self.shard.count > 1:  # this shard's own numbers; the merged funnel comes with the push (or funnel())
            return self.funnel(self.shard)
        funnel = self.funnel()
        if funnel:
            write_funnel(funnel, self.root)
        return funnel

    def run_stage(self, stage: str) -> StageStats:
        store, h = StageStore(self.root, OUTPUT_OF[stage]), self.hashes[stage]
        shard = Shard() if stage == "seed" else self.shard  # the seed is built whole; shards filter it when read
        if store.is_done(shard, h):
            logger.info("%s: shard %s already done (%d rows), skipping", stage, shard, store.manifest(shard)["rows"])
            return StageStats.from_dict(store.manifest(shard)["stats"])
        if stage == "seed":
            return self._write(stage, store, shard, *self._build_seed())
        up = INPUT_OF[stage]
        rows = StageStore(self.root, OUTPUT_OF[up]).read(self.hashes[up], self.shard)
        cfg = getattr(self.config, stage)
        if not len(rows):  # an empty shard (more shards than seed families): nothing to do, but it must be marked done
            stats = StageStats(stage=stage)
            features = schema.STAGE_FEATURES[OUTPUT_OF[stage]]
            empty = datasets.Dataset.from_dict({k: [] for k in features}, features=features)  # same schema as others
            return self._write(stage, store, shard, empty, stats, dataclasses.asdict(cfg), None)
        engine = self.engine(stage) if self._needs_engine(stage, rows) else None
        stats = StageStats(stage=stage)
        kwargs = {"template": self.config.model_for(stage).template, "random_seed": self.config.random_seed,
                  "max_in_flight": self.config.max_in_flight, "stats": stats}
        if stage in ("solve", "verify") and len(rows):
            kwargs["sandbox"] = self.sandbox()
        if stage == "verify":
            kwargs["solve_config"] = self.config.solve
        cache_dir = self.root / "cache" / stage
        logger.info("%s: shard %s, %d input rows", stage, self.shard, len(rows))
        with RequestCache(cache_dir / f"requests-{shard.suffix}.jsonl", read_dir=cache_dir) as cache, stats.timer():
            out = MODULES[stage].run(rows, cfg, engine, cache=cache, **kwargs)
        model = {"model": engine.spec.model, "revision": engine.spec.revision} if engine is not None else None
        return self._write(stage, store, shard, out, stats, dataclasses.asdict(cfg), model)

    def _needs_engine(self, stage: str, rows: datasets.Dataset) -> bool:
        if not len(rows):
            return False
        if stage == "augment":
            return self.config.augment.metamath_answer_paths or any(m != "fobar" for m in self.config.augment.methods)
        if stage == "back_translate":
            return any(q is None for q in rows["question"])
        if stage == "verify":
            return self.config.verify.rationale
        return True

    def _build_seed(self) -> tuple[datasets.Dataset, StageStats, dict, None]:
        from mathgenie.builders.seed import SeedSource, build_seed

        cfg = self.config.seed
        stats = StageStats(stage="seed")
        with stats.timer():
            sources = [SeedSource(**s) for s in cfg.sources] or None
            built = build_seed(sources, limit=cfg.limit_per_source)
            if cfg.split not in built:
                raise ValueError(f"seed.split={cfg.split!r}: the seed has splits {list(built)}")
            ds = built[cfg.split]
            if self.config.limit is not None:
                ds = ds.select(range(min(self.config.limit, len(ds))))
        stats.rows_in = stats.rows_out = len(ds)
        return ds, stats, dataclasses.asdict(cfg), None

    def _write(self, stage, store, shard, ds, stats, cfg_dict, model) -> StageStats:
        if "prompt_id" in ds.column_names:  # MathGenie's Table 1 prompts vs MetaMath's augmenters, for comparisons
            for prompt_id in ds["prompt_id"]:
                method = prompt_id if prompt_id in METAMATH else "mathgenie"
                stats.rows_by_method[method] = stats.rows_by_method.get(method, 0) + 1
        manifest = {"stage": stage, "config_hash": self.hashes[stage], "config": cfg_dict, "model": model,
                    "stats": stats.to_dict(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        store.write(shard, ds, manifest)
        logger.info("%s: shard %s wrote %d rows (%s)", stage, shard, len(ds),
                    ", ".join(f"{k}={v}" for k, v in sorted(stats.dropped.items())) or "nothing dropped")
        return stats

    def decontaminate(self) -> StageStats | None:
        """The hook of the evaluation issue: ``decontaminate.function`` ('module:function') maps the verified rows to
        the kept rows. Not configured: nothing to do (push uses the verified rows)."""
        cfg = self.config.decontaminate
        if cfg.function is None:
            logger.info("decontaminate: no function configured, skipping")
            return None
        store = StageStore(self.root, OUTPUT_OF["decontaminate"])
        if store.is_done(self.shard, self.hashes["decontaminate"]):
            return StageStats.from_dict(store.manifest(self.shard)["stats"])
        module, _, name = cfg.function.partition(":")
        fn = getattr(importlib.import_module(module), name)
        rows = StageStore(self.root, OUTPUT_OF["verify"]).read(self.hashes["verify"], self.shard)
        stats = StageStats(stage="decontaminate", rows_in=len(rows))
        with stats.timer():
            out = fn(rows, dict(cfg.options)).cast(schema.VERIFIED_FEATURES)
        stats.rows_out = len(out)
        stats.drop("contaminated", len(rows) - len(out))
        return self._write("decontaminate", store, self.shard, out, stats, dataclasses.asdict(cfg), None)

    # -- funnel and push ----------------------------------------------------------------------------------------------
    def funnel(self, shard: Shard | None = None) -> list[StageStats]:
        """Stats of every stage with a complete output, summed over shards (or of one ``shard``'s outputs)."""
        out = []
        for stage in ("seed", "augment", "back_translate", "solve", "verify", "decontaminate"):
            store = StageStore(self.root, OUTPUT_OF[stage])
            if shard is not None:
                own = Shard() if stage == "seed" else shard
                if store.is_done(own, self.hashes[stage]):
                    out.append(StageStats.from_dict(store.manifest(own)["stats"]))
                continue
            group = store.manifests(self.hashes[stage])
            if group:
                total = StageStats(stage=stage)
                for m in group:
                    total = total + StageStats.from_dict(m["stats"])
                out.append(total)
        return out

    def push(self) -> dict:
        from mathgenie.generation.publish import push_stages

        return push_stages(self)
