"""Rows of a dataset repo, read straight from its parquet files in the blob store, one row group at a time.

A revision's configs and splits come from the card's ``configs`` metadata (``data_files`` patterns, as ``datasets``
reads them) or, without one, from the file layout (``{config}/{split}-00000-of-00001.parquet``, ``data/train-*``).
Parquet footers are cached by the blob's sha256 (blobs never change), so a page of rows costs one footer lookup and
the row groups that hold it, never the whole file.
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mathgenie.hub.store import StoreError

KNOWN_SPLITS = ("train", "validation", "valid", "dev", "test", "eval")
_SHARD_RE = re.compile(r"^(?P<split>[\w.]+?)(?:-\d{5}-of-\d{5})?\.parquet$")


@functools.lru_cache(maxsize=1024)
def _footer(path: str) -> tuple[pq.FileMetaData, tuple[int, ...]]:
    """Footer and row-group start offsets of a blob (keyed by its path, which is its sha256)."""
    meta = pq.read_metadata(path)
    starts, pos = [], 0
    for i in range(meta.num_row_groups):
        starts.append(pos)
        pos += meta.row_group(i).num_rows
    return meta, tuple(starts)


@dataclass
class ParquetShard:
    path: str  # in the repo
    blob: Path
    size: int

    @property
    def meta(self) -> pq.FileMetaData:
        return _footer(str(self.blob))[0]

    @property
    def starts(self) -> tuple[int, ...]:
        return _footer(str(self.blob))[1]

    def open(self) -> pq.ParquetFile:
        return pq.ParquetFile(self.blob, metadata=self.meta)  # no footer parse: it is cached

    def read(self, start: int, stop: int, columns=None) -> list[pa.Table]:
        """Rows ``start:stop`` of this file, reading only the row groups that hold them."""
        out, pf = [], None
        first = max(bisect.bisect_right(self.starts, start) - 1, 0)
        for rg in range(first, self.meta.num_row_groups):
            rg_start, rg_rows = self.starts[rg], self.meta.row_group(rg).num_rows
            if rg_start >= stop:
                break
            pf = pf or self.open()
            lo, hi = max(start - rg_start, 0), min(stop - rg_start, rg_rows)
            if rg_rows > 8 * (hi - lo) and rg_rows > 10_000:  # a huge row group: decode batches up to the page only
                out.append(_slice_batches(pf, rg, lo, hi, columns))
            else:
                out.append(pf.read_row_group(rg, columns=columns).slice(lo, hi - lo))
        return out


def _slice_batches(pf: pq.ParquetFile, rg: int, lo: int, hi: int, columns) -> pa.Table:
    batches, pos = [], 0
    for batch in pf.iter_batches(batch_size=max(hi - lo, 4096), row_groups=[rg], columns=columns):
        if pos + len(batch) > lo:
            batches.append(batch.slice(max(lo - pos, 0), hi - max(lo, pos)))
        pos += len(batch)
        if pos >= hi:
            break
    return pa.Table.from_batches(batches, schema=batches[0].schema) if batches else pf.schema_arrow.empty_table()


@dataclass
class Split:
    config: str
    name: str
    shards: list[ParquetShard] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return sum(s.meta.num_rows for s in self.shards)

    @property
    def num_bytes(self) -> int:
        return sum(s.size for s in self.shards)

    @property
    def schema(self) -> pa.Schema:
        return self.shards[0].meta.schema.to_arrow_schema()

    def features(self):
        import datasets  # heavy: only when a page needs the feature types

        return datasets.Features.from_arrow_schema(self.schema)

    def read(self, offset: int, length: int, columns=None) -> pa.Table:
        """Rows ``offset:offset+length`` across the split's files."""
        tables, base = [], 0
        for shard in self.shards:
            n = shard.meta.num_rows
            if base + n > offset and base < offset + length:
                tables += shard.read(max(offset - base, 0), min(offset + length - base, n), columns)
            base += n
        if not tables:
            return self.schema.empty_table() if columns is None else self.schema.empty_table().select(columns)
        return pa.concat_tables(tables, promote_options="default")

    def find(self, column: str, value: str) -> int | None:
        """Index of the first row whose ``column`` equals ``value`` (read one column, row group by row group,
        skipping those whose statistics rule the value out)."""
        if column not in self.schema.names:
            return None
        try:
            wanted = pa.scalar(value).cast(self.schema.field(column).type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        base = 0
        for shard in self.shards:
            pf, col = shard.open(), shard.meta.schema.to_arrow_schema().get_field_index(column)
            for rg in range(shard.meta.num_row_groups):
                stats = shard.meta.row_group(rg).column(col).statistics if col >= 0 else None
                if stats is not None and stats.has_min_max and _outside(stats, wanted.as_py()):
                    continue
                hit = pc.index(pf.read_row_group(rg, columns=[column]).column(0), wanted).as_py()
                if hit >= 0:
                    return base + shard.starts[rg] + hit
            base += shard.meta.num_rows
        return None


def _outside(stats, value) -> bool:
    if not (getattr(stats, "is_min_value_exact", True) and getattr(stats, "is_max_value_exact", True)):
        return False  # a truncated bound proves nothing
    try:
        return value < stats.min or value > stats.max
    except TypeError:
        return False


# -- configs and splits of a revision -------------------------------------------------------------------------------
def dataset_splits(tree: dict, card: dict | None, blob_path) -> list[Split]:
    """The revision's splits, in the card's order; only parquet files are readable here."""
    parquet = sorted(p for p in tree if p.endswith(".parquet"))
    splits: dict[tuple[str, str], Split] = {}

    def add(config: str, split: str, path: str) -> None:
        entry = tree[path]
        shard = ParquetShard(path, blob_path(entry["sha256"]), entry["size"])
        splits.setdefault((config, split), Split(config, split)).shards.append(shard)

    configs = (card or {}).get("configs")
    if isinstance(configs, list) and configs:
        for cfg in configs:
            if not isinstance(cfg, dict) or not isinstance(cfg.get("config_name"), str):
                continue
            for split, patterns in _data_files(cfg):
                for path in parquet:
                    if any(fnmatch.fnmatchcase(path, p) for p in patterns):
                        add(cfg["config_name"], split, path)
        return list(splits.values())
    for path in parquet:
        add("default", _split_of(path), path)
    return list(splits.values())


def _data_files(cfg: dict) -> list[tuple[str, list[str]]]:
    base = cfg.get("data_dir") if isinstance(cfg.get("data_dir"), str) else ""

    def patterns(value) -> list[str]:
        items = value if isinstance(value, list) else [value]
        return [posixpath.join(base, p) if base else p for p in items if isinstance(p, str)]

    files = cfg.get("data_files", f"{base}/**" if base else "**")
    if isinstance(files, dict):  # {split: patterns}
        return [(str(k), patterns(v)) for k, v in files.items()]
    if isinstance(files, list) and any(isinstance(f, dict) for f in files):
        return [(str(f.get("split")), patterns(f.get("path"))) for f in files if isinstance(f, dict)]
    return [("train", patterns(files))]


def _split_of(path: str) -> str:
    parent, name = posixpath.split(path)
    m = _SHARD_RE.match(name)
    if m and m.group("split") in KNOWN_SPLITS:
        return m.group("split")
    leaf = posixpath.basename(parent)
    return leaf if leaf in KNOWN_SPLITS else (m.group("split") if m and parent else "train")


def find_split(splits: list[Split], config: str | None, split: str | None) -> Split:
    for s in splits:
        if s.config == config and s.name == split:
            return s
    known = ", ".join(f"{s.config}/{s.name}" for s in splits) or "none"
    raise StoreError(404, f"no split {split!r} in config {config!r} (this revision has: {known})", "ResponseNotFound")
