"""``mathgenie train CONFIG.yaml [--field value ...]``: run the recipe the YAML names in its ``recipe:`` key
(``backtranslation``, ``mcode`` or ``mathgenie-lm``). Every other YAML key is a field of that recipe's config (TRL's
`SFTConfig` plus mathgenie's, see `config.py`); command-line ``--field value`` pairs override the YAML (TRL's
`TrlParser`).

    mathgenie train configs/train_mcode.yaml                        # M_code: solver + verifier on D_code
    mathgenie train configs/train_mathgenie_lm.yaml --model_name_or_path Qwen/Qwen2.5-1.5B --push_tag v1
    mathgenie train configs/train_mathgenie_lm.yaml --help          # every field of the recipe
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m mathgenie.cli train configs/train_mathgenie_lm.yaml
"""

from __future__ import annotations

import argparse
import logging
import re

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train the back-translation model, M_code or MathGenieLM (TRL SFT)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", help="YAML config with a `recipe:` key (backtranslation | mcode | mathgenie-lm)")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="--field value pairs overriding the YAML")
    parser.set_defaults(func=main)
    return parser


def read_recipe(path: str) -> str:
    import yaml

    from mathgenie.training.config import RECIPES

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a YAML mapping of config fields")
    recipe = raw.get("recipe")
    if recipe not in RECIPES:
        raise ValueError(f"{path}: `recipe: {recipe}` is not a recipe; set `recipe:` to one of {sorted(RECIPES)}")
    return recipe


def parse_config(path: str, overrides: list[str] | None = None):
    """The recipe config of ``path`` with ``overrides`` applied (YAML first, then the command line)."""
    from trl import TrlParser

    from mathgenie.training.config import RECIPES

    parser = TrlParser([RECIPES[read_recipe(path)]])
    try:
        (config,) = parser.parse_args_and_config(["--config", path, *(overrides or [])])
    except ValueError as e:  # TrlParser names the unknown keys as flags ("--learnin_rate") but not the file
        unknown = re.findall(r"'--([^']+)'", str(e))
        if "Unknown arguments" not in str(e) or not unknown:
            raise
        raise ValueError(f"{path}: unknown config key(s) {unknown} for recipe "
                         f"{read_recipe(path)!r}; remove them or fix the spelling (`mathgenie train {path} --help` "
                         "lists every field)") from None
    return config


def main(args) -> int:
    from mathgenie.training.recipes import train

    try:
        config = parse_config(args.config, args.overrides)
        result = train(config)
    except ValueError as e:  # the recipes' config and data checks: the message names the field and the fix
        if getattr(args, "verbose", False):
            raise
        raise SystemExit(f"mathgenie train: {e} (-v shows the traceback)") from None
    logger.info("model in %s (step %d, last loss %s)", result.model_dir, result.global_step,
                result.train_summary.get("last_loss"))
    if result.push is not None:
        logger.info("pushed %s at %s, tag %s", config.push_repo_id, result.push.commit_sha, result.push.tag)
    return 0
