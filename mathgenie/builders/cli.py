"""``mathgenie seed``: build the seed (GSM8K + MATH train), write it as Parquet, optionally push it to the Hub.

    mathgenie seed --output outputs/seed                                   # the bundled 48-row sample (offline)
    mathgenie seed --gsm8k openai/gsm8k --math EleutherAI/hendrycks_math --output outputs/seed
    mathgenie seed --gsm8k data/gsm8k/train.jsonl --math data/MATH --push you/mathgenie-seed --tag v1.0
    mathgenie seed --dcode --push you/mathgenie-dcode --tag v1.0   # D_code: the code-integrated seed (dcode_cli.py)

``--gsm8k``/``--math`` take a Hub dataset repo id or a local file/directory (raw upstream formats or the
``id, question, solution, answer`` format). Nothing is written or pushed unless every row is valid.
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "seed",
        help="build the seed dataset from the Hub or local files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gsm8k", metavar="PATH_OR_REPO", help="GSM8K: Hub repo id (e.g. openai/gsm8k) or local path")
    p.add_argument("--gsm8k-config", default="main", help="Hub config of --gsm8k (default: main)")
    p.add_argument("--math", metavar="PATH_OR_REPO", help="MATH: Hub repo id (e.g. EleutherAI/hendrycks_math) or path")
    p.add_argument("--math-config", default="*", help="Hub config(s) of --math: '*' = all subjects (default)")
    p.add_argument(
        "--source", action="append", default=[], metavar="NAME=PATH_OR_REPO",
        help="another source, any supported format (repeatable); rows get source=NAME and ids NAME/...",
    )
    p.add_argument("--split", default="train", help="split to read from every source (default: train)")
    p.add_argument("--limit", type=int, help="keep the first N rows of each source (quick runs)")
    p.add_argument("--output", metavar="DIR", help="write the seed as a stage folder (DIR/default/{split}/part-*.parquet "
                   "+ DIR/manifest-00000-of-00001.json; `mathgenie push DIR REPO` publishes it)")
    p.add_argument("--push", metavar="REPO_ID", help="push the seed to this Hub dataset repo (one commit)")
    p.add_argument("--tag", help="tag the pushed commit, e.g. v1.0")
    p.add_argument("--dry-run", action="store_true", help="with --push: build and check, push nothing")
    from mathgenie.builders.dcode_cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=main)
    return p


def sources_from_args(args) -> list | None:
    """The `SeedSource` list the flags describe; None (the bundled sample) when no source is given."""
    from mathgenie.builders.seed import SeedSource

    sources = []
    if args.gsm8k:
        sources.append(SeedSource("gsm8k", args.gsm8k, config=args.gsm8k_config, split=args.split))
    if args.math:
        sources.append(SeedSource("math", args.math, config=args.math_config, split=args.split))
    for spec in args.source:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--source {spec!r}: expected NAME=PATH_OR_REPO, e.g. --source mine=data/mine.jsonl")
        sources.append(SeedSource(name, path, split=args.split))
    return sources or None


def main(args) -> int:
    from mathgenie.builders.runner import BuilderInputError
    from mathgenie.builders.seed import build_seed, bundled_seed_sources, pin_hub_revisions

    if args.tag and not args.push:
        raise SystemExit("mathgenie seed: --tag needs --push REPO_ID")
    if not args.output and not args.push:
        logger.warning("neither --output nor --push given: the seed is built and checked, then discarded")
    if args.dcode:
        from mathgenie.builders.dcode_cli import main as dcode_main

        return dcode_main(args)
    sources = sources_from_args(args)
    if sources is None:
        logger.info("no --gsm8k/--math/--source given: building the bundled sample seed (48 rows)")
    sources = pin_hub_revisions(sources or bundled_seed_sources())
    try:
        seed = build_seed(sources, limit=args.limit)
    except (BuilderInputError, FileNotFoundError) as e:  # a bad input file is the user's to fix: no traceback
        raise SystemExit(f"mathgenie seed: {e}") from None
    for split, ds in seed.items():
        logger.info("seed %s: %d rows %s", split, ds.num_rows, dict(sorted(Counter(ds["source"]).items())))
    manifest = seed_manifest(sources, limit=args.limit)
    if args.output:
        from mathgenie.shards import Shard, StageStore

        out = Path(args.output)
        StageStore(out.parent, out.name).write(Shard(), seed, manifest)
        logger.info("wrote %s (default/{split}/part-*.parquet + manifest-00000-of-00001.json)", args.output)
    if args.push:
        push_seed(seed, args.push, manifest=manifest, tag=args.tag, dry_run=args.dry_run)
    return 0


def seed_manifest(sources, *, limit: int | None) -> dict:
    """What the seed's stage folder keeps next to the rows, and what the card shows: the sources (Hub repos pinned
    to a commit) and the build parameters."""
    card_sources = [
        {"name": s.name, "repo_id": s.path_or_repo if s.is_hub else None, "revision": s.revision,
         "config": s.config if s.is_hub else None, "split": s.split}
        for s in sources
    ]
    params = {
        "sources": [
            {"name": s.name, "from": s.path_or_repo if s.is_hub else Path(s.path_or_repo).name, "split": s.split}
            | ({"config": s.config, "revision": s.revision} if s.is_hub else {})
            for s in sources
        ],
        "limit_per_source": limit,
    }
    from mathgenie.builders.seed import DESCRIPTION
    from mathgenie.config import config_hash

    card = {"description": DESCRIPTION, "sources": card_sources, "params": params,
            "extra_sections": {"Normalization": NORMALIZATION}}
    return {"stage": "seed", "config_hash": config_hash(params), "card": card}


NORMALIZATION = """\
Rows keep the source's own ids where it has them (`gsm8k/train/12`, `math/train/algebra/0.json`), else positional
ids (`gsm8k/train/{row}`, `math/train/{subject}/{index}`); ids are stable across rebuilds of the same sources.

- **GSM8K**: `solution` is the text before `####`, `answer` the text after it without thousands separators;
  `level` and `type` are null.
- **MATH**: `answer` is the content of the last `\\boxed{}` / `\\fbox{}` of the solution (nested braces kept, not
  otherwise normalized), `level` is the difficulty 1-5 (null for "Level ?"), `type` the subject."""


def push_seed(seed, repo_id: str, *, manifest: dict, tag: str | None = None, dry_run: bool = False, token=None):
    """One commit with the seed's Parquet shards and its card, then the tag (`mathgenie.upload.push_dataset`)."""
    from mathgenie.cards import render_dataset_card
    from mathgenie.upload import push_dataset

    configs = {"default": seed}
    card = render_dataset_card(repo_id=repo_id, stage="seed", configs=configs, revision=tag, **manifest["card"])
    result = push_dataset(configs, repo_id, card=card, tag=tag, dry_run=dry_run, token=token)
    logger.info("pushed %s: commit %s%s", repo_id, result.commit_sha, f", tag {tag}" if tag else "")
    return result
