"""Decontamination of a `datasets.Dataset`: the rows whose question overlaps an eval set (and, optionally, duplicates
within the data) are dropped, with a report of what was dropped and why (`mathgenie.decontamination.index`: the
rules)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mathgenie.decontamination.index import (_CODE, _KEEP, _U64, DEFAULT_NGRAM, DEFAULT_NUM_PERM, DEFAULT_THRESHOLD,
                                             REASONS, DecontaminationError, Decontaminator, Flags)
from mathgenie.decontamination.shipped import shipped_index

logger = logging.getLogger(__name__)


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
                  num_proc: int | None = None, batch_size: int = 50_000):
    """Drop the rows of ``dataset`` (a `datasets.Dataset`) whose ``column`` overlaps an eval set, and near-duplicates
    within the data. Returns ``(kept_dataset, DecontaminationReport)``; row order is kept.

    ``eval_sets``: a `Decontaminator`, a mapping name -> questions, or None for the index that ships with mathgenie
    (`shipped_index`: the test questions of every benchmark of `mathgenie eval`). ``group_column``: rows with the same value are one question (e.g. ``question_id`` of
    solved rows); the question's first row decides for all of them.
    """
    start = time.perf_counter()
    if column not in dataset.column_names:
        raise DecontaminationError(f"column={column!r} is not a column of the dataset; columns: {dataset.column_names}")
    if group_column is not None and group_column not in dataset.column_names:
        raise DecontaminationError(f"group_column={group_column!r} is not a column of the dataset; columns: "
                                   f"{dataset.column_names}")
    if isinstance(eval_sets, Decontaminator):
        index = eval_sets
    elif eval_sets is None:
        index = shipped_index()
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
