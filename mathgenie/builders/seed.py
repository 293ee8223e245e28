"""The seed dataset: GSM8K + MATH training problems normalized to ``id, source, question, solution, answer, level,
type`` (`schema.SEED_FEATURES`).

Sources are Hub datasets (``openai/gsm8k`` config ``main``; ``EleutherAI/hendrycks_math`` config ``*``, i.e. every
per-subject config), loaded with `datasets.load_dataset` from ``HF_ENDPOINT``, or local ``.jsonl`` / ``.json`` /
``.parquet`` files and directories, in the raw upstream formats or in the ``id, question, solution, answer`` format.

``datasets`` ≥ 4 no longer runs dataset scripts, so the builder runs in-process::

    from mathgenie.builders.seed import SeedSource, build_seed
    seed = build_seed([SeedSource("gsm8k", "openai/gsm8k", config="main"), SeedSource("math", "data/MATH")])
    seed = build_seed()  # the small sample bundled with mathgenie (offline demo)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Iterator

import datasets
from datasets.builder import Key

from mathgenie.builders.normalize import (
    SEED_FILE_SUFFIXES,
    RecordLocation,
    SeedFormatError,
    list_seed_files,
    normalize_record,
    read_records,
    subject_slug,
)
from mathgenie.builders.runner import run_builder
from mathgenie.cards.common import CITATIONS
from mathgenie.schema import SEED_FEATURES

__all__ = ["GSM8K_HUB", "MATH_HUB", "SeedBuilder", "SeedConfig", "SeedFormatError", "SeedSource", "build_seed",
           "bundled_seed_sources", "pin_hub_revisions"]

logger = logging.getLogger(__name__)

DESCRIPTION = "Seed problems with their reference solutions and final answers (GSM8K and MATH train)."

_CITATION = CITATIONS["GSM8K"] + "\n" + CITATIONS["MATH"]

_DESCRIPTION = """\
The MathGenie seed: the GSM8K and MATH training problems with their human-written solutions and final answers.
GSM8K answers are the text after '####' without thousands separators; MATH answers are the content of the last
\\boxed{} of the solution; level is MATH's difficulty 1-5 and type its subject (both null for GSM8K)."""

_HOMEPAGE = "https://github.com/openai/grade-school-math, https://github.com/hendrycks/math"

_LICENSE = "MIT (GSM8K: Copyright (c) 2021 OpenAI; MATH: Copyright (c) 2021 Dan Hendrycks)"

SOURCE_FORMATS = ("auto", "hub", "jsonl", "json", "parquet")


