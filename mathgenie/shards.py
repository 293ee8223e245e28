"""Shards and the on-disk contract of a stage's output.

``--shard I/N`` keeps the seeds whose stable hash of the seed id is ``I`` modulo ``N``. Every generated row carries
its ``seed_id``, and nothing a stage does crosses seed families (dedup, consistency and ids are per family), so shard
``I`` of every stage depends only on shard ``I`` of the previous one, ids do not depend on ``N``, and the union of
the ``N`` shard outputs is the unsharded output.

This is the one stage-folder format: the pipeline writes every stage so (``{output_dir}/{name}/``, ``name`` = the
stage's output: seed, augmented, ..., decontaminated), ``mathgenie seed --output DIR`` writes the seed so, and
``mathgenie push DIR REPO`` publishes any such folder::

    default/train/part-00000-of-00002.parquet   rows of shard 0/2 (what `mathgenie.builders.stage.load_stage` reads)
    manifest-00000-of-00002.json                 written last: files, rows, config hash, model, stats, card fields

A shard is done when its manifest exists with the expected config hash. Both files are written to a temporary name
and renamed, so a killed run leaves either a finished shard or nothing. A finished shard removes the parts of other
shard counts, so the directory always holds one consistent set.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets.table import InMemoryTable


def shard_of(seed_id: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(seed_id.encode()).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= I < N, e.g. --shard 0/4")

    @classmethod
    def parse(cls, text: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if m is None:
            raise ValueError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
        return cls(int(m.group(1)), int(m.group(2)))

    @property
    def suffix(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def keeps(self, seed_id: str) -> bool:
        return self.count == 1 or shard_of(seed_id, self.count) == self.index

    def filter(self, dataset: datasets.Dataset) -> datasets.Dataset:
        if self.count == 1:
            return dataset
        column = "seed_id" if "seed_id" in dataset.column_names else "id"
        return dataset.filter(lambda ids: [self.keeps(i) for i in ids], input_columns=column, batched=True)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class StageStore:
    """Reads and writes one stage's shards under ``root/name``."""

    def __init__(self, root: str | Path, name: str, split: str = "train"):
        self.root, self.name = Path(root), name
        self.dir = self.root / name
        self.data_dir = self.dir / "default" / split

    def part_path(self, shard: Shard) -> Path:
        return self.data_dir / f"part-{shard.suffix}.parquet"

    def manifest_path(self, shard: Shard) -> Path:
        return self.dir / f"manifest-{shard.suffix}.json"

    def manifest(self, shard: Shard) -> dict | None:
        path = self.manifest_path(shard)
        return json.loads(path.read_text()) if path.is_file() else None

    def is_done(self, shard: Shard, config_hash: str) -> bool:
        m = self.manifest(shard)
        return m is not None and m["config_hash"] == config_hash and self.part_path(shard).is_file()

    def write(self, shard: Shard, dataset: datasets.Dataset | datasets.DatasetDict, manifest: dict) -> dict:
        """Write the shard's rows (a `DatasetDict` writes one part per split), then its manifest."""
        splits = dataset if isinstance(dataset, datasets.DatasetDict) else {self.data_dir.name: dataset}
        files = []
        for split, ds in splits.items():
            part = self.dir / "default" / split / self.part_path(shard).name
            part.parent.mkdir(parents=True, exist_ok=True)
            tmp = part.with_name(f".{part.name}.tmp-{os.getpid()}")
            ds.to_parquet(str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, part)
            files.append({"path": str(part.relative_to(self.dir)), "rows": len(ds)})
        manifest = {**manifest, "stage_dir": self.name, "shard": str(shard), "rows": sum(f["rows"] for f in files),
                    "files": files}
        _atomic_write_text(self.manifest_path(shard), json.dumps(manifest, indent=2, default=str) + "\n")
        suffix = f"-of-{shard.count:05d}"
        for stale in [*self.dir.glob("manifest-*-of-*.json"), *self.dir.glob("default/*/part-*-of-*.parquet")]:
            if not stale.stem.endswith(suffix):
                stale.unlink(missing_ok=True)
        return manifest

    def manifests(self, config_hash: str) -> list[dict] | None:
        """The manifests of a complete shard set with ``config_hash`` (shard order), or None."""
        return self.complete_sets().get(config_hash)

    def complete_sets(self) -> dict[str, list[dict]]:
        """``{config hash: manifests in shard order}`` of every complete shard set in the folder."""
        found: dict[tuple[str, int], dict[int, dict]] = {}
        for path in self.dir.glob("manifest-*-of-*.json"):
            m = json.loads(path.read_text())
            shard = Shard.parse(m["shard"])
            found.setdefault((m["config_hash"], shard.count), {})[shard.index] = m
        out: dict[str, list[dict]] = {}
        for (h, count), group in sorted(found.items()):
            if len(group) == count and h not in out:
                out[h] = [group[i] for i in range(count)]
        return out

    def read_splits(self, config_hash: str) -> datasets.DatasetDict:
        """Every split of the complete shard set with ``config_hash`` (``default/{split}/`` of its files)."""
        files: dict[str, list[Path]] = {}
        for m in self.manifests(config_hash) or []:
            for f in m["files"]:
                files.setdefault(Path(f["path"]).parent.name, []).append(self.dir / f["path"])
        return datasets.DatasetDict({split: _read_parquet(paths) for split, paths in files.items()})

    def missing(self, config_hash: str) -> list[str]:
        """Shards not done yet (for error messages), for the shard count present on disk."""
        counts = {Shard.parse(json.loads(p.read_text())["shard"]).count for p in self.dir.glob("manifest-*.json")}
        out = []
        for count in sorted(counts) or [1]:
            out += [str(Shard(i, count)) for i in range(count) if not self.is_done(Shard(i, count), config_hash)]
        return out

    def read(self, config_hash: str, shard: Shard = Shard()) -> datasets.Dataset:
        """The rows of ``shard``: its own part when it is done, else filtered from a complete shard set (any shard
        count) with ``config_hash``."""
        if self.is_done(shard, config_hash):
            return _read_parquet([self.dir / f["path"] for f in self.manifest(shard)["files"]])
        group = self.manifests(config_hash)
        if group is None:
            raise FileNotFoundError(
                f"{self.dir}: no complete output with config hash {config_hash} (missing shards: "
                f"{', '.join(self.missing(config_hash)) or 'all'}); run the stage that writes {self.name!r} first")
        files = [self.dir / f["path"] for m in group for f in m["files"]]
        return shard.filter(_read_parquet(files))


def _read_parquet(files: list[Path]) -> datasets.Dataset:
    parts = [datasets.Dataset(InMemoryTable(pq.read_table(f))) for f in files]  # in memory: no cache files
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
