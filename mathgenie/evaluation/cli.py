"""``mathgenie eval``: accuracy of a model on GSM8K, MATH, MATH-500, SVAMP, SimulEq and Mathematics.

    mathgenie eval --model org/MathGenieLM --revision v1.0                  # all benchmarks, greedy, from the Hub
    mathgenie eval --model ./checkpoint --benchmarks gsm8k,math500 --limit 200 --data-dir data/evals
    mathgenie eval --model org/MathGenieLM --n 10 --temperature 0.7         # maj@10
    mathgenie eval --model org/MathGenieLM --verify-rounds 2 --push-card    # verified inference, results -> card
    mathgenie eval --config eval.yaml --limit 50                            # YAML keys = the flags; flags win

Writes ``results.json``, ``results.md`` and ``predictions/<benchmark>.parquet`` (every solution with its code
executions) to ``--output-dir``; ``--push-card`` adds the results to the model repo's model-index as a new commit,
``--push-predictions REPO`` publishes the predictions as a dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import typing
from dataclasses import MISSING, fields

if typing.TYPE_CHECKING:
    from mathgenie.evaluation.config import EvalConfig

logger = logging.getLogger(__name__)


def _parse_value(text: str, annotation: str):
    if "None" in annotation and text.lower() in ("", "none", "null"):
        return None
    if annotation.startswith("list"):
        return [part.strip() for part in text.split(",") if part.strip()]
    if "dict" in annotation:
        return json.loads(text)
    if annotation.startswith("int"):
        return int(text)
    if annotation.startswith("float"):
        return float(text)
    return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    from mathgenie.evaluation.config import EvalConfig  # light: no torch, vllm or datasets

    p = subparsers.add_parser("eval", help="evaluate a model on the math benchmarks", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML file of EvalConfig fields (command-line flags override it)")
    for f in fields(EvalConfig):
        flag = "--" + f.name.replace("_", "-")
        annotation = str(f.type)
        help_ = f.metadata.get("help", "")
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        if annotation == "bool":
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                           help=f"{help_} (default: {default})")
        else:
            choices = f.metadata.get("choices")
            # SUPPRESS: a flag not given leaves no attribute, so an explicit `none` (None) still overrides the YAML.
            p.add_argument(flag, dest=f.name, default=argparse.SUPPRESS, metavar=None if choices else f.name.upper(),
                           choices=choices,
                           type=lambda t, a=annotation: _parse_value(t, a),
                           help=f"{help_} (default: {', '.join(default) if isinstance(default, list) else default})")
    p.set_defaults(func=main)
    return p


def config_from_args(args) -> EvalConfig:
    """The YAML of ``--config`` (if any) with the flags given on top (`mathgenie.config.load_yaml`: an unknown key in
    the YAML is an error naming the key and the file)."""
    from mathgenie.config import load_yaml
    from mathgenie.evaluation.config import EvalConfig

    flags = {f.name: getattr(args, f.name) for f in fields(EvalConfig) if hasattr(args, f.name)}
    return load_yaml(EvalConfig, args.config, values=flags)


def main(args) -> int:
    from mathgenie.config import ConfigError
    from mathgenie.evaluation.run import evaluate_model

    try:
        cfg = config_from_args(args)
    except ConfigError as e:
        raise SystemExit(f"mathgenie eval: {e}") from None
    run = evaluate_model(cfg)
    print(run.table)  # the command's result, on stdout
    logger.info("wrote %s", ", ".join(run.files))
    if run.card_commit:
        logger.info("model card updated: commit %s", run.card_commit)
    return 0
