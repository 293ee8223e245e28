"""Stage 0: the seed problems (GSM8K + MATH train, or the sample bundled with mathgenie), built by the
`mathgenie.builders.seed` builder. Built whole, once: every shard reads its own seed families from it."""

from __future__ import annotations

import dataclasses

import datasets

from mathgenie.builders.seed import DESCRIPTION, SeedSource, build_seed
from mathgenie.generation.config import SeedConfig
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.schema import SEED_FEATURES


def run(ctx: StageRun) -> datasets.Dataset:
    cfg = ctx.config
    sources = [SeedSource(**s) for s in cfg.sources] or None
    built = build_seed(sources, limit=cfg.limit_per_source)
    if cfg.split not in built:
        raise ValueError(f"seed.split={cfg.split!r}: the seed has splits {list(built)}")
    ds = built[cfg.split]
    if ctx.pipeline.limit is not None:
        ds = ds.select(range(min(ctx.pipeline.limit, len(ds))))
    ctx.stats.rows_in = ctx.stats.rows_out = len(ds)
    return ds


STAGE = Stage(
    name="seed", input=None, output="seed", features=SEED_FEATURES, config_class=SeedConfig, run=run, sharded=False,
    hash_parts=lambda cfg: {"seed": dataclasses.asdict(cfg.seed), "limit": cfg.limit}, description=DESCRIPTION,
    push_name="mathgenie-seed")  # pushed too, so every row's `seed_id` resolves on the Hub
