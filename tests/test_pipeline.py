"""The pipeline: stage outputs + manifests, skipping finished stages, config changes, sharding, push to the local Hub,
one end-to-end run on the real engine, and the kill -9 / resume test on a real `mathgenie run` process."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import pytest
from _scripted import ScriptedEngine

from mathgenie.generation.config import load_config
from mathgenie.generation.funnel import write_funnel
from mathgenie.generation.pipeline import Pipeline, stage_hashes
from mathgenie.generation.stage import Stage, StageRun
from mathgenie.generation.stages import STAGES
from mathgenie.schema import VERIFIED_FEATURES, blocks_to_plain_text
from mathgenie.shards import Shard, StageStore

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
GENERATED = ("augment", "back_translate", "solve", "verify", "decontaminate")
NO_PUSH = ["seed", "augment", "back_translate", "solve", "verify", "decontaminate"]
OUTPUT_OF = {s.name: s.output for s in STAGES}
# The demo config with the block budgets the scripted model's solutions and rationales need (the demo keeps them small
# for speed) and no push.
BASE = ["push.enabled=false", "solve.max_blocks=4", "verify.max_blocks=4"]


def scripted(prompt: str, params) -> str:
    """Deterministic stand-in model for every stage of the demo config (markdown solver format)."""
    hx = hashlib.sha1(f"{prompt}|{params.seed}".encode()).hexdigest()
    tail = prompt.split("<assistant>")[-1]
    if "Create a New Problem" in prompt:
        return f"Sam has {int(hx[:2], 16) % 7 + 1} boxes with 3 pens each. How many pens does Sam have ({hx[:4]})?"
    if "Please use code to verify" in prompt:
        if "```output" in tail:
            return "The solution is correct." if int(hx[0], 16) % 3 else "This is wrong."
        return "Check:\n```python\nprint(True)\n```"
    if "pens does Sam have" in prompt:
        if "```output" in tail:
            return "So the answer is \\boxed{%s}." % tail.split("```output\n")[-1].split("\n")[0]
        boxes = int(prompt.rsplit("Sam has ", 1)[1].split(" ")[0])
        return f"Multiply.\n```python\nprint({boxes} * 3)\n```"
    return f"New solution: we rewrite it as {hx[:12]} and keep going with enough words to pass."


@pytest.fixture(scope="module")
def sandbox():
    from mathgenie.execution import Sandbox

    with Sandbox(timeout=5.0, num_workers=2) as sb:
        yield sb


def make_pipeline(out: Path, sandbox, overrides=(), shard="0/1", engine=None) -> tuple[Pipeline, ScriptedEngine]:
    cfg = load_config(DEMO, [f"output_dir={out}", *BASE, *overrides])
    engine = engine or ScriptedEngine(scripted)
    return Pipeline(cfg, shard=Shard.parse(shard), engine_factory=lambda model: engine,
                    sandbox_factory=lambda: _Borrowed(sandbox)), engine


class _Borrowed:
    """The module's Sandbox, lent to a pipeline that would otherwise close it."""

    def __init__(self, sandbox):
        self._sb = sandbox

    def __getattr__(self, name):
        return getattr(self._sb, name)

    def close(self):
        pass


def rows(out: Path, stage: str, cfg_overrides=()) -> list[dict]:
    cfg = load_config(DEMO, [f"output_dir={out}", *BASE, *cfg_overrides])
    key = {"seed": "id", "augment": "id", "back_translate": "question_id"}.get(stage, "solution_id")
    return sorted(StageStore(out, OUTPUT_OF[stage]).read(stage_hashes(cfg)[stage]).to_list(), key=lambda r: r[key])


