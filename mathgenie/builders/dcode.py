"""D_code, the code-integrated seed of MathGenie (§2 "Seed Data"): GPT-4 code-integrated solutions of GSM8K and MATH
problems and code-integrated verification rationales of such solutions, read from their published Hub datasets (or
local copies in the same layout) into LCE rows.

Two builder configs, one per kind of row:

- ``solutions``: ``id, source, question, blocks, answer, num_code_blocks`` (`SOLUTION_FEATURES`): the assistant's LCE
  blocks, executions included, as `schema.to_messages` and the solve stage use them.
- ``verifications``: ``id, source, question, solution, verification`` (`VERIFICATION_FEATURES`): the (question,
  solution) the rationale checks, the solution as the plain text the verification prompt holds, and the rationale's
  LCE blocks. Training renders them back through the verify stage's own Table 10 prompt, so the verifier is trained on
  exactly what the stage sends it.

Published layouts (``format="mathcoder"``)::

    MathGenie/MATH-GSM8K-Tool-81K   data/train/math_gsm8k_train.jsonl, data/test/math_gsm8k_test.jsonl  (81K solutions)
    MathGenie/MathGenieData         data/mathgenie_train.jsonl   (81K solutions + 30K rationales + 170K AugData)

one JSON object per line with MathCoder's ``messages``: ``[{"role": "system"|"user"|"assistant", "content": [{"type":
"text"|"code"|"execution", "content": str}, ...]}, ...]``.

Where this is inferred, not read (no Hub access when this was written; the format comes from the MathGenieData card,
MathCoder's ``src/inference.py`` (``data['messages'][1]['content'][0]['content']`` is the question) and its
``data/*_post.jsonl`` test files):

- the system message may be absent, and a message's content may be a plain string: both are accepted;
- an ``id`` field may or may not be there: kept when present, else the id is ``{source}/{split}/{line}``;
- a verification row is recognised by its user text ending in the Table 10 instruction ("Above is a math problem and
  its solution. Please use code to verify the solution above."), with ``**Question**:`` / ``**Solution**:`` labels
  before the two parts; a row that ends so but cannot be split is an error naming the file and line;
- MathGenieData's solution rows mix the 81K seed solutions with the 170K AugData and (as far as its card says) no
  field tells them apart, so the shipped D_code takes its solutions from MATH-GSM8K-Tool-81K and only the
  verification rationales from MathGenieData (`PAPER_SOURCES`).

    from mathgenie.builders.dcode import PAPER_SOURCES, build_dcode
    dcode = build_dcode(PAPER_SOURCES)      # {"solutions": DatasetDict, "verifications": DatasetDict}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Features, Value
from datasets.builder import Key

from mathgenie import schema
from mathgenie.builders.normalize import RecordLocation, SeedFormatError, read_records
from mathgenie.builders.runner import run_builder
from mathgenie.cards.common import CITATIONS

__all__ = ["KINDS", "PAPER_SOURCES", "SOLUTION_FEATURES", "VERIFICATION_FEATURES", "DCodeBuilder", "DCodeConfig",
           "DCodeSource", "SeedFormatError", "build_dcode", "parse_record"]

logger = logging.getLogger(__name__)

KINDS = ("solutions", "verifications")

SOLUTION_FEATURES = Features({
    "id": Value("string"),
    "source": Value("string"),
    "question": Value("string"),
    "blocks": schema.BLOCKS,  # the assistant's LCE blocks, executions included
    "answer": Value("string"),  # `mathgenie.answers.extract_lce_answer` of the blocks; null if none
    "num_code_blocks": Value("int32"),
})

VERIFICATION_FEATURES = Features({
    "id": Value("string"),
    "source": Value("string"),
    "question": Value("string"),
    "solution": Value("string"),  # the verified solution, as plain text (what the Table 10 prompt holds)
    "verification": schema.BLOCKS,  # the code-integrated verification rationale
})

_FEATURES = {"solutions": SOLUTION_FEATURES, "verifications": VERIFICATION_FEATURES}

# Table 10 of the paper (mathgenie/generation/prompts/mathgenie.yaml `verify`), as a pattern: labels with or without
# the bold markers, any whitespace around the parts.
_VERIFY_INSTRUCTION = re.compile(
    r"\s*Above is a math problem and its solution\.\s*Please use code to verify the solution above\.?\s*$",
    re.IGNORECASE)
_VERIFY_PARTS = re.compile(r"^\s*(?:\*\*)?Question(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.*?)\s*"
                           r"(?:\*\*)?Solution(?:\*\*)?\s*:\s*(?:\*\*)?\s*(.*)$", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class DCodeSource:
    """One published D_code dataset: a Hub dataset repo or a local copy of its files (a folder or one .jsonl)."""

    name: str = field(metadata={"help": "Value of the `source` column and prefix of positional ids."})
    path_or_repo: str = field(metadata={"help": "Local folder/.jsonl file, or a Hub dataset repo id."})
    split: str = field(default="train", metadata={"help": "Files of this split: a `{split}/` folder or a file name "
                                                          "with `_{split}` (`data/mathgenie_train.jsonl`)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (tag, branch, commit)."})
    kinds: tuple[str, ...] = field(default=KINDS, metadata={"help": "Which rows to take from this source."})

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"DCodeSource.name={self.name!r}: give a non-empty name without '/'")
        object.__setattr__(self, "kinds", tuple(self.kinds))
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise ValueError(f"DCodeSource {self.name!r}: kinds={self.kinds!r}; choose from {KINDS}")

    @property
    def is_hub(self) -> bool:
        p = Path(self.path_or_repo).expanduser()
        return not p.exists() and not self.path_or_repo.startswith(("/", ".", "~")) and \
            p.suffix != ".jsonl" and self.path_or_repo.count("/") == 1


TOOL_81K = DCodeSource("tool81k", "MathGenie/MATH-GSM8K-Tool-81K", kinds=("solutions",))
MATHGENIE_DATA = DCodeSource("mathgeniedata", "MathGenie/MathGenieData", kinds=("verifications",))
PAPER_SOURCES = (TOOL_81K, MATHGENIE_DATA)


def _blocks(content, where: RecordLocation, field_name: str) -> list[dict]:
    if isinstance(content, str):
        return [schema.block("text", content)]
    if not isinstance(content, list):
        raise where.error(field_name, f"expected a list of blocks or a string, got {type(content).__name__}")
    out = []
    for i, b in enumerate(content):
        if not isinstance(b, dict) or b.get("type") not in schema.BLOCK_TYPES or not isinstance(b.get("content"), str):
            raise where.error(f"{field_name}[{i}]", f"expected {{'type': 'text'|'code'|'execution', 'content': str}}, "
                              f"got {b!r:.80}")
        try:
            out.append(schema.block(b["type"], b["content"]))
        except schema.LCEFormatError as e:
            raise where.error(f"{field_name}[{i}]", str(e)) from None
    return out


def _split_verification(text: str) -> tuple[str, str] | None:
    """``(question, solution)`` of a Table 10 prompt, or None if ``text`` is not a verification prompt."""
    m = _VERIFY_INSTRUCTION.search(text)
    if m is None:
        return None
    parts = _VERIFY_PARTS.match(text[: m.start()])
    return (parts.group(1).strip(), parts.group(2).strip()) if parts else ("", "")


def parse_record(record, where: RecordLocation) -> tuple[str, dict]:
    """One published record → ``(kind, row without id/source)``; errors name the file, line and field."""
    if not isinstance(record, dict):
        raise where.error(None, f"expected a JSON object, got {type(record).__name__}")
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise where.error("messages", f"missing or not a list (record has {sorted(record)})")
    by_role: dict[str, dict] = {}
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or msg.get("role") not in schema.ROLES:
            raise where.error(f"messages[{i}]", f"expected a message with role in {schema.ROLES}, got {msg!r:.80}")
        by_role.setdefault(msg["role"], msg)
    for role in ("user", "assistant"):
        if role not in by_role:
            raise where.error("messages", f"no {role} message")
    user = _blocks(by_role["user"]["content"], where, "messages[user].content")
    assistant = _blocks(by_role["assistant"]["content"], where, "messages[assistant].content")
    prompt = "".join(b["content"] for b in user if b["type"] == "text").strip()
    if not prompt or not assistant:
        raise where.error("messages", "empty user text or assistant content")
    parts = _split_verification(prompt)
    if parts is not None:
        question, solution = parts
        if not question or not solution:
            raise where.error("messages[user].content", "ends with the verification instruction but has no "
                              "'**Question**:' ... '**Solution**:' parts to split")
        return "verifications", {"question": question, "solution": solution, "verification": assistant}
    from mathgenie.answers import extract_lce_answer

    return "solutions", {"question": prompt, "blocks": assistant, "answer": extract_lce_answer(assistant),
                         "num_code_blocks": sum(b["type"] == "code" for b in assistant)}


def _in_split(relpath: str, split: str) -> bool:
    parts = relpath.split("/")
    return split in parts[:-1] or re.search(rf"(^|[_\-.]){re.escape(split)}([_\-.]|$)", parts[-1]) is not None


def source_files(source: DCodeSource) -> list[tuple[Path, str]]:
    """The ``.jsonl`` files of ``source``'s split: downloaded from the Hub (only those files) or found locally."""
    if source.is_hub:
        from huggingface_hub import HfApi, hf_hub_download

        api = HfApi()
        files = [f for f in api.list_repo_files(source.path_or_repo, repo_type="dataset", revision=source.revision)
                 if f.endswith(".jsonl") and _in_split(f, source.split)]
        if not files:
            raise FileNotFoundError(f"D_code source {source.name!r}: {source.path_or_repo} has no .jsonl file of "
                                    f"split {source.split!r}")
        return [(Path(hf_hub_download(source.path_or_repo, f, repo_type="dataset", revision=source.revision)), f)
                for f in sorted(files)]
    root = Path(source.path_or_repo).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"D_code source {source.name!r}: {root} does not exist")
    if root.is_file():
        return [(root, root.name)]
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jsonl"))
    files = [f for f in files if _in_split(f, source.split)]
    if not files:
        raise FileNotFoundError(f"D_code source {source.name!r}: no .jsonl file of split {source.split!r} under {root}")
    return [(root / f, f) for f in files]


