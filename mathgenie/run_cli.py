"""``mathgenie run CONFIG.yaml [KEY=VALUE ...]``: the MathGenie pipeline.

    mathgenie run configs/demo.yaml                                  # every stage, then push (if push.enabled)
    mathgenie run configs/demo.yaml solve.n=4 augment.rounds=2       # overrides (YAML values), the command line wins
    mathgenie run configs/pipeline.example.yaml --stages seed,augment --limit 100 --output-dir runs/try1
    mathgenie run configs/pipeline.example.yaml --shard 3/16          # one shard (e.g. a Slurm array task)
    mathgenie run configs/pipeline.example.yaml --stages push         # after all shards: merge and push
    mathgenie run --help-config                                      # every config field with its help

Rerunning the same command resumes: finished stages are skipped and finished requests come from the cache.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="run the MathGenie pipeline from a YAML config",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. solve.n=4")
    p.add_argument("--stages", help="comma-separated stages of `mathgenie.generation.stages.STAGES` (seed, augment, "
                   "back_translate, solve, verify, decontaminate) and/or push (default: all, then push if "
                   "push.enabled)")
    p.add_argument("--limit", type=int, help="use only the first N seed rows (sets `limit`)")
    p.add_argument("--output-dir", help="where outputs go (sets `output_dir`)")
    p.add_argument("--shard", default="0/1", help="I/N: process shard I of N (by a hash of the seed id)")
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=main)
    return p


def main(args: argparse.Namespace) -> int:
    from mathgenie.config import ConfigError, format_help
    from mathgenie.generation.config import PipelineConfig

    if args.help_config:
        print(format_help(PipelineConfig))
        return 0
    if args.config is None:
        print("mathgenie run: give a config file, e.g. `mathgenie run configs/demo.yaml` (--help-config lists fields)")
        return 2
    try:
        config, stages, shard = _parse(args)
    except (ConfigError, ValueError) as e:
        print(f"mathgenie run: {e}")
        return 2
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False))
        return 0
    if config.executor == "ray":
        from mathgenie.scale.ray_executor import run_on_ray

        funnel = run_on_ray(config, stages, config.ray)
    else:
        from mathgenie.generation.pipeline import Pipeline

        funnel = Pipeline(config, shard=shard).run(stages)
    _print_funnel(funnel, config.output_dir)
    return 0


def _parse(args: argparse.Namespace):
    """The config, the stages asked for (None: the default) and the shard; every error before anything runs."""
    from mathgenie.generation.config import load_config
    from mathgenie.generation.pipeline import check_steps
    from mathgenie.shards import Shard

    overrides = list(args.overrides)
    if args.limit is not None:
        overrides.append(f"limit={args.limit}")
    if args.output_dir is not None:
        overrides.append(f"output_dir={args.output_dir}")
    config = load_config(args.config, overrides)
    stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
    if stages is not None:
        try:
            stages = check_steps(stages)
        except ValueError as e:
            raise ValueError(f"--stages: {e}") from None
    shard = Shard.parse(args.shard)
    if config.executor == "ray" and shard.count > 1:
        raise ValueError("--shard and executor: ray exclude each other; set ray.num_shards instead")
    return config, stages, shard


def _print_funnel(funnel, output_dir: str) -> None:
    from mathgenie.generation.funnel import funnel_table, method_table

    print(funnel_table(funnel))
    if method_table(funnel):
        print("\nrows per augmentation method:\n" + method_table(funnel))
    print(f"outputs: {output_dir} (funnel.json, funnel.png)")