def test_every_stage_writes_parquet_and_manifest_and_a_rerun_skips_them(tmp_path, sandbox):
    pipeline, engine = make_pipeline(tmp_path, sandbox)
    funnel = pipeline.run(NO_PUSH)
    assert [s.stage for s in funnel] == NO_PUSH
    for stage in NO_PUSH:
        store = StageStore(tmp_path, OUTPUT_OF[stage])
        manifest = json.loads((store.dir / "manifest-00000-of-00001.json").read_text())
        assert manifest["config_hash"] == pipeline.hashes[stage] and manifest["shard"] == "0/1"
        assert (store.dir / manifest["files"][0]["path"]).is_file() and manifest["rows"] > 0
    assert json.loads((tmp_path / "funnel.json").read_text())["stages"][-1]["stage"] == "decontaminate"
    assert (tmp_path / "funnel.png").stat().st_size > 1000
    solved = rows(tmp_path, "solve")
    assert len(solved) == 2 * len(rows(tmp_path, "back_translate"))
    assert all(r["blocks"][2]["type"] == "execution" and r["answer"] == r["blocks"][2]["content"] for r in solved)
    verified = rows(tmp_path, "verify")
    assert 0 < len(verified) < len(solved) and {r["verdict"] for r in verified} == {"correct"}
    # a rerun finds every stage done: no engine request at all, same funnel
    again, engine2 = make_pipeline(tmp_path, sandbox)
    assert [s.rows_out for s in again.run(NO_PUSH)] == [s.rows_out for s in funnel]
    assert engine2.prompts == []


def test_a_changed_solve_config_reruns_solve_and_verify_from_the_cache(tmp_path, sandbox):
    make_pipeline(tmp_path, sandbox)[0].run(NO_PUSH)
    pipeline, engine = make_pipeline(tmp_path, sandbox, ["solve.n=3"])
    funnel = {s.stage: s for s in pipeline.run(NO_PUSH)}
    assert not any("Create a New Problem" in p or "New solution" in p for p in engine.prompts)
    # samples 0 and 1 of every question were cached; only sample 2 (and verification of new rows) is generated
    solve = funnel["solve"]
    assert solve.rows_out == 3 * funnel["back_translate"].rows_out
    assert solve.cache_hits == 2 * solve.requests // 3


def test_metamath_and_mathgenie_side_by_side_are_counted_per_method(tmp_path, sandbox):
    pipeline, engine = make_pipeline(tmp_path, sandbox, ["augment.methods=[mathgenie, fobar]", "solve.n=1",
                                                         "verify.consistency=none",
                                                         "augment.metamath_answer_paths=false"])
    funnel = {s.stage: s for s in pipeline.run(NO_PUSH)}
    fobar = [r for r in rows(tmp_path, "back_translate", ["augment.methods=[mathgenie, fobar]", "solve.n=1",
                                                          "verify.consistency=none",
                                                          "augment.metamath_answer_paths=false"])
             if r["prompt_id"] == "fobar"]
    assert fobar and all("what is the value of unknown variable" in r["question"] for r in fobar)
    assert not any("Create a New Problem" in p and "unknown variable" in p for p in engine.prompts)
    assert funnel["back_translate"].rows_by_method["fobar"] == len(fobar) == funnel["solve"].rows_by_method["fobar"]
    assert funnel["augment"].rows_by_method["mathgenie"] == funnel["augment"].rows_out - len(fobar)


def test_shards_merged_equal_the_unsharded_run(tmp_path, sandbox):
    make_pipeline(tmp_path / "whole", sandbox)[0].run(NO_PUSH)
    for shard in ("0/2", "1/2"):
        make_pipeline(tmp_path / "sharded", sandbox, shard=shard)[0].run(NO_PUSH)
    parts = sorted(p.name for p in (tmp_path / "sharded" / "solved" / "default" / "train").iterdir())
    assert parts == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    for stage in GENERATED:
        whole, sharded = rows(tmp_path / "whole", stage), rows(tmp_path / "sharded", stage)
        assert whole and whole == sharded, stage


