"""The Ray executor: replica planning (pure functions), and the pipeline on a real local Ray cluster (a head and a
worker node started by the test on 127.0.0.1) with a real engine, compared row for row with the local run, with a
replica killed mid-stage and the run repeated."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from _scripted import ScriptedEngine

from mathgenie.config import from_dict
from mathgenie.generation.config import ModelConfig, PipelineConfig, RayConfig, load_config
from mathgenie.generation.pipeline import Pipeline, stage_hashes
from mathgenie.generation.stages import STAGES
from mathgenie.shards import StageStore

from mathgenie.scale.ray_executor import (
    TOKEN_FILE, ReplicaResources, ShardWorker, replica_resources, replicas_that_fit, stage_groups,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "configs" / "demo.yaml"
NO_PUSH = ["seed", "augment", "back_translate", "solve", "verify"]
GENERATED = ("augment", "back_translate", "solve", "verify")
OUTPUT_OF = {s.name: s.output for s in STAGES}
GPU_NODE = {"CPU": 64.0, "GPU": 8.0}


# ---------------------------------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------------------------------


def tp_model(tp: int, backend: str = "vllm") -> ModelConfig:
    return ModelConfig(model="org/m", backend=backend, engine_kwargs={"tensor_parallel_size": tp})


def test_a_replica_takes_the_model_parallel_gpus_and_their_share_of_cpus():
    cfg = PipelineConfig(model=tp_model(2))
    res = replica_resources(cfg, "solve", RayConfig(), [GPU_NODE, GPU_NODE])
    assert res == ReplicaResources(num_gpus=2, num_cpus=16)  # 64 CPUs / 8 GPUs x 2
    assert replicas_that_fit([GPU_NODE, GPU_NODE], res) == 8
    # a replica never spans nodes: TP 3 fits twice per 8-GPU node, not floor(16 / 3) = 5 times
    three = replica_resources(PipelineConfig(model=tp_model(3)), "solve", RayConfig(), [GPU_NODE, GPU_NODE])
    assert three.num_gpus == 3 and replicas_that_fit([GPU_NODE, GPU_NODE], three) == 4
    # the CPUs bound it too
    assert replicas_that_fit([{"CPU": 4.0, "GPU": 8.0}], ReplicaResources(1, 2)) == 2


def test_cpu_clusters_remote_servers_and_explicit_settings():
    cpu_nodes = [{"CPU": 2.0}, {"CPU": 1.0}]
    cfg = PipelineConfig(model=tp_model(4))
    assert replica_resources(cfg, "augment", RayConfig(), cpu_nodes) == ReplicaResources(0, 1)
    assert replicas_that_fit(cpu_nodes, ReplicaResources(0, 1)) == 3
    remote = PipelineConfig(model=tp_model(4, backend="openai"))
    assert replica_resources(remote, "solve", RayConfig(), [GPU_NODE]).num_gpus == 0
    explicit = RayConfig(num_gpus_per_replica=1, num_cpus_per_replica=4)
    assert replica_resources(cfg, "solve", explicit, [GPU_NODE]) == ReplicaResources(1, 4)
    assert replica_resources(cfg, "decontaminate", explicit, [GPU_NODE]).num_gpus == 0  # no model, no GPU


def test_stages_sharing_a_model_share_replicas():
    cfg = load_config(DEMO)
    assert stage_groups(cfg, NO_PUSH + ["push"]) == [["augment", "back_translate", "solve", "verify"]]
    assert stage_groups(cfg, NO_PUSH + ["decontaminate", "push"]) == [["augment", "back_translate", "solve", "verify"],
                                                                      ["decontaminate"]]
    cfg = load_config(DEMO, ["back_translate.model={model: org/bt}"])
    assert stage_groups(cfg, NO_PUSH + ["decontaminate"]) == [["augment"], ["back_translate"], ["solve", "verify"],
                                                              ["decontaminate"]]


def test_ray_config_errors_name_the_field():
    with pytest.raises(ValueError, match=r"ray.num_shards=0"):
        RayConfig(num_shards=0)
    with pytest.raises(ValueError, match=r"ray.max_restarts=-2"):
        RayConfig(max_restarts=-2)


def test_the_example_config_loads():
    data = yaml.safe_load((REPO / "configs" / "ray.example.yaml").read_text())
    assert data.pop("executor") == "ray"
    ray_config = from_dict(RayConfig, data.pop("ray"), "ray")
    assert ray_config.address == "auto" and ray_config.num_shards >= 1
    cfg = from_dict(PipelineConfig, data)
    assert cfg.solve.model is not None and cfg.solve.model.engine_kwargs["tensor_parallel_size"] >= 1


def scripted(prompt: str, params) -> str:
    """Stand-in model for the control-flow test of a replica (augment and back-translate prompts only)."""
    hx = hashlib.sha1(f"{prompt}|{params.seed}".encode()).hexdigest()
    if "Create a New Problem" in prompt:
        return f"Sam has {int(hx[:2], 16) % 7 + 1} boxes with 3 pens each. How many pens does Sam have ({hx[:4]})?"
    return f"New solution: we rewrite it as {hx[:12]} and keep going with enough words to pass."


def test_a_replica_runs_shards_with_one_engine_and_checks_output_dir_is_shared(tmp_path):
    cfg = load_config(DEMO, [f"output_dir={tmp_path}", "push.enabled=false"])
    Pipeline(cfg).run_stage("seed")
    (tmp_path / TOKEN_FILE).write_text("run-1")
    loads = []

    def factory(model):
        loads.append(model.model)
        return ScriptedEngine(scripted)

    worker = ShardWorker(cfg, str(tmp_path), "run-1", factory)
    done = [worker.run(stage, i, 2) for stage in ("augment", "back_translate") for i in range(2)]
    worker.close()
    assert loads == ["smollm2"]  # loaded once for both stages and both shards
    assert [d["shard"] for d in done] == ["0/2", "1/2", "0/2", "1/2"] and all(d["stats"]["rows_out"] for d in done)
    for stage in ("augment", "back_translate"):
        assert StageStore(tmp_path, OUTPUT_OF[stage]).manifests(stage_hashes(cfg)[stage]) is not None
    # a node that sees another directory under the same path (not shared storage) refuses to start
    with pytest.raises(FileNotFoundError, match="mounts at the same path"):
        ShardWorker(cfg, str(tmp_path), "run-2")


def test_the_slurm_array_task_runs_its_shard():
    script = REPO / "configs" / "slurm" / "mathgenie-array.sbatch"
    env = {**os.environ, "MATHGENIE": "echo mathgenie", "SLURM_ARRAY_TASK_ID": "3"}
    done = subprocess.run(["bash", str(script), "cfg.yaml", "8", "solve.n=4"], env=env, capture_output=True, text=True)
    assert done.stdout.split() == ["mathgenie", "run", "cfg.yaml", "solve.n=4", "--shard", "3/8", "--stages",
                                   "augment,back_translate,solve,verify,decontaminate"]
    env.pop("SLURM_ARRAY_TASK_ID")
    done = subprocess.run(["bash", str(script), "cfg.yaml", "8"], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "Slurm array task" in done.stderr


# ---------------------------------------------------------------------------------------------------------------------
# A real local cluster
# ---------------------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Processes of the session ``sid``: everything a `ray start --block` we launched has started."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":  # a zombie is already dead
            out.append(int(stat.parent.name))
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class LocalRayCluster:
    """A head and worker nodes on 127.0.0.1, each a `ray start --block` in its own session, so stopping the cluster
    kills exactly the processes it started (never `ray stop`, which stops every Ray on the machine)."""

    def __init__(self, env: dict, cpus_per_node=(1, 1)):
        # Ray >= 2.5x turns token auth on for a head that finds ~/.ray/auth_token but not for the nodes joining it;
        # an explicit mode and a token of our own make every process of this cluster (and its driver) agree.
        self.env = env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.temp_dir = tempfile.mkdtemp(prefix="mgray-", dir="/tmp")  # short: Ray's socket paths have a length limit
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        try:
            self._start(cpus_per_node)
        except BaseException:
            self.stop()
            raise

    def _start(self, cpus_per_node) -> None:
        env = self.env
        for i, cpus in enumerate(cpus_per_node):
            head = ["--head", f"--port={self.port}", "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}"] if i == 0 else [f"--address={self.address}"]
            cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", *head, "--block",
                   "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", "--num-gpus=0", f"--temp-dir={self.temp_dir}",
                   "--disable-usage-stats", "--object-store-memory=100000000",
                   f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}"]
            log = Path(self.temp_dir) / f"node{i}.log"
            with open(log, "w") as f:
                self.nodes.append(subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT,
                                                   start_new_session=True))
            self._wait_until_started(self.nodes[-1], log)

    @staticmethod
    def _wait_until_started(node: subprocess.Popen, log: Path, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if node.poll() is not None:
                raise RuntimeError(f"`ray start` exited: {log.read_text()[-3000:]}")
            if "Ray runtime started" in log.read_text():
                return
            time.sleep(0.2)
        raise TimeoutError(f"`ray start` did not finish starting: {log.read_text()[-3000:]}")

    def pids(self) -> list[int]:
        return [pid for node in self.nodes for pid in session_pids(node.pid)]

    def replica_pids(self) -> list[int]:
        return [pid for pid in self.pids() if cmdline(pid).startswith("ray::ShardWorker")]

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + 10
            while self.pids() and time.time() < deadline:
                time.sleep(0.2)
        for node in self.nodes:
            node.wait(timeout=10)
        assert not self.pids(), "ray processes survived the cluster stop"
        shutil.rmtree(self.temp_dir, ignore_errors=True)


# The driver of a Ray run (a process of its own, like `mathgenie run`): waits for both nodes, then `run_on_ray`.
DRIVER = """
import json, logging, sys, time
import ray
from mathgenie.generation.config import load_config
from mathgenie.generation.config import RayConfig
from mathgenie.scale.ray_executor import run_on_ray
logging.basicConfig(level=logging.INFO)
address, overrides, ray_kwargs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ray.init(address=address, logging_level=logging.WARNING)
while sum(n["Alive"] for n in ray.nodes()) < 2:
    time.sleep(0.2)
