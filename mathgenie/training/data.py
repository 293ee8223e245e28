"""Training data: load a dataset from the Hub (repo id, config, split, revision) or a local path, remember the exact
commit it came from, and turn rows into token ids with exact loss masks for each recipe."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

from mathgenie import schema

logger = logging.getLogger(__name__)


@dataclass
class DataSource:
    """Where a training dataset came from, for the model card: ``revision`` is the resolved commit sha on the Hub
    (``None`` for a local path)."""

    name: str
    config: str | None
    split: str
    revision: str | None
    num_rows: int
    mix: dict | None = None  # the training-mix source this came through: name, kind, weight, samples used

    def to_dict(self) -> dict:
        return {"name": self.name, "config": self.config, "split": self.split, "revision": self.revision,
                "num_rows": self.num_rows, **({"mix": self.mix} if self.mix else {})}


def load_source(
    name: str, *, config: str | None = None, split: str = "train", revision: str | None = None,
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, DataSource]:
    """Load ``split`` of a Hub dataset at ``revision`` (branch, tag or sha; resolved to a sha first so the card names
    the exact commit), or of a local path: a `save_to_disk` folder, a folder of data files, or a
    ``.jsonl``/``.json``/``.parquet``/``.csv`` file."""
    path = Path(name).expanduser()
    if path.exists():
        if revision not in (None, "main"):  # "main", the YAML default, is no constraint on a local path
            raise ValueError(f"dataset {name!r} is a local path; `revision` ({revision!r}) only applies to Hub repos")
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = _pick_split(ds, split, name)
        elif path.is_file():
            builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(path.suffix)
            if builder is None:
                raise ValueError(f"dataset file {name!r}: unknown format {path.suffix!r}; use .jsonl, .json, "
                                 ".parquet or .csv")
            ds = datasets.load_dataset(builder, data_files={split: str(path)}, split=split, num_proc=num_proc)
        else:
            ds = datasets.load_dataset(str(path), config, split=split, num_proc=num_proc)
        return ds, DataSource(str(path), config, split, None, len(ds))

    from huggingface_hub import HfApi

    try:
        sha = HfApi().dataset_info(name, revision=revision).sha
    except Exception as e:  # RepositoryNotFoundError, RevisionNotFoundError, HTTP errors: all need the same fix
        raise ValueError(
            f"dataset {name!r} (revision {revision!r}) is neither a local path nor reachable on the Hub at "
            f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}: {e}"
        ) from e
    ds = datasets.load_dataset(name, config, split=split, revision=sha, num_proc=num_proc)
    logger.info("loaded %s (config %s, split %s) at %s: %d rows", name, config, split, sha, len(ds))
    return ds, DataSource(name, config, split, sha, len(ds))


def load_mix_source(source, *, num_proc: int | None = None) -> tuple[datasets.Dataset, DataSource]:
    """The rows of a `mix.MixSource`: through `load_source`, or for ``format: mathcoder`` through the D_code builder
    (the published MathGenie jsonl layout, on the Hub or local). Any failure names the source."""
    try:
        if source.format == "rows":
            return load_source(source.dataset, config=source.config, split=source.split, revision=source.revision,
                               num_proc=num_proc)
        from mathgenie.builders.dcode import DCodeSource, build_dcode

        dsource = DCodeSource(source.name, source.dataset, split=source.split, revision=source.revision,
                              kinds=(source.kind,))
        if dsource.is_hub:  # pin the commit, for the card and so every file is read at the same one
            from huggingface_hub import HfApi

            sha = HfApi().dataset_info(source.dataset, revision=source.revision).sha
            dsource = DCodeSource(source.name, source.dataset, split=source.split, revision=sha, kinds=(source.kind,))
        ds = build_dcode([dsource], kinds=(source.kind,))[source.kind][source.split]
        return ds, DataSource(source.dataset, None, source.split, dsource.revision, len(ds))
    except Exception as e:  # missing path, unknown repo, bad record: all are this source's to fix
        raise ValueError(f"mix source {source.name!r} (dataset {source.dataset!r}, split {source.split!r}, format "
                         f"{source.format!r}): {e}") from e


def _pick_split(ds: datasets.DatasetDict, split: str, name: str) -> datasets.Dataset:
    if split not in ds:
        raise ValueError(f"dataset {name!r} has no split {split!r}; it has {sorted(ds)}")
    return ds[split]


def _require_columns(ds: datasets.Dataset, columns: list[str], name: str, hint: str) -> None:
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ValueError(f"dataset {name!r} lacks column(s) {missing} (has {ds.column_names}); {hint}")


# ---------------------------------------------------------------------------------------------------------------------
# Back-translation: (solution, question) pairs → prompt/completion token ids
# ---------------------------------------------------------------------------------------------------------------------


def backtranslation_dataset(
    ds: datasets.Dataset, tokenizer, *, name: str, prompt_format: str = "plain", question_column: str = "question",
    solution_column: str = "solution", num_proc: int | None = None,
) -> datasets.Dataset:
    """``input_ids`` + ``completion_mask`` for every row with a non-empty question and solution (``prompt_format``:
    ``chat`` or ``plain``, see `backtranslation.py`)."""
    from mathgenie.training.backtranslation import encode_pairs

    _require_columns(ds, [question_column, solution_column], name,
                     "set `question_column`/`solution_column` to the columns holding them")
    before = len(ds)
    ds = ds.filter(lambda q, s: bool(q and q.strip()) and bool(s and s.strip()),
                   input_columns=[question_column, solution_column], num_proc=num_proc)
    if len(ds) < before:
        logger.warning("%s: dropped %d rows with an empty question or solution", name, before - len(ds))
    if len(ds) == 0:
        raise ValueError(f"dataset {name!r} has no row with both {question_column!r} and {solution_column!r}")

    def encode(batch):
        return encode_pairs(batch[solution_column], batch[question_column], tokenizer, prompt_format=prompt_format)

    return ds.map(encode, batched=True, remove_columns=ds.column_names, num_proc=num_proc,
                  desc=f"Tokenizing {name}")


# ---------------------------------------------------------------------------------------------------------------------
# MathGenieLM: verified rows (question + LCE blocks) or MathCoder-style `messages` → ids with exact LCE masks
# ---------------------------------------------------------------------------------------------------------------------


def lce_dataset(
    ds: datasets.Dataset, tokenizer, *, name: str, kind: str = "solutions", system_prompt: str = schema.DEFAULT_SYSTEM,
    exclude_verdicts: list[str] | None = None, require_finished: bool = True, weight: float = 1.0, seed: int = 0,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """``input_ids`` + ``assistant_masks`` (see `lce.py` for what is trained) of ``kind`` samples (`mix.py`): rows
    come as a ``messages`` column (MathCoder's format, used as is) or as ``question`` + ``blocks`` (solutions) /
    ``question`` + ``verification`` + ``solution`` or ``blocks`` (verifications). Rows whose ``verdict`` is in
    ``exclude_verdicts`` or, with ``require_finished``, whose ``finish_reason`` is not ``endofmessage`` (cut at the
    length or block limit) are dropped, as are verification rows without a rationale; then each row is used
    ``weight`` times (`mix.weighted_indices`)."""
    from mathgenie.training.lce import encode_conversations
    from mathgenie.training.mix import verification_messages, weighted_indices

    if "messages" not in ds.column_names:
        needed = ["question", "blocks"] if kind == "solutions" else ["question", "verification"]
        hint = ("expected a verified/solved stage or a D_code `solutions` dataset (question + blocks) or a "
                "`messages` column" if kind == "solutions" else
                "expected a verified stage (question + blocks + verification) or a D_code `verifications` dataset "
                "(question + solution + verification)")
        _require_columns(ds, needed, name, hint)
        if kind == "verifications" and "solution" not in ds.column_names and "blocks" not in ds.column_names:
            raise ValueError(f"dataset {name!r} lacks the verified solution: a `solution` (text) or `blocks` column")
    before = len(ds)
    if exclude_verdicts and "verdict" in ds.column_names:
        excluded = set(exclude_verdicts)
        ds = ds.filter(lambda v: v not in excluded, input_columns=["verdict"], num_proc=num_proc)
    if require_finished and "finish_reason" in ds.column_names:
        ds = ds.filter(lambda r: r == "endofmessage", input_columns=["finish_reason"], num_proc=num_proc)
    if kind == "verifications" and "messages" not in ds.column_names:
        ds = ds.filter(lambda v: bool(v), input_columns=["verification"], num_proc=num_proc)
    if len(ds) < before:
        logger.info("%s: kept %d of %d rows (verdict not in %s%s%s)", name, len(ds), before, exclude_verdicts,
                    ", finished" if require_finished else "", ", with a rationale" if kind == "verifications" else "")
    if len(ds) == 0:
        raise ValueError(f"dataset {name!r}: no {kind} row left after filtering (exclude_verdicts="
                         f"{exclude_verdicts}, require_finished={require_finished})")
    if weight != 1:
        ds = ds.select(weighted_indices(len(ds), weight, seed))
    id_column = next((c for c in ("solution_id", "id") if c in ds.column_names), None)

    def encode(batch, indices):
        if "messages" in batch:
            conversations = batch["messages"]
        else:
            rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
            to_messages = schema.to_messages if kind == "solutions" else verification_messages
            conversations = [to_messages(row, system_prompt) for row in rows]
        row_ids = batch[id_column] if id_column else indices
        return encode_conversations(conversations, tokenizer, row_ids=row_ids)

    return ds.map(encode, batched=True, with_indices=True, remove_columns=ds.column_names, num_proc=num_proc,
                  desc=f"Tokenizing {name}")


def drop_long(ds: datasets.Dataset, max_length: int | None, name: str, num_proc: int | None = None) -> datasets.Dataset:
    """Drop sequences longer than ``max_length``: truncating them would train on solutions without their ending."""
    if max_length is None:
        return ds
    before = len(ds)
    ds = ds.filter(lambda ids: len(ids) <= max_length, input_columns=["input_ids"], num_proc=num_proc)
    if len(ds) < before:
        logger.warning("%s: dropped %d of %d sequences longer than max_length=%d", name, before - len(ds), before,
                       max_length)
    if len(ds) == 0:
        raise ValueError(f"{name}: every sequence is longer than max_length={max_length}; raise `max_length`")
    return ds