def test_empty_shards_finish_with_empty_parts_and_the_union_is_unchanged(tmp_path, sandbox):
    # 8 seed families in 16 shards: some shards get nothing and must still be marked done, not crash.
    from mathgenie.shards import shard_of

    make_pipeline(tmp_path / "whole", sandbox)[0].run(NO_PUSH)
    cfg = load_config(DEMO, [f"output_dir={tmp_path / 'whole'}", *BASE])
    seeds = StageStore(tmp_path / "whole", "seed").read(stage_hashes(cfg)["seed"])["id"]
    empty = [i for i in range(16) if all(shard_of(s, 16) != i for s in seeds)]
    assert empty, "the demo seed should leave some of 16 shards empty"
    for i in range(16):
        make_pipeline(tmp_path / "sharded", sandbox, shard=f"{i}/16")[0].run(NO_PUSH)
    for stage in GENERATED:
        assert rows(tmp_path / "whole", stage) == rows(tmp_path / "sharded", stage), stage


def test_push_publishes_every_stage_with_one_tag_and_the_funnel(tmp_path, sandbox, hub):
    from datasets import load_dataset
    from huggingface_hub import HfApi

    org = "pipe-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:6]
    pipeline, _ = make_pipeline(tmp_path, sandbox, ["push.enabled=true", f"push.org={org}", "push.tag=t1"])
    pipeline.run()
    api = HfApi()
    names = {"seed": "mathgenie-seed", "augment": "mathgenie-augmented",
             "back_translate": "mathgenie-back-translated", "solve": "mathgenie-solved",
             "decontaminate": "mathgenie-verified"}
    assert {d.id for d in api.list_datasets(author=org)} == {f"{org}/{n}" for n in names.values()}
    for stage, name in names.items():
        repo = f"{org}/{name}"
        assert "t1" in [t.name for t in api.list_repo_refs(repo, repo_type="dataset").tags]
        files = api.list_repo_files(repo, repo_type="dataset")
        assert {"README.md", "funnel.png", "funnel.json"} <= set(files)
        loaded = load_dataset(repo, revision="t1", split="train")
        assert sorted(loaded.to_list(), key=str) == sorted(rows(tmp_path, stage), key=str)
    card = Path(api.hf_hub_download(f"{org}/mathgenie-augmented", "README.md", repo_type="dataset",
                                    revision="t1")).read_text()
    assert "You must change the numbers in the Solution" in card or "Replace the objects" in card
    assert "| verify |" in card and "| decontaminate |" in card and "funnel.png" in card
    assert f"| seed | {org}/mathgenie-seed | `t1` |" in card  # the seed is pushed: lineage resolves on the Hub
    verified = Path(api.hf_hub_download(f"{org}/mathgenie-verified", "README.md", repo_type="dataset",
                                        revision="t1")).read_text()
    assert "dropped_contaminated: 0 rows" in verified
    assert all(f"| {name} |" in verified for name in ("gsm8k", "math500", "svamp", "simuleq", "mathematics"))
    cfg = pipeline.config.verify
    assert cfg.consistency == "none"  # the demo config's rule, which the card must state as it is
    assert "Answer consistency: off" in verified and "majority of the question" not in verified
    assert ("are **kept**" if cfg.keep_unknown else "are **dropped**") in verified
    assert "Decontamination: a question is dropped when it matches a test question of gsm8k" in verified
    kept = rows(tmp_path, "decontaminate")
    questions = len({r["question"] for r in kept})
    assert f"| **{len(kept):,}** | **{questions:,}** |" in verified
    assert "| **total** | " in verified and "| 170,000 |" in verified  # beside the paper's AugData


def test_push_publishes_nothing_while_a_shard_is_missing(tmp_path, sandbox, hub):
    from huggingface_hub import HfApi

    make_pipeline(tmp_path, sandbox, shard="0/2")[0].run(NO_PUSH)
    org = "miss-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:6]
    pipeline, _ = make_pipeline(tmp_path, sandbox, ["push.enabled=true", f"push.org={org}"])
    with pytest.raises(FileNotFoundError, match=r"missing shards: 1/2"):
        pipeline.run(["push"])
    assert not [d for d in HfApi().list_datasets(author=org)]


# ---------------------------------------------------------------------------------------------------------------------
# The stage registry: a stage of the user's own, decontamination, pushing a stage folder
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class LengthFilterConfig:
    max_chars: int = 80


