"""Stage 2: question back-translation (MathGenie §2, Table 2)::

    questions = back_translate.run(augmented, BackTranslateConfig(), engine, template="chat", cache=cache)

Each augmented solution ``s`` becomes the prompt ``Create a New Problem based on the Solution: {s}`` and the model
answers ``New Problem: {q}``. The format comes from the model itself when it was trained by `mathgenie train`
(``mathgenie_prompt.json`` in its folder, see `prompt_format`): ``raw``, the prompt goes to the model as is (the
back-translation model SFT-ed on exactly these prompt/completion pairs), or ``chat``. Any other instruct model (e.g.
the demo's) gets ``chat`` (``template="auto"``): the prompt is the user turn and the answer is prefilled with
``New Problem:`` so even a small model starts writing a question.

Cleaning (`clean_question`): the ``New Problem:`` prefix is stripped, and anything from a line that starts a
solution or answer (``Solution:``, ``Answer:``, ``Here's a possible solution``, ``The answer is``) on is cut, since an
instruct model often solves the problem it just wrote. A question is dropped (reason in the funnel) when it is empty
or shorter than ``min_chars`` (``too_short``), longer than ``max_chars`` (``too_long``), cut at ``max_tokens``
(``truncated``), made of repeated lines (``repetitive``), asks nothing (no ``?`` and no word like find/compute/what/how:
``not_a_question``), equal to its source solution (``copies_solution``) or an exact duplicate of an earlier question of
the same seed (``duplicate``).

Rows that already carry a question (MetaMath augmenters) pass through with ``question_id = {id}/q0``. Otherwise
``question_id = {augmented_id}/q{k}`` for sample ``k`` of ``n``.
"""

from __future__ import annotations

import re

import datasets

from mathgenie.generation import prompt_format, prompts
from mathgenie.generation.cache import RequestCache, make_request, run_requests, sample_params
from mathgenie.generation.config import BackTranslateConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.family import normalize, sampling
from mathgenie.generation.funnel import StageStats
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.schema import BACK_TRANSLATED_FEATURES, empty_dataset

_PREFIX = re.compile(r"^\s*(\*\*|#+\s*)?\s*new\s+(math\s+)?problem\s*(\*\*)?\s*:?\s*(\*\*)?\s*", re.I)
_SOLUTION_START = re.compile(r"^\s*(\*\*|#+\s*)?\s*(((new\s+)?solution|answer|explanation)\s*(\*\*)?\s*:|"
                             r"here('s| is) (a|the|one) (possible |new )?(solution|answer)|the (final )?answer is\b)",
                             re.I | re.M)
# A question asks something: a question mark or an imperative/interrogative word of math problems.
_QUESTION_CUE = re.compile(r"\?|\b(find|compute|calculate|determine|evaluate|simplify|solve|express|what|how|which|"
                           r"show|prove|list)\b", re.I)


def clean_question(text: str, answer_prefix: str | None = None) -> str:
    text = text.strip()
    if answer_prefix and text.startswith(answer_prefix):  # a trained model's own prefix, when not the default
        text = text[len(answer_prefix):]
    text = _PREFIX.sub("", text, count=1)
    m = _SOLUTION_START.search(text)
    if m is not None and m.start() > 0:
        text = text[: m.start()]
    return text.strip()


def is_repetitive(text: str) -> bool:
    lines = [normalize(line) for line in text.splitlines() if line.strip()]
    if len(lines) >= 3 and len(set(lines)) <= len(lines) / 2:
        return True
    words = normalize(text).split()
    return len(words) >= 40 and len(set(words)) < 0.2 * len(words)


def run(dataset: datasets.Dataset, config: BackTranslateConfig, engine: Engine | None, *, template: str = "auto",
        cache: RequestCache | None = None, stats: StageStats | None = None, random_seed: int = 0,
        max_in_flight: int = 256) -> datasets.Dataset:
    """Augmented rows → question rows (`schema.BACK_TRANSLATED_FEATURES`), in input order."""
    stats = stats if stats is not None else StageStats(stage="back_translate")
    rows = dataset.to_list()
    stats.rows_in += len(rows)
    base = sampling(config)
    fmt = None
    jobs, requests = [], []
    for i, row in enumerate(rows):
        if row.get("question"):
            continue
        if engine is None:
            raise ValueError("back_translate needs an engine for rows without a question (MathGenie rows)")
        fmt = fmt or prompt_format.for_engine(engine, template)  # the model's own training format, if it has one
        prompt = fmt.render(engine, row["solution"])
        for k in range(config.n):
            jobs.append((i, k))
            requests.append(make_request(engine, prompt, sample_params(base, random_seed, k)))
    completions = run_requests(engine, requests, cache=cache, stats=stats, max_in_flight=max_in_flight,
                               desc="back-translate") if requests else []
    generated: dict[int, list] = {}
    for (i, k), c in zip(jobs, completions):
        generated.setdefault(i, []).append((k, c))
    out, seen = [], {}
    for i, row in enumerate(rows):
        family = seen.setdefault(row["seed_id"], set())
        lineage = {key: row[key] for key in ("seed_id", "source", "round", "prompt_id")}
        if row.get("question"):
            candidates = [(f"{row['id']}/q0", row["question"], None, row["model"], row["revision"])]
        else:
            candidates = [(f"{row['id']}/q{k}", clean_question(c.text, fmt.answer_prefix), c, engine.spec.model,
                           engine.spec.revision)
                          for k, c in generated.get(i, [])]
        for qid, question, c, model, revision in candidates:
            reason = _drop_reason(question, row["solution"], c, config, family)
            if reason:
                stats.drop(reason)
                continue
            family.add(normalize(question))
            out.append({"question_id": qid, **lineage, "augmented_id": row["id"], "augmented_solution": row["solution"],
                        "question": question, "model": model, "revision": revision})
    stats.rows_out += len(out)
    return datasets.Dataset.from_list(out, features=BACK_TRANSLATED_FEATURES) if out else \
        empty_dataset("back_translated")


def _drop_reason(question: str, solution: str, c, config: BackTranslateConfig, family: set) -> str | None:
    if c is not None and c.finish_reason in ("length", "rejected"):
        return "truncated" if c.finish_reason == "length" else "rejected"
    if len(question) < config.min_chars:
        return "too_short"
    if len(question) > config.max_chars:
        return "too_long"
    if is_repetitive(question):
        return "repetitive"
    if config.require_question_cue and not _QUESTION_CUE.search(question):
        return "not_a_question"
    if normalize(question) == normalize(solution):
        return "copies_solution"
    if normalize(question) in family:
        return "duplicate"
    return None


def _run(ctx: StageRun) -> datasets.Dataset:
    return run(ctx.rows, ctx.config, ctx.engine, template=ctx.template, cache=ctx.cache, stats=ctx.stats,
               random_seed=ctx.random_seed, max_in_flight=ctx.max_in_flight)


STAGE = Stage(
    name="back_translate", input="augment", output="back_translated", features=BACK_TRANSLATED_FEATURES,
    config_class=BackTranslateConfig, run=_run,
    needs_engine=lambda config, rows: any(q is None for q in rows["question"]),
    push_name="mathgenie-back-translated",
    card_params=lambda cfg: {"back-translation prompt": prompts.back_translate_prompt("{solution}"),
                             "answer prefix (stripped)": prompts.back_translate_prefix()},
    description="New questions written from augmented solutions (question back-translation).")
