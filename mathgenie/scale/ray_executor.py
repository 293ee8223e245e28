"""``executor: ray``: the sharded pipeline on a Ray cluster, as a thin layer over `Pipeline`::

    ray start --head --port=6379                      # one machine, or the head of a cluster (+ `ray start
                                                      #   --address=HEAD:6379` on every other node)
    mathgenie run configs/ray.example.yaml            # executor: ray, ray.address: auto

    from mathgenie.scale.ray_executor import run_on_ray
    funnel = run_on_ray(cfg, ["seed", "augment", "back_translate", "solve", "verify"], RayConfig(address="auto"))
    funnel = run_on_ray(cfg, stages=[*STAGES, MY_STAGE])   # a stage of your own, shipped to the replicas

How it maps onto Ray (nothing here schedules work by hand):

- Every stage is cut into ``N`` shards (`Shard(i, N)`, the same slices as ``mathgenie run --shard i/N``). A shard is
  run by the pipeline's own code, ``Pipeline(cfg, shard=Shard(i, N)).run_stage(stage)``, so its output parquet, its
  manifest, its request cache (``cache/{stage}/requests-{i}-of-{N}.jsonl``) and resume are exactly those of a
  sharded local run, and the union of the shards equals the unsharded run.
- Each engine replica is a Ray actor (`ShardWorker`) holding ``tensor_parallel_size x pipeline_parallel_size`` GPUs
  (vLLM starts its own TP workers inside them) and a few CPUs for its Sandbox. Stages run one after the other
  (a stage reads all shards of the one before), and consecutive stages with the same model share their actors,
  so e.g. M_code is loaded once per replica for solve and verify. Shards go to idle replicas through
  `ray.util.ActorPool`; inside a replica, vLLM's scheduler does the batching.
- Fault tolerance is Ray's: a replica whose process dies (OOM, node lost, ``kill -9``) is restarted
  (``max_restarts``) and its shard retried (``max_task_retries``); the retry skips finished stages by their
  manifests and answers every request that had finished from the request cache, so nothing is lost or generated
  twice. Killing the driver loses nothing either: rerun the same command.
- The seed (built whole, no model) and the push (reads every shard) run on the driver, which must see
  ``output_dir``: on a cluster, put it on shared storage (NFS, Lustre, ...) mounted at the same path everywhere.

Why not ``ray.data.llm`` (Ray's vLLM batch processor): it maps each row through one generation call, while the
solve and verify stages are an interactive loop (generate a step, run its code in the Sandbox, continue the same
solution) that needs per-solution state between engine calls; running that as a Ray Data pass per step would
restart the engine pool and re-read the data up to ``max_blocks`` times. It would also bypass the request cache
(resume would redo whole blocks of rows instead of the unfinished requests), and give augment/back-translate a
second code path whose rows could drift from the local run's. Its vLLM stage also reserves ``{"GPU": 1}`` bundles
per replica by default. One engine per replica driven by the pipeline is the same data parallelism ("one vLLM
replica per GPU group") with the exact same rows.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import uuid
from pathlib import Path
from typing import Callable, Sequence

from mathgenie.config import config_hash
from mathgenie.generation.config import ModelConfig, PipelineConfig, RayConfig
from mathgenie.generation.engine import Engine
from mathgenie.generation.funnel import StageStats, write_funnel
from mathgenie.generation.pipeline import Pipeline, check_steps, load_model, stage_hashes
from mathgenie.generation.stage import Stage, model_for
from mathgenie.generation.stages import PUSH, STAGES, stage_named
from mathgenie.shards import Shard, StageStore

logger = logging.getLogger(__name__)

# Environment of the driver that the replicas need to reach the same Hub; secrets (HF_TOKEN) are deliberately absent.
FORWARDED_ENV = ("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
SHARDS_PER_REPLICA = 4
TOKEN_FILE = ".ray-driver"  # written by the driver, checked by every replica: is output_dir shared?
# The replicas' progress bars would reach the driver as interleaved log lines; the driver shows one bar per stage.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


@dataclasses.dataclass(frozen=True)
class ReplicaResources:
    num_gpus: float
    num_cpus: float


class ShardWorker:
    """One replica: runs shards of a stage with one engine kept loaded between them (a Ray actor)."""

    def __init__(self, config: PipelineConfig, cwd: str, run_token: str,
                 engine_factory: Callable[[ModelConfig], Engine] | None = None, stages: Sequence[Stage] = STAGES):
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if Path(cwd).is_dir():  # relative paths in the config (output_dir, local models) mean what they mean there
            os.chdir(cwd)
        token_file = Path(config.output_dir) / TOKEN_FILE
        if not token_file.is_file() or token_file.read_text() != run_token:
            raise FileNotFoundError(
                f"output_dir={config.output_dir!r} ({Path(config.output_dir).resolve()}) on node "
                f"{os.uname().nodename} is not the driver's: put output_dir on storage that every node mounts at the "
                "same path (NFS, Lustre, ...)")
        self.config, self.stages = config, tuple(stages)
        self._load = engine_factory or load_model
        self._engine: Engine | None = None
        self._engine_key: str | None = None

    def engine(self, model: ModelConfig):
        """The engine factory given to `Pipeline`: the loaded engine while the model stays the same."""
        key = config_hash(model)
        if self._engine is None or self._engine_key != key:
            self.close()
            self._engine, self._engine_key = self._load(model), key
        return self._engine

    def run(self, stage: str, index: int, count: int) -> dict:
        shard = Shard(index, count)
        pipeline = Pipeline(self.config, shard=shard, stages=self.stages, engine_factory=self.engine)
        try:
            stats = pipeline.run_stage(stage)
        except Exception as e:  # name the shard: Ray's error otherwise only shows the traceback
            raise RuntimeError(f"{stage}: shard {shard} failed on {os.uname().nodename} (pid {os.getpid()}): "
                               f"{type(e).__name__}: {e}") from e
        finally:
            pipeline.close()  # the sandbox; the engine stays (the pipeline does not own it)
        return {"shard": str(shard), "stats": stats.to_dict()}

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self._engine = self._engine_key = None


# ---------------------------------------------------------------------------------------------------------------------
# Planning: resources per replica, replicas per stage, shard count (pure functions of the config and the nodes)
# ---------------------------------------------------------------------------------------------------------------------


def model_parallel_size(model: ModelConfig) -> int:
    kw = model.engine_kwargs
    return int(kw.get("tensor_parallel_size", 1)) * int(kw.get("pipeline_parallel_size", 1))


def replica_resources(cfg: PipelineConfig, stage: str, ray_config: RayConfig, nodes: list[dict[str, float]],
                      stages: Sequence[Stage] = STAGES) -> ReplicaResources:
    """What one replica of ``stage`` reserves. ``nodes``: the resources of each alive node (``{"CPU": .., "GPU":
    ..}``)."""
    gpu_nodes = [n for n in nodes if n.get("GPU", 0) > 0]
    spec = stage_named(stage, stages)
    model = model_for(cfg, spec) if spec.uses_engine() else None
    if ray_config.num_gpus_per_replica is not None:
        gpus = ray_config.num_gpus_per_replica if model is not None else 0
    elif model is None or model.backend == "openai" or not gpu_nodes:
        gpus = 0  # no model, a remote server, or a CPU cluster
    else:
        gpus = model_parallel_size(model)
    if ray_config.num_cpus_per_replica is not None:
        cpus = ray_config.num_cpus_per_replica
    elif gpus and gpu_nodes:
        cpus = max(1, min(math.floor(n.get("CPU", 0) / n["GPU"] * gpus) for n in gpu_nodes))
    else:
        cpus = 1
    return ReplicaResources(num_gpus=gpus, num_cpus=cpus)


def replicas_that_fit(nodes: list[dict[str, float]], res: ReplicaResources) -> int:
    """How many replicas the cluster holds, node by node (a replica never spans nodes)."""
    total = 0
    for n in nodes:
        fits = [math.floor(n.get(k, 0) / v + 1e-9) for k, v in (("GPU", res.num_gpus), ("CPU", res.num_cpus)) if v]
        total += min(fits) if fits else 0
    return total


def stage_groups(cfg: PipelineConfig, names: list[str], stages: Sequence[Stage] = STAGES) -> list[list[str]]:
    """The sharded stages of ``names`` in order, consecutive stages with the same model grouped (they share
    replicas)."""
    groups: list[list[str]] = []
    last = None
    for stage in stages:
        if stage.name not in names or not stage.sharded:
            continue
        key = config_hash(model_for(cfg, stage)) if stage.uses_engine() else stage.name
        if groups and key == last:
            groups[-1].append(stage.name)
        else:
            groups.append([stage.name])
        last = key
    return groups


def shard_count_on_disk(cfg: PipelineConfig, names: list[str], stages: Sequence[Stage] = STAGES) -> int | None:
    """The shard count of this run's outputs already written (so a rerun resumes instead of re-sharding)."""
    hashes = stage_hashes(cfg, stages)
    for stage in stages:
        if stage.name not in names or not stage.sharded:
            continue
        store = StageStore(cfg.output_dir, stage.output)
        for path in sorted(store.dir.glob("manifest-*-of-*.json")):
            m = json.loads(path.read_text())
            if m["config_hash"] == hashes[stage.name]:
                return Shard.parse(m["shard"]).count
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------------


