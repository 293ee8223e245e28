"""Reading seed files and normalizing GSM8K / MATH records to the seed row (`schema.SEED_FEATURES`).

Three record shapes are recognised, per record:

* MATH (Hendrycks) raw: ``problem, level, type, solution`` — answer = content of the last ``\\boxed{}``/``\\fbox{}``.
* GSM8K (OpenAI) raw: ``question, answer`` where ``answer`` is ``"<solution> #### <final answer>"``.
* mathgenie / shared-data format: ``id, question, solution, answer`` (+ optional ``level``, ``type``); the answer is
  taken as written (it is already normalized by whoever wrote the file).

Every problem raises `SeedFormatError` naming the file, the line (or row) and the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from mathgenie.builders.runner import BuilderInputError

SEED_FILE_SUFFIXES = (".jsonl", ".json", ".parquet")


class SeedFormatError(BuilderInputError):
    """A seed record that cannot be normalized. ``file``, ``line`` (1-based line of a jsonl file, row of a parquet
    file or Hub split) and ``field`` say where."""

    def __init__(self, file: str, line: int | None, field: str | None, message: str, *, unit: str = "line"):
        self.file, self.line, self.field, self.message = str(file), line, field, message
        where = self.file + (f", {unit} {line}" if line is not None else "")
        super().__init__(f"{where}" + (f", field {field!r}" if field else "") + f": {message}")


# ---------------------------------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` in ``text`` (nested braces counted as in Hendrycks'
    ``last_boxed_only_string``), or of a trailing ``\\boxed 5`` (up to ``$``). None if there is no complete box.

    Not `mathgenie.answers.last_boxed`, which skips escaped braces for model output: the seed's answers must equal
    the reference extraction that published MATH answers come from, escaped braces counted."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start + (6 if text.startswith("\\boxed", start) else 5) :]
    if rest.startswith(" "):  # "\boxed 5$" form
        return rest[1:].split("$")[0].strip() or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced


def split_gsm8k_answer(text: str) -> tuple[str, str] | None:
    """``"Natalia sold ... #### 1,072"`` → ``("Natalia sold ...", "1072")``; None without ``####``."""
    if "####" not in text:
        return None
    solution, answer = text.rsplit("####", 1)
    return solution.strip(), answer.strip().replace(",", "")


_LEVEL_RE = re.compile(r"^\s*(?:Level\s*)?([0-9]+)\s*$")


def parse_level(value: Any) -> int | None:
    """``"Level 3"`` / ``3`` → 3; ``"Level ?"`` / None → None. Raises ValueError on anything else."""
    if value is None or (isinstance(value, str) and value.strip() in ("Level ?", "?", "")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _LEVEL_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f"expected 'Level N', an integer or null, got {value!r}")
    return int(m.group(1))


def subject_slug(type_: str) -> str:
    """``"Counting & Probability"`` → ``"counting_and_probability"`` (the MATH directory / Hub config name)."""
    return re.sub(r"[^a-z0-9]+", "_", type_.lower().replace("&", "and")).strip("_")


# ---------------------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------------------


class RecordLocation:
    """Where a record came from, to make errors point at it."""

    def __init__(self, file: str, line: int | None, unit: str = "line", relpath: str | None = None):
        self.file, self.line, self.unit = file, line, unit
        self.relpath = relpath  # the file's path relative to the source directory (for ids of one-problem files)

    def error(self, field: str | None, message: str) -> SeedFormatError:
        return SeedFormatError(self.file, self.line, field, message, unit=self.unit)


def _text_field(record: dict, field: str, where: RecordLocation, *, required: bool = True) -> str | None:
    if field not in record or record[field] is None:
        if required:
            raise where.error(field, f"missing required field (record has {sorted(record)})")
        return None
    value = record[field]
    if not isinstance(value, str):
        raise where.error(field, f"expected a string, got {type(value).__name__} {value!r:.60}")
    if required and not value.strip():
        raise where.error(field, "is empty")
    return value


