"""Decontamination and dedup with planted overlaps against the real eval sets (tests/data)."""

from __future__ import annotations

import json
import random

import datasets
import numpy as np
import pytest

from mathgenie.decontamination import REASONS, DecontaminationError, Decontaminator, decontaminate, shipped_index
from mathgenie.decontamination.hashing import doc_hashes, hash_words, minhash_signatures, optimal_lsh_params, shingles
from mathgenie.evaluation.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def eval_sets(real_data):
    return {name: load_benchmark(name, data_dir=real_data)["question"] for name in ("gsm8k", "math500", "mathematics")}


@pytest.fixture(scope="module")
def index(eval_sets):
    return Decontaminator(eval_sets)


@pytest.fixture(scope="module")
def clean_questions(real_data):
    """GSM8K *train* questions (a few genuinely share a 13-gram with GSM8K test)."""
    return [json.loads(line)["question"] for line in (real_data / "gsm8k" / "train.jsonl").open()][:400]


def _long(questions, min_words=30):
    return [q for q in questions if len(q.split()) >= min_words]


def test_planted_eval_overlaps_are_dropped_and_clean_rows_kept(index, eval_sets, clean_questions):
    rng = random.Random(0)
    gsm = [q for q in _long(eval_sets["gsm8k"]) if any(w.isdigit() for w in q.split())]
    planted = {
        "verbatim, other case and spacing": gsm[0].upper().replace(" ", "   "),
        "one number changed": gsm[1].replace(next(w for w in gsm[1].split() if w.isdigit()), "98765", 1),
        "embedded in a longer text": "Solve this for me please. " + gsm[2] + " Thanks a lot!",
        "one word dropped": " ".join(w for i, w in enumerate(gsm[3].split()) if i != 5),
        "short question, verbatim": eval_sets["mathematics"][3],  # 9 words: exact rule
        "MATH-500 verbatim": eval_sets["math500"][7],
    }
    rows = list(clean_questions)
    positions = rng.sample(range(len(rows)), len(planted))
    for pos, text in zip(positions, planted.values()):
        rows[pos] = text
    ds = datasets.Dataset.from_dict({"id": [f"q{i}" for i in range(len(rows))], "question": rows})
    kept, report = decontaminate(ds, eval_sets=index, dedup_within=False)
    reasons = index.flag(rows, dedup_within=False).reasons()
    for pos, label in zip(positions, planted):
        assert reasons[pos] in ("eval_exact", "eval_ngram"), f"planted '{label}' was not caught: {rows[pos][:80]}"
    assert reasons[positions[0]] == "eval_exact" and reasons[positions[4]] == "eval_exact"
    assert reasons[positions[1]] == "eval_ngram"
    # every other row is a train question; the only ones dropped must really share a 13-gram or text with the evals
    dropped_clean = [i for i, r in enumerate(reasons) if r and i not in positions]
    assert len(dropped_clean) <= 2, [rows[i] for i in dropped_clean]
    assert report.kept == len(rows) - len(planted) - len(dropped_clean)
    assert sum(report.dropped.values()) == report.rows - report.kept
    assert report.by_eval_set["gsm8k"] >= 4 and report.by_eval_set["mathematics"] >= 1
    assert set(kept["id"]).isdisjoint({f"q{p}" for p in positions})
    assert kept["id"] == [f"q{i}" for i in range(len(rows)) if reasons[i] is None]  # order kept


def test_short_questions_fall_back_to_exact_match(index, eval_sets):
    short = next(q for q in eval_sets["mathematics"] if hash_words([q]).lengths[0] < 10)  # < 13 words
    flags = index.flag([short.lower() + " ", "Tell me now: " + short], dedup_within=False).reasons()
    assert flags[0] == "eval_exact"
    assert flags[1] is None  # documented: a short eval question inside a longer text has no 13-gram to match