def _import_ray():
    try:
        import ray
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("executor: ray needs Ray: pip install 'mathgenie[ray]' (or 'ray[default]')") from e
    return ray


def _alive_nodes(ray) -> list[dict[str, float]]:
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def run_on_ray(cfg: PipelineConfig, names: list[str] | None = None, ray_config: RayConfig | None = None, *,
               engine_factory: Callable[[ModelConfig], Engine] | None = None,
               stages: Sequence[Stage] = STAGES) -> list[StageStats]:
    """Run the stages ``names`` (default: all, then push if ``push.enabled``) of ``cfg`` on Ray; returns the funnel.

    ``engine_factory`` (default `load_model`) and ``stages`` are called in the replicas, so their functions must be
    importable there (module-level functions of an installed module, or registered with cloudpickle by value)."""
    ray = _import_ray()
    ray_config = ray_config or RayConfig()
    default = [s.name for s in stages] + ([PUSH] if cfg.push.enabled else [])
    names = check_steps(default if names is None else names, stages)
    started_ray = not ray.is_initialized()
    if started_ray:
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        runtime_env = dict(ray_config.runtime_env)
        runtime_env["env_vars"] = {**env, **runtime_env.get("env_vars", {})}
        ray.init(address=ray_config.address, runtime_env=runtime_env, logging_level=logging.WARNING)
    try:
        driver = Pipeline(cfg, stages=stages)
        for stage in stages:  # a stage built whole (the seed) runs on the driver
            if stage.name in names and not stage.sharded:
                driver.run_stage(stage.name)
        groups = stage_groups(cfg, names, stages)
        if groups:
            _run_groups(ray, cfg, groups, ray_config, engine_factory, stages)
        if PUSH in names:
            driver.push()
    finally:
        if started_ray:
            ray.shutdown()
    funnel = Pipeline(cfg, stages=stages).funnel()
    if funnel:
        write_funnel(funnel, cfg.output_dir)
    return funnel


