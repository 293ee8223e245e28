"""Stage 3: code-integrated (LCE) solutions, and the generate → execute loop that evaluation reuses::

    results = solve_questions(engine, ["What is 2+3?"], sandbox=sandbox, params=SamplingParams(temperature=0))
    solved = solve.run(questions, SolveConfig(n=3), engine, sandbox=sandbox, cache=cache)

The loop (`solve_questions`) is a state machine over all live solutions, not lock-step rounds: a solution is
*ready* (its next block can be generated), *in the engine*, or *waiting* on the Sandbox. Every turn it submits all
ready solutions to the engine (`Engine.submit`), takes whatever the engine finished (`Engine.poll`; vLLM returns
requests as they finish), hands closed code blocks to the Sandbox (`Sandbox.submit`, a future; the solution's
session keeps its variables), and moves solutions whose execution finished back to ready, with
``<|execution|>{output}<|endofblock|>`` appended. So the engine keeps decoding the others while code runs.

Each model request generates one step: up to ``<|endofblock|>``/``<|endofmessage|>`` (``format="lce"``) or up to the
first ```python block / ```output fence (``format="markdown"``, see `MarkdownFormat`). A solution ends when the model
ends its message (``endofmessage``), when a step hits ``max_tokens`` (``length``), after ``max_blocks`` model-written
blocks (``max_blocks``; a code block that closes the budget is still run), or when its output is not in the format
(``error``). Every step is a request in the request cache, so an interrupted run replays finished steps for free
(code is re-executed on replay; a non-deterministic output then simply makes the next step a new request).
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import re
from collections import deque
from dataclasses import dataclass, field, replace

import datasets

from mathgenie import schema
from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache, sample_params
from mathgenie.generation.config import SolveConfig
from mathgenie.generation.engine import Completion, Engine, SamplingParams, request_key
from mathgenie.generation.funnel import StageStats

logger = logging.getLogger(__name__)


@dataclass
class Step:
    """What one model request added: new blocks, code to run (the last code block), or the end of the message."""

    blocks: list[dict]
    code: str | None = None
    done: bool = False
    error: bool = False


class LCEFormat:
    """MathCoder's format: `schema.render_conversation` of system + user turn, then the blocks so far; one block per
    request. ``few_shot`` adds the instruction as system prompt and a worked example as a first exchange."""

    name = "lce"
    stop = (schema.END_OF_BLOCK, schema.END_OF_MESSAGE)

    def __init__(self, system: str | None = None, few_shot: bool = False):
        self.system = system if system is not None else (prompts.lce_system() if few_shot else schema.DEFAULT_SYSTEM)
        self.few_shot = few_shot

    def prompt(self, engine: Engine, question: str, blocks: list[dict]) -> str:
        messages = [{"role": "system", "content": self.system}]
        if self.few_shot:
            example_question, example_blocks = prompts.solve_example()
            messages += [{"role": "user", "content": example_question},
                         {"role": "assistant", "content": example_blocks}]
        messages.append({"role": "user", "content": question})
        return schema.render_conversation(messages, add_generation_prompt=True) + schema.render_blocks(blocks)

    def parse(self, c: Completion) -> Step:
        text, done = c.text, False
        if text.endswith(schema.END_OF_MESSAGE):
            text, done = text[: -len(schema.END_OF_MESSAGE)], True
        elif c.finish_reason == "stop" and not text.endswith(schema.END_OF_BLOCK):
            done = True  # the model's own end-of-sequence token
        try:
            blocks = schema.parse_blocks(text, allow_partial=True)
        except schema.LCEFormatError:
            clean = text
            for tok in schema.SPECIAL_TOKENS:
                clean = clean.replace(tok, "")
            return Step([schema.block("text", clean.strip())] if clean.strip() else [], done=True, error=True)
        blocks = [b for b in blocks if b["type"] != "execution"]  # executions come from the sandbox, not the model
        code = blocks[-1]["content"] if blocks and blocks[-1]["type"] == "code" and not done else None
        return Step(blocks, code=code, done=done)


_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.DOTALL | re.I)
_OUTPUT_FENCE = "```output"


class MarkdownFormat:
    """Any chat model: the chat template, then the answer so far in markdown (```python code, ```output
    executions). A step ends at the ```output fence the model opens after a code block (a stop string) or at its
    end-of-sequence; the text up to the first closed python block is kept and anything after it (output the model
    made up) is discarded, so execution always comes from the Sandbox. Stored as LCE blocks like `LCEFormat`."""

    name = "markdown"
    stop = (_OUTPUT_FENCE,)

    def __init__(self, system: str | None = None, few_shot: bool = True):
        self.system, self.few_shot = system, few_shot

    def prompt(self, engine: Engine, question: str, blocks: list[dict]) -> str:
        system = self.system if self.system is not None else prompts.markdown_system()
        messages = [{"role": "system", "content": system}]
        if self.few_shot:
            example_question, example_blocks = prompts.solve_example()
            messages += [{"role": "user", "content": example_question},
                         {"role": "assistant", "content": self.render(example_blocks).strip()}]
        messages.append({"role": "user", "content": question.strip()})
        return engine.apply_chat_template(messages) + self.render(blocks)

    @staticmethod
    def render(blocks: list[dict]) -> str:
        parts = []
        for b in blocks:
            if b["type"] == "text":
                parts.append(b["content"].strip() + "\n")
            elif b["type"] == "code":
                parts.append("```python\n" + b["content"].strip() + "\n```\n")
            else:
                parts.append("```output\n" + b["content"].strip() + "\n```\n")
        return "".join(parts)

    def parse(self, c: Completion) -> Step:
        text = c.text
        stopped_at_output = text.endswith(_OUTPUT_FENCE)
        if stopped_at_output:
            text = text[: -len(_OUTPUT_FENCE)]
        m = _FENCE.search(text)
        if m is None:
            blocks = [schema.block("text", text.strip())] if text.strip() else []
            return Step(blocks, done=True)
        blocks = []
        if text[: m.start()].strip():
            blocks.append(schema.block("text", text[: m.start()].strip()))
        code = m.group(1).strip("\n")
        if not code.strip():
            return Step(blocks, done=True)
        blocks.append(schema.block("code", code))
        return Step(blocks, code=code)


FORMATS = {"lce": LCEFormat, "markdown": MarkdownFormat}


def make_format(name: str, system: str | None = None, few_shot: bool = False):
    if name not in FORMATS:
        raise ValueError(f"format={name!r}: expected one of {list(FORMATS)}")
    return FORMATS[name](system=system, few_shot=few_shot)


_DECIMAL_RE = re.compile(r"\d+\.\d+")


def round_decimals(text: str, places: int) -> str:
    """MathCoder's harness (``truncate_decimals`` in its ``src/inference.py``): every decimal written with more than
    ``places`` digits after the point becomes ``f"{value:.{places}f}"`` (rounded, despite the name)."""

    def repl(m: re.Match) -> str:
        value = m.group(0)
        return value if len(value) - value.index(".") - 1 <= places else f"{float(value):.{places}f}"

    return _DECIMAL_RE.sub(repl, text)


def execution_text(result) -> str:
    """A Sandbox result as the content of an execution block: what the model sees (stdout, the last expression's
    value, the traceback tail or the timeout notice; `mathgenie.execution.ExecutionResult.output`)."""
    return result.output.rstrip("\n")


@dataclass
class SolveResult:
    blocks: list[dict]
    answer: str | None
    finish_reason: str  # "endofmessage" | "max_blocks" | "length" | "error"
    num_code_blocks: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Live:
    qi: int
    k: int
    sid: str
    blocks: list[dict] = field(default_factory=list)
    model_blocks: int = 0
    num_code: int = 0
    step: int = 0
    key: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


def solve_questions(engine: Engine, questions: list[str], *, sandbox, params: SamplingParams, n: int = 1,
                    format: str = "lce", system: str | None = None, few_shot: bool = False, max_blocks: int = 16,
                    cache: RequestCache | None = None, stats: StageStats | None = None, random_seed: int = 0,
                    ids: list[str] | None = None, max_live: int = 1024, desc: str = "solve",
                    decimals: int | None = None) -> list[list[SolveResult]]:
    """``n`` LCE solutions for each question (``results[i][k]``), code run in ``sandbox`` (one session per
    solution, named ``{ids[i]}/s{k}``). Sample ``k`` is drawn with seed ``derive_seed(random_seed, k)``.
    ``decimals``: round longer decimals in every model-written block, code included, before it is kept and run
    (`round_decimals`; MathCoder's evaluation does it with 6)."""
    from tqdm.auto import tqdm

    from mathgenie.answers import extract_lce_answer

    fmt = make_format(format, system, few_shot)
    stats = stats if stats is not None else StageStats(stage="solve")
    ids = ids if ids is not None else [str(i) for i in range(len(questions))]
    base = replace(params, stop=tuple(fmt.stop), include_stop_str_in_output=True)
    results: list[list[SolveResult | None]] = [[None] * n for _ in questions]
    todo = deque((qi, k) for qi in range(len(questions)) for k in range(n))
    ready: deque[_Live] = deque()
    in_engine: dict[str, _Live] = {}
    waiting: dict[cf.Future, _Live] = {}
    live = 0
    bar = tqdm(total=len(todo), desc=desc, unit="sol", leave=False)

    def finish(s: _Live, reason: str) -> None:
        nonlocal live
        live -= 1
        sandbox.close_session(s.sid)
        results[s.qi][s.k] = SolveResult(s.blocks, extract_lce_answer(s.blocks), reason, s.num_code,
                                         s.prompt_tokens, s.completion_tokens)
        bar.update(1)

    def handle(s: _Live, c: Completion, cached: bool) -> None:
        stats.add_completion(c, cached=cached)
        s.prompt_tokens += c.prompt_tokens
        s.completion_tokens += c.completion_tokens
        s.step += 1
        step = fmt.parse(c)
        if decimals is not None:
            step = Step([schema.block(b["type"], round_decimals(b["content"], decimals)) for b in step.blocks],
                        None if step.code is None else round_decimals(step.code, decimals), step.done, step.error)
        s.blocks.extend(step.blocks)
        s.model_blocks += sum(b["type"] != "execution" for b in step.blocks)
        if step.error:
            finish(s, "error")
        elif c.finish_reason == "length":
            finish(s, "length")
        elif step.code is not None:
            s.num_code += 1
            stats.executions += 1
            waiting[sandbox.submit(step.code, session=s.sid)] = s
        elif step.done:
            finish(s, "endofmessage")
        elif s.model_blocks >= max_blocks:
            finish(s, "max_blocks")
        else:
            ready.append(s)

    try:
        while todo or ready or in_engine or waiting:
            while todo and live < max_live:
                qi, k = todo.popleft()
                ready.append(_Live(qi, k, f"{ids[qi]}/s{k}"))
                live += 1
            while ready:
                s = ready.popleft()
                p = sample_params(base, random_seed, s.k)
                prompt = fmt.prompt(engine, questions[s.qi], s.blocks)
                s.key = request_key(engine.spec, prompt, p)
                hit = cache.get(s.key) if cache is not None else None
                if hit is not None:
                    handle(s, hit, cached=True)
                    continue
                rid = f"{s.sid}#{s.step}"
                try:
                    engine.submit(rid, prompt, p)
                except ValueError as e:  # e.g. the prompt outgrew the context window
                    logger.warning("solution %s: the engine refused step %d: %s", s.sid, s.step, e)
                    finish(s, "error")
                    continue
                in_engine[rid] = s
            if in_engine:
                finished = engine.poll()
                if cache is not None and finished:
                    cache.put_many((in_engine[rid].key, c) for rid, c in finished)
                for rid, c in finished:
                    handle(in_engine.pop(rid), c, cached=False)
                if not finished and not engine.has_unfinished():
                    raise RuntimeError(f"{type(engine).__name__} lost {len(in_engine)} submitted requests")
            if waiting:
                # Block on the sandbox only when the engine has nothing to do.
                timeout = 0 if (in_engine or ready) else None
                done, _ = cf.wait(list(waiting), timeout=timeout, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    s = waiting.pop(fut)
                    s.blocks.append(schema.block("execution", execution_text(fut.result())))
                    if s.model_blocks >= max_blocks:
                        finish(s, "max_blocks")
                    else:
                        ready.append(s)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def run(dataset: datasets.Dataset, config: SolveConfig, engine: Engine, *, sandbox, cache: RequestCache | None = None,
        stats: StageStats | None = None, random_seed: int = 0, **_) -> datasets.Dataset:
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