def solution_chars(blocks: list[dict]) -> int:
    return len(blocks_to_plain_text(blocks))


def keep_short_solutions(ctx: StageRun) -> datasets.Dataset:
    """A toy stage defined here, outside mathgenie: drop rows whose solution is longer than ``max_chars``."""
    kept = ctx.rows.filter(lambda b: solution_chars(b) <= ctx.config.max_chars, input_columns="blocks")
    ctx.stats.rows_in, ctx.stats.rows_out = len(ctx.rows), len(kept)
    ctx.stats.drop("too_long", len(ctx.rows) - len(kept))
    return kept


LENGTH_FILTER = Stage(name="length_filter", input="decontaminate", output="short", features=VERIFIED_FEATURES,
                      config_class=LengthFilterConfig, run=keep_short_solutions, push_name="mathgenie-short",
                      description="Verified rows with a short solution.")


def test_a_stage_defined_outside_mathgenie_runs_resumes_and_shards_like_the_others(tmp_path, sandbox):
    stages = [*STAGES, LENGTH_FILTER]
    cfg = load_config(DEMO, [f"output_dir={tmp_path / 'whole'}", *BASE, "verify.consistency=none"])
    engine = ScriptedEngine(scripted)
    pipeline = Pipeline(cfg, stages=stages, engine_factory=lambda model: engine,
                        sandbox_factory=lambda: _Borrowed(sandbox))
    funnel = {s.stage: s for s in pipeline.run()}
    assert list(funnel) == [*NO_PUSH, "length_filter"]
    store = StageStore(tmp_path / "whole", "short")
    short = store.read(pipeline.hashes["length_filter"])
    assert 0 < len(short) < funnel["decontaminate"].rows_out
    assert all(solution_chars(b) <= 80 for b in short["blocks"])
    assert funnel["length_filter"].dropped == {"too_long": funnel["decontaminate"].rows_out - len(short)}
    assert json.loads((tmp_path / "whole" / "funnel.json").read_text())["stages"][-1]["stage"] == "length_filter"
    # a rerun skips it like any stage; shards of it add up to the unsharded output
    again = Pipeline(cfg, stages=stages, engine_factory=lambda model: engine, sandbox_factory=lambda: _Borrowed(sandbox))
    requests = len(engine.prompts)
    assert [s.rows_out for s in again.run()] == [s.rows_out for s in funnel.values()] and len(engine.prompts) == requests
    for shard in ("0/2", "1/2"):
        sharded = dataclasses.replace(cfg, output_dir=str(tmp_path / "sharded"))
        Pipeline(sharded, shard=Shard.parse(shard), stages=stages, engine_factory=lambda model: engine,
                 sandbox_factory=lambda: _Borrowed(sandbox)).run()
    merged = StageStore(tmp_path / "sharded", "short").read(pipeline.hashes["length_filter"])
    assert sorted(merged["solution_id"]) == sorted(short["solution_id"])


def scripted_engine(model) -> ScriptedEngine:
    return ScriptedEngine(scripted)


@pytest.mark.slow
def test_a_stage_defined_outside_mathgenie_runs_on_ray_like_locally(tmp_path, sandbox):
    """The same toy stage through the Ray executor (a local Ray with two shards): the replicas get it, pickled by
    value, and its rows equal the local run's."""
    import _scripted
    import ray
    from ray import cloudpickle

    from mathgenie.generation.config import RayConfig
    from mathgenie.scale.ray_executor import run_on_ray

    stages = [*STAGES, LENGTH_FILTER]
    overrides = ["push.enabled=false", "verify.consistency=none", "sandbox.num_workers=1"]
    local = load_config(DEMO, [f"output_dir={tmp_path / 'local'}", *overrides])
    Pipeline(local, stages=stages, engine_factory=scripted_engine, sandbox_factory=lambda: _Borrowed(sandbox)).run()
    for module in (sys.modules[__name__], _scripted):  # the replicas cannot import the test modules
        cloudpickle.register_pickle_by_value(module)
    remote = dataclasses.replace(local, output_dir=str(tmp_path / "ray"))
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        funnel = run_on_ray(remote, ray_config=RayConfig(num_shards=2, num_cpus_per_replica=1),
                            engine_factory=scripted_engine, stages=stages)
    finally:
        ray.shutdown()
    assert [s.stage for s in funnel] == [*NO_PUSH, "length_filter"]
    h = stage_hashes(local, stages)["length_filter"]
    parts = sorted(p.name for p in (tmp_path / "ray" / "short" / "default" / "train").iterdir())
    assert parts == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]
    ray_rows = StageStore(tmp_path / "ray", "short").read(h).to_list()
    local_rows = StageStore(tmp_path / "local", "short").read(h).to_list()
    assert ray_rows and sorted(ray_rows, key=str) == sorted(local_rows, key=str)