def _plan(cfg: PipelineConfig, groups: list[list[str]], ray_config: RayConfig, nodes, stages) -> list[tuple]:
    """``(group, resources per replica, replicas)`` of every group of stages."""
    plans = []
    for group in groups:
        res = replica_resources(cfg, group[0], ray_config, nodes, stages)
        fit = replicas_that_fit(nodes, res)
        if fit == 0:
            raise RuntimeError(f"stage {group[0]}: no node of the cluster fits a replica with {res.num_gpus} GPUs and "
                               f"{res.num_cpus} CPUs (nodes: {nodes}); lower ray.num_cpus_per_replica or "
                               "the model's tensor_parallel_size, or add nodes")
        plans.append((group, res, min(ray_config.num_replicas or fit, fit)))
    return plans


def _run_groups(ray, cfg: PipelineConfig, groups: list[list[str]], ray_config: RayConfig, engine_factory,
                stages: Sequence[Stage]) -> None:
    nodes = _alive_nodes(ray)
    plans = _plan(cfg, groups, ray_config, nodes, stages)
    num_shards = (ray_config.num_shards or shard_count_on_disk(cfg, [s for g in groups for s in g], stages)
                  or SHARDS_PER_REPLICA * max(n for _, _, n in plans))
    logger.info("ray: %d shards per stage on %d node(s); %s", num_shards, len(nodes),
                "; ".join(f"{'+'.join(g)}: up to {min(n, num_shards)} replica(s) x {r.num_gpus} GPU, {r.num_cpus} CPU"
                          for g, r, n in plans))
    hashes = stage_hashes(cfg, stages)
    run_token = uuid.uuid4().hex
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    (Path(cfg.output_dir) / TOKEN_FILE).write_text(run_token)

    def pending(name: str) -> list[int]:
        store = StageStore(cfg.output_dir, stage_named(name, stages).output)
        return [i for i in range(num_shards) if not store.is_done(Shard(i, num_shards), hashes[name])]

    for group, res, n in plans:
        todo = max(len(pending(name)) for name in group)
        if todo == 0:
            logger.info("%s: all %d shards already done", "+".join(group), num_shards)
            continue
        worker_cfg = cfg
        if cfg.sandbox.num_workers is None:  # the Sandbox gets the replica's CPUs, not every core of the node
            worker_cfg = dataclasses.replace(cfg, sandbox=dataclasses.replace(
                cfg.sandbox, num_workers=max(1, int(res.num_cpus))))
        actor_cls = ray.remote(ShardWorker).options(
            num_gpus=res.num_gpus, num_cpus=res.num_cpus, max_restarts=ray_config.max_restarts,
            max_task_retries=ray_config.max_restarts, runtime_env={"env_vars": QUIET_ENV})
        actors = [actor_cls.remote(worker_cfg, os.getcwd(), run_token, engine_factory, stages)
                  for _ in range(min(n, todo))]
        try:
            for name in group:
                _run_shards(actors, name, pending(name), num_shards)
        finally:
            _release(ray, actors)