@dataclass
class DCodeConfig(datasets.BuilderConfig):
    """``name`` is the kind of rows (``solutions`` or ``verifications``); ``sources`` the published datasets."""

    sources: tuple[DCodeSource, ...] = ()
    limit: int | None = None  # first N rows of this kind per source


class DCodeBuilder(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIG_CLASS = DCodeConfig
    BUILDER_CONFIGS = [DCodeConfig(name=k, description=f"D_code {k}") for k in KINDS]
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description="D_code, MathGenie's code-integrated seed: GPT-4 code-integrated solutions and verification "
                        "rationales of GSM8K and MATH problems, in MathCoder's LCE blocks.",
            features=_FEATURES[self.config.name], homepage="https://mathgenie.github.io/", license="apache-2.0",
            citation=CITATIONS["MathGenie"])

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        sources = [s for s in self.config.sources if self.config.name in s.kinds]
        if not sources:
            raise ValueError(f"no D_code source gives {self.config.name}; sources: "
                             f"{[(s.name, s.kinds) for s in self.config.sources]}")
        by_split: dict[str, list] = {}
        for s in sources:  # downloads and missing paths fail here, before any row is written
            by_split.setdefault(s.split, []).append((s, source_files(s)))
        return [datasets.SplitGenerator(name=split, gen_kwargs={"inputs": inputs})
                for split, inputs in by_split.items()]

    def _generate_examples(self, inputs) -> Iterator[tuple[Key, dict]]:
        kind, seen = self.config.name, {}
        for shard, (source, files) in enumerate(inputs):
            taken, index = 0, 0
            for file, relpath in files:
                for record, where, _ in read_records(file, "jsonl"):
                    index += 1
                    if self.config.limit is not None and taken >= self.config.limit:
                        break
                    where.file = f"{source.path_or_repo}/{relpath}" if source.is_hub else str(file)
                    row_kind, row = parse_record(record, where)
                    if row_kind != kind:
                        continue
                    raw_id = record.get("id")
                    row_id = f"{source.name}/{raw_id}" if raw_id not in (None, "") else \
                        f"{source.name}/{source.split}/{index - 1}"
                    if row_id in seen:
                        raise where.error("id", f"duplicate id {row_id!r} (first at {seen[row_id]})")
                    seen[row_id] = f"{where.file} line {where.line}"
                    yield Key(shard, index), {"id": row_id, "source": source.name, **row}
                    taken += 1


def build_dcode(sources=PAPER_SOURCES, *, kinds=KINDS, limit: int | None = None,
                cache_dir: str | Path | None = None) -> dict[str, datasets.DatasetDict]:
    """``{kind: DatasetDict}`` for each of ``kinds`` that some source gives (the shape `mathgenie.upload.push_dataset`
    takes: one Hub config per kind). A malformed record raises `SeedFormatError` naming its file, line and field."""
    sources = tuple(sources)
    out = {}
    for kind in kinds:
        if any(kind in s.kinds for s in sources):
            out[kind] = run_builder(DCodeBuilder, config_name=kind, cache_dir=cache_dir, sources=sources, limit=limit)
            logger.info("D_code %s: %s", kind, {k: v.num_rows for k, v in out[kind].items()})
    return out

