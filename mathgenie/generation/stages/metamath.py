"""MetaMath's augmenters (Yu et al., ICLR 2024, §3), behind the augment interface so one pipeline can compare question
sources (MathGenie Table 7: MetaMath augmentation vs. back-translation) with the same solver and filters. Prompts and
rules follow MetaMath's published generation code (github.com/meta-math/MetaMath, ``code_for_generating_data``),
re-implemented; its 8-shot prompts are in ``prompts/metamath.yaml`` (GSM8K prompts for GSM8K seeds, MATH ones for MATH).

They write *questions*: rows in `schema.AUGMENTED_FEATURES` with ``question`` set; the back-translation stage passes
such rows through unchanged.

- ``ansaug``: answer augmentation, the seed question itself with ``n`` new answer paths; id ``{seed_id}/ansaug/{k}``.
- ``rephrase``: ``n`` rephrasings of the seed question; id ``{seed_id}/rephrase/{k}``.
- ``fobar``: one number of the question masked as ``x`` (``X`` for MATH), then on a new line "If we know the answer to
  the above question is {answer}, what is the value of unknown variable x?" (MATH: ``### `` first and ``$X$``); id
  ``{seed_id}/fobar/t{token index}``.
- ``self_verification``: the masked question's last sentence and the answer are rewritten by the model into a
  statement, then "What is the value of unknown variable x?" (``$X$``) is appended; id ``{seed_id}/sv/t{index}``.

MetaMath's answer rule (``metamath_answer_paths``, on by default): every question gets one chain-of-thought answer path
from the 8-shot answer prompt (``ansaug`` forward for rephrase/AnsAug; ``sv_cot``/``fobar_cot`` backward) and is kept
only when the path's answer equals the expected one (the seed's answer; the masked number for FOBAR/SV), by
`mathgenie.answers.check_batch`; the path becomes the row's ``solution`` (else the seed's solution is kept).

Which numbers are masked (MetaMath's ``main_create_backward_questions.py``): the question is split on spaces; a token
is a number when it has a digit, no letter and none of ``: ( ) * " + - –`` or a newline, or (GSM8K only) when it is one
of MetaMath's number words (``five``; ``half`` becomes ``x%`` with answer 50). The digits from the first to the last
become the variable, what is around them stays (``$1,200.`` → ``$x.``, answer ``1200``; MetaMath drops the ``$`` when
punctuation follows, which we do not). The first ``max_backward_per_seed`` numbers of a question are used.
"""

from __future__ import annotations

import dataclasses
import re

from mathgenie.generation import prompts
from mathgenie.generation.family import Family, keep, normalize, sampling  # noqa: F401 (normalize re-exported)
from mathgenie.generation.cache import RequestCache, make_request, run_requests, sample_params
from mathgenie.generation.config import AugmentConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.funnel import StageStats

_NOT_A_NUMBER = re.compile(r"[A-Za-z\n:()*\"+\-–]")
_STOP = ("\n\nQuestion:",)  # the few-shot pattern continuing: the answer is over


def _is_number(token: str, source: str) -> bool:
    if source != "math" and token in prompts.number_words():
        return True
    return bool(re.search(r"\d", token)) and not _NOT_A_NUMBER.search(token)


def number_tokens(question: str, source: str = "gsm8k") -> list[int]:
    """Indices (in ``question.split(" ")``) of the tokens that can be masked."""
    return [i for i, tok in enumerate(question.split(" ")) if _is_number(tok, source)]


def mask_number(question: str, index: int, variable: str, source: str = "gsm8k") -> tuple[str, str]:
    """``question`` with the number of token ``index`` replaced by ``variable`` (what surrounds its digits kept), and
    the masked number (commas dropped)."""
    tokens = question.split(" ")
    token = tokens[index]
    if not _is_number(token, source):
        raise ValueError(f"token {index} of the question is not a number: {token!r}")
    token = prompts.number_words().get(token, token) if source != "math" else token
    digits = [i for i, ch in enumerate(token) if ch.isdigit()]
    first, last = digits[0], digits[-1] + 1
    tokens[index] = token[:first] + variable + token[last:]
    return " ".join(tokens), token[first:last].replace(",", "")


def _variable(source: str) -> str:
    return "X" if source == "math" else "x"


def _suffix_variable(source: str) -> str:
    return "$X$" if source == "math" else "x"  # MetaMath writes MATH's unknown in LaTeX in the appended question


