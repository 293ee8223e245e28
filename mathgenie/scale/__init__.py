"""Scale-out of the sharded pipeline: `ray_executor.run_on_ray` (``executor: ray``; its settings are
`mathgenie.generation.config.RayConfig`) and the Slurm array example in ``configs/slurm/``."""
