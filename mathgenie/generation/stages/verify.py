"""Stage 4: verification-based solution filtering (MathGenie §2, Table 10)::

    verified = verify.run(solved, VerifyConfig(), engine, sandbox=sandbox, solve_config=SolveConfig())

1. **Answer consistency** (``consistency``): the solutions of a question are grouped by final answer
   (`mathgenie.answers.is_equivalent`, so ``0.5`` and ``\\frac{1}{2}`` agree; a solution without an answer agrees with
   nothing). ``unanimous`` (the paper: "removing a question if its solutions reach different answers") keeps a
   question only if all its answers agree; ``majority`` keeps the solutions of the largest group if it holds more than
   half of them; ``none`` keeps everything. ``agreement`` is the share of the question's solutions in the largest group.
2. **Verification rationale** (``rationale``): each remaining solution, flattened to text
   (`schema.blocks_to_plain_text`), goes into the Table 10 prompt; the verifier writes a code-integrated rationale
   with the same generate → execute loop as the solver (`solve.solve_questions`, greedy by default).
3. **Verdict** (`classify_verdict`): ``correct``, ``wrong`` or ``unknown``. A solution is dropped when the verdict is
   ``wrong``, and when it is ``unknown`` unless ``keep_unknown`` (default: kept, as the paper discards only solutions
   "verified as wrong").
"""

from __future__ import annotations

import re

import datasets

from mathgenie import schema
from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache
from mathgenie.generation.code_loop import solve_questions
from mathgenie.generation.config import SolveConfig, VerifyConfig
from mathgenie.generation.engine import Engine, SamplingParams
from mathgenie.generation.funnel import StageStats
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.generation.stages.solve import sandbox_hash

# A negated negative ("no errors") is positive, so it is checked first; negatives before positives because "not
# correct" contains "correct".
_NEGATED_NEGATIVE = re.compile(r"\b(no|without|not any)\s+(errors?|mistakes?|issues?|discrepanc(y|ies))\b")
_NEGATIVE = re.compile(
    r"\b(incorrect|not correct|isn't correct|is not right|wrong|errors?|mistakes?|not verified|cannot be verified|"
    r"(does|do|did)\s*n[o']t\s+match|not (equal|match|consistent)|inconsistent|mismatch|false|oversight|"
    r"apologi[sz]e)\b")
_POSITIVE = re.compile(r"\b(correct|verified|is right|matches|match|consistent|true|confirms?|confirmed|valid|"
                       r"checks out|satisf(y|ies|ied))\b")


def keyword_verdict(text: str) -> str:
    """``correct`` / ``wrong`` / ``unknown`` from the wording of a conclusion."""
    t = text.lower()
    if _NEGATED_NEGATIVE.search(t):
        t = _NEGATED_NEGATIVE.sub(" ", t)
        if not _NEGATIVE.search(t):
            return "correct"
    if _NEGATIVE.search(t):
        return "wrong"
    if _POSITIVE.search(t):
        return "correct"
    return "unknown"


def conclusion(blocks: list[dict]) -> tuple[str | None, str | None]:
    """The rationale's conclusion: (last text block after the last execution, else None; last execution output)."""
    last_text, last_exec = None, None
    for b in blocks:
        if b["type"] == "execution":
            last_exec, last_text = b["content"], None
        elif b["type"] == "text" and b["content"].strip():
            last_text = b["content"]
    return last_text, last_exec


