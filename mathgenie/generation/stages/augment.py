"""Stage 1: iterative solution augmentation (MathGenie §2, Table 1, Eq. 1), and the entry point of the MetaMath
question augmenters (`mathgenie.generation.stages.metamath`) so both run behind one interface::

    augmented = augment.run(seed, AugmentConfig(rounds=3), engine, cache=cache, stats=stats)

Round k rewrites round k-1's kept outputs (round 1 rewrites the seed solutions); each solution gets
``prompts_per_solution`` of the Table 1 prompts (drawn per solution from a hash, so the choice does not depend on
sharding) and ``n`` samples per prompt. The output is S¹ ∪ … ∪ Sᴷ: the originals are not part of it.

Within a seed's family (the seed solution and everything derived from it) a new solution is dropped when it is an
exact or near duplicate (word 3-gram Jaccard ≥ ``dedup_threshold``) of the seed or of an earlier kept member, when it
is empty or shorter than ``min_chars`` (after removing a leading "New solution:" label and lines that echo the
prompt's instructions, `strip_echo`), or when generation hit ``max_tokens`` (an unfinished solution). Families are
small (tens of rows), so the exact Jaccard is computed; no MinHash approximation is needed at this level.

Ids carry the lineage: ``{parent_id}/r{round}/p{prompt_id}/{k}``, e.g. ``gsm8k/train/3/r1/p2/0/r2/p4/0`` is sample 0
of prompt 4 in round 2, applied to sample 0 of prompt 2 in round 1 of seed ``gsm8k/train/3``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import datasets

from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache, derive_seed, make_request, run_requests, sample_params
from mathgenie.generation.config import AugmentConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.family import Family, keep, normalize, sampling
from mathgenie.generation.funnel import StageStats
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.generation.stages import metamath
from mathgenie.schema import AUGMENTED_FEATURES


def strip_echo(text: str, prompt_id: str) -> str:
    """``text`` without the label a chat model puts first ("New solution:") and without lines that repeat the
    prompt's instructions ("You must change the numbers ..."), which small models often copy."""
    template = prompts.load("mathgenie")["augment"][prompt_id]
    instructions = [normalize(line)[:40] for line in template.splitlines()
                    if "{solution}" not in line and normalize(line) not in ("", "solution:")]
    lines = [line for line in prompts.strip_solution_label(text).splitlines()
             if not any(normalize(line).startswith(i) for i in instructions)]
    return "\n".join(lines).strip()


# ---------------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class _Solution:
    id: str
    seed_id: str
    source: str
    solution: str


def run(dataset: datasets.Dataset, config: AugmentConfig, engine: Engine | None, *, template: str = "chat",
        cache: RequestCache | None = None, stats: StageStats | None = None, random_seed: int = 0,
        max_in_flight: int = 256) -> datasets.Dataset:
    """Seed rows (`schema.SEED_FEATURES`) → augmented rows (`schema.AUGMENTED_FEATURES`): every configured method's
    rows, methods in config order. ``engine`` may be None when only ``fobar`` (template-only) is configured."""
    stats = stats if stats is not None else StageStats(stage="augment")
    stats.rows_in += len(dataset)
    seeds = dataset.to_list()
    rows: list[dict] = []
    families = {s["id"]: Family(config.dedup_threshold) for s in seeds}
    for s in seeds:
        families[s["id"]].add(s["solution"])
    kw = dict(template=template, cache=cache, stats=stats, random_seed=random_seed, max_in_flight=max_in_flight)
    for method in config.methods:
        if (method != "fobar" or config.metamath_answer_paths) and engine is None and seeds:
            raise ValueError(f"augment method {method!r} needs an engine (only 'fobar' without "
                             "metamath_answer_paths is template-only)")
        if method == "mathgenie":
            rows += iterative_rewrite(seeds, config, engine, families=families, **kw)
        else:
            rows += metamath.run_method(method, seeds, config, engine, **kw)
    stats.rows_out += len(rows)
    return datasets.Dataset.from_list(rows, features=AUGMENTED_FEATURES) if rows else \
        datasets.Dataset.from_dict({k: [] for k in AUGMENTED_FEATURES}, features=AUGMENTED_FEATURES)


