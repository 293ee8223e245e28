"""Decontamination against the eval sets and deduplication of generated questions.

Every question is normalized (lowercase; each run of characters that are not letters or digits is one word break) and
its words are hashed. A question is dropped for the first rule that fires, in this order:

1. ``eval_exact``: its normalized text equals an eval question's.
2. ``eval_ngram``: it shares a word ``ngram``-gram (13 by default) with an eval question. A text shorter than
   ``ngram`` words has no n-gram, so short questions and short eval questions (DeepMind Mathematics has many) are
   only compared by rules 1 and 3.
3. ``eval_minhash``: MinHash LSH puts it in a bucket with an eval question (word 5-gram shingles; a text shorter than
   5 words is one shingle; bands and rows chosen for ``minhash_threshold`` as in datasketch).
4. ``exact_duplicate``: its normalized text equals that of an earlier question (``dedup_within``).
5. ``near_duplicate``: it shares an LSH bucket with an earlier question (``dedup_within``).

"Earlier" means a lower row index among the rows that passed rules 1-3, so the first occurrence is kept and the result
does not depend on batching or ``num_proc``. With ``group_column`` (e.g. ``question_id`` of solved/verified rows,
where one question has several solution rows) the rules apply to questions and a question's rows go together.

Hashing and MinHash are vectorized numpy (`mathgenie.evaluation.hashing`); datasketch computes the same sketch one
text at a time and rensa hands signatures back as Python lists, both slower end to end at this scale (see
``benchmarks/decontamination.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathgenie.evaluation.hashing import (band_keys, doc_hashes, hash_words, minhash_signatures, ngram_hashes,
                                          optimal_lsh_params, shingles)

logger = logging.getLogger(__name__)

DEFAULT_NGRAM = 13
DEFAULT_THRESHOLD = 0.8
DEFAULT_NUM_PERM = 128
SHINGLE_WORDS = 5
REASONS = ("eval_exact", "eval_ngram", "eval_minhash", "exact_duplicate", "near_duplicate")
_KEEP = 0  # reason code 0 = kept; code i+1 = REASONS[i]
_CODE = {reason: code for code, reason in enumerate(REASONS, start=1)}

_U64 = np.uint64


class DecontaminationError(ValueError):
    """Bad input to decontamination (missing column, wrong type, bad parameter); the message says which and the fix."""


# ---------------------------------------------------------------------------------------------------------------------
# The eval-set index and the scan
# ---------------------------------------------------------------------------------------------------------------------


class _Lookup:
    """Sorted distinct 64-bit keys, each with the bitmask of the eval sets that have it. A bitmap of the keys' top
    bits answers most misses before the binary search."""

    def __init__(self, keys: np.ndarray, masks: np.ndarray):
        order = np.argsort(keys, kind="stable")
        keys, masks = keys[order], masks[order]
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, np.int64)
        self.keys = keys[starts]
        self.masks = np.bitwise_or.reduceat(masks, starts) if len(keys) else masks
        bits = int(np.clip(np.ceil(np.log2(max(len(self.keys), 1) * 16)), 10, 26))  # ~6% of the bitmap set
        self._shift = _U64(64 - bits)
        self._bitmap = np.zeros(1 << bits, dtype=bool)
        self._bitmap[self.keys >> self._shift] = True

    def find(self, queries: np.ndarray) -> np.ndarray:
        """The eval-set mask of each query key (0 where no eval set has it)."""
        out = np.zeros(len(queries), dtype=_U64)
        if len(self.keys) == 0 or len(queries) == 0:
            return out
        maybe = np.flatnonzero(self._bitmap[queries >> self._shift])
        pos = np.minimum(np.searchsorted(self.keys, queries[maybe]), len(self.keys) - 1)
        hit = self.keys[pos] == queries[maybe]
        out[maybe[hit]] = self.masks[pos[hit]]
        return out


@dataclass
class _Sketch:
    """What the scan needs of a batch of texts."""

    doc_hash: np.ndarray  # (texts,)
    ngrams: np.ndarray  # n-gram hashes
    ngram_doc: np.ndarray  # text index of each n-gram
    bands: np.ndarray  # (bands, texts) LSH keys; (0, texts) without MinHash


@dataclass
class Flags:
    """Per input text: ``reason`` code (0 = kept, i = ``REASONS[i-1]``) and ``eval_mask``, the bitmask of the eval
    sets (``Decontaminator.names``) it overlaps under that reason."""

    reason: np.ndarray  # int8
    eval_mask: np.ndarray  # uint64

    def reasons(self) -> list[str | None]:
        return [None if r == _KEEP else REASONS[r - 1] for r in self.reason.tolist()]


class Decontaminator:
    """An index of eval questions, and the scan of generated questions against it (module docstring: the rules).

    ``eval_sets`` maps a name (e.g. ``"gsm8k"``) to its questions. ``minhash_threshold=None`` turns MinHash off (rules
    3 and 5). Build it once and call `flag` / `decontaminate` on as many datasets as needed.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], *, ngram: int = DEFAULT_NGRAM,
                 minhash_threshold: float | None = DEFAULT_THRESHOLD, num_perm: int = DEFAULT_NUM_PERM,
                 shingle_words: int = SHINGLE_WORDS, seed: int = 1):
        if not eval_sets:
            raise DecontaminationError("eval_sets is empty: give at least one eval set, e.g. {'gsm8k': questions}")
        if len(eval_sets) > 64:
            raise DecontaminationError(f"eval_sets has {len(eval_sets)} sets; at most 64 are supported")
        if not isinstance(ngram, int) or ngram < 1:
            raise DecontaminationError(f"ngram={ngram!r}: give a positive number of words (13 is the default)")
        if minhash_threshold is not None and not 0.0 < minhash_threshold < 1.0:
            raise DecontaminationError(f"minhash_threshold={minhash_threshold!r}: give a Jaccard similarity in "
                                       "(0, 1), e.g. 0.8, or None to turn MinHash off")
        if not isinstance(num_perm, int) or num_perm < 2:
            raise DecontaminationError(f"num_perm={num_perm!r}: give the number of MinHash permutations, e.g. 128")
        self.names = list(eval_sets)
        self.ngram, self.minhash_threshold, self.num_perm = ngram, minhash_threshold, num_perm
        self.shingle_words, self.seed = shingle_words, seed
        self.bands, self.rows = optimal_lsh_params(minhash_threshold, num_perm) if minhash_threshold else (0, 0)
        self.sizes: dict[str, int] = {}
        doc_keys, doc_masks, ng_keys, ng_masks, band_parts = [], [], [], [], []
        for bit, (name, questions) in enumerate(eval_sets.items()):
            questions = list(questions)
            self.sizes[name] = len(questions)
            sketch = self._sketch(questions)
            mask = _U64(1) << _U64(bit)
            doc_keys.append(sketch.doc_hash)
            doc_masks.append(np.full(len(sketch.doc_hash), mask))
            ng_keys.append(sketch.ngrams)
            ng_masks.append(np.full(len(sketch.ngrams), mask))
            band_parts.append((sketch.bands, mask))
        self._exact = _Lookup(np.concatenate(doc_keys), np.concatenate(doc_masks))
        self._ngram = _Lookup(np.concatenate(ng_keys), np.concatenate(ng_masks))
        self._bands = [
            _Lookup(np.concatenate([b[band] for b, _ in band_parts]),
                    np.concatenate([np.full(b.shape[1], m) for b, m in band_parts]))
            for band in range(self.bands)
        ]
        logger.info("eval index: %s questions, %d distinct %d-grams, LSH %d bands x %d rows",
                    sum(self.sizes.values()), len(self._ngram.keys), ngram, self.bands, self.rows)

    @classmethod
    def from_benchmarks(cls, names: Sequence[str] | None = None, *, data_dir: str | os.PathLike | None = None,
                        **kwargs) -> Decontaminator:
        """An index of the questions of the registered benchmarks (`mathgenie.evaluation.benchmarks`), loaded from
        ``data_dir`` or the Hub. MATH-500 is a subset of MATH test, so it adds no questions but is named separately."""
        from mathgenie.evaluation.benchmarks import BENCHMARKS, load_benchmark

        names = list(names or BENCHMARKS)
        return cls({n: load_benchmark(n, data_dir=data_dir)["question"] for n in names}, **kwargs)

    def params(self) -> dict:
        return {"ngram": self.ngram, "minhash_threshold": self.minhash_threshold, "num_perm": self.num_perm,
                "bands": self.bands, "rows": self.rows, "shingle_words": self.shingle_words,
                "eval_sets": dict(self.sizes)}

    # -- scan ---------------------------------------------------------------------------------------------------------
    def _sketch(self, texts) -> _Sketch:
        words = hash_words(texts)
        ngrams, ngram_doc, _ = ngram_hashes(words, self.ngram)
        if self.bands:  # only the bands x rows permutations the LSH reads are computed
            values, offsets = shingles(words, self.shingle_words)
            sig = minhash_signatures(values, offsets, self.bands * self.rows, self.seed)
            bands = band_keys(sig, self.bands, self.rows)
        else:
            bands = np.zeros((0, len(words)), dtype=_U64)
        return _Sketch(doc_hashes(words), ngrams, ngram_doc, bands)

    def _scan_batch(self, texts) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Eval rules 1-3 for one batch: (reason, eval_mask, doc_hash, band keys)."""
        sk = self._sketch(texts)
        n = len(sk.doc_hash)
        reason = np.zeros(n, dtype=np.int8)
        eval_mask = np.zeros(n, dtype=_U64)
        ngram_mask = np.zeros(n, dtype=_U64)
        found = self._ngram.find(sk.ngrams)
        hit = found != 0
        np.bitwise_or.at(ngram_mask, sk.ngram_doc[hit], found[hit])
        minhash_mask = np.zeros(n, dtype=_U64)
        for band, lookup in enumerate(self._bands):
            minhash_mask |= lookup.find(sk.bands[band])
        exact_mask = self._exact.find(sk.doc_hash)
        # later rules first, so the earliest rule that fires wins
        for rule, mask in (("eval_minhash", minhash_mask), ("eval_ngram", ngram_mask), ("eval_exact", exact_mask)):
            fired = mask != 0
            reason[fired], eval_mask[fired] = _CODE[rule], mask[fired]
        return reason, eval_mask, sk.doc_hash, sk.bands

    def flag(self, texts: pa.Array | pa.ChunkedArray | Sequence[str | None], *, dedup_within: bool = True,
             num_proc: int | None = None, batch_size: int = 50_000) -> Flags:
        """Apply the rules to ``texts`` (in order; the first occurrence of a duplicate is kept)."""
        n = len(texts)
        if isinstance(texts, (pa.Array, pa.ChunkedArray)):
            batches = [texts.slice(i, batch_size) for i in range(0, n, batch_size)]
        else:
            batches = [texts[i : i + batch_size] for i in range(0, n, batch_size)]
        workers = max(1, min(num_proc or os.cpu_count() or 1, len(batches) or 1))
        with ThreadPoolExecutor(workers) as pool:  # numpy and pyarrow release the GIL in the heavy calls
            parts = list(pool.map(self._scan_batch, batches))
        if not parts:
            return Flags(np.zeros(0, np.int8), np.zeros(0, _U64))
        reason = np.concatenate([p[0] for p in parts])
        eval_mask = np.concatenate([p[1] for p in parts])
        if dedup_within:
            doc_hash = np.concatenate([p[2] for p in parts])
            bands = np.concatenate([p[3] for p in parts], axis=1)
            alive = np.flatnonzero(reason == _KEEP)
            exact = ~_first_occurrence(doc_hash[alive])
            near = np.zeros(len(alive), dtype=bool)
            for band in bands:
                near |= ~_first_occurrence(band[alive])
            reason[alive[near]] = _CODE["near_duplicate"]
            reason[alive[exact]] = _CODE["exact_duplicate"]  # an exact copy is also a near one: exact wins
        return Flags(reason, eval_mask)


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """True where a key appears for the first time."""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


# ---------------------------------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class DecontaminationReport:
    """Counts for the funnel and the dataset card. Rows are dataset rows; with ``group_column`` several rows make one
    question and ``questions``/``questions_kept`` count questions."""

    rows: int
    kept: int
    dropped: dict[str, int]  # reason -> rows
    by_eval_set: dict[str, int]  # eval set -> dropped rows that overlap it (a row may overlap several)
    questions: int
    questions_kept: int
    params: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_markdown(self) -> str:
        """A small table for a dataset card."""
        lines = ["| rule | rows dropped |", "|---|---:|"]
        lines += [f"| {reason} | {self.dropped.get(reason, 0)} |" for reason in REASONS]
        lines += [f"| **kept** | **{self.kept}** of {self.rows} |", "", "| eval set | overlapping rows dropped |",
                  "|---|---:|"]
        lines += [f"| {name} | {count} |" for name, count in self.by_eval_set.items()]
        p = self.params
        lines += ["", f"Word {p.get('ngram')}-gram overlap and exact match against the eval sets"
                  + (f", MinHash LSH (Jaccard >= {p['minhash_threshold']}, {p['num_perm']} permutations, "
                     f"{p['bands']} bands x {p['rows']} rows, word {p['shingle_words']}-gram shingles)"
                     if p.get("minhash_threshold") else "") + "."]
        return "\n".join(lines)


def decontaminate(dataset, *, column: str = "question", eval_sets: Decontaminator | Mapping[str, Iterable[str]]
                  | None = None, ngram: int = DEFAULT_NGRAM, minhash_threshold: float | None = DEFAULT_THRESHOLD,
                  num_perm: int = DEFAULT_NUM_PERM, dedup_within: bool = True, group_column: str | None = None,
                  num_proc: int | None = None, batch_size: int = 50_000, data_dir: str | None = None):
    """Drop the rows of ``dataset`` (a `datasets.Dataset`) whose ``column`` overlaps an eval set, and near-duplicates
    within the data. Returns ``(kept_dataset, DecontaminationReport)``; row order is kept.

    ``eval_sets``: a `Decontaminator`, a mapping name -> questions, or None for every registered benchmark (loaded from
    ``data_dir`` or the Hub). ``group_column``: rows with the same value are one question (e.g. ``question_id`` of
    solved rows); the question's first row decides for all of them.
    """
    import time

    start = time.perf_counter()
    if column not in dataset.column_names:
        raise DecontaminationError(f"column={column!r} is not a column of the dataset; columns: {dataset.column_names}")
    if group_column is not None and group_column not in dataset.column_names:
        raise DecontaminationError(f"group_column={group_column!r} is not a column of the dataset; columns: "
                                   f"{dataset.column_names}")
    if isinstance(eval_sets, Decontaminator):
        index = eval_sets
    elif eval_sets is None:
        index = Decontaminator.from_benchmarks(data_dir=data_dir, ngram=ngram, minhash_threshold=minhash_threshold,
                                               num_perm=num_perm)
    else:
        index = Decontaminator(eval_sets, ngram=ngram, minhash_threshold=minhash_threshold, num_perm=num_perm)
    table = dataset.with_format("arrow")
    texts = table[column]
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type) or pa.types.is_null(texts.type)):
        raise DecontaminationError(f"column {column!r} has type {texts.type}; decontamination needs text")
    if group_column is not None:
        groups = pc.dictionary_encode(table[group_column]).combine_chunks().indices.to_numpy(zero_copy_only=False)
        _, first_rows, group_of_row = np.unique(groups, return_index=True, return_inverse=True)
        order = np.argsort(first_rows)  # questions in order of first appearance
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        q_flags = index.flag(texts.take(pa.array(first_rows[order])), dedup_within=dedup_within,
                             num_proc=num_proc, batch_size=batch_size)
        row_q = rank[group_of_row]
        flags = Flags(q_flags.reason[row_q], q_flags.eval_mask[row_q])
        questions, questions_kept = len(order), int((q_flags.reason == _KEEP).sum())
    else:
        flags = index.flag(texts, dedup_within=dedup_within, num_proc=num_proc, batch_size=batch_size)
        questions, questions_kept = len(dataset), int((flags.reason == _KEEP).sum())
    keep = np.flatnonzero(flags.reason == _KEEP)
    dropped = {reason: int((flags.reason == code).sum()) for reason, code in _CODE.items()}
    by_eval_set = {name: int(((flags.eval_mask >> _U64(bit)) & _U64(1)).sum()) for bit, name in enumerate(index.names)}
    kept = dataset if len(keep) == len(dataset) else _take(dataset, keep)
    report = DecontaminationReport(rows=len(dataset), kept=len(keep), dropped=dropped, by_eval_set=by_eval_set,
                                   questions=questions, questions_kept=questions_kept,
                                   params={**index.params(), "dedup_within": dedup_within, "column": column,
                                           "group_column": group_column},
                                   seconds=time.perf_counter() - start)
    logger.info("decontamination: kept %d of %d rows (%s) in %.1f s", report.kept, report.rows,
                ", ".join(f"{k}={v}" for k, v in dropped.items() if v), report.seconds)
    return kept, report


def _take(dataset, rows: np.ndarray):
    """``dataset.select(rows)``, materialized with one arrow ``take``: a selected dataset keeps an indices mapping,
    which makes every later write gather row by row (40x slower to write as parquet)."""
    import datasets

    table = dataset.with_format("arrow")[:]
    return datasets.Dataset(table.take(pa.array(rows)), info=dataset.info.copy(), split=dataset.split)


def pipeline_step(dataset, options: Mapping | None = None):
    """The pipeline's ``decontaminate.function`` (``mathgenie.evaluation.decontamination:pipeline_step``): the kept
    rows of a solved/verified dataset, questions grouped by ``question_id``. ``options`` are `decontaminate`'s keyword
    arguments, plus ``report_path`` to write the report as JSON."""
    import json

    options = dict(options or {})
    report_path = options.pop("report_path", None)
    if "group_column" not in options and "question_id" in dataset.column_names:
        options["group_column"] = "question_id"
    kept, report = decontaminate(dataset, **options)
    if report_path:
        with open(report_path, "w") as f:
            json.dump(report.to_dict(), f, indent=2)
    return kept
