"""Build a decontamination index (hashes of eval test questions) from local benchmark files::

    python -m mathgenie.evaluation.eval_index --eval-data-dir data/evals --out mathgenie/decontamination/data/eval_index.npz

This is how the index that ships with mathgenie was built (from the files ``/work/shared/data`` documents in its
PROVENANCE.md; ``mathgenie/decontamination/data/README.md`` names the commits). Build your own with other eval sets or
another n-gram size and point ``decontaminate.index`` of a pipeline config at it.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from pathlib import Path

from mathgenie.decontamination.index import DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_THRESHOLD, Decontaminator
from mathgenie.evaluation.benchmarks import load_benchmark, parse_benchmarks


def build_index(data_dir: str | Path, out: str | Path, *, names=None, ngram: int = DEFAULT_NGRAM,
                minhash_threshold: float | None = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM) -> dict:
    """Index the test questions of ``names`` (default: every benchmark) read from ``data_dir``; returns what went in
    (rows and the sha256 of each source file) for the index's README."""
    eval_sets, sources = {}, {}
    for name in parse_benchmarks(names):
        ds = load_benchmark(name, data_dir=data_dir)
        eval_sets[name] = ds["question"]
        file = next(p for p in (Path(data_dir) / name / "test.jsonl", Path(data_dir) / f"{name}.jsonl") if p.is_file())
        sources[name] = {"rows": len(ds), "file": str(file), "sha256": hashlib.sha256(file.read_bytes()).hexdigest()}
    index = Decontaminator(eval_sets, ngram=ngram, minhash_threshold=minhash_threshold, num_perm=num_perm)
    index.save(out)
    return {"params": index.params(), "sources": sources, "bytes": Path(out).stat().st_size}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--eval-data-dir", required=True, help="<dir>/<name>/test.jsonl for every benchmark")
    p.add_argument("--out", required=True, help="the .npz index to write")
    p.add_argument("--benchmarks", default="all", help="eval sets, comma-separated (default: all)")
    p.add_argument("--ngram", type=int, default=DEFAULT_NGRAM)
    p.add_argument("--minhash-threshold", type=float, default=DEFAULT_THRESHOLD)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    built = build_index(args.eval_data_dir, args.out, names=args.benchmarks, ngram=args.ngram,
                        minhash_threshold=args.minhash_threshold)
    for name, s in built["sources"].items():
        print(f"{name}: {s['rows']} questions, {s['file']} sha256 {s['sha256']}")
    print(f"{args.out}: {built['bytes']:,} bytes, params {built['params']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
