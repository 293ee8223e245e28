"""Generation throughput: our engines against raw ``vllm.LLM.generate`` on the same prompts, in the same run.

Rows (one function each, registered with ``@row``; one markdown table at the end):

- ``raw vllm.LLM.generate``: the baseline, called on the very ``LLM`` our `VLLMEngine` wraps (one engine start).
- ``VLLMEngine.generate``: our batch path (goal: >= 0.9x raw).
- ``VLLMEngine submit/poll``: the continuous path the LCE loop uses; all requests submitted at once, polled to the end.
- ``TransformersEngine.generate``: the fallback engine, batched.

Stage rows (augment, back-translate, solve with code execution) belong here too: below the engine rows write
``@row def my_row(ctx) -> Bench`` that sets up (``ctx.vllm``, ``ctx.prompts``, ``ctx.params``, ``ctx.extra``) and
returns ``Bench(name, prompts, run)`` with ``run() -> output tokens``; they land in the same table.

Prompts: the first ``--num-prompts`` GSM8K train solutions wrapped in a "rewrite this solution" chat prompt (synthetic
GSM8K-like ones if the shared data is absent). Sampling: temperature 0.7, top-p 0.95, seeded, ``--max-tokens``.
Rows run once to warm up, then ``--repeats`` rounds, interleaved; each row keeps its best run. The last column is
the CPU time of this process during that run: for vLLM rows that is the frontend (our code, detokenization; the model
runs in vLLM's worker processes), the number to compare when other jobs load the machine and wall times scatter.
Model default: SmolLM2-135M-Instruct.

    flock /tmp/mathgenie-heavy.lock python benchmarks/generation.py [--num-prompts 64] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k" / "train.jsonl"  # shipped real rows


@dataclass
class Bench:
    """One measured row: ``run()`` generates and returns the number of output tokens."""

    name: str
    prompts: int
    run: Callable[[], int]
    repeats: int | None = None  # None: --repeats
    warmup: bool = True
    baseline: str | None = None  # name of the row the ratio column compares with (None: the first row)


@dataclass
class Row:
    name: str
    prompts: int
    output_tokens: int
    seconds: float
    baseline: str | None = None
    cpu_seconds: float = float("nan")  # CPU time of this process (see the module docstring)

    @property
    def tok_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else float("nan")


ROWS: list[Callable[["Context"], Bench]] = []


def row(fn: Callable[["Context"], Bench]) -> Callable[["Context"], Bench]:
    """Register a row: ``fn(ctx)`` sets up (loads engines, builds inputs) and returns a `Bench`. Rows are timed in
    definition order, interleaved across repeats so background load hits all of them alike; the first row is the
    baseline of the ratio column."""
    ROWS.append(fn)
    return fn


@dataclass
class Context:
    args: argparse.Namespace
    extra: dict = field(default_factory=dict)  # for stage rows to share state

    @cached_property
    def spec(self):
        from mathgenie.generation.engine import ModelSpec

        return ModelSpec(self.args.model, max_model_len=self.args.max_model_len)

    @cached_property
    def vllm(self):
        from mathgenie.generation.engines import load_engine

        kwargs = {} if self.args.compile is None else {"enforce_eager": not self.args.compile}
        t = time.perf_counter()
        engine = load_engine(self.spec, backend="vllm", **kwargs)
        self.extra["vllm_start_s"] = time.perf_counter() - t
        return engine

    @cached_property
    def transformers(self):
        from mathgenie.generation.engines import load_engine

        return load_engine(self.spec, backend="transformers", batch_size=self.args.transformers_batch_size)

    @cached_property
    def prompts(self) -> list[str]:
        return [self.vllm.apply_chat_template([{"role": "user", "content": t}]) for t in rewrite_requests(self.args)]

    @cached_property
    def params(self):
        from mathgenie.generation.engine import SamplingParams

        return SamplingParams(n=1, temperature=0.7, top_p=0.95, max_tokens=self.args.max_tokens, seed=0)


def rewrite_requests(args) -> list[str]:
    if GSM8K.is_file():
        with GSM8K.open() as f:
            solutions = [json.loads(line)["solution"] for _, line in zip(range(args.num_prompts), f)]
    else:
        solutions = [f"Tom has {i} apples and buys {i + 3} more, so he has {i} + {i + 3} = {2 * i + 3} apples."
                     for i in range(args.num_prompts)]
    return [f"Rewrite this solution to a math problem so that every step is explained clearly.\n\n{s}"
            for s in solutions]


# ---------------------------------------------------------------------------------------------------------------------
# Engine rows
# ---------------------------------------------------------------------------------------------------------------------


@row
def raw_vllm(ctx: Context) -> Bench:
    engine, prompts = ctx.vllm, ctx.prompts
    raw_params = engine.sampling_params(ctx.params)  # the vllm.SamplingParams our engine sends for ctx.params

    def run() -> int:
        outputs = engine.llm.generate(prompts, raw_params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)

    return Bench("raw vllm.LLM.generate (baseline)", len(prompts), run)


@row
def vllm_engine_generate(ctx: Context) -> Bench:
    engine, prompts = ctx.vllm, ctx.prompts
    return Bench("VLLMEngine.generate", len(prompts),
                 lambda: sum(c.completion_tokens for cs in engine.generate(prompts, ctx.params) for c in cs))


@row
def vllm_engine_continuous(ctx: Context) -> Bench:
    engine, prompts = ctx.vllm, ctx.prompts

    def run() -> int:
        for i, p in enumerate(prompts):
            engine.submit(f"bench/{i}", p, ctx.params)
        done = []
        while engine.has_unfinished():
            done.extend(engine.poll())
        assert sorted(r for r, _ in done) == sorted(f"bench/{i}" for i in range(len(prompts)))
        return sum(c.completion_tokens for _, c in done)

    return Bench("VLLMEngine submit/poll (continuous)", len(prompts), run)


@row
def transformers_generate(ctx: Context) -> Bench:
    engine, prompts = ctx.transformers, ctx.prompts
    return Bench(f"TransformersEngine.generate (batch {ctx.args.transformers_batch_size})", len(prompts),
                 lambda: sum(c.completion_tokens for cs in engine.generate(prompts, ctx.params) for c in cs),
                 repeats=1, warmup=False)


# ---------------------------------------------------------------------------------------------------------------------
# Stage rows: each stage of the pipeline (its own prompts, request cache with fsync, parsing, filters, and for solve
# the Sandbox) against raw ``LLM.generate`` on exactly the prompts and sampling parameters the stage sends.
# ---------------------------------------------------------------------------------------------------------------------


def _seed_rows(ctx: Context):
    """The first --num-prompts GSM8K train problems as seed rows (synthetic ones if the shared data is absent)."""
    if "seed" not in ctx.extra:
        import datasets

        from mathgenie.schema import SEED_FEATURES

        rows = []
        if GSM8K.is_file():
            with GSM8K.open() as f:
                for _, line in zip(range(ctx.args.num_prompts), f):
                    r = json.loads(line)
                    rows.append({"id": str(r["id"]), "source": "gsm8k", "question": r["question"],
                                 "solution": r["solution"], "answer": str(r["answer"]), "level": None, "type": None})
        else:
            for i in range(ctx.args.num_prompts):
                rows.append({"id": f"synthetic/{i}", "source": "gsm8k", "question": f"Tom has {i} apples and buys "
                             f"{i + 3} more. How many apples does he have?", "solution": f"{i} + {i + 3} = {2 * i + 3}",
                             "answer": str(2 * i + 3), "level": None, "type": None})
        ctx.extra["seed"] = datasets.Dataset.from_list(rows, features=SEED_FEATURES)
    return ctx.extra["seed"]


class _Recorder:
    """Wraps an engine and records every request a stage sends (prompt, params), for the raw baseline."""

    def __init__(self, engine):
        self._engine, self.requests = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def submit(self, request_id, prompt, params):
        self.requests.append((prompt, params, request_id))
        return self._engine.submit(request_id, prompt, params)


def _raw(engine, requests) -> int:
    """Raw ``LLM.generate`` on the recorded requests, each with its own vLLM sampling parameters."""
    outputs = engine.llm.generate([r[0] for r in requests], [engine.sampling_params(r[1]) for r in requests],
                                  use_tqdm=False)
    return sum(len(c.token_ids) for o in outputs for c in o.outputs)


def _stage_bench(ctx: Context, name: str, run_stage) -> tuple[Bench, list]:
    """A Bench that runs ``run_stage(engine, cache, stats)`` with a fresh request cache each time (so nothing is a
    cache hit but every finished request is written and fsync'd, as in a pipeline run); returns its recorded
    requests of one run (made now) for the raw baseline."""
    import tempfile

    from mathgenie.generation.cache import RequestCache
    from mathgenie.generation.funnel import StageStats

    def run(engine=ctx.vllm) -> int:
        stats = StageStats()
        with tempfile.TemporaryDirectory() as tmp, RequestCache(Path(tmp) / "requests.jsonl") as cache:
            run_stage(engine, cache, stats)
        assert stats.cache_hits == 0
        return stats.generated_tokens

    recorder = _Recorder(ctx.vllm)
    run(recorder)
    return Bench(name, len(_seed_rows(ctx)), run, warmup=False), recorder.requests


@row
def stage_augment(ctx: Context) -> Bench:
    from mathgenie.generation.config import AugmentConfig
    from mathgenie.generation.stages import augment

    cfg = AugmentConfig(rounds=1, prompts_per_solution=1, n=1, temperature=0.7, top_p=0.95,
                        max_tokens=ctx.args.max_tokens)
    bench, requests = _stage_bench(ctx, "augment stage (K=1, 1 prompt/solution)", lambda e, c, s: augment.run(
        _seed_rows(ctx), cfg, e, cache=c, stats=s, max_in_flight=4096))
    ctx.extra["augment"] = requests
    bench.baseline = "raw generate: augment prompts"
    return bench


@row
def stage_augment_raw(ctx: Context) -> Bench:
    requests = ctx.extra["augment"]
    return Bench("raw generate: augment prompts", len(requests), lambda: _raw(ctx.vllm, requests))


@row
def stage_back_translate(ctx: Context) -> Bench:
    import datasets

    from mathgenie.generation.config import BackTranslateConfig
    from mathgenie.generation.stages import back_translate
    from mathgenie.schema import AUGMENTED_FEATURES

    solutions = datasets.Dataset.from_list(
        [{"id": f"{r['id']}/r1/p1/0", "seed_id": r["id"], "source": r["source"], "round": 1, "prompt_id": "1",
          "parent_id": r["id"], "solution": r["solution"], "model": None, "revision": None, "question": None}
         for r in _seed_rows(ctx)], features=AUGMENTED_FEATURES)
    cfg = BackTranslateConfig(temperature=0.7, top_p=0.95, max_tokens=ctx.args.max_tokens)
    bench, requests = _stage_bench(ctx, "back_translate stage", lambda e, c, s: back_translate.run(
        solutions, cfg, e, cache=c, stats=s, max_in_flight=4096))
    ctx.extra["back_translate"] = requests
    bench.baseline = "raw generate: back-translate prompts"
    return bench


@row
def stage_back_translate_raw(ctx: Context) -> Bench:
    requests = ctx.extra["back_translate"]
    return Bench("raw generate: back-translate prompts", len(requests), lambda: _raw(ctx.vllm, requests))


@row
def stage_solve(ctx: Context) -> Bench:
    import datasets

    from mathgenie.execution import Sandbox
    from mathgenie.generation.config import SolveConfig
    from mathgenie.generation.stages import solve
    from mathgenie.schema import BACK_TRANSLATED_FEATURES

    questions = datasets.Dataset.from_list(
        [{"question_id": f"{r['id']}/q0", "seed_id": r["id"], "source": r["source"], "round": 1, "prompt_id": "1",
          "augmented_id": r["id"], "augmented_solution": r["solution"], "question": r["question"], "model": None,
          "revision": None} for r in _seed_rows(ctx)], features=BACK_TRANSLATED_FEATURES)
    # The demo's solver settings: markdown code fences with a one-shot example (SmolLM2 does not know LCE tokens).
    cfg = SolveConfig(n=1, format="markdown", few_shot=True, temperature=0.7, top_p=0.95,
                      max_tokens=ctx.args.max_tokens, max_blocks=4)
    sandbox = ctx.extra["sandbox"] = Sandbox(timeout=5.0)
    bench, requests = _stage_bench(ctx, "solve stage (generate + execute loop)", lambda e, c, s: solve.run(
        questions, cfg, e, sandbox=sandbox, cache=c, stats=s))
    first = [r for r in requests if r[2].endswith("#0")]  # solve_questions' request ids are "{solution}#{step}"
    ctx.extra["solve"], ctx.extra["solve_first"] = requests, first
    ctx.extra["solve_steps"] = len(requests) / max(len(first), 1)
    bench.baseline = "raw generate: solve first-step prompts"
    return bench


@row
def stage_solve_raw(ctx: Context) -> Bench:
    first = ctx.extra["solve_first"]
    return Bench("raw generate: solve first-step prompts", len(first), lambda: _raw(ctx.vllm, first))


@row
def stage_solve_replay(ctx: Context) -> Bench:
    requests = ctx.extra["solve"]
    name = f"raw generate: all {len(requests)} solve requests at once ({ctx.extra['solve_steps']:.1f}/solution)"
    bench = Bench(name, len(requests), lambda: _raw(ctx.vllm, requests))
    return bench



def measure(benches: list[Bench], repeats: int) -> list[Row]:
    """Warm up every row once, then time them round-robin; each row keeps its best run."""
    for b in benches:
        if b.warmup:
            b.run()
    best: dict[int, tuple[float, int, float]] = {}
    for rep in range(max(b.repeats or repeats for b in benches)):
        for i, b in enumerate(benches):
            if rep < (b.repeats or repeats):
                t, cpu = time.perf_counter(), time.process_time()
                tokens = b.run()
                seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
                print(f"  {b.name}: {tokens / seconds:,.1f} tok/s, {cpu:.1f} CPU s", flush=True)
                if i not in best or seconds < best[i][0]:
                    best[i] = (seconds, tokens, cpu)
    return [Row(b.name, b.prompts, best[i][1], best[i][0], getattr(b, "baseline", None), best[i][2])
            for i, b in enumerate(benches)]


def render_table(rows: list[Row]) -> str:
    by_name = {r.name: r for r in rows}
    lines = ["| engine | prompts | output tokens | seconds | tok/s | ratio to raw | CPU s, this process |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = by_name[r.baseline] if r.baseline in by_name else rows[0]
        note = f" (vs {r.baseline})" if r.baseline in by_name else ""
        lines.append(f"| {r.name} | {r.prompts} | {r.output_tokens:,} | {r.seconds:.2f} | {r.tok_s:,.1f} | "
                     f"{r.tok_s / base.tok_s:.2f}x{note} | {r.cpu_seconds:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="ModelSpec.model: 'smollm2', a local path or a Hub id")
    parser.add_argument("--num-prompts", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transformers-batch-size", type=int, default=16)
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="force vLLM's torch.compile on/off (default: the engine's choice; eager on CPU)")
    parser.add_argument("--rows", default="", help="comma-separated row function names to run (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    wanted = {r for r in args.rows.split(",") if r}
    unknown = wanted - {fn.__name__ for fn in ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[fn.__name__ for fn in ROWS]}")
    ctx = Context(args)
    try:
        benches = [fn(ctx) for fn in ROWS if not wanted or fn.__name__ in wanted]
        rows = measure(benches, args.repeats)
    finally:
        for name in ("vllm", "transformers"):
            if name in ctx.__dict__:
                ctx.__dict__[name].close()
        if "sandbox" in ctx.extra:
            ctx.extra["sandbox"].close()
    import torch
    import vllm

    print(f"\nmodel {args.model}, {args.num_prompts} prompts, max_tokens {args.max_tokens}, temperature 0.7, "
          f"best of {args.repeats}; vllm {vllm.__version__}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()} x{os.cpu_count()}"
          + (f"; vLLM engine start {ctx.extra['vllm_start_s']:.0f} s" if "vllm_start_s" in ctx.extra else "")
          + ("" if args.compile is None else f", compile={args.compile}"))
    print(render_table(rows))


if __name__ == "__main__":
    main()