def _row(seed: dict, row_id: str, method: str, question: str, model: str | None, revision: str | None) -> dict:
    return {"id": row_id, "seed_id": seed["id"], "source": seed["source"], "round": 1, "prompt_id": method,
            "parent_id": seed["id"], "solution": seed["solution"], "model": model, "revision": revision,
            "question": question}


def _masked_questions(seeds: list[dict], config: AugmentConfig, stats: StageStats):
    """(seed, number index, masked number, question with it masked) for the backward methods, which need the seed's
    answer; at most ``config.max_backward_per_seed`` numbers of each question."""
    for seed in seeds:
        if not seed.get("answer"):
            stats.drop("no_answer")
            continue
        var, src = _variable(seed["source"]), seed["source"]
        for index in number_tokens(seed["question"], src)[: config.max_backward_per_seed]:
            masked, number = mask_number(seed["question"], index, var, src)
            yield seed, index, number, masked


def _generate(engine: Engine, texts: list[str], config: AugmentConfig, *, template: str, samples: list[int],
              cache: RequestCache | None, stats: StageStats, random_seed: int, max_in_flight: int, desc: str):
    """One completion per prompt text (sample index ``samples[i]``), the few-shot continuation cut off."""
    base = dataclasses.replace(sampling(config), stop=_STOP)
    requests = [make_request(engine, prompts.render(engine, text, template), sample_params(base, random_seed, k))
                for text, k in zip(texts, samples)]
    completions = run_requests(engine, requests, cache=cache, stats=stats, max_in_flight=max_in_flight, desc=desc)
    for c in completions:
        for stop in _STOP:
            c.text = c.text.split(stop)[0]
    return completions


def rephrase(seeds: list[dict], config: AugmentConfig, engine: Engine, *, stats: StageStats, **kw) -> list[dict]:
    jobs = [(seed, k) for seed in seeds for k in range(config.n)]
    texts = [prompts.rephrase_prompt(seed["question"], seed["source"]) for seed, _ in jobs]
    completions = _generate(engine, texts, config, samples=[k for _, k in jobs], stats=stats,
                            desc="metamath rephrase", **kw)
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


def ansaug(seeds: list[dict], config: AugmentConfig, engine: Engine, *, stats: StageStats, **kw) -> list[dict]:
    """The seed question with ``n`` candidate answers; `answer_paths` keeps the correct ones."""
    out = []
    for seed in seeds:
        if not seed.get("answer"):
            stats.drop("no_answer")
            continue
        out += [_row(seed, f"{seed['id']}/ansaug/{k}", "ansaug", seed["question"], engine.spec.model,
                     engine.spec.revision) for k in range(config.n)]
    return out


def fobar(seeds: list[dict], config: AugmentConfig, engine: Engine | None, *, stats: StageStats, **_) -> list[dict]:
    out = []
    for seed, index, _, masked in _masked_questions(seeds, config, stats):
        src = seed["source"]
        question = f"{masked}\n{prompts.fobar_suffix(seed['answer'], _suffix_variable(src), src)}"
        out.append(_row(seed, f"{seed['id']}/fobar/t{index}", "fobar", question, None, None))
    return out


def split_last_sentence(question: str) -> tuple[str, str]:
    """(everything before the last sentence or clause, the last one): MetaMath's SV rewrites only the asking part. A
    split point is a ``.`` or ``,`` followed by a space; none: the whole question is the last sentence."""
    cuts = [m.end() for m in re.finditer(r"[.,]\s", question.rstrip())]
    if not cuts:
        return "", question.strip()
    return question[: cuts[-1]].strip(), question[cuts[-1]:].strip()


def self_verification(seeds: list[dict], config: AugmentConfig, engine: Engine, *, stats: StageStats,
                      **kw) -> list[dict]:
    jobs, texts = [], []
    for seed, index, _, masked in _masked_questions(seeds, config, stats):
        base, last = split_last_sentence(masked)
        jobs.append((seed, index, base))
        texts.append(prompts.sv_rewrite_prompt(last, seed["answer"], seed["source"]))
    completions = _generate(engine, texts, config, samples=[0] * len(texts), stats=stats,
                            desc="metamath self-verification", **kw)
    families = {s["id"]: Family(config.dedup_threshold) for s in seeds}
    out = []
    for (seed, index, base), c in zip(jobs, completions):
        statement = f"{base} {_clean_question(c.text)}".strip()
        var = _variable(seed["source"])
        if not re.search(rf"(?<![A-Za-z]){var}(?![A-Za-z])", statement):  # the unknown must survive the rewrite
            stats.drop("variable_lost")
            continue
        question = f"{statement} {prompts.sv_suffix(_suffix_variable(seed['source']))}"
        if keep(question, c, config, families[seed["id"]], stats):
            out.append(_row(seed, f"{seed['id']}/sv/t{index}", "self_verification", question, engine.spec.model,
                            engine.spec.revision))
    return out