cfg, stages = load_config(sys.argv[4], overrides), sys.argv[5].split(",")
funnel = run_on_ray(cfg, stages, RayConfig(address=address, **ray_kwargs))
print("FUNNEL", json.dumps({s.stage: s.rows_out for s in funnel}))
"""


@pytest.fixture(scope="module")
def tiny_model(smollm2_dir, tmp_path_factory) -> Path:
    """A random-init 2-layer Llama with SmolLM2's tokenizer and chat template: fast, deterministic under greedy
    decoding, so two runs can be compared row for row. Weights are drawn wide (std 0.5) so the output depends on the
    prompt, and residual dimension 0 carries a constant that no layer writes and only EOS reads: an EOS bias that
    ends completions after a few to a few dozen tokens (a random model never ends, and every stage drops truncated
    outputs)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                         tie_word_embeddings=False, initializer_range=0.5, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        embed[:, 0] = embed[:, 1:].std()
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight[0] = 0
            layer.mlp.down_proj.weight[0] = 0
        head[:, 0] = 0
        head[tok.eos_token_id] = 0
        head[tok.eos_token_id, 0] = 2400.0
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def overrides(model_dir: Path, out: Path) -> list[str]:
    # Greedy everywhere; one request at a time (max_in_flight, solve.max_live) so every generation is a batch of one
    # in both runs: equal rows must not depend on how requests happened to be batched together.
    return [f"output_dir={out}", f"model.model={model_dir}", "model.backend=transformers", "push.enabled=false",
            "seed.limit_per_source=2", "augment.rounds=1", "augment.prompts_per_solution=2", "max_in_flight=1",
            *[f"{stage}.{key}" for stage in GENERATED for key in ("temperature=0", "max_tokens=64")],
            "solve.max_blocks=2", "solve.max_live=1", "verify.max_blocks=2", "verify.consistency=none",
            "back_translate.require_question_cue=false", "sandbox.num_workers=1"]