# GSM8K test question 0 (openai/grade-school-math, MIT), planted into back-translations.
GSM8K_TEST_0 = ("Janet’s ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins for "
                "her friends every day with four. She sells the remainder at the farmers' market daily for $2 per fresh "
                "duck egg. How much in dollars does she make every day at the farmers' market?")


def planting(prompt: str, params) -> str:
    """`scripted`, except that some back-translations copy a GSM8K test question (then ask the usual question)."""
    out = scripted(prompt, params)
    if "Create a New Problem" in prompt and int(hashlib.sha1(prompt.encode()).hexdigest()[0], 16) < 6:
        return f"{GSM8K_TEST_0} {out}"
    return out


def test_the_decontaminate_stage_drops_a_planted_test_question_and_the_card_says_so(tmp_path, sandbox, hub):
    from datasets import load_dataset
    from huggingface_hub import HfApi

    org = "plant-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:6]
    pipeline, engine = make_pipeline(tmp_path, sandbox, ["verify.consistency=none", f"push.org={org}"],
                                     engine=ScriptedEngine(planting))
    funnel = {s.stage: s for s in pipeline.run([*NO_PUSH, "push"])}
    verified = rows(tmp_path, "verify", ["verify.consistency=none"])
    planted = [r for r in verified if r["question"].startswith("Janet")]
    assert planted and len(planted) < len(verified)
    clean = rows(tmp_path, "decontaminate", ["verify.consistency=none"])
    assert clean == [r for r in verified if not r["question"].startswith("Janet")]
    assert funnel["decontaminate"].dropped == {"contaminated": len(planted)}
    report = json.loads((tmp_path / "decontaminated" / "manifest-00000-of-00001.json").read_text())["report"]
    assert report["decontamination"]["by_eval_set"]["gsm8k"] == len(planted)
    assert report["decontamination"]["dropped"]["eval_ngram"] == len(planted)
    card = Path(HfApi().hf_hub_download(f"{org}/mathgenie-verified", "README.md", repo_type="dataset",
                                        revision=pipeline.config.push.tag or f"run-{pipeline.hashes['decontaminate'][:10]}")
                ).read_text()
    assert f"dropped_contaminated: {len(planted)} rows" in card and "| gsm8k | 1319 |" in card
    assert "| simuleq | 514 |" in card and "| mathematics | 1000 |" in card
    pushed = load_dataset(f"{org}/mathgenie-verified", split="train")
    assert sorted(pushed["solution_id"]) == sorted(r["solution_id"] for r in clean)


