"""The generate → execute loop of code-integrated (LCE) solutions, shared by the solve and verify stages and by
evaluation::

    results = solve_questions(engine, ["What is 2+3?"], sandbox=sandbox, params=SamplingParams(temperature=0))

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

from mathgenie import schema
from mathgenie.generation import prompts
from mathgenie.generation.cache import RequestCache, sample_params
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
    loop = _Loop(engine, questions, sandbox=sandbox, params=params, n=n, fmt=make_format(format, system, few_shot),
                 max_blocks=max_blocks, cache=cache, stats=stats if stats is not None else StageStats(stage="solve"),
                 random_seed=random_seed, ids=ids if ids is not None else [str(i) for i in range(len(questions))],
                 max_live=max_live, decimals=decimals)
    return loop.run(desc)


class _Loop:
    """The state machine of `solve_questions` (module docstring): ``todo`` → ``ready`` → ``in_engine`` →
    ``waiting`` (on the Sandbox) → ``ready`` ..., until every solution is finished."""

    def __init__(self, engine, questions, *, sandbox, params, n, fmt, max_blocks, cache, stats, random_seed, ids,
                 max_live, decimals):
        self.engine, self.questions, self.sandbox, self.fmt = engine, questions, sandbox, fmt
        self.base = replace(params, stop=tuple(fmt.stop), include_stop_str_in_output=True)
        self.max_blocks, self.cache, self.stats, self.random_seed = max_blocks, cache, stats, random_seed
        self.ids, self.max_live, self.decimals = ids, max_live, decimals
        self.results: list[list[SolveResult | None]] = [[None] * n for _ in questions]
        self.todo = deque((qi, k) for qi in range(len(questions)) for k in range(n))
        self.ready: deque[_Live] = deque()
        self.in_engine: dict[str, _Live] = {}
        self.waiting: dict[cf.Future, _Live] = {}
        self.live = 0
        self.bar = None

    def run(self, desc: str) -> list[list[SolveResult]]:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=len(self.todo), desc=desc, unit="sol", leave=False)
        try:
            while self.todo or self.ready or self.in_engine or self.waiting:
                while self.todo and self.live < self.max_live:
                    qi, k = self.todo.popleft()
                    self.ready.append(_Live(qi, k, f"{self.ids[qi]}/s{k}"))
                    self.live += 1
                self._submit_ready()
                if self.in_engine:
                    self._poll_engine()
                if self.waiting:
                    self._collect_executions()
        finally:
            self.bar.close()
        return self.results  # type: ignore[return-value]

    def _submit_ready(self) -> None:
        while self.ready:
            s = self.ready.popleft()
            p = sample_params(self.base, self.random_seed, s.k)
            prompt = self.fmt.prompt(self.engine, self.questions[s.qi], s.blocks)
            s.key = request_key(self.engine.spec, prompt, p)
            hit = self.cache.get(s.key) if self.cache is not None else None
            if hit is not None:
                self._handle(s, hit, cached=True)
                continue
            rid = f"{s.sid}#{s.step}"
            try:
                self.engine.submit(rid, prompt, p)
            except ValueError as e:  # e.g. the prompt outgrew the context window
                logger.warning("solution %s: the engine refused step %d: %s", s.sid, s.step, e)
                self._finish(s, "error")
                continue
            self.in_engine[rid] = s

    def _poll_engine(self) -> None:
        finished = self.engine.poll()
        if self.cache is not None and finished:
            self.cache.put_many((self.in_engine[rid].key, c) for rid, c in finished)
        for rid, c in finished:
            self._handle(self.in_engine.pop(rid), c, cached=False)
        if not finished and not self.engine.has_unfinished():
            raise RuntimeError(f"{type(self.engine).__name__} lost {len(self.in_engine)} submitted requests")

    def _collect_executions(self) -> None:
        timeout = 0 if (self.in_engine or self.ready) else None  # block on the sandbox only when the engine is idle
        done, _ = cf.wait(list(self.waiting), timeout=timeout, return_when=cf.FIRST_COMPLETED)
        for fut in done:
            s = self.waiting.pop(fut)
            s.blocks.append(schema.block("execution", execution_text(fut.result())))
            if s.model_blocks >= self.max_blocks:
                self._finish(s, "max_blocks")
            else:
                self.ready.append(s)

    def _finish(self, s: _Live, reason: str) -> None:
        from mathgenie.answers import extract_lce_answer

        self.live -= 1
        self.sandbox.close_session(s.sid)
        self.results[s.qi][s.k] = SolveResult(s.blocks, extract_lce_answer(s.blocks), reason, s.num_code,
                                              s.prompt_tokens, s.completion_tokens)
        self.bar.update(1)

    def _handle(self, s: _Live, c: Completion, cached: bool) -> None:
        self.stats.add_completion(c, cached=cached)
        s.prompt_tokens += c.prompt_tokens
        s.completion_tokens += c.completion_tokens
        s.step += 1
        step = self.fmt.parse(c)
        if self.decimals is not None:
            places = self.decimals
            step = Step([schema.block(b["type"], round_decimals(b["content"], places)) for b in step.blocks],
                        None if step.code is None else round_decimals(step.code, places), step.done, step.error)
        s.blocks.extend(step.blocks)
        s.model_blocks += sum(b["type"] != "execution" for b in step.blocks)
        if step.error:
            self._finish(s, "error")
        elif c.finish_reason == "length":
            self._finish(s, "length")
        elif step.code is not None:
            s.num_code += 1
            self.stats.executions += 1
            self.waiting[self.sandbox.submit(step.code, session=s.sid)] = s
        elif step.done:
            self._finish(s, "endofmessage")
        elif s.model_blocks >= self.max_blocks:
            self._finish(s, "max_blocks")
        else:
            self.ready.append(s)
