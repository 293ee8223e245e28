"""Scale-out of the sharded pipeline: `ray_executor.run_on_ray` (``executor: ray``) and the Slurm array example in
``configs/slurm/``. Only the config is imported here, so `mathgenie.generation.config` can use it without Ray."""

from mathgenie.scale.config import RayConfig

__all__ = ["RayConfig"]
