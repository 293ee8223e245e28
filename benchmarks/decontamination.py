"""Decontamination throughput: 1M synthetic questions against all six eval sets, I/O included (goal: < 30 s on 2 cores).

Synthetic questions are GSM8K/MATH *train* questions cut to ~30 words with every number redrawn and 15% of the words
swapped for random ones. Planted among them, at random positions: eval questions (verbatim with case/spacing noise,
with one number changed, embedded in a longer text, with one word dropped) and copies of earlier synthetic questions
(exact up to case/punctuation, and with the last word changed). Timed: read the parquet file, build the eval index
from the benchmark files, decontaminate (``num_proc`` threads), write the kept rows to parquet. Baselines in the same
run: a pure-Python set-of-13-gram-tuples scan over all rows (also the reference for rules 1-2), datasketch MinHash LSH
on a sample, and rensa's MinHash + LSH flags over all rows when rensa is installed.

    flock /tmp/mathgenie-heavy.lock .venv/bin/python benchmarks/decontamination.py --docs 1000000 --num-proc 2
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mathgenie.decontamination import REASONS, Decontaminator, decontaminate
from mathgenie.decontamination.hashing import hash_words, shingles
from mathgenie.evaluation.benchmarks import BENCHMARKS, load_benchmark

DATA_DIR = Path(__file__).resolve().parents[1] / "tests" / "data"  # the real eval sets shipped with the repo
EVAL_KINDS = ("eval_verbatim", "eval_number_changed", "eval_embedded", "eval_word_dropped")
DUP_KINDS = ("dup_exact", "dup_near")
_WORD = re.compile(r"[^\W_]+")


def make_questions(n: int, n_eval: int, n_dup: int, data_dir: Path, seed: int = 0) -> pa.Table:
    """``n`` rows ``id, question, kind, source`` (kind: "clean", one of EVAL_KINDS or DUP_KINDS; source: the row a
    copy was made from, else -1)."""
    rng = np.random.default_rng(seed)
    templates = [r["question"].split() for name in ("gsm8k", "math") for r in _jsonl(data_dir / name / "train.jsonl")]
    vocab = sorted({w for t in templates for w in t if w.isalpha()})
    evals = [q.split() for name in BENCHMARKS for q in load_benchmark(name, data_dir=data_dir)["question"]]
    t_idx = rng.integers(0, len(templates), n)
    lengths = rng.integers(24, 37, n)
    swaps = rng.random((n, 40)) < 0.15
    swap_words = rng.integers(0, len(vocab), (n, 40))
    numbers = rng.integers(2, 1000, (n, 40))
    questions = []
    for i in range(n):
        words = templates[t_idx[i]][: lengths[i]]
        out = [str(numbers[i, j]) if any(c.isdigit() for c in w) else vocab[swap_words[i, j]] if swaps[i, j] else w
               for j, w in enumerate(words)]
        questions.append(" ".join(out))
    kinds = ["clean"] * n
    sources = [-1] * n  # for copies: the row copied
    planted = rng.choice(np.arange(n // 10, n), size=n_eval + n_dup, replace=False)  # leave room for dup sources
    for k, pos in enumerate(planted[:n_eval]):
        kind = EVAL_KINDS[k % len(EVAL_KINDS)]
        words = list(evals[rng.integers(len(evals))])
        while kind != "eval_verbatim" and len(words) < 30:  # the other kinds need a 13-word run left intact
            words = list(evals[rng.integers(len(evals))])
        if kind == "eval_verbatim":
            text = "  ".join(w.upper() if j % 3 == 0 else w for j, w in enumerate(words)) + " ?"
        elif kind == "eval_number_changed":
            j = next((j for j, w in enumerate(words) if any(c.isdigit() for c in w)), len(words) // 2)
            words[j] = str(int(rng.integers(1000, 9999)))
            text = " ".join(words)
        elif kind == "eval_embedded":
            text = "Here is a problem from my homework: " + " ".join(words) + " Please explain each step."
        else:
            del words[int(rng.integers(len(words)))]
            text = " ".join(words)
        questions[pos], kinds[pos] = text, kind
    for k, pos in enumerate(planted[n_eval:]):
        kind = DUP_KINDS[k % len(DUP_KINDS)]
        src = int(rng.integers(0, pos))
        while kinds[src] != "clean":
            src = int(rng.integers(0, pos))
        words = questions[src].split()
        if kind == "dup_exact":
            text = " ".join(words).upper() + "!"
        else:
            text = " ".join(words[:-1] + [vocab[rng.integers(len(vocab))]])
        questions[pos], kinds[pos], sources[pos] = text, kind, src
    return pa.table({"id": [f"synthetic/{i}" for i in range(n)], "question": questions, "kind": kinds,
                     "source": sources})


def _jsonl(path: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in path.open()]


def naive_scan(questions: list[str], eval_questions: list[str], n: int) -> np.ndarray:
    """Reference for rules 1-2: Python sets of normalized texts and of n-gram tuples."""
    def words(text):
        return _WORD.findall(text.lower()) if text else []

    exact, grams = set(), set()
    for q in eval_questions:
        w = words(q)
        exact.add(tuple(w))
        grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
    flagged = np.zeros(len(questions), dtype=bool)
    for i, q in enumerate(questions):
        w = words(q)
        flagged[i] = tuple(w) in exact or any(tuple(w[j : j + n]) in grams for j in range(len(w) - n + 1))
    return flagged


def datasketch_rate(questions: list[str], eval_questions: list[str], sample: int, threshold=0.8, num_perm=128):
    from datasketch import MinHash, MinHashLSH

    def shingle_sets(texts):
        out = []
        for t in texts:
            w = _WORD.findall(t.lower())
            out.append([" ".join(w[i : i + 5]).encode() for i in range(max(1, len(w) - 4))])
        return out

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    for i, m in enumerate(MinHash.bulk(shingle_sets(eval_questions), num_perm=num_perm)):
        lsh.insert(f"e{i}", m)
    start = time.perf_counter()  # the generated questions only: shingle, sketch, query, insert
    for i, m in enumerate(MinHash.bulk(shingle_sets(questions[:sample]), num_perm=num_perm)):
        lsh.query(m)
        lsh.insert(f"g{i}", m)
    return sample / (time.perf_counter() - start)


def rensa_seconds(questions_arrow, index: Decontaminator) -> float | None:
    """rensa's sketch + one-shot LSH flags over the same shingle hashes (flags only: no keep-first decision)."""
    try:
        import rensa
    except ImportError:
        return None
    words = hash_words(questions_arrow)
    values, offsets = shingles(words, index.shingle_words)
    start = time.perf_counter()
    num_perm = index.bands * index.rows  # rensa needs bands to divide num_perm
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(values.astype(np.uint64), offsets.astype(np.uint64),
                                                                 num_perm, 1)
    rensa.RMinHashLSH(index.minhash_threshold, num_perm, index.bands).query_duplicate_flags_matrix_one_shot(matrix)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--planted-eval", type=int, default=10_000)
    parser.add_argument("--planted-dup", type=int, default=20_000)
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    parser.add_argument("--datasketch-sample", type=int, default=20_000)
    args = parser.parse_args()

    import datasets

    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix="mathgenie-decontam-bench-"))
    t0 = time.perf_counter()
    table = make_questions(args.docs, args.planted_eval, args.planted_dup, args.data_dir)
    pq.write_table(table, work / "questions.parquet")
    print(f"generated {args.docs:,} questions ({np.mean([len(q.split()) for q in table['question'][:10000].to_pylist()]):.1f} "
          f"words on average) in {time.perf_counter() - t0:.1f} s (not timed below)")
    del table

    times = {}
    start = time.perf_counter()
    ds = datasets.Dataset(pq.read_table(work / "questions.parquet"))
    times["read parquet"] = time.perf_counter() - start
    t = time.perf_counter()
    index = Decontaminator({name: load_benchmark(name, data_dir=args.data_dir)["question"] for name in BENCHMARKS})
    times["load eval sets + build index"] = time.perf_counter() - t
    t = time.perf_counter()
    kept, report = decontaminate(ds, eval_sets=index, num_proc=args.num_proc)
    times["decontaminate + dedup"] = time.perf_counter() - t
    t = time.perf_counter()
    kept.to_parquet(str(work / "kept.parquet"))
    times["write kept parquet"] = time.perf_counter() - t
    total = time.perf_counter() - start

    print(f"\n## mathgenie decontaminate, {args.docs:,} questions, num_proc={args.num_proc}\n")
    print("| stage | seconds | questions/s |\n|---|---:|---:|")
    for stage, sec in times.items():
        print(f"| {stage} | {sec:.2f} | {args.docs / sec:,.0f} |")
    print(f"| **total (I/O included)** | **{total:.2f}** | **{args.docs / total:,.0f}** |")
    if args.num_proc > 1:
        t = time.perf_counter()
        decontaminate(ds, eval_sets=index, num_proc=1)
        one = time.perf_counter() - t
        print(f"| (decontaminate + dedup with 1 thread, for scaling) | {one:.2f} | {args.docs / one:,.0f} |")
    print(f"\nkept {report.kept:,} of {report.rows:,}; dropped: {report.dropped}; by eval set: {report.by_eval_set}")
    print(f"params: {report.params}")

    # -- quality against the planted rows and the reference scan ---------------------------------------------------
    kinds = np.array(ds["kind"])
    flags = index.flag(ds.with_format("arrow")["question"], num_proc=args.num_proc)
    reason = np.array([None] + list(REASONS), dtype=object)[flags.reason]
    eval_flag = np.isin(reason, REASONS[:3])
    dup_flag = np.isin(reason, REASONS[3:])
    print("\n| planted kind | rows | eval_exact | eval_ngram | eval_minhash | exact_duplicate | near_duplicate |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for kind in ("clean",) + EVAL_KINDS + DUP_KINDS:
        sel = kinds == kind
        print(f"| {kind} | {sel.sum():,} | " + " | ".join(f"{(reason[sel] == r).sum():,}" for r in REASONS) + " |")
    planted_eval = np.isin(kinds, EVAL_KINDS)
    planted_dup = np.isin(kinds, DUP_KINDS)
    print(f"\neval overlap: recall {eval_flag[planted_eval].mean():.4f}, precision "
          f"{planted_eval[eval_flag].mean():.4f} (flagged {eval_flag.sum():,}, planted {planted_eval.sum():,})")
    print(f"within dedup: recall {dup_flag[planted_dup].mean():.4f}, precision {planted_dup[dup_flag].mean():.4f} "
          f"(flagged {dup_flag.sum():,}, planted {planted_dup.sum():,})")

    # -- baselines ----------------------------------------------------------------------------------------------------
    questions = ds["question"]
    eval_questions = [q for name in BENCHMARKS for q in load_benchmark(name, data_dir=args.data_dir)["question"]]
    t = time.perf_counter()
    ref = naive_scan(questions, eval_questions, index.ngram)
    naive_s = time.perf_counter() - t
    ours = np.isin(reason, REASONS[:2])
    print("\n| baseline | seconds | questions/s |\n|---|---:|---:|")
    print(f"| pure-Python 13-gram tuple set scan, 1 process, {args.docs:,} rows (rules 1-2 only) | {naive_s:.2f} | "
          f"{args.docs / naive_s:,.0f} |")
    rate = datasketch_rate(questions, eval_questions, args.datasketch_sample)
    print(f"| datasketch MinHash (128 perm, word 5-grams) + LSH query/insert, {args.datasketch_sample:,}-row sample "
          f"| {args.docs / rate:.1f} (extrapolated) | {rate:,.0f} |")
    rs = rensa_seconds(ds.with_format("arrow")["question"], index)
    if rs is not None:
        print(f"| rensa RMinHash digest matrix + one-shot LSH flags on our shingle hashes (sketch only, no keep-first "
              f"decision, no signatures back to Python) | {rs:.2f} | {args.docs / rs:,.0f} |")
    print(f"\nrules 1-2 vs the pure-Python reference: both {int((ref & ours).sum()):,}, reference only "
          f"{int((ref & ~ours).sum()):,}, ours only {int((~ref & ours).sum()):,}")
    real = planted_eval | ref
    print(f"eval-rule flags that are planted or a real 13-gram/exact overlap of a train template with an eval set: "
          f"{real[eval_flag].mean():.4f} ({int((eval_flag & ~real).sum())} other flags, all from MinHash)")
    near_rows = np.flatnonzero(kinds == "dup_near")
    src = np.array(ds["source"])[near_rows]
    jac = _jaccards(questions, near_rows, src, index)
    expected = (1 - (1 - jac**index.rows) ** index.bands).mean()
    print(f"dup_near: true Jaccard to the copied row {np.mean(jac):.3f} on average; LSH S-curve "
          f"({index.bands} bands x {index.rows} rows) predicts recall {expected:.4f}, measured "
          f"{dup_flag[near_rows].mean():.4f}")
    # near_duplicate flags on rows not planted as copies: how similar is the earlier row they collided with?
    sample = np.flatnonzero((kinds == "clean") & (reason == "near_duplicate"))[:500]
    if len(sample):
        keys = index._sketch(ds.with_format("arrow")["question"]).bands
        first = [dict(zip(*np.unique(band, return_index=True))) for band in keys]
        partner = np.array([min(f[band[j]] for f, band in zip(first, keys)) for j in sample])
        jac = _jaccards(questions, sample, partner, index)
        print(f"near_duplicate flags on unplanted rows (sample of {len(sample)}): true Jaccard to the colliding "
              f"earlier row: mean {jac.mean():.3f}, >= {index.minhash_threshold}: {(jac >= index.minhash_threshold).mean():.3f}, "
              f">= 0.5: {(jac >= 0.5).mean():.3f}")


def _jaccards(questions, rows, others, index) -> np.ndarray:
    """True Jaccard similarity of the word-shingle sets of questions[rows[i]] and questions[others[i]]."""
    m = len(rows)
    words = hash_words(pa.array([questions[i] for i in np.r_[rows, others]]))
    values, offsets = shingles(words, index.shingle_words)
    sets = [set(values[offsets[i]:offsets[i + 1]].tolist()) for i in range(2 * m)]
    return np.array([len(sets[i] & sets[m + i]) / len(sets[i] | sets[m + i]) for i in range(m)])

if __name__ == "__main__":
    main()
