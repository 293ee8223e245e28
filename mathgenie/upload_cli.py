"""``mathgenie push DIR REPO_ID``: publish a stage folder (any folder a pipeline stage or ``mathgenie seed --output``
wrote: every shard, the card from its manifests, the run's funnel) or, with ``--model``, a model folder, as one atomic
commit plus a tag::

    mathgenie push outputs/demo/decontaminated me/mathgenie-verified --tag v1.0
    mathgenie push checkpoints/mathgenie-lm me/MathGenieLM --model --tag v1.0
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "push", help="publish a stage dataset or a model folder to the Hub",
        description="Publish DIR as one commit (all files, README card) and tag it. DIR is a stage folder "
                    "(manifest-XXXXX-of-XXXXX.json + default/{split}/part-*.parquet, as `mathgenie run` writes "
                    "every stage) or, with --model, a save_pretrained folder.")
    parser.add_argument("dir", type=Path, help="stage folder (e.g. outputs/demo/decontaminated), or model folder "
                        "with --model")
    parser.add_argument("repo_id", help="namespace/name on the Hub")
    parser.add_argument("--tag", default=None, help="version tag to create on the new commit, e.g. v1.0")
    parser.add_argument("--branch", default="main", help="branch to commit to (created from main if missing)")
    parser.add_argument("--message", default=None, help="commit message (default: a summary of what is pushed)")
    parser.add_argument("--card-data", type=Path, default=None,
                        help="with --model: JSON with card fields (base_model, datasets, hyperparameters, "
                             "train_summary, eval_results)")
    parser.add_argument("--config-hash", default=None,
                        help="the config hash to publish when the stage folder holds complete outputs of several")
    parser.add_argument("--model", action="store_true", help="DIR is a model folder")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--dry-run", action="store_true", help="print what would be committed; write nothing")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    from mathgenie.upload import PushError

    try:
        result = _push_model(args) if args.model else _push_dataset(args)
    except (PushError, HfHubHTTPError, ValueError, FileNotFoundError) as e:
        logger.error("push failed: %s", e)
        return 1
    if result.dry_run:
        print(f"dry run: {args.repo_id}@{result.revision} would get:")
        print("\n".join(f"  {line}" for line in result.operations))
        return 0
    state = "new commit" if result.changed else "unchanged"
    print(f"{args.repo_id}@{result.revision}: {result.commit_sha} ({state})" + (f", tag {result.tag}" if result.tag
                                                                                 else ""))
    return 0


def _card_data(args, default: dict, render) -> dict:
    """Card fields from ``--card-data``, checked against the signature of ``render``."""
    import inspect

    fields = dict(default)
    if args.card_data is not None:
        try:
            fields.update(json.loads(args.card_data.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"--card-data {args.card_data}: not valid JSON ({e})") from None
    allowed = set(inspect.signature(render).parameters) - {"repo_id", "configs", "revision"}
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"card data has unknown field(s) {unknown}; allowed: {sorted(allowed)}")
    return fields


def _push_dataset(args):
    from mathgenie.generation.publish import push_stage_folder

    if args.card_data is not None:
        raise ValueError("--card-data is for --model; a stage folder's card comes from its manifests")
    return push_stage_folder(args.dir, args.repo_id, tag=args.tag, config_hash=args.config_hash, branch=args.branch,
                             commit_message=args.message, dry_run=args.dry_run, private=args.private)


def _push_model(args):
    from mathgenie.cards import render_model_card
    from mathgenie.upload import push_model

    fields = _card_data(args, {}, render_model_card)
    card = render_model_card(repo_id=args.repo_id, revision=args.tag, **fields) if fields else None
    return push_model(args.dir, args.repo_id, card=card, branch=args.branch, tag=args.tag,
                      commit_message=args.message, dry_run=args.dry_run, private=args.private)