def _run_shards(actors: list, name: str, shards: list[int], num_shards: int) -> None:
    """The shards of one stage on the replicas, each shard to the next idle one (`ray.util.ActorPool`)."""
    from ray.util import ActorPool
    from tqdm.auto import tqdm

    logger.info("%s: %d of %d shards to run on %d replica(s)", name, len(shards), num_shards, len(actors))
    results = ActorPool(actors).map_unordered(lambda actor, i: actor.run.remote(name, i, num_shards), shards)
    for done in tqdm(_reraise(results, name), total=len(shards), desc=f"{name} (ray)", unit="shard"):
        s = done["stats"]
        logger.info("%s: shard %s done: %s rows, %s requests (%s from the cache)", name, done["shard"],
                    s.get("rows_out"), s.get("requests"), s.get("cache_hits"))


def _reraise(results, stage: str):
    """Yield from a Ray result iterator; a shard that failed for good stops the run with what to do next."""
    from ray.exceptions import ActorDiedError, RayTaskError

    try:
        yield from results
    except RayTaskError as e:  # the replica's message names the stage and the shard
        raise RuntimeError(f"{e.cause if e.cause is not None else e}. Finished shards are kept; fix the cause and "
                           "rerun the same command to resume.") from e
    except ActorDiedError as e:
        raise RuntimeError(f"{stage}: a replica died more often than ray.max_restarts allows ({e}). Finished shards "
                           "and requests are kept; rerun the same command to resume.") from e


def _release(ray, actors) -> None:
    """Free the replicas' engines (GPU memory, vLLM worker processes), then the actors."""
    try:
        ray.get([a.close.remote() for a in actors], timeout=120)
    except Exception as e:  # a dead or stuck replica: killing it frees its resources anyway
        logger.warning("ray: closing replicas failed (%s); killing them", e)
    for a in actors:
        ray.kill(a)