def test_mathgenie_push_publishes_a_folder_the_pipeline_wrote(tmp_path, sandbox, hub):
    from datasets import load_dataset
    from huggingface_hub import HfApi

    make_pipeline(tmp_path, sandbox, shard="0/2")[0].run(NO_PUSH)
    make_pipeline(tmp_path, sandbox, shard="1/2")[0].run(NO_PUSH)
    whole, _ = make_pipeline(tmp_path, sandbox)
    write_funnel(whole.funnel(), tmp_path)  # what `mathgenie run --stages push` would write: the merged funnel
    repo = "cli-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:6] + "/solved"
    push = [sys.executable, "-m", "mathgenie.cli", "push", str(tmp_path / "solved"), repo, "--tag", "v1"]
    done = subprocess.run(push, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"{repo}@main:" in done.stdout and "tag v1" in done.stdout
    loaded = load_dataset(repo, revision="v1", split="train")
    assert sorted(loaded.to_list(), key=str) == sorted(rows(tmp_path, "solve"), key=str)  # both shards
    card = Path(HfApi().hf_hub_download(repo, "README.md", repo_type="dataset", revision="v1")).read_text()
    assert "Code-integrated solutions" in card and "solution format" in card and "| decontaminate |" in card
    assert "hf_test_token" not in card
    assert {"funnel.png", "funnel.json"} <= set(HfApi().list_repo_files(repo, repo_type="dataset", revision="v1"))


# ---------------------------------------------------------------------------------------------------------------------
# The real engine
# ---------------------------------------------------------------------------------------------------------------------

TINY = ["seed.limit_per_source=2", "augment.rounds=1", "augment.prompts_per_solution=2", "augment.max_tokens=128",
        "back_translate.max_tokens=160", "solve.n=2", "solve.max_tokens=128", "solve.max_blocks=3",
        "verify.max_tokens=128", "verify.max_blocks=3"]


@pytest.mark.slow
@pytest.mark.engine
@pytest.mark.e2e
def test_real_engine_sandbox_and_hub_through_every_stage(tmp_path, vllm_engine, sandbox, hub):
    """SmolLM2-135M on vLLM through every stage, the real Sandbox, pushed to the local Hub and loaded back. The
    consistency filter is off so the verifier runs on every solution the 135M model writes."""
    from datasets import load_dataset

    org = "e2e-" + hashlib.sha1(str(tmp_path).encode()).hexdigest()[:6]
    pipeline, _ = make_pipeline(tmp_path, sandbox, [*TINY, "verify.consistency=none", "push.enabled=true",
                                                    f"push.org={org}", "push.tag=e2e"], engine=vllm_engine)
    funnel = {s.stage: s for s in pipeline.run()}
    assert list(funnel) == NO_PUSH
    chain = NO_PUSH
    for up, down in zip(chain, chain[1:]):
        assert funnel[down].rows_in == funnel[up].rows_out, down
    assert funnel["augment"].rows_out > 0 and funnel["back_translate"].rows_out > 0
    assert funnel["solve"].rows_out == 2 * funnel["back_translate"].rows_out
    for stage in ("augment", "back_translate", "solve", "verify"):
        assert funnel[stage].generated_tokens > 0 and funnel[stage].cache_hits == 0, stage
    assert funnel["decontaminate"].rows_in == funnel["verify"].rows_out
    solved = rows(tmp_path, "solve", TINY)
    assert all(r["blocks"] and r["model"] == vllm_engine.spec.model for r in solved)
    assert {r["finish_reason"] for r in solved} <= {"endofmessage", "max_blocks", "length", "error"}
    verified = rows(tmp_path, "verify", [*TINY, "verify.consistency=none"])
    assert all(r["verification"] and r["verdict"] in ("correct", "unknown") for r in verified)
    assert funnel["verify"].rows_out + funnel["verify"].dropped.get("verdict_wrong", 0) == funnel["solve"].rows_out
    loaded = load_dataset(f"{org}/mathgenie-verified", revision="e2e", split="train")
    assert sorted(loaded["solution_id"]) == sorted(r["solution_id"] for r in rows(tmp_path, "decontaminate", [*TINY, "verify.consistency=none"]))


def _cache_keys(out: Path, stage: str) -> list[str]:
    keys = []
    for f in sorted((out / "cache" / stage).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.endswith("}"):
                keys.append(json.loads(line)["key"])
    return keys


# One request at a time (max_in_flight=1, solve.max_live=1): every request is generated alone, so the interrupted and
# the reference run see the same numerics (no batch-shape effects) and the kill lands between two cache writes.
KILL = [*TINY, "seed.limit_per_source=1", "augment.prompts_per_solution=1", "augment.max_tokens=64",
        "back_translate.require_question_cue=false", "solve.max_tokens=64", "solve.max_blocks=2",
        "verify.max_tokens=64", "verify.max_blocks=2", "model.backend=transformers", "max_in_flight=1",
        "solve.max_live=1", "verify.consistency=none"]


def _start_run(out: Path, log: Path, runs: list) -> subprocess.Popen:
    overrides = [*KILL, "push.enabled=false", f"output_dir={out}"]
    proc = subprocess.Popen([sys.executable, "-m", "mathgenie.cli", "run", str(DEMO), *overrides],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, cwd=REPO)
    runs.append(proc)
    return proc


@pytest.fixture
def runs():
    """The `mathgenie run` processes a test starts; any still running when it ends (a failed assertion) is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _kill_when_cached(proc: subprocess.Popen, out: Path, stage: str, timeout: float = 300) -> list[str]:
    """SIGKILL ``proc`` as soon as ``stage`` has finished requests in its cache but no output yet."""
    manifest = out / OUTPUT_OF[stage] / "manifest-00000-of-00001.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _cache_keys(out, stage) and not manifest.exists():
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            return _cache_keys(out, stage)
        assert proc.poll() is None, f"the run ended before {stage} was interrupted"
        time.sleep(0.02)
    raise AssertionError(f"{stage} cached nothing in {timeout} s")


@pytest.mark.slow
@pytest.mark.engine
def test_kill_9_mid_stage_and_rerun_regenerates_nothing_and_duplicates_no_row(tmp_path, smollm2_dir, runs):
    """A real `mathgenie run` (SmolLM2 on transformers) is killed with SIGKILL inside augment, rerun and killed again
    inside solve, then rerun to the end: every request finished before a kill comes from the cache, no row is lost
    or duplicated, and every stage equals an uninterrupted run's."""
    out, ref, log = tmp_path / "killed", tmp_path / "reference", tmp_path / "runs.log"
    first = _kill_when_cached(_start_run(out, log, runs), out, "augment")
    second_proc = _start_run(out, log, runs)
    before_solve = _kill_when_cached(second_proc, out, "solve")
    assert _start_run(out, log, runs).wait(timeout=600) == 0, log.read_text()[-3000:]
    assert _start_run(ref, log, runs).wait(timeout=600) == 0, log.read_text()[-3000:]

    def stats(stage):
        return json.loads((out / OUTPUT_OF[stage] / "manifest-00000-of-00001.json").read_text())["stats"]

    # the stage that was killed answered every request finished before the kill from the cache ...
    assert stats("augment")["cache_hits"] >= len(first) > 0
    assert stats("solve")["cache_hits"] >= len(before_solve) > 0
    # ... and generated each request once: the cache holds each key once and only what the reference run needed
    for stage in ("augment", "back_translate", "solve", "verify"):
        keys = _cache_keys(out, stage)
        assert len(keys) == len(set(keys)), stage
        assert set(keys) == set(_cache_keys(ref, stage)), stage
    for stage in GENERATED:
        resumed, reference = rows(out, stage, KILL), rows(ref, stage, KILL)
        ids = [r.get("solution_id") or r.get("question_id") or r["id"] for r in resumed]
        assert len(ids) == len(set(ids)), stage
        assert resumed == reference, stage


@pytest.mark.parametrize("argv, message", [
    (["--stages", "seed,polish"], "--stages: unknown stage(s) ['polish']"),
    (["--shard", "2/2"], "shard 2/2: need 0 <= I < N"),
    (["solve.n=many"], "solve.n='many': expected an integer"),
])
def test_run_command_rejects_bad_arguments_before_doing_anything(tmp_path, capsys, argv, message):
    from mathgenie.cli import main

    assert main(["run", str(DEMO), f"output_dir={tmp_path}", *argv]) == 2
    assert message in capsys.readouterr().out
    assert not any(tmp_path.iterdir())


def test_help_config_lists_every_field(capsys):
    from mathgenie.cli import main

    assert main(["run", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "verify.verdict_rule = 'keywords+boxed'" in out and "augment.rounds = 3" in out