@dataclass(frozen=True)
class SeedSource:
    """One input of the seed: a Hub dataset repo or a local file/directory."""

    name: str = field(metadata={"help": "Value of the `source` column and prefix of the ids: 'gsm8k', 'math', ..."})
    path_or_repo: str = field(metadata={"help": "Local file or directory, or a Hub dataset repo id."})
    config: str | None = field(
        default=None,
        metadata={"help": "Hub config: a name ('main' for openai/gsm8k), several ('algebra,geometry'), '*' for every "
                  "config of the repo (MATH's per-subject configs), or None for the repo's default config."},
    )
    split: str = field(default="train", metadata={"help": "Split to read (and to write in the seed)."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (tag, branch, commit); None = main."})
    format: str = field(
        default="auto",
        metadata={"help": "'auto' (a local path if it exists or looks like a file, else a Hub repo; file format from "
                  "the suffix), 'hub', or a file format for every file: 'jsonl', 'json', 'parquet'."},
    )

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"SeedSource.name={self.name!r}: give a non-empty name without '/', e.g. 'gsm8k'")
        if self.format not in SOURCE_FORMATS:
            raise ValueError(f"SeedSource.format={self.format!r}: expected one of {SOURCE_FORMATS}")

    @property
    def is_hub(self) -> bool:
        if self.format != "auto":
            return self.format == "hub"
        path = Path(self.path_or_repo)
        # "namespace/name" that is not on disk is a repo id; a missing "data/gsm8k.jsonl" is a typo, not a repo.
        looks_local = path.suffix in SEED_FILE_SUFFIXES or self.path_or_repo.startswith(("/", ".", "~"))
        return not path.exists() and not looks_local and self.path_or_repo.count("/") == 1


GSM8K_HUB = SeedSource("gsm8k", "openai/gsm8k", config="main")
MATH_HUB = SeedSource("math", "EleutherAI/hendrycks_math", config="*")


def pin_hub_revisions(sources: list[SeedSource], token=None) -> list[SeedSource]:
    """Hub sources with ``revision`` resolved to the commit sha (so the card can say exactly which rows were read,
    and every config is read at the same commit); local sources unchanged."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    return [
        replace(s, revision=api.dataset_info(s.path_or_repo, revision=s.revision).sha) if s.is_hub else s
        for s in sources
    ]


def bundled_seed_sources() -> list[SeedSource]:
    """The seed sample shipped with mathgenie (24 GSM8K + 24 MATH train rows; see data/seed_sample/README.md)."""
    root = resources.files("mathgenie") / "data" / "seed_sample"
    return [SeedSource("gsm8k", str(root / "gsm8k_train.jsonl")), SeedSource("math", str(root / "math_train.jsonl"))]


@dataclass
class SeedConfig(datasets.BuilderConfig):
    """BuilderConfig for the seed: which sources, and an optional per-source row limit."""

    sources: tuple[SeedSource, ...] = ()
    limit: int | None = None
    features: datasets.Features = field(default_factory=lambda: SEED_FEATURES.copy())

    def __post_init__(self):
        super().__post_init__()
        self.validate()

    def validate(self) -> None:
        # Also called by the builder: `datasets` sets config kwargs with setattr, without running __post_init__.
        self.sources = tuple(self.sources)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit}: give a positive number of rows per source, or None for all")
        names = [(s.name, s.split) for s in self.sources]
        if len(set(names)) != len(names):
            raise ValueError(f"two sources share a name and split: {names}; give each a distinct name")


class SeedBuilder(datasets.GeneratorBasedBuilder):
    """GSM8K + MATH (or any source in a supported format) → the seed rows. One split per source split."""

    BUILDER_CONFIG_CLASS = SeedConfig
    BUILDER_CONFIGS = [SeedConfig(name="default", description="GSM8K + MATH train, normalized")]
    DEFAULT_CONFIG_NAME = "default"
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION,
            features=self.config.features,
            homepage=_HOMEPAGE,
            license=_LICENSE,
            citation=_CITATION,
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        self.config.validate()
        if not self.config.sources:
            raise ValueError("SeedConfig.sources is empty: give at least one SeedSource (or use build_seed())")
        # All I/O that can fail on access (Hub downloads, missing paths) happens here; rows are read in order below.
        inputs_by_split: dict[str, list[dict]] = {}
        for source in self.config.sources:
            inputs_by_split.setdefault(source.split, []).append(_resolve(source))
        return [
            datasets.SplitGenerator(name=split, gen_kwargs={"inputs": inputs})
            for split, inputs in inputs_by_split.items()
        ]

    def _generate_examples(self, inputs: list[dict]) -> Iterator[tuple[Key, dict]]:
        seen: dict[str, str] = {}
        empty_answers = []
        for shard, item in enumerate(inputs):
            source: SeedSource = item["source"]
            counters: dict[str, int] = {}
            for row_index, (record, where, single) in enumerate(_records(item)):
                if self.config.limit is not None and row_index >= self.config.limit:
                    break
                row = normalize_record(record, source=source.name, where=where)
                if row["id"] is None:
                    row["id"] = _positional_id(row, source, row_index, counters, where, single)
                if row["id"] in seen:
                    raise where.error("id", f"duplicate id {row['id']!r} (first seen at {seen[row['id']]})")
                seen[row["id"]] = f"{where.file} {where.unit} {where.line}"
                if not row["answer"].strip():
                    empty_answers.append(row["id"])
                yield Key(shard, row_index), row
        if empty_answers:  # MATH train has two `\boxed{}` solutions; kept as written, as the answer checker skips them
            logger.warning("%d rows with an empty answer (kept as written): %s", len(empty_answers), empty_answers[:10])


def _positional_id(row, source: SeedSource, index: int, counters: dict, where: RecordLocation, single: bool) -> str:
    """Ids for records that carry none: the path of a one-problem file (MATH layout), else the position within the
    subject (MATH) or the source (GSM8K). Stable as long as the source's files and their order are."""
    if single:
        return f"{source.name}/{source.split}/{where.relpath}"
    if row["type"] is not None:
        slug = subject_slug(row["type"])
        counters[slug] = counters.get(slug, -1) + 1
        return f"{source.name}/{source.split}/{slug}/{counters[slug]}"
    return f"{source.name}/{source.split}/{index}"


def _resolve(source: SeedSource) -> dict:
    if not source.is_hub:
        path = Path(source.path_or_repo).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"seed source {source.name!r}: {path} does not exist")
        suffixes = SEED_FILE_SUFFIXES if source.format == "auto" else (f".{source.format}",)
        return {"source": source, "files": list_seed_files(path, source.split, suffixes)}
    if source.config == "*":
        configs = sorted(datasets.get_dataset_config_names(source.path_or_repo, revision=source.revision))
    else:
        configs = [c.strip() for c in source.config.split(",")] if source.config else [None]
    splits = []
    for config in configs:
        logger.info("loading %s [%s] split %s from the Hub", source.path_or_repo, config, source.split)
        splits.append(
            (config, datasets.load_dataset(source.path_or_repo, config, split=source.split, revision=source.revision))
        )
    return {"source": source, "hub": splits}


def _records(item: dict):
    source: SeedSource = item["source"]
    if "files" in item:
        for file, relpath in item["files"]:
            for record, where, single in read_records(file, None if source.format == "auto" else source.format):
                where.relpath = relpath
                yield record, where, single
        return
    for config, ds in item["hub"]:
        label = f"{source.path_or_repo} [config {config or 'default'}, split {source.split}]"
        for i, record in enumerate(ds):
            yield record, RecordLocation(label, i + 1, "row"), False


def build_seed(
    sources: list[SeedSource] | None = None,
    *,
    limit: int | None = None,
    cache_dir: str | Path | None = None,
) -> datasets.DatasetDict:
    """Build the seed (a `DatasetDict` with one split per source split, usually just ``train``).

    ``sources=None`` uses the sample bundled with mathgenie; ``limit`` keeps the first N rows of each source. Rows
    are regenerated on every call; ``cache_dir=None`` builds in a temporary directory and returns in-memory datasets
    (see `run_builder`). Any malformed record raises `SeedFormatError` naming file, line and field before anything
    is returned.
    """
    sources = bundled_seed_sources() if sources is None else list(sources)
    seed = run_builder(SeedBuilder, config_name="default", cache_dir=cache_dir, sources=tuple(sources), limit=limit)
    logger.info("seed: %s", {split: ds.num_rows for split, ds in seed.items()})
    return seed