def test_minhash_catches_near_copies_the_ngram_rule_misses(eval_sets):
    index = Decontaminator(eval_sets, ngram=500)  # no question has 500 words: only rules 1 and 3 can fire
    long = _long(eval_sets["gsm8k"], 40)[:40]
    near = [" ".join(q.split()[:-1]) + " altogether?" for q in long]  # last word changed: Jaccard ~0.95
    far = [" ".join(q.split()[: len(q.split()) // 2]) for q in long]  # first half only: Jaccard < 0.5
    reasons = index.flag(near + far, dedup_within=False).reasons()
    assert sum(r == "eval_minhash" for r in reasons[: len(near)]) >= 0.9 * len(near)
    assert all(r is None for r in reasons[len(near):])


def test_dedup_within_keeps_first_occurrence(index, clean_questions):
    a, c = clean_questions[:2]
    b = _long(clean_questions, 45)[0]  # one word changed in 45: Jaccard ~0.95, caught with probability > 0.99
    rows = [a, b, a.upper() + "!!", c, " ".join(b.split()[:-1]) + " total?", b]
    flags = index.flag(rows).reasons()
    assert flags == [None, None, "exact_duplicate", None, "near_duplicate", "exact_duplicate"]
    assert index.flag(rows, dedup_within=False).reasons() == [None] * 6


def test_group_column_keeps_a_questions_rows_together(index, eval_sets, clean_questions):
    a, b = clean_questions[:2]
    gsm = eval_sets["gsm8k"][0]
    ds = datasets.Dataset.from_dict({
        "question_id": ["qa", "qa", "qb", "qe", "qe", "qa2", "qb"],
        "question": [a, a, b, gsm, gsm, a, b],
        "solution_id": ["qa/s0", "qa/s1", "qb/s0", "qe/s0", "qe/s1", "qa2/s0", "qb/s1"],
    })
    kept, report = decontaminate(ds, eval_sets=index, group_column="question_id")
    assert kept["solution_id"] == ["qa/s0", "qa/s1", "qb/s0", "qb/s1"]  # qa2 repeats qa's text, qe is an eval question
    assert report.questions == 4 and report.questions_kept == 2
    assert report.dropped["eval_exact"] == 2 and report.dropped["exact_duplicate"] == 1


def test_a_saved_index_flags_like_the_one_built_from_the_texts(index, eval_sets, clean_questions, tmp_path):
    rows = clean_questions[:100] + list(eval_sets["gsm8k"][:20]) + [eval_sets["math500"][3] + " Explain."]
    index.save(tmp_path / "index.npz")
    loaded = Decontaminator.load(tmp_path / "index.npz")
    assert loaded.params() == index.params()
    np.testing.assert_array_equal(loaded.flag(rows).reason, index.flag(rows).reason)
    np.testing.assert_array_equal(loaded.flag(rows).eval_mask, index.flag(rows).eval_mask)


def test_the_shipped_index_holds_every_benchmark_and_catches_their_test_questions(real_data):
    shipped = shipped_index()
    assert shipped.names == ["gsm8k", "math", "math500", "svamp", "simuleq", "mathematics"]
    assert shipped.sizes == {"gsm8k": 1319, "math": 5000, "math500": 500, "svamp": 1000, "simuleq": 514,
                             "mathematics": 1000}
    for name in shipped.names:
        questions = list(load_benchmark(name, data_dir=real_data)["question"][:25])
        flags = shipped.flag(questions, dedup_within=False)
        assert (flags.reason != 0).all(), name
        assert all(shipped.names[bit] for bit in range(6) if int(flags.eval_mask[0]) >> bit & 1)
    only_svamp = shipped.select(["svamp"], minhash=False)
    assert only_svamp.names == ["svamp"] and only_svamp.bands == 0


def test_results_do_not_depend_on_batching_or_threads(index, clean_questions, eval_sets):
    rows = clean_questions + clean_questions[:50] + list(eval_sets["gsm8k"][:30]) + [None, "", "  "]
    one = index.flag(rows, num_proc=1, batch_size=10_000)
    many = index.flag(rows, num_proc=2, batch_size=7)
    np.testing.assert_array_equal(one.reason, many.reason)
    np.testing.assert_array_equal(one.eval_mask, many.eval_mask)
    assert one.reasons()[-3:] == [None, "exact_duplicate", "exact_duplicate"]  # empty texts are one text


def test_normalization_ignores_case_punctuation_and_unicode_quotes():
    w = hash_words(["Janet’s ducks, lay 16 eggs!", "janet s DUCKS lay 16 eggs", "Janets ducks lay 16 eggs"])
    d = doc_hashes(w)
    assert list(w.lengths) == [6, 6, 5]
    assert d[0] == d[1] != d[2]


def test_minhash_estimates_jaccard():
    """The uint32 permutation family must behave like MinHash: agreement rate ~= Jaccard similarity."""
    rng = np.random.default_rng(0)
    for jaccard in (0.3, 0.6, 0.9):
        agree = []
        for _ in range(60):
            common = int(round(100 * 2 * jaccard / (1 + jaccard)))  # |A|=|B|=100, |A&B|=common
            pool = rng.integers(0, 2**32, 200 - common, dtype=np.uint64).astype(np.uint32)
            a, b = pool[:100], np.concatenate([pool[:common], pool[100:200 - common]])
            sig = minhash_signatures(np.concatenate([a, b]), np.array([0, 100, 200]), 128)
            agree.append((sig[:, 0] == sig[:, 1]).mean())
        assert abs(np.mean(agree) - jaccard) < 0.03, (jaccard, np.mean(agree))


def test_lsh_params_match_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold, num_perm in ((0.8, 128), (0.5, 64), (0.9, 256)):
        assert optimal_lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_shingles_of_short_texts():
    w = hash_words(["one two three", "a b c d e f g", ""])
    values, offsets = shingles(w, 5)
    assert list(np.diff(offsets)) == [1, 3, 1]


def test_bad_input_names_the_field(index):
    ds = datasets.Dataset.from_dict({"problem": ["x"], "n": [1]})
    with pytest.raises(DecontaminationError, match="column='question'.*problem"):
        decontaminate(ds, eval_sets=index)
    with pytest.raises(DecontaminationError, match="type int64"):
        decontaminate(ds, eval_sets=index, column="n")
    with pytest.raises(DecontaminationError, match="minhash_threshold=1.5"):
        Decontaminator({"x": ["a b c"]}, minhash_threshold=1.5)
    with pytest.raises(DecontaminationError, match="eval_sets is empty"):
        Decontaminator({})


def test_report_markdown_lists_every_rule_and_eval_set(index, clean_questions):
    ds = datasets.Dataset.from_dict({"question": clean_questions[:20] + clean_questions[:5]})
    _, report = decontaminate(ds, eval_sets=index)
    md = report.to_markdown()
    assert all(reason in md for reason in REASONS) and "mathematics" in md and "**20** of 25" in md


def test_cli_writes_kept_rows_and_report(tmp_path, real_data, eval_sets, clean_questions):
    from mathgenie.cli import main

    rows = [{"id": i, "question": q} for i, q in enumerate(clean_questions[:30] + [eval_sets["gsm8k"][5]])]
    src = tmp_path / "questions.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    out, report = tmp_path / "clean.parquet", tmp_path / "report.json"
    assert main(["decontaminate", str(src), "--output", str(out), "--report", str(report),
                 "--eval-data-dir", str(real_data), "--benchmarks", "gsm8k,mathematics"]) == 0
    kept = datasets.Dataset.from_parquet(str(out))
    assert 30 not in kept["id"] and len(kept) >= 28
    data = json.loads(report.read_text())
    assert data["dropped"]["eval_exact"] == 1 and data["by_eval_set"]["mathematics"] == 0
    assert data["by_eval_set"]["gsm8k"] == data["rows"] - data["kept"] - data["dropped"]["exact_duplicate"] - \
        data["dropped"]["near_duplicate"]
    with pytest.raises(SystemExit, match="'missing.jsonl': no such file or directory"):
        main(["decontaminate", "missing.jsonl", "--output", str(out), "--eval-data-dir", str(real_data)])
    # without --eval-data-dir the default rules use the index shipped with mathgenie: same rows dropped, no download
    shipped_out, shipped_report = tmp_path / "shipped.parquet", tmp_path / "shipped.json"
    assert main(["decontaminate", str(src), "--output", str(shipped_out), "--report", str(shipped_report),
                 "--benchmarks", "gsm8k,mathematics"]) == 0
    assert datasets.Dataset.from_parquet(str(shipped_out))["id"] == kept["id"]
    assert json.loads(shipped_report.read_text())["dropped"] == data["dropped"]


def test_a_shuffled_dataset_is_read_in_its_own_row_order(index, clean_questions, eval_sets):
    rows = clean_questions[:40] + [eval_sets["gsm8k"][3], clean_questions[0]]  # 41 repeats 0
    ds = datasets.Dataset.from_dict({"id": list(range(len(rows))), "question": rows}).shuffle(seed=1)
    kept, _ = decontaminate(ds, eval_sets=index)
    order = list(ds["id"])
    reasons = dict(zip(order, index.flag([rows[i] for i in order]).reasons()))
    assert list(kept["id"]) == [i for i in order if reasons[i] is None]
    assert reasons[40] == "eval_exact"
    later_copy = 0 if order.index(0) > order.index(41) else 41
    assert reasons[later_copy] == "exact_duplicate" and reasons[41 - later_copy] is None
