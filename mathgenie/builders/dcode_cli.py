"""``mathgenie seed --dcode``: build D_code, the code-integrated seed (`dcode.py`), write it as Parquet and/or push it
to the Hub as two configs, ``solutions`` and ``verifications``::

    mathgenie seed --dcode --push you/mathgenie-dcode --tag v1.0       # from MathGenie's Hub datasets
    mathgenie seed --dcode --dcode-solutions data/MATH-GSM8K-Tool-81K --dcode-verifications data/MathGenieData \\
        --output outputs/dcode

The training mix reads the result with ``dataset: you/mathgenie-dcode, config: solutions`` (or ``verifications``), or
the published datasets directly with ``format: mathcoder``. Nothing is written or pushed unless every record is valid.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

SUMMARY = ("D_code, MathGenie's code-integrated seed: GPT-4 code-integrated solutions of GSM8K and MATH training "
           "problems (`solutions`) and code-integrated verification rationales of such solutions (`verifications`: "
           "question, the verified solution as text, the rationale), in MathCoder's LCE blocks.")


def add_arguments(p) -> None:
    p.add_argument("--dcode", action="store_true", help="build D_code (the code-integrated seed) instead of the text "
                   "seed: solutions from --dcode-solutions, verification rationales from --dcode-verifications")
    p.add_argument("--dcode-solutions", default="MathGenie/MATH-GSM8K-Tool-81K", metavar="PATH_OR_REPO",
                   help="D_code solutions: Hub repo or local copy (default: MathGenie/MATH-GSM8K-Tool-81K)")
    p.add_argument("--dcode-verifications", default="MathGenie/MathGenieData", metavar="PATH_OR_REPO",
                   help="D_code verification rationales (default: MathGenie/MathGenieData)")


def sources_from_args(args) -> list:
    from dataclasses import replace

    from mathgenie.builders.dcode import MATHGENIE_DATA, TOOL_81K

    # named as in `PAPER_SOURCES` whatever the path, so ids do not depend on where the copy lives
    sources = [replace(TOOL_81K, path_or_repo=args.dcode_solutions, split=args.split),
               replace(MATHGENIE_DATA, path_or_repo=args.dcode_verifications, split=args.split)]
    return [_pinned(s) for s in sources]


def _pinned(source):
    if not source.is_hub:
        return source
    from dataclasses import replace

    from huggingface_hub import HfApi

    return replace(source, revision=HfApi().dataset_info(source.path_or_repo, revision=source.revision).sha)


def main(args) -> int:
    from mathgenie.builders.dcode import build_dcode
    from mathgenie.builders.runner import BuilderInputError

    sources = sources_from_args(args)
    try:
        dcode = build_dcode(sources, limit=args.limit)
    except (BuilderInputError, FileNotFoundError) as e:
        raise SystemExit(f"mathgenie seed --dcode: {e}") from None
    card_sources = [{"name": s.name, "repo_id": s.path_or_repo if s.is_hub else None, "revision": s.revision,
                     "split": s.split, "license": "apache-2.0"} for s in sources]
    params = {"sources": [{"kind": s.kinds[0], "from": s.path_or_repo, "revision": s.revision} for s in sources],
              "limit_per_source": args.limit}
    manifest = {"stage": "dcode", "sources": card_sources, "params": params}
    if args.output:
        from mathgenie.shards import Shard, StageStore

        for config, splits in dcode.items():  # one stage folder per config, each `mathgenie push`-able
            StageStore(args.output, config).write(Shard(), splits, {**manifest, "config": config})
        logger.info("wrote %s/{solutions,verifications} (stage folders: default/{split}/part-*.parquet + manifest)",
                    args.output)
    if args.push:
        from mathgenie.cards import render_dataset_card
        from mathgenie.upload import push_dataset

        card = render_dataset_card(repo_id=args.push, stage="dcode", configs=dcode, sources=card_sources,
                                   params=params, revision=args.tag, license="apache-2.0",
                                   pretty_name="MathGenie D_code", summary=SUMMARY)
        result = push_dataset(dcode, args.push, card=card, tag=args.tag, dry_run=args.dry_run)
        logger.info("pushed %s: commit %s", args.push, result.commit_sha)
    return 0
