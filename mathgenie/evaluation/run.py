"""Evaluate a model on the MathGenie/MathCoder benchmarks with the solve stage's LCE generate → execute loop.

    cfg = EvalConfig(model="org/MathGenieLM", revision="v1.0", benchmarks=["gsm8k", "math500"], limit=100)
    result = evaluate_model(cfg)          # -> EvalRun: scores, predictions (a DatasetDict), files written
    print(result.table)

Decoding follows MathCoder's harness (`mathgenie.schema.render_prompt` prompt with an empty system prompt, one block
per request up to ``<|endofblock|>``/``<|endofmessage|>``, 512 new tokens per block, at most 16 blocks, code run in a
fresh session per problem with a 6 s limit), greedy by default. Options: maj@k (``n`` samples at ``temperature``,
majority of the final answers) and MathGenie's verified inference (``verify_rounds`` = k: the solution is verified
with the Table 10 prompt, and re-solved by sampling when the verdict is "wrong", up to k rounds).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import datasets
from datasets import Features, List, Value

from mathgenie import schema
from mathgenie.cards.common import redact, scrub_text
from mathgenie.evaluation import mathcoder
from mathgenie.evaluation.config import EvalConfig, EvalConfigError  # noqa: F401  (re-exported)
from mathgenie.evaluation.registry import BENCHMARKS
from mathgenie.evaluation.scoring import (
    BenchmarkScore,
    accuracy_table,
    format_scorer_comparison,
    format_table,
    majority_vote,
    score,
    score_mathcoder,
)

logger = logging.getLogger(__name__)

PREDICTION_FEATURES = Features(
    {
        "id": Value("string"),
        "benchmark": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),  # reference
        "level": Value("int32"),
        "type": Value("string"),
        "blocks": schema.BLOCKS,  # the prediction's LCE solution, executions included
        "answer_pred": Value("string"),  # its final answer (maj@k: the majority answer); null if none
        "correct": Value("bool"),  # by the run's scorer (`EvalConfig.scorer`)
        "correct_math_verify": Value("bool"),
        "correct_mathcoder": Value("bool"),  # MathCoder's harness on the last block (maj@k: the chosen sample's)
        "finish_reason": Value("string"),
        "num_code_blocks": Value("int32"),
        "sample_answers": List(Value("string")),  # maj@k: every sample's answer; verified: every attempt's answer
        "verification": schema.BLOCKS,  # verified inference: the last verification rationale
        "verdicts": List(Value("string")),  # verified inference: the verdict of each round
        "generations": Value("int32"),  # model generations (solutions + verifications) spent on the question
        "model": Value("string"),
        "revision": Value("string"),
    }
)


@dataclass
class EvalRun:
    scores: dict[str, BenchmarkScore]  # by the run's scorer
    predictions: datasets.DatasetDict  # split per benchmark
    table: str
    results: dict  # what results.json holds
    files: list[str] = field(default_factory=list)
    card_commit: str | None = None
    scores_by_scorer: dict[str, dict[str, BenchmarkScore]] = field(default_factory=dict)  # every scorer's


# ---------------------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------------------


def _solve(engine, questions, ids, sandbox, cfg: EvalConfig, *, n=1, temperature=None, random_seed=None,
           desc="eval"):
    from mathgenie.generation.code_loop import solve_questions
    from mathgenie.generation.engine import SamplingParams

    params = SamplingParams(temperature=cfg.temperature if temperature is None else temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens)
    return solve_questions(engine, questions, sandbox=sandbox, params=params, n=n, format=cfg.format,
                           system=cfg.system, few_shot=cfg.few_shot, max_blocks=cfg.max_blocks,
                           random_seed=cfg.random_seed if random_seed is None else random_seed, ids=ids, desc=desc,
                           decimals=cfg.round_decimals)


def _outcome(result, *, sample_answers=None, verification=None, verdicts=None, generations=1) -> dict:
    return {"blocks": result.blocks, "answer_pred": result.answer, "finish_reason": result.finish_reason,
            "num_code_blocks": result.num_code_blocks,
            "sample_answers": sample_answers if sample_answers is not None else [result.answer],
            "verification": verification or [], "verdicts": verdicts or [], "generations": generations}


def infer(engine, questions: list[str], ids: list[str], sandbox, cfg: EvalConfig) -> list[dict]:
    """One outcome per question (the `PREDICTION_FEATURES` prediction fields), by the decoding mode of ``cfg``."""
    if cfg.n > 1:  # maj@n
        outcomes = []
        for per_question in _solve(engine, questions, ids, sandbox, cfg, n=cfg.n, desc=f"eval maj@{cfg.n}"):
            answers = [r.answer for r in per_question]
            majority = majority_vote(answers)
            chosen = next((r for r in per_question if majority is not None and r.answer is not None
                           and r.answer == majority), per_question[0])
            outcomes.append({**_outcome(chosen, sample_answers=answers, generations=cfg.n), "answer_pred": majority})
        return outcomes
    current = [per[0] for per in _solve(engine, questions, ids, sandbox, cfg)]
    if not cfg.verify_rounds:
        return [_outcome(r) for r in current]
    return _verified(engine, questions, ids, sandbox, cfg, current)


def _verified(engine, questions, ids, sandbox, cfg: EvalConfig, current: list) -> list[dict]:
    """MathGenie §3.4: verify each solution; re-solve the ones judged wrong; at most ``verify_rounds`` rounds. The
    final solution is the last one produced (a re-solve after the last round is not verified again)."""
    from mathgenie.generation import prompts
    from mathgenie.generation.stages.verify import classify_verdict

    attempts = [[r.answer] for r in current]
    verdicts: list[list[str]] = [[] for _ in questions]
    rationale: list[list[dict]] = [[] for _ in questions]
    generations = [1] * len(questions)
    pending = list(range(len(questions)))
    for round_ in range(cfg.verify_rounds):
        if not pending:
            break
        checks = _solve(engine, [prompts.verify_prompt(questions[i], schema.blocks_to_plain_text(current[i].blocks))
                                 for i in pending], [f"verify{round_}/{ids[i]}" for i in pending], sandbox, cfg,
                        temperature=0.0, desc=f"verify round {round_ + 1}")
        rejected = []
        for i, check in zip(pending, checks):
            generations[i] += 1
            rationale[i] = check[0].blocks
            verdict = classify_verdict(check[0].blocks, current[i].answer)
            verdicts[i].append(verdict)
            if verdict == "wrong":
                rejected.append(i)
        if rejected:
            retry = _solve(engine, [questions[i] for i in rejected], [f"resolve{round_}/{ids[i]}" for i in rejected],
                           sandbox, cfg, temperature=cfg.resolve_temperature,
                           random_seed=cfg.random_seed + round_ + 1, desc=f"re-solve round {round_ + 1}")
            for i, per in zip(rejected, retry):
                current[i] = per[0]
                attempts[i].append(per[0].answer)
                generations[i] += 1
        pending = rejected
    return [_outcome(r, sample_answers=attempts[i], verification=rationale[i], verdicts=verdicts[i],
                     generations=generations[i]) for i, r in enumerate(current)]


# ---------------------------------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------------------------------


def evaluate_model(cfg: EvalConfig, *, engine=None, sandbox=None) -> EvalRun:
    """Load the benchmarks, run the model, score, write ``output_dir``, and optionally push the predictions and the
    model card. ``engine``/``sandbox`` may be passed in (they are then not closed here)."""
    from mathgenie.evaluation.benchmarks import load_benchmark

    start = time.perf_counter()
    card_repo = cfg.model_repo or (cfg.model if _is_hub_id(cfg.model) else None)
    if cfg.push_card and card_repo is None:  # fail before the (long) run, not after it
        raise EvalConfigError(f"push_card: model={cfg.model!r} is not a Hub repo id; set model_repo to the repo "
                              "whose card should get the results")
    data = {name: load_benchmark(name, data_dir=cfg.data_dir, limit=cfg.limit) for name in cfg.benchmarks}
    rows = [row for ds in data.values() for row in ds]
    logger.info("evaluating %s on %s (%d questions, %s)", cfg.model, ", ".join(f"{k}={len(v)}" for k, v in
                data.items()), len(rows), cfg.mode)
    outcomes, revision = _run_model(cfg, rows, engine, sandbox)
    by_scorer = _score_all(rows, outcomes)
    records = [{**row, **o, "correct": by_scorer[cfg.scorer][i], "correct_math_verify": by_scorer["math-verify"][i],
                "correct_mathcoder": by_scorer["mathcoder"][i], "model": cfg.model, "revision": revision}
               for i, (row, o) in enumerate(zip(rows, outcomes))]
    scores_by_scorer = {name: accuracy_table([{**r, "correct": ok} for r, ok in zip(records, verdicts)])
                        for name, verdicts in by_scorer.items()}
    scores = scores_by_scorer[cfg.scorer]
    predictions = datasets.DatasetDict({
        name: datasets.Dataset.from_list([r for r in records if r["benchmark"] == name], features=PREDICTION_FEATURES)
        for name in data if any(r["benchmark"] == name for r in records)})
    titles = {k: b.title for k, b in BENCHMARKS.items()}
    table = format_table(scores, titles=titles) + "\n\n" + format_scorer_comparison(scores_by_scorer, titles=titles)
    generations = sum(o["generations"] for o in outcomes) / max(len(outcomes), 1)
    results = {"model": cfg.model, "revision": cfg.revision, "resolved_revision": revision, "mode": cfg.mode,
               "scorer": cfg.scorer, "scores": {k: v.to_dict() for k, v in scores.items()},
               "scores_by_scorer": {name: {k: v.to_dict() for k, v in table_.items()}
                                    for name, table_ in scores_by_scorer.items()},
               "generations_per_question": generations,
               "seconds": time.perf_counter() - start, "config": redact(asdict(cfg))}  # e.g. an api_key
    run = EvalRun(scores, predictions, table, results, scores_by_scorer=scores_by_scorer)
    _write(run, Path(cfg.output_dir))
    logger.debug("results (%s):\n%s", cfg.mode, table)  # the CLI prints the table; callers get it in EvalRun
    if cfg.push_predictions:
        from mathgenie.upload import push_dataset

        configs = {name: datasets.DatasetDict({"test": ds}) for name, ds in predictions.items()}
        push_dataset(configs, cfg.push_predictions, commit_message=f"Predictions of {cfg.model} ({cfg.mode})")
    if cfg.push_card:
        from mathgenie.evaluation.model_card import push_results

        run.card_commit = push_results(card_repo, run, cfg, branch=cfg.card_branch)
    return run


def _run_model(cfg: EvalConfig, rows: list[dict], engine, sandbox) -> tuple[list[dict], str | None]:
    """The model's outcome on every row, and the Hub commit it ran (engine and sandbox made here are closed here)."""
    from mathgenie.execution import Sandbox
    from mathgenie.generation.engine import ModelSpec
    from mathgenie.generation.engines import load_engine

    own_engine = engine is None
    if own_engine:
        engine = load_engine(ModelSpec(cfg.model, revision=cfg.revision, max_model_len=cfg.max_model_len),
                             cfg.backend, **cfg.engine_kwargs)
    revision = getattr(engine, "revision", None) or cfg.revision  # the Hub commit the engine loaded, when known
    own_sandbox = sandbox is None
    if own_sandbox:
        sandbox = Sandbox(timeout=cfg.timeout, num_workers=cfg.sandbox_workers)
    try:
        outcomes = infer(engine, [r["question"] for r in rows], [f"{r['benchmark']}/{r['id']}" for r in rows],
                         sandbox, cfg)
    finally:
        if own_sandbox:
            sandbox.close()
        if own_engine:
            engine.close()
    return outcomes, revision


def _score_all(rows: list[dict], outcomes: list[dict]) -> dict[str, list[bool]]:
    """Every row's verdict by each scorer: math-verify (ours) and MathCoder's harness."""
    references = [r["answer"] for r in rows]
    return {
        "math-verify": score([o["answer_pred"] for o in outcomes], references),
        "mathcoder": score_mathcoder([mathcoder.completion(o["blocks"]) for o in outcomes], references,
                                     [r["benchmark"] for r in rows]),
    }


def _is_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not Path(name).exists() and not name.startswith((".", "/", "~"))


def _write(run: EvalRun, out: Path) -> None:
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    for name, ds in run.predictions.items():
        path = out / "predictions" / f"{name}.parquet"
        ds.to_parquet(str(path))
        run.files.append(str(path))
    (out / "results.json").write_text(scrub_text(json.dumps(run.results, indent=2, default=str)))
    (out / "results.md").write_text(scrub_text(f"# {run.results['model']} ({run.results['mode']})\n\n{run.table}\n"))
    run.files += [str(out / "results.json"), str(out / "results.md")]