def normalize_record(record: Any, *, source: str, where: RecordLocation) -> dict:
    """One raw record → a seed row (``id`` may be None: the builder then assigns a positional id)."""
    if not isinstance(record, dict):
        raise where.error(None, f"expected a JSON object, got {type(record).__name__}")
    level_value, type_ = record.get("level"), _text_field(record, "type", where, required=False)
    if "problem" in record:  # MATH raw
        question = _text_field(record, "problem", where)
        solution = _text_field(record, "solution", where)
        answer = last_boxed(solution)
        if answer is None:
            raise where.error("solution", "no complete \\boxed{...} or \\fbox{...} to take the answer from")
    elif "solution" in record:  # mathgenie / shared-data format
        question = _text_field(record, "question", where)
        solution = _text_field(record, "solution", where)
        answer = _text_field(record, "answer", where, required=False)
        if answer is None:  # derive it the way the upstream formats do; an empty answer is kept as written
            answer = last_boxed(solution)
            if answer is None and (parts := split_gsm8k_answer(solution)) is not None:
                solution, answer = parts
        if answer is None:
            raise where.error("answer", "missing, and the solution has no \\boxed{...} or '#### answer' to take it")
    else:  # GSM8K raw
        question = _text_field(record, "question", where)
        parts = split_gsm8k_answer(_text_field(record, "answer", where))
        if parts is None:
            raise where.error("answer", "no '####' separator; GSM8K answers look like '<solution> #### 72'")
        solution, answer = parts
        if not answer:
            raise where.error("answer", "nothing after '####'")
    try:
        level = parse_level(level_value)
    except ValueError as e:
        raise where.error("level", str(e)) from None
    raw_id = record.get("id", record.get("unique_id"))
    if raw_id is not None and not isinstance(raw_id, (str, int)):
        raise where.error("id", f"expected a string or integer, got {type(raw_id).__name__}")
    row_id = None
    if raw_id is not None and str(raw_id).strip():
        row_id = str(raw_id) if str(raw_id).startswith(source + "/") else f"{source}/{raw_id}"
    return {
        "id": row_id,
        "source": source,
        "question": question,
        "solution": solution,
        "answer": answer,
        "level": level,
        "type": type_,
    }


def list_seed_files(path: Path, split: str, suffixes=SEED_FILE_SUFFIXES) -> list[tuple[Path, str]]:
    """A file, or a directory searched recursively (its ``{split}/`` subdirectory if it has one) for files with one
    of ``suffixes``, as sorted ``(file, path relative to the directory)`` pairs."""
    if path.is_file():
        return [(path, path.name)]
    root = path / split if (path / split).is_dir() else path
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in suffixes)
    if not files:
        raise FileNotFoundError(f"no {'/'.join(suffixes)} files under {root}")
    return [(p, p.relative_to(root).as_posix()) for p in files]


def read_records(file: Path, format: str | None = None) -> Iterator[tuple[Any, RecordLocation, bool]]:
    """Yields ``(record, location, is_single_record_file)``; ``format`` ('jsonl', 'json', 'parquet') defaults to the
    file's suffix. A ``.json`` file holding one object (the original MATH layout, one problem per file) is a single
    record."""
    format = format or file.suffix.lstrip(".")
    if format == "parquet":
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(file).iter_batches(batch_size=1024):
            for record in batch.to_pylist():
                row += 1
                yield record, RecordLocation(str(file), row, "row"), False
        return
    if format == "json":
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise SeedFormatError(str(file), e.lineno, None, f"invalid JSON: {e.msg}") from None
        if isinstance(data, dict):
            yield data, RecordLocation(str(file), None), True
            return
        if not isinstance(data, list):
            raise SeedFormatError(str(file), None, None, "expected a JSON object or a list of objects")
        for i, record in enumerate(data):
            yield record, RecordLocation(str(file), i + 1, "item"), False
        return
    with open(file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise SeedFormatError(str(file), lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
            yield record, RecordLocation(str(file), lineno), False
