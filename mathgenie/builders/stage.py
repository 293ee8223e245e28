"""Reading a stage's Parquet shards back as a `DatasetDict` with that stage's `Features` (`schema.STAGE_FEATURES`).

A stage directory holds ``{subset}/{split}/*.parquet`` (what `mathgenie.upload` pushes and the pipeline writes); a
list of files is read as one split. Every shard is checked before any row is read: a missing column stops the build
with an error naming the file and the column; extra columns are dropped (the schema is the contract between stages)::

    from mathgenie.builders.stage import load_stage
    solved = load_stage("solved", "outputs/solved")          # outputs/solved/default/train/*.parquet
    verified = load_stage("verified", ["a.parquet", "b.parquet"])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.builder import Key

from mathgenie.builders.runner import BuilderInputError, run_builder
from mathgenie.cards.common import CITATIONS
from mathgenie.schema import STAGE_FEATURES

logger = logging.getLogger(__name__)

_DESCRIPTION = "A stage of the MathGenie pipeline (seed, augmented, back_translated, solved, verified), from Parquet."

_CITATION = CITATIONS["MathGenie"]

_LICENSE = "Inherits the licenses of the seed data (MIT) and the terms of the generating model."


class StageFormatError(BuilderInputError):
    """A stage shard that does not match the stage's schema. ``file`` and ``column`` say where."""

    def __init__(self, file: str, column: str | None, message: str):
        self.file, self.column, self.message = str(file), column, message
        super().__init__(f"{file}" + (f", column {column!r}" if column else "") + f": {message}")


@dataclass
class StageConfig(datasets.BuilderConfig):
    """One config per stage: the stage's features and where its shards are."""

    features: datasets.Features | None = None
    path: str | None = None  # a stage directory ({subset}/{split}/*.parquet) or a single .parquet file
    files: tuple[str, ...] = ()  # or explicit shards, read as `split`
    subset: str = "default"
    split: str = "train"

    def __post_init__(self):
        super().__post_init__()
        self.files = tuple(str(f) for f in self.files)


class StageBuilder(datasets.ArrowBasedBuilder):
    BUILDER_CONFIG_CLASS = StageConfig
    BUILDER_CONFIGS = [
        StageConfig(name=stage, features=features, description=f"the {stage} stage")
        for stage, features in STAGE_FEATURES.items()
    ]
    VERSION = datasets.Version("1.0.0")

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(
            description=_DESCRIPTION, features=self.config.features, citation=_CITATION, license=_LICENSE
        )

    def _split_generators(self, dl_manager) -> list[datasets.SplitGenerator]:
        shards = _find_shards(self.config)
        for files in shards.values():
            for file in files:
                _check_columns(file, self.config.features)
        return [datasets.SplitGenerator(name=split, gen_kwargs={"files": files}) for split, files in shards.items()]

    def _generate_tables(self, files: list[Path]) -> Iterator[tuple[Key, pa.Table]]:
        features = self.config.features
        for file_idx, file in enumerate(files):
            parquet = pq.ParquetFile(file)
            for batch_idx, batch in enumerate(parquet.iter_batches(columns=list(features))):
                yield Key(file_idx, batch_idx), _cast(pa.Table.from_batches([batch]), features, file)


def _find_shards(config: StageConfig) -> dict[str, list[Path]]:
    if config.files:
        files = [Path(f) for f in config.files]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FileNotFoundError(f"stage shards not found: {missing}")
        return {config.split: files}
    if config.path is None:
        raise ValueError(f"stage {config.name!r}: give `path` (a stage directory or .parquet file) or `files`")
    path = Path(config.path)
    if path.is_file():
        return {config.split: [path]}
    root = path / config.subset
    if not root.is_dir():
        raise FileNotFoundError(
            f"stage {config.name!r}: no subset directory {root}; a stage directory holds {{subset}}/{{split}}/*.parquet"
            + (f" (found subsets: {sorted(p.name for p in path.iterdir() if p.is_dir())})" if path.is_dir() else "")
        )
    shards = {d.name: sorted(d.glob("*.parquet")) for d in sorted(root.iterdir()) if d.is_dir()}
    shards = {split: files for split, files in shards.items() if files}
    if not shards:
        raise FileNotFoundError(f"stage {config.name!r}: no {root}/{{split}}/*.parquet shards")
    return shards


def _check_columns(file: Path, features: datasets.Features) -> None:
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowInvalid, OSError) as e:
        raise StageFormatError(str(file), None, f"not a readable Parquet file ({e})") from None
    missing = [c for c in features if c not in schema.names]
    if missing:
        raise StageFormatError(
            str(file), missing[0], f"missing column(s) {missing}; this stage needs {list(features)}"
        )
    extra = [c for c in schema.names if c not in features]
    if extra:
        logger.info("%s: dropping columns not in the schema: %s", file, extra)


def _cast(table: pa.Table, features: datasets.Features, file: Path) -> pa.Table:
    try:
        return table.cast(features.arrow_schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError):
        for name, target in zip(features.arrow_schema.names, features.arrow_schema.types):
            try:
                table.column(name).cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, TypeError, ValueError) as e:
                raise StageFormatError(
                    str(file), name, f"type {table.schema.field(name).type} cannot be cast to {target} ({e})"
                ) from None
        raise


def load_stage(
    stage: str,
    path_or_files: str | Path | list[str | Path],
    *,
    subset: str = "default",
    split: str = "train",
    cache_dir: str | Path | None = None,
) -> datasets.DatasetDict:
    """A stage's shards → `DatasetDict` (one split per ``{split}/`` directory, or ``split`` for a list of files)."""
    if stage not in STAGE_FEATURES:
        raise ValueError(f"stage={stage!r}: expected one of {list(STAGE_FEATURES)}")
    if isinstance(path_or_files, (list, tuple)):
        kwargs = {"files": tuple(str(f) for f in path_or_files)}
    else:
        kwargs = {"path": str(path_or_files)}
    return run_builder(StageBuilder, config_name=stage, cache_dir=cache_dir, subset=subset, split=split, **kwargs)
