"""Stage 3: code-integrated (LCE) solutions for the back-translated questions (`mathgenie.generation.code_loop` runs
the generate → execute loop)::

    solved = solve.run(questions, SolveConfig(n=3), engine, sandbox=sandbox, cache=cache)
"""

from __future__ import annotations

import dataclasses

import datasets

from mathgenie import schema
from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache
from mathgenie.generation.code_loop import solve_questions
from mathgenie.generation.config import SolveConfig
from mathgenie.generation.engine import Engine, SamplingParams
from mathgenie.generation.funnel import StageStats
from mathgenie.generation.stage import Stage, StageRun


def run(dataset: datasets.Dataset, config: SolveConfig, engine: Engine, *, sandbox, cache: RequestCache | None = None,
        stats: StageStats | None = None, random_seed: int = 0) -> datasets.Dataset:
    """Question rows → ``n`` solution rows per question (`schema.SOLVED_FEATURES`), ``solution_id =
    {question_id}/s{k}``. Every solution is kept, whatever its answer; the verify stage filters."""
    stats = stats if stats is not None else StageStats(stage="solve")
    rows = dataset.to_list()
    stats.rows_in += len(rows)
    params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
    results = solve_questions(engine, [r["question"] for r in rows], sandbox=sandbox, params=params, n=config.n,
                              format=config.format, system=config.system, few_shot=config.few_shot,
                              max_blocks=config.max_blocks, cache=cache, stats=stats, random_seed=random_seed,
                              ids=[r["question_id"] for r in rows], max_live=config.max_live,
                              decimals=config.round_decimals)
    out = []
    for row, per_question in zip(rows, results):
        for k, r in enumerate(per_question):
            out.append({"solution_id": f"{row['question_id']}/s{k}", "question_id": row["question_id"],
                        "seed_id": row["seed_id"], "source": row["source"], "round": row["round"],
                        "prompt_id": row["prompt_id"], "question": row["question"], "blocks": r.blocks,
                        "answer": r.answer, "finish_reason": r.finish_reason, "num_code_blocks": r.num_code_blocks,
                        "model": engine.spec.model, "revision": engine.spec.revision})
    stats.rows_out += len(out)
    return datasets.Dataset.from_list(out, features=schema.SOLVED_FEATURES) if out else schema.empty_dataset("solved")


def _run(ctx: StageRun) -> datasets.Dataset:
    return run(ctx.rows, ctx.config, ctx.engine, sandbox=ctx.sandbox, cache=ctx.cache, stats=ctx.stats,
               random_seed=ctx.random_seed)


def sandbox_hash(cfg) -> dict:
    """The Sandbox settings that can change rows (not the number of workers)."""
    sandbox = dataclasses.asdict(cfg.sandbox)
    sandbox.pop("num_workers")
    return sandbox


STAGE = Stage(
    name="solve", input="back_translate", output="solved", features=schema.SOLVED_FEATURES, config_class=SolveConfig,
    run=_run, needs_engine=True, needs_sandbox=True, unhashed=("max_live",),
    hash_extra=lambda cfg: {"sandbox": sandbox_hash(cfg)}, push_name="mathgenie-solved",
    card_params=lambda cfg: {"solution format": cfg.solve.format,
                             "system prompt": prompts.system_for_card(cfg.solve.format, cfg.solve.system,
                                                                      cfg.solve.few_shot)},
    description="Code-integrated solutions (MathCoder's LCE format: text, code and execution blocks; code was run in "
                "a sandbox between generation steps) for the back-translated questions.")
