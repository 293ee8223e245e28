"""The evaluation benchmarks of MathGenie/MathCoder, loaded from the Hub (or a URL) or from local files, as rows
``id, benchmark, question, answer, level, type`` (`BENCHMARK_FEATURES`).

The question text is the prompt MathCoder's harness sends (SVAMP: ``Body + ", " + Question``), so results are
comparable to the paper's table. Local files: ``<data_dir>/<name>/test.jsonl`` (or ``<data_dir>/<name>.jsonl`` /
``.parquet``) with ``id, question, answer`` (+ ``level``, ``type`` or ``subject`` for MATH), or any of the upstream
record shapes below (GSM8K ``#### answer``, MATH ``problem/solution``, SVAMP ``Body/Question/Answer``, MathCoder's
``messages/ground_truth``).

    ds = load_benchmark("math500")                        # HuggingFaceH4/MATH-500 from the Hub
    ds = load_benchmark("gsm8k", data_dir="data/evals")   # data/evals/gsm8k/test.jsonl
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import datasets
from datasets import Features, Value

from mathgenie.builders.normalize import last_boxed, parse_level, split_gsm8k_answer
from mathgenie.evaluation.registry import (BENCHMARKS, MATH_FAMILY, MATH_SUBJECTS, Benchmark,  # noqa: F401
                                           parse_benchmarks)

logger = logging.getLogger(__name__)

BENCHMARK_FEATURES = Features(
    {
        "id": Value("string"),
        "benchmark": Value("string"),
        "question": Value("string"),
        "answer": Value("string"),
        "level": Value("int32"),  # MATH level 1-5, else null
        "type": Value("string"),  # MATH subject ("Algebra", ...), else null
    }
)


class BenchmarkFormatError(ValueError):
    """A benchmark record that cannot be read; names the file (or source), the row and the field."""


# ---------------------------------------------------------------------------------------------------------------------
# Record shapes -> benchmark row
# ---------------------------------------------------------------------------------------------------------------------


def _subject(value: Any) -> str | None:
    if not value:
        return None
    text = str(value)
    return MATH_SUBJECTS.get(text, MATH_SUBJECTS.get(re.sub(r"[^a-z]+", "_", text.lower()).strip("_"), text))


def _number(value: Any) -> str:
    """SVAMP stores answers as floats: 145.0 -> "145"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def normalize_row(record: dict, *, benchmark: str, index: int, where: str) -> dict:
    """One upstream record (any shape in the module docstring) -> a `BENCHMARK_FEATURES` row."""

    def fail(field: str, message: str) -> BenchmarkFormatError:
        return BenchmarkFormatError(f"{where}, row {index + 1}, field {field!r}: {message} (record keys: "
                                    f"{sorted(record)})")

    answer = record.get("answer")
    if "messages" in record and "ground_truth" in record:  # MathCoder *_test_post.jsonl
        try:
            question = next(m for m in record["messages"] if m["role"] == "user")["content"][0]["content"]
        except (StopIteration, KeyError, IndexError, TypeError):
            raise fail("messages", "no user message with a text block") from None
        answer = (record["ground_truth"] or {}).get("answer")
    elif "Body" in record and "Question" in record:  # SVAMP original / ChilleD
        question = record["Body"].strip() + ", " + record["Question"].strip()
        answer = record.get("Answer", answer)
    elif "question_mathcoder" in record:  # shared-data SVAMP: the exact MathCoder prompt string
        question = record["question_mathcoder"]
    else:
        question = record.get("question", record.get("problem"))
        if isinstance(answer, str) and "####" in answer:  # GSM8K original
            answer = split_gsm8k_answer(answer)[1]
        if answer is None and record.get("solution"):  # MATH original
            answer = last_boxed(record["solution"])
    if not isinstance(question, str) or not question.strip():
        raise fail("question", f"expected a non-empty string, got {question!r:.60}")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise fail("answer", "missing or empty")
    raw_id = record.get("id", record.get("unique_id", record.get("ID")))
    try:
        level = parse_level(record.get("level"))
    except ValueError as e:
        raise fail("level", str(e)) from None
    return {
        "id": str(raw_id) if raw_id is not None else f"{benchmark}/test/{index}",
        "benchmark": benchmark,
        "question": question,
        "answer": _number(answer),
        "level": level,
        "type": _subject(record.get("type") or record.get("subject")) if benchmark in MATH_FAMILY else None,
    }


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------


def _local_file(name: str, data_dir: Path) -> Path:
    for candidate in (data_dir / name / "test.jsonl", data_dir / name / "test.parquet", data_dir / f"{name}.jsonl",
                      data_dir / f"{name}.parquet"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"benchmark {name!r}: no {name}/test.jsonl, {name}/test.parquet, {name}.jsonl or "
                            f"{name}.parquet under data_dir={str(data_dir)!r}")


def _read_local(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise BenchmarkFormatError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from None
    return records


def _read_hub(spec: Benchmark, source: str, revision: str | None) -> list[dict]:
    records: list[dict] = []
    for config in spec.configs:
        if source.startswith(("http://", "https://")) or source.endswith((".json", ".jsonl")):
            ds = datasets.load_dataset("json", data_files=source, split=spec.split)
        else:
            ds = datasets.load_dataset(source, config, split=spec.split, revision=revision)
        for record in ds:
            if spec.name == "math" and config and not record.get("type"):
                record["type"] = MATH_SUBJECTS[config]
            records.append(record)
    if spec.name == "svamp":  # ChilleD/SVAMP splits are shuffled; restore SVAMP's order (chal-1 .. chal-1000)
        records.sort(key=lambda r: int(re.sub(r"\D", "", str(r.get("ID", r.get("id", 0)))) or 0))
    return records


def load_benchmark(name: str, *, data_dir: str | Path | None = None, source: str | None = None,
                   revision: str | None = None, limit: int | None = None) -> datasets.Dataset:
    """Rows of benchmark ``name`` (a key of `BENCHMARKS`): from ``data_dir`` if given, else from ``source`` (default:
    the registry's Hub id or URL) at ``revision``. ``limit`` keeps the first N rows."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {sorted(BENCHMARKS)}")
    spec = BENCHMARKS[name]
    if data_dir is not None:
        path = _local_file(name, Path(data_dir))
        records, where = _read_local(path), str(path)
    else:
        where = source or spec.source
        records = _read_hub(spec, where, revision)
    if spec.rows and limit is None and len(records) != spec.rows:
        logger.warning("benchmark %s from %s has %d rows; the paper's set has %d", name, where, len(records),
                       spec.rows)
    if limit is not None:
        records = records[:limit]
    rows = [normalize_row(r, benchmark=name, index=i, where=where) for i, r in enumerate(records)]
    return datasets.Dataset.from_list(rows, features=BENCHMARK_FEATURES) if rows else \
        datasets.Dataset.from_dict({k: [] for k in BENCHMARK_FEATURES}, features=BENCHMARK_FEATURES)