def choose_prompts(config: AugmentConfig, solution_id: str, round_: int, random_seed: int) -> list[str]:
    """The prompt ids applied to one solution in one round: all of them, or a hash-seeded sample."""
    ids = list(config.prompts)
    m = config.prompts_per_solution
    if m is None or m >= len(ids):
        return ids
    picked = set(random.Random(derive_seed(random_seed, "prompts", solution_id, round_)).sample(ids, m))
    return [p for p in ids if p in picked]


def iterative_rewrite(seeds: list[dict], config: AugmentConfig, engine: Engine, *, families: dict[str, Family],
                      template: str, cache: RequestCache | None, stats: StageStats, random_seed: int,
                      max_in_flight: int) -> list[dict]:
    """MathGenie: K rounds of Table 1 rewrites; returns the kept rows of all rounds."""
    valid = set(prompts.augment_prompt_ids())
    bad = [p for p in config.prompts if p not in valid]
    if bad:
        raise ValueError(f"augment.prompts has unknown prompt id(s) {bad}; the Table 1 prompts are {sorted(valid)}")
    base = sampling(config)
    model, revision = engine.spec.model, engine.spec.revision
    current = [_Solution(s["id"], s["id"], s["source"], s["solution"]) for s in seeds]
    out: list[dict] = []
    for round_ in range(1, config.rounds + 1):
        jobs, requests = [], []
        for parent in current:
            for pid in choose_prompts(config, parent.id, round_, random_seed):
                prompt = prompts.render(engine, prompts.augment_prompt(pid, parent.solution), template)
                for k in range(config.n):
                    jobs.append((parent, pid, k))
                    requests.append(make_request(engine, prompt, sample_params(base, random_seed, k)))
        if not requests:
            break
        completions = run_requests(engine, requests, cache=cache, stats=stats, max_in_flight=max_in_flight,
                                   desc=f"augment round {round_}/{config.rounds}")
        kept = []
        for (parent, pid, k), c in zip(jobs, completions):
            text = strip_echo(c.text, pid)
            if keep(text, c, config, families[parent.seed_id], stats):
                row = _Solution(f"{parent.id}/r{round_}/p{pid}/{k}", parent.seed_id, parent.source, text)
                kept.append(row)
                out.append({"id": row.id, "seed_id": row.seed_id, "source": row.source, "round": round_,
                            "prompt_id": pid, "parent_id": parent.id, "solution": text, "model": model,
                            "revision": revision, "question": None})
        current = kept
    return out


def _run(ctx: StageRun) -> datasets.Dataset:
    return run(ctx.rows, ctx.config, ctx.engine, template=ctx.template, cache=ctx.cache, stats=ctx.stats,
               random_seed=ctx.random_seed, max_in_flight=ctx.max_in_flight)


def card_prompts(cfg) -> dict:
    """The prompt texts of the configured methods, for the card."""
    section = cfg.augment
    out = {}
    if "mathgenie" in section.methods:
        out.update({f"augment prompt {p}": prompts.augment_prompt(p, "{solution}") for p in section.prompts})
    out.update({f"metamath {m}": prompts.metamath_card_prompt(m) for m in section.methods if m != "mathgenie"})
    return out


STAGE = Stage(
    name="augment", input="seed", output="augmented", features=AUGMENTED_FEATURES, config_class=AugmentConfig,
    run=_run, needs_engine=lambda config, rows: any(m != "fobar" or config.metamath_answer_paths for m in config.methods),
    push_name="mathgenie-augmented", card_params=card_prompts,
    description="Rewritten versions of the seed solutions (K rounds of solution augmentation with the rewrite "
                "prompts), each traced to the solution it rewrites.")
