"""MetaMath's question augmenters (Yu et al., 2024, §3), behind the augment interface so one pipeline can compare
question sources (MathGenie Table 7: MetaMath augmentation vs. back-translation) with the same solver and filters.

They write *questions*: rows in `schema.AUGMENTED_FEATURES` with ``question`` set and ``solution`` = the seed's
solution (the source the question came from); the back-translation stage passes such rows through unchanged.

- ``rephrase``: the model rephrases the seed question (few-shot, ``n`` samples); id ``{seed_id}/rephrase/{k}``.
- ``fobar`` (template only, no model): one number of the question is masked as ``x`` (``X`` for MATH) and "If we
  know the answer to the above question is {answer}, what is the value of unknown variable x?" is appended; id
  ``{seed_id}/fobar/t{token index}``.
- ``self_verification``: the masked question and its answer are rewritten by the model into a declarative statement,
  then "What is the value of unknown variable x?" is appended; id ``{seed_id}/sv/t{token index}``.

Which numbers are masked (MetaMath's ``main_create_backward_questions.py``): the question is split on spaces and
every token that is a number, optionally with a leading ``$`` and trailing punctuation, gives one backward question;
the first ``max_backward_per_seed`` are used. The masked number is the answer of the backward question (not stored:
`schema` has no column for it yet).
"""

from __future__ import annotations

import re

from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache, make_request, run_requests, sample_params
from mathgenie.generation.config import AugmentConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.family import Family, keep, normalize, sampling  # noqa: F401 (normalize re-exported)
from mathgenie.generation.funnel import StageStats

_NUMBER_TOKEN = re.compile(r"^(\$?)(\d[\d,]*(?:\.\d+)?)([.,!?;:]*)$")


def number_tokens(question: str) -> list[int]:
    """Indices (in ``question.split(" ")``) of the tokens that can be masked."""
    return [i for i, tok in enumerate(question.split(" ")) if _NUMBER_TOKEN.match(tok)]


def mask_number(question: str, index: int, variable: str) -> tuple[str, str]:
    """``question`` with token ``index`` replaced by ``variable`` (currency sign and punctuation kept), and the masked
    number."""
    tokens = question.split(" ")
    m = _NUMBER_TOKEN.match(tokens[index])
    if m is None:
        raise ValueError(f"token {index} of the question is not a number: {tokens[index]!r}")
    tokens[index] = m.group(1) + variable + m.group(3)
    return " ".join(tokens), m.group(2).replace(",", "")


def _variable(source: str) -> str:
    return "X" if source == "math" else "x"


def _row(seed: dict, row_id: str, method: str, question: str, model: str | None, revision: str | None) -> dict:
    return {"id": row_id, "seed_id": seed["id"], "source": seed["source"], "round": 1, "prompt_id": method,
            "parent_id": seed["id"], "solution": seed["solution"], "model": model, "revision": revision,
            "question": question}


def _masked_questions(seeds: list[dict], config: AugmentConfig, stats: StageStats):
    """(seed, number index, variable, question with that number masked) for the backward methods, which need the
    seed's answer; at most ``config.max_backward_per_seed`` numbers of each question."""
    for seed in seeds:
        if not seed.get("answer"):
            stats.drop("no_answer")
            continue
        var = _variable(seed["source"])
        for index in number_tokens(seed["question"])[: config.max_backward_per_seed]:
            yield seed, index, var, mask_number(seed["question"], index, var)[0]


def rephrase(seeds: list[dict], config: AugmentConfig, engine: Engine, *, template: str,
             cache: RequestCache | None, stats: StageStats, random_seed: int, max_in_flight: int) -> list[dict]:
    base = sampling(config)
    jobs, requests = [], []
    for seed in seeds:
        prompt = prompts.render(engine, prompts.rephrase_messages(seed["question"]), template)
        for k in range(config.n):
            jobs.append((seed, k))
            requests.append(make_request(engine, prompt, sample_params(base, random_seed, k)))
    completions = run_requests(engine, requests, cache=cache, stats=stats, max_in_flight=max_in_flight,
                               desc="metamath rephrase")
    families = {s["id"]: Family(config.dedup_threshold) for s in seeds}
    for s in seeds:
        families[s["id"]].add(s["question"])
    out = []
    for (seed, k), c in zip(jobs, completions):
        text = _clean_question(c.text)
        if keep(text, c, config, families[seed["id"]], stats):
            out.append(_row(seed, f"{seed['id']}/rephrase/{k}", "rephrase", text, engine.spec.model,
                            engine.spec.revision))
    return out


def fobar(seeds: list[dict], config: AugmentConfig, engine: Engine | None, *, stats: StageStats,
          template: str = "chat", cache: RequestCache | None = None, random_seed: int = 0,
          max_in_flight: int = 256) -> list[dict]:
    """Template only: ``engine``, ``template``, ``cache``, ``random_seed`` and ``max_in_flight`` are unused (the
    signature of every augmenter)."""
    out = []
    for seed, index, var, masked in _masked_questions(seeds, config, stats):
        question = f"{masked} {prompts.fobar_suffix(seed['answer'], var)}"
        out.append(_row(seed, f"{seed['id']}/fobar/t{index}", "fobar", question, None, None))
    return out


def self_verification(seeds: list[dict], config: AugmentConfig, engine: Engine, *, template: str,
                      cache: RequestCache | None, stats: StageStats, random_seed: int,
                      max_in_flight: int) -> list[dict]:
    base = sampling(config)
    jobs, requests = [], []
    for seed, index, var, masked in _masked_questions(seeds, config, stats):
        prompt = prompts.render(engine, prompts.sv_messages(masked, seed["answer"]), template)
        jobs.append((seed, index, var))
        requests.append(make_request(engine, prompt, sample_params(base, random_seed, 0)))
    completions = run_requests(engine, requests, cache=cache, stats=stats, max_in_flight=max_in_flight,
                               desc="metamath self-verification")
    families = {s["id"]: Family(config.dedup_threshold) for s in seeds}
    out = []
    for (seed, index, var), c in zip(jobs, completions):
        statement = _clean_question(c.text)
        if not re.search(rf"(?<![A-Za-z]){var}(?![A-Za-z])", statement):  # the unknown must survive the rewrite
            stats.drop("variable_lost")
            continue
        question = f"{statement} {prompts.sv_suffix(var)}"
        if keep(question, c, config, families[seed["id"]], stats):
            out.append(_row(seed, f"{seed['id']}/sv/t{index}", "self_verification", question, engine.spec.model,
                            engine.spec.revision))
    return out


def _clean_question(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^(\*\*)?\s*(rephrased question|question|statement)\s*:\s*(\*\*)?\s*", "", text, flags=re.I)
    return normalize_spaces(text)


def normalize_spaces(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


AUGMENTERS = {"rephrase": rephrase, "self_verification": self_verification, "fobar": fobar}

__all__ = ["AUGMENTERS", "fobar", "mask_number", "normalize", "number_tokens", "rephrase", "self_verification"]
