"""`RayConfig`: the ``ray:`` section of a pipeline config (used when ``executor: ray``).

Kept free of heavy imports (no ray, no pipeline) so `mathgenie.generation.config` can import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RayConfig:
    """How `mathgenie.scale.ray_executor.run_on_ray` spreads the pipeline over a Ray cluster."""

    address: str | None = field(default=None, metadata={"help": "Ray cluster to join: 'auto' (the cluster `ray "
                                "start` made on this machine), 'HOST:PORT' of its head, or None (Ray's default: "
                                "$RAY_ADDRESS, else a cluster started on this machine, else a new local Ray for this "
                                "run). Run the driver on a cluster node; output_dir must be on storage every node "
                                "mounts at the same path."})
    num_shards: int | None = field(default=None, metadata={"help": "Shards of every stage: the unit of work and of "
                                   "retry (more shards than replicas balance the load). None = the count already on "
                                   "disk for this run, else 4 per replica. Keep it fixed across reruns."})
    num_replicas: int | None = field(default=None, metadata={"help": "Engine replicas (Ray actors) per stage. None = "
                                     "as many as the cluster holds, node by node."})
    num_gpus_per_replica: float | None = field(default=None, metadata={"help": "GPUs per replica. None = the "
                                               "stage model's tensor_parallel_size x pipeline_parallel_size "
                                               "(engine_kwargs) when the cluster has GPUs, else 0."})
    num_cpus_per_replica: float | None = field(default=None, metadata={"help": "CPUs per replica; its Sandbox runs "
                                               "on them (sandbox.num_workers defaults to this). None = the node's "
                                               "CPUs per GPU x GPUs per replica; 1 on a CPU-only cluster."})
    max_restarts: int = field(default=3, metadata={"help": "How often Ray restarts a replica whose process died and "
                              "retries its shard (which resumes from the request cache). -1 = forever."})
    runtime_env: dict = field(default_factory=dict, metadata={"help": "Ray runtime_env of the job (env_vars, pip, "
                              "...). HF_ENDPOINT and the offline switches of the driver are forwarded; HF_TOKEN is "
                              "not (secrets stay out of Ray's job metadata): set it where `ray start` runs."})

    def __post_init__(self):
        for name in ("num_shards", "num_replicas"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ray.{name}={value!r}: give a positive integer or null")
        for name in ("num_gpus_per_replica", "num_cpus_per_replica"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or value < 0):
                raise ValueError(f"ray.{name}={value!r}: give a number >= 0 or null")
        if self.num_cpus_per_replica == 0 and not self.num_gpus_per_replica:
            raise ValueError("ray.num_cpus_per_replica=0 with no GPUs: a replica needs some resource; give >= 1")
        if not isinstance(self.max_restarts, int) or self.max_restarts < -1:
            raise ValueError(f"ray.max_restarts={self.max_restarts!r}: give an integer >= 0, or -1 for no limit")