_VALUE_IS = r"[Tt]he value of (?:the )?(?:unknown variable )?\$?\s*{var}\s*\$? is\s*:?\s*"


def path_answer(text: str, variable: str | None = None) -> str | None:
    """The answer a MetaMath answer path states: after the last "The value of x is" (backward paths), else what
    `mathgenie.answers.extract_answer` finds (``\\boxed{}``, "The answer is")."""
    from mathgenie.answers import extract_answer

    if variable is not None:
        found = list(re.finditer(_VALUE_IS.format(var=re.escape(variable)), text))
        if found:
            answer = text[found[-1].end():].split("\n", 1)[0].strip().rstrip(".").strip().strip("$").strip()
            return answer or None
    return extract_answer(text)


def _expected(row: dict, seed: dict) -> tuple[str, str, str | None]:
    """(expected answer, answer prompt, variable) of a MetaMath row's path."""
    method = row["prompt_id"]
    if method in ("fobar", "self_verification"):
        index = int(row["id"].rsplit("/t", 1)[1])
        number = mask_number(seed["question"], index, _variable(seed["source"]), seed["source"])[1]
        return number, "fobar_cot" if method == "fobar" else "sv_cot", _variable(seed["source"])
    return seed["answer"], "ansaug", None


def answer_paths(rows: list[dict], seeds: list[dict], config: AugmentConfig, engine: Engine, *, stats: StageStats,
                 **kw) -> list[dict]:
    """MetaMath's rule: one answer path per question (per sample for AnsAug), kept only when its answer matches."""
    from mathgenie.answers import check_batch

    by_id = {s["id"]: s for s in seeds}
    expected = [_expected(r, by_id[r["seed_id"]]) for r in rows]
    texts = [prompts.answer_path_prompt(r["question"], r["source"], kind) for r, (_, kind, _) in zip(rows, expected)]
    samples = [int(r["id"].rsplit("/", 1)[1]) if r["prompt_id"] == "ansaug" else 0 for r in rows]
    completions = _generate(engine, texts, config, samples=samples, stats=stats, desc="metamath answer paths", **kw)
    answers = [path_answer(c.text, var) for c, (_, _, var) in zip(completions, expected)]
    verdicts = check_batch([(a, gold) for a, (gold, _, _) in zip(answers, expected)])
    families = {s["id"]: Family(config.dedup_threshold) for s in seeds}
    out = []
    for row, c, ok in zip(rows, completions, verdicts):
        path = c.text.strip()
        if c.finish_reason in ("length", "rejected"):  # an unfinished path proves nothing
            stats.drop("truncated" if c.finish_reason == "length" else "rejected")
        elif not ok:
            stats.drop("wrong_answer")
        elif row["prompt_id"] != "ansaug" or keep(path, c, config, families[row["seed_id"]], stats):
            out.append({**row, "solution": path, "model": engine.spec.model, "revision": engine.spec.revision})
    return out


def _clean_question(text: str) -> str:
    text = text.strip()
    text = re.sub(r"^(\*\*)?\s*(rephrased question|rephrase the above question|question|statement|result)\s*:\s*"
                  r"(\*\*)?\s*", "", text, flags=re.I)
    return normalize_spaces(text)


def normalize_spaces(text: str) -> str:
    return re.sub(r"[ \t]+", " ", text).strip()


AUGMENTERS = {"ansaug": ansaug, "rephrase": rephrase, "self_verification": self_verification, "fobar": fobar}


def run_method(method: str, seeds: list[dict], config: AugmentConfig, engine: Engine | None, **kw) -> list[dict]:
    """One MetaMath method's rows, answer-checked when ``config.metamath_answer_paths``."""
    rows = AUGMENTERS[method](seeds, config, engine, **kw)
    if config.metamath_answer_paths and rows:
        rows = answer_paths(rows, seeds, config, engine, **kw)
    return rows


__all__ = ["AUGMENTERS", "answer_paths", "fobar", "mask_number", "normalize", "number_tokens", "path_answer",
           "rephrase", "run_method", "self_verification"]