def classify_verdict(blocks: list[dict], solution_answer: str | None, rule: str = "keywords+boxed",
                     equivalent=None) -> str:
    """The verdict of a verification rationale (``blocks``) on a solution whose answer is ``solution_answer``.

    - ``keywords``: the concluding text (the last text block after the last execution) is classified by wording:
      a negative (``incorrect``, ``not correct``, ``wrong``, ``error``, ``mistake``, ``does not match``, ``False``,
      ``apologize`` …) → ``wrong``; else a positive (``correct``, ``verified``, ``matches``, ``True`` …) →
      ``correct``. With no concluding text, an execution output whose last line is ``True``/``False`` decides.
    - ``boxed``: the verifier restates an answer (``\\boxed{}`` / ``The answer is``, via
      `mathgenie.answers.extract_answer` on its text blocks): equivalent to the solution's → ``correct``, else
      ``wrong``.
    - ``keywords+boxed``: ``wrong`` if either rule says ``wrong``; else ``correct`` if either says ``correct``.

    Anything else is ``unknown``.
    """
    from mathgenie import answers

    equivalent = equivalent or answers.is_equivalent
    if rule not in ("keywords", "boxed", "keywords+boxed"):
        raise ValueError(f"verdict rule {rule!r}: expected 'keywords', 'boxed' or 'keywords+boxed'")
    verdicts = []
    if rule in ("keywords", "keywords+boxed"):
        text, execution = conclusion(blocks)
        v = keyword_verdict(text) if text else "unknown"
        if v == "unknown" and execution is not None:
            lines = [line.strip() for line in execution.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else ""
            v = {"True": "correct", "False": "wrong"}.get(last, "unknown")
        verdicts.append(v)
    if rule in ("boxed", "keywords+boxed"):
        restated = answers.extract_answer("\n".join(b["content"] for b in blocks if b["type"] == "text"))
        if restated is None or solution_answer is None:
            verdicts.append("unknown")
        else:
            same = restated.strip() == solution_answer.strip() or equivalent(restated, solution_answer)
            verdicts.append("correct" if same else "wrong")
    if "wrong" in verdicts:
        return "wrong"
    return "correct" if "correct" in verdicts else "unknown"


def answer_groups(answers_: list[str | None], equivalent=None) -> list[list[int]]:
    """Indices grouped by equivalent answer, largest group first (ties: first seen). ``None`` answers are singletons."""
    from mathgenie import answers

    equivalent = equivalent or answers.is_equivalent
    groups: list[tuple[str | None, list[int]]] = []
    for i, a in enumerate(answers_):
        for rep, members in groups:
            if a is not None and rep is not None and (a.strip() == rep.strip() or equivalent(a, rep)):
                members.append(i)
                break
        else:
            groups.append((a, [i]))
    ordered = sorted(enumerate(groups), key=lambda t: (-len(t[1][1]), t[0]))
    return [members for _, (_, members) in ordered]


def consistent(rows: list[dict], rule: str, stats: StageStats, equivalent=None) -> list[tuple[dict, float]]:
    """The solutions that pass the consistency rule, with their question's agreement."""
    by_question: dict[str, list[dict]] = {}
    for row in rows:
        by_question.setdefault(row["question_id"], []).append(row)
    kept = []
    for sols in by_question.values():
        groups = answer_groups([s["answer"] for s in sols], equivalent)
        top = groups[0]
        agreement = len(top) / len(sols)
        if rule == "none":
            kept += [(s, agreement) for s in sols]
        elif sols[top[0]]["answer"] is None:
            stats.drop("no_answer", len(sols))
        elif rule == "unanimous":
            if len(top) == len(sols):
                kept += [(s, agreement) for s in sols]
            else:
                stats.drop("inconsistent", len(sols))
        elif 2 * len(top) > len(sols):  # majority
            kept += [(sols[i], agreement) for i in sorted(top)]
            stats.drop("minority", len(sols) - len(top))
        else:
            stats.drop("no_majority", len(sols))
    return kept


def run(dataset: datasets.Dataset, config: VerifyConfig, engine: Engine | None, *, sandbox=None,
        solve_config: SolveConfig | None = None, cache: RequestCache | None = None, stats: StageStats | None = None,
        random_seed: int = 0, equivalent=None) -> datasets.Dataset:
    """Solved rows → verified rows (`schema.VERIFIED_FEATURES`): consistency, then rationale and verdict."""
    stats = stats if stats is not None else StageStats(stage="verify")
    solve_config = solve_config or SolveConfig()
    rows = dataset.to_list()
    stats.rows_in += len(rows)
    kept = consistent(rows, config.consistency, stats, equivalent)
    rationales: list[list[dict]] = [[] for _ in kept]
    verdicts = ["unknown"] * len(kept)
    model = revision = None
    if config.rationale and kept:
        if engine is None or sandbox is None:
            raise ValueError("verify.rationale=true needs an engine and a sandbox")
        model, revision = engine.spec.model, engine.spec.revision
        questions = [prompts.verify_prompt(row["question"], schema.blocks_to_plain_text(row["blocks"]))
                     for row, _ in kept]
        params = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens)
        results = solve_questions(
            engine, questions, sandbox=sandbox, params=params, n=1,
            format=config.format or solve_config.format, system=solve_config.system,
            few_shot=solve_config.few_shot if config.few_shot is None else config.few_shot,
            max_blocks=config.max_blocks, cache=cache, stats=stats, random_seed=random_seed,
            ids=[f"verify/{row['solution_id']}" for row, _ in kept], max_live=solve_config.max_live, desc="verify")
        for i, ((row, _), per) in enumerate(zip(kept, results)):
            rationales[i] = per[0].blocks
            verdicts[i] = classify_verdict(per[0].blocks, row["answer"], config.verdict_rule, equivalent)
    out = []
    for (row, agreement), rationale, verdict in zip(kept, rationales, verdicts):
        if verdict == "wrong":
            stats.drop("verdict_wrong")
            continue
        if verdict == "unknown" and config.rationale and not config.keep_unknown:
            stats.drop("verdict_unknown")
            continue
        out.append({**row, "agreement": agreement, "verification": rationale, "verdict": verdict,
                    "verifier_model": model, "verifier_revision": revision})
    stats.rows_out += len(out)
    return datasets.Dataset.from_list(out, features=schema.VERIFIED_FEATURES) if out else \
        schema.empty_dataset("verified")


def _run(ctx: StageRun) -> datasets.Dataset:
    return run(ctx.rows, ctx.config, ctx.engine, sandbox=ctx.sandbox, solve_config=ctx.pipeline.solve,
               cache=ctx.cache, stats=ctx.stats, random_seed=ctx.random_seed)


def _hash_extra(cfg) -> dict:
    solver_format = {k: getattr(cfg.solve, k) for k in ("format", "system", "few_shot")}
    return {"solver_format": solver_format, "sandbox": sandbox_hash(cfg)}


def card_prompts(cfg) -> dict:
    fmt = cfg.verify.format or cfg.solve.format
    few = cfg.solve.few_shot if cfg.verify.few_shot is None else cfg.verify.few_shot
    return {"verification prompt": prompts.verify_prompt("{question}", "{solution}"), "rationale format": fmt,
            "system prompt": prompts.system_for_card(fmt, cfg.solve.system, few)}


STAGE = Stage(
    name="verify", input="solve", output="verified", features=schema.VERIFIED_FEATURES, config_class=VerifyConfig,
    run=_run, needs_engine=lambda config, rows: config.rationale, needs_sandbox=True, model_from="solve",
    hash_extra=_hash_extra, card_params=card_prompts,
    description="Solved rows that passed verification (answer consistency and a code-based verification "
                "rationale), by the filter rules of this run listed below.")