def stage_rows(out: Path, cfg, stage: str) -> list[dict]:
    key = {"augment": "id", "back_translate": "question_id"}.get(stage, "solution_id")
    return sorted(StageStore(out, OUTPUT_OF[stage]).read(stage_hashes(cfg)[stage]).to_list(), key=lambda r: r[key])


def cache_keys(out: Path, stage: str) -> list[str]:
    return [json.loads(line)["key"] for f in sorted((out / "cache" / stage).glob("*.jsonl"))
            for line in f.read_text().splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.engine
def test_ray_cluster_run_equals_the_local_run_and_survives_a_killed_replica(tiny_model, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", "RAY_USAGE_STATS_ENABLED": "0"}
    local, remote = tmp_path / "local", tmp_path / "ray"
    cfg = load_config(DEMO, overrides(tiny_model, local))
    done = subprocess.run([sys.executable, "-m", "mathgenie.cli", "run", str(DEMO), *overrides(tiny_model, local),
                           "--stages", ",".join(NO_PUSH)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert all(stage_rows(local, cfg, stage) for stage in GENERATED), "a stage of the local run made no rows"

    cluster = LocalRayCluster(env)
    try:
        ray_kwargs = json.dumps({"num_shards": 3, "num_cpus_per_replica": 1, "max_restarts": 2})
        driver = [sys.executable, "-c", DRIVER, cluster.address, json.dumps(overrides(tiny_model, remote)), ray_kwargs,
                  str(DEMO), ",".join(NO_PUSH)]
        log = open(tmp_path / "driver.log", "w")
        run = subprocess.Popen(driver, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
        # Kill every replica while solve shards are half done: some requests cached, no manifest yet.
        store, killed, in_progress = StageStore(remote, OUTPUT_OF["solve"]), [], {}
        deadline = time.time() + 300
        while not killed and time.time() < deadline and run.poll() is None:
            for part in sorted((remote / "cache" / "solve").glob("requests-*-of-00003.jsonl")):
                suffix = part.stem.removeprefix("requests-")
                lines = part.read_text().count("\n")
                if lines and not (store.dir / f"manifest-{suffix}.json").exists():
                    in_progress[suffix] = lines
            if in_progress:
                killed = cluster.replica_pids()
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        assert killed, f"no solve shard was caught mid-run: {(tmp_path / 'driver.log').read_text()[-3000:]}"
        assert run.wait(timeout=600) == 0, (tmp_path / "driver.log").read_text()[-5000:]

        # Ray restarted the replicas and retried their shards: finished requests came from the cache.
        for suffix, lines in in_progress.items():
            manifest = json.loads((store.dir / f"manifest-{suffix}.json").read_text())
            assert manifest["stats"]["cache_hits"] >= lines, (suffix, lines, manifest["stats"])
        for stage in GENERATED:
            keys = cache_keys(remote, stage)
            assert len(keys) == len(set(keys)), f"{stage}: a request was generated twice"
            ray_rows, local_rows = stage_rows(remote, cfg, stage), stage_rows(local, cfg, stage)
            assert ray_rows == local_rows, stage
        parts = sorted(p.name for p in (remote / "solved" / "default" / "train").iterdir())
        assert parts == [f"part-0000{i}-of-00003.parquet" for i in range(3)]

        # Rerunning the finished run starts no replica and rewrites nothing.
        manifests = {p: p.stat().st_mtime_ns for p in remote.glob("*/manifest-*.json")}
        again = subprocess.run(driver, env=cluster.env, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "all 3 shards already done" in again.stdout + again.stderr
        assert {p: p.stat().st_mtime_ns for p in remote.glob("*/manifest-*.json")} == manifests
    finally:
        cluster.stop()
