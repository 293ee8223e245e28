"""``mathgenie decontaminate``: drop generated questions that overlap the eval sets, and near-duplicates.

    mathgenie decontaminate outputs/run/verified --output outputs/run/clean.parquet --eval-data-dir data/evals
    mathgenie decontaminate you/mathgenie-verified --split train --group-column question_id --output clean.parquet
    mathgenie decontaminate questions.jsonl --ngram 8 --no-minhash --output clean.jsonl --report report.json

INPUT is a parquet/jsonl file, a directory of them (of ``--split`` when a subdirectory is named so, as in a stage
folder ``default/{split}/*.parquet``), or a Hub dataset repo id. The eval sets are the benchmarks of `mathgenie eval`
(``--benchmarks``): the index shipped with mathgenie (hashes of their test questions) for the default rules, else read
from ``--eval-data-dir`` (``<dir>/<name>/test.jsonl``) or the Hub. The kept
rows are written to ``--output`` (.parquet or .jsonl) and the counts per rule and per eval set to ``--report`` (JSON)
and the log. Rules: `mathgenie.decontamination`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("decontaminate", help="drop questions overlapping the eval sets, and near-duplicates",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="INPUT", help="parquet/jsonl file, directory of them, or Hub dataset repo id")
    p.add_argument("--split", default="train", help="split of a Hub dataset or directory (default: train)")
    p.add_argument("--config", default=None, help="config (subset) of a Hub dataset")
    p.add_argument("--revision", default=None, help="revision of a Hub dataset")
    p.add_argument("--output", required=True, help="where the kept rows go: .parquet or .jsonl")
    p.add_argument("--report", help="write the counts (per rule, per eval set) here as JSON")
    p.add_argument("--column", default="question", help="text column to check (default: question)")
    p.add_argument("--group-column", help="rows with the same value are one question (default: question_id for "
                   "solved/verified rows)")
    p.add_argument("--benchmarks", default="all", help="eval sets, comma-separated (default: all)")
    p.add_argument("--eval-data-dir", help="read eval sets from <dir>/<name>/test.jsonl instead of the Hub")
    p.add_argument("--ngram", type=int, default=13, help="word n-gram size of the eval overlap rule (default: 13)")
    p.add_argument("--minhash-threshold", type=float, default=0.8, help="MinHash LSH Jaccard threshold (0.8)")
    p.add_argument("--no-minhash", action="store_true", help="n-gram and exact rules only")
    p.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default: 128)")
    p.add_argument("--no-dedup", action="store_true", help="do not drop duplicates within the input")
    p.add_argument("--num-proc", type=int, default=None, help="threads (default: all cores)")
    p.set_defaults(func=main)
    return p


def load_input(path_or_repo: str, *, split: str, config: str | None = None, revision: str | None = None):
    import datasets

    path = Path(path_or_repo)
    if path.exists():
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*") if p.suffix in (".parquet", ".jsonl", ".json") and p.is_file())
        if path.is_dir():  # a stage directory ({config}/{split}/*.parquet): the files of the split asked for
            files = [p for p in files if split in p.relative_to(path).parts[:-1]] or files
        if not files:
            raise SystemExit(f"mathgenie decontaminate: no .parquet/.jsonl files under {path}")
        builder = "parquet" if files[0].suffix == ".parquet" else "json"
        return datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    if path.suffix in (".parquet", ".jsonl", ".json") or path_or_repo.startswith((".", "/", "~")) \
            or path_or_repo.count("/") != 1:  # not a Hub id (owner/name): a path that is not there
        raise SystemExit(f"mathgenie decontaminate: INPUT {path_or_repo!r}: no such file or directory (a Hub dataset "
                         "is given as owner/name)")
    return datasets.load_dataset(path_or_repo, config, split=split, revision=revision)


def main(args) -> int:
    from mathgenie.decontamination import DecontaminationError, decontaminate
    from mathgenie.evaluation.benchmarks import parse_benchmarks

    output = Path(args.output)
    if output.suffix not in (".parquet", ".jsonl"):
        raise SystemExit(f"--output {args.output!r}: give a .parquet or .jsonl file name")
    try:
        names = parse_benchmarks(args.benchmarks)
    except KeyError as e:
        raise SystemExit(f"--benchmarks: {e.args[0]}") from None
    dataset = load_input(args.input, split=args.split, config=args.config, revision=args.revision)
    group_column = args.group_column
    if group_column is None and "question_id" in dataset.column_names and "solution_id" in dataset.column_names:
        group_column = "question_id"  # solved/verified rows: a question's solutions go together
        logger.info("grouping rows by question_id (several solutions per question)")
    try:
        index = _index(args, names)
        kept, report = decontaminate(dataset, column=args.column, eval_sets=index, dedup_within=not args.no_dedup,
                                     group_column=group_column, num_proc=args.num_proc)
    except DecontaminationError as e:
        raise SystemExit(f"mathgenie decontaminate: {e}") from None
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")  # never leave a half-written output under the final name
    kept.to_parquet(str(tmp)) if output.suffix == ".parquet" else kept.to_json(str(tmp), lines=True)
    tmp.replace(output)
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=2))
    logger.info("kept %d of %d rows -> %s\n%s", report.kept, report.rows, output, report.to_markdown())
    return 0


def _index(args, names: list[str]):
    """The index shipped with mathgenie when it has what the flags ask for (no download, no eval texts needed), else
    one built from the eval sets of ``--eval-data-dir`` or the Hub."""
    from mathgenie.decontamination import Decontaminator, shipped_index
    from mathgenie.evaluation.benchmarks import load_benchmark

    shipped = shipped_index()
    if args.eval_data_dir is None and (args.ngram, args.num_perm) == (shipped.ngram, shipped.num_perm) and \
            (args.no_minhash or args.minhash_threshold == shipped.minhash_threshold):
        logger.info("eval sets %s from the index shipped with mathgenie", names)
        return shipped.select(names, minhash=not args.no_minhash)
    eval_sets = {n: load_benchmark(n, data_dir=args.eval_data_dir)["question"] for n in names}
    return Decontaminator(eval_sets, ngram=args.ngram, num_perm=args.num_perm,
                          minhash_threshold=None if args.no_minhash else args.minhash_threshold)
