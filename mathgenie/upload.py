"""Publish stage datasets and model folders to the Hub as versioned, atomic revisions.

One push = one commit holding the complete new state of the repo (every parquet shard, the card, extra files) made
with ``parent_commit`` = the branch head read before: if anything changed the branch meanwhile, or the Hub rejects
any part of it, the commit does not happen and the previous revision stays exactly as it was. Files of the previous
revision that are not part of the new one are deleted in the same commit, so a revision is exactly what was pushed.
Then the tag (``v1.0``) names that commit; an existing tag is never moved.

A stage folder (`mathgenie.shards.StageStore`) is published by `mathgenie.generation.publish.push_stage_folder`, which
reads it and calls `push_dataset`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from mathgenie.cards.common import data_metadata, scrub_text

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 256 * 1024 * 1024  # in-memory Arrow size per parquet shard
_KEEP = {".gitattributes"}  # never deleted by a push


class PushError(RuntimeError):
    """A push that was refused before or by the Hub; the previous revision is unchanged."""


@dataclass
class PushResult:
    repo_id: str
    commit_sha: str | None  # None for a dry run
    revision: str  # the branch
    tag: str | None
    files: list[str]  # every file of the new revision (besides .gitattributes)
    deleted: list[str] = field(default_factory=list)
    operations: list[str] = field(default_factory=list)  # "add path (N bytes)", "delete path", "keep path"
    dry_run: bool = False
    changed: bool = True  # False when the revision already held exactly these files


def _shard_dataset(ds, max_shard_bytes: int) -> int:
    nbytes = ds.data.nbytes * len(ds) / max(ds.data.num_rows, 1)
    return max(1, min(math.ceil(nbytes / max_shard_bytes), len(ds)))


def write_parquet_shards(configs: Mapping, out_dir: Path, max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> dict:
    """Write ``{config}/{split}-00000-of-0000N.parquet`` under ``out_dir``; returns ``{path_in_repo: local Path}``."""
    files = {}
    for config, dsd in configs.items():
        for split, ds in dsd.items():
            n = _shard_dataset(ds, max_shard_bytes)
            for i in range(n):
                rel = f"{config}/{split}-{i:05d}-of-{n:05d}.parquet"
                (out_dir / config).mkdir(parents=True, exist_ok=True)
                ds.shard(num_shards=n, index=i, contiguous=True).to_parquet(str(out_dir / rel))
                files[rel] = out_dir / rel
    return files


def _check_configs(configs: Mapping) -> None:
    import datasets

    if not configs:
        raise ValueError("push_dataset: `configs` is empty; pass {config_name: DatasetDict}")
    for name, dsd in configs.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"push_dataset: config name {name!r} must use letters, digits, '_', '-', '.'")
        if not isinstance(dsd, datasets.DatasetDict) or not dsd:
            raise ValueError(f"push_dataset: config {name!r} must be a non-empty datasets.DatasetDict, got "
                             f"{type(dsd).__name__}")
        features = {split: ds.features for split, ds in dsd.items()}
        first_split, first = next(iter(features.items()))
        for split, feats in features.items():
            if not split.replace("_", "").isalnum():
                raise ValueError(f"push_dataset: split name {split!r} of config {name!r} must be a word (train, test)")
            if feats != first:
                raise ValueError(f"push_dataset: config {name!r}: split {split!r} has columns "
                                 f"{sorted(feats)} with types differing from split {first_split!r}; one config "
                                 "has one schema")


def push_dataset(
    configs: Mapping,
    repo_id: str,
    *,
    card=None,
    branch: str = "main",
    tag: str | None = None,
    commit_message: str | None = None,
    config_hash: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    private: bool = False,
    lineage: str | None = None,
    extra_files: Mapping[str, str | Path | bytes] | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> PushResult:
    """Push ``{config_name: DatasetDict}`` as one commit of parquet shards + README card, then tag it.

    ``card``: a `huggingface_hub.DatasetCard` (default: `mathgenie.cards.render_dataset_card` of the data); its
    ``configs``/``dataset_info`` metadata are set from the data so ``load_dataset(repo_id, config, revision=tag)``
    needs no script. ``lineage``: a one-line summary for the commit message (default: rows per config and the card's
    source datasets). ``extra_files``: ``{path_in_repo: local path or bytes}`` (e.g. a funnel plot).
    """
    from huggingface_hub import DatasetCard

    from mathgenie.cards import render_dataset_card

    _check_configs(configs)
    if card is None:
        card = render_dataset_card(repo_id=repo_id, stage="dataset", configs=configs, config_hash=config_hash,
                                   revision=tag)
    card = DatasetCard(str(card))  # a copy: the caller's card is not modified
    card.data["configs"], card.data["dataset_info"] = data_metadata(configs)
    rows = ", ".join(f"{c}/{s}={len(ds)}" for c, dsd in configs.items() for s, ds in dsd.items())
    if lineage is None:
        sources = card.data.get("source_datasets") or []
        lineage = f"{rows}" + (f" from {', '.join(sources)}" if sources else "")
    total = sum(len(ds) for dsd in configs.values() for ds in dsd.values())
    message = commit_message or f"Push {len(configs)} config(s), {total:,} rows" + (f" ({tag})" if tag else "")
    description = _description(config_hash, lineage)
    with tempfile.TemporaryDirectory(prefix="mathgenie-push-") as tmp:
        files: dict[str, Path | bytes] = dict(write_parquet_shards(configs, Path(tmp), max_shard_bytes))
        files["README.md"] = scrub_text(str(card)).encode()
        files.update(_extra(extra_files))
        return _push("dataset", repo_id, files, branch=branch, tag=tag, message=message, description=description,
                     dry_run=dry_run, token=token, private=private)


def push_model(
    folder: str | Path,
    repo_id: str,
    *,
    card=None,
    branch: str = "main",
    tag: str | None = None,
    commit_message: str | None = None,
    dry_run: bool = False,
    token: str | None = None,
    private: bool = False,
    config_hash: str | None = None,
) -> PushResult:
    """Push every file of a model folder (hidden files and folders skipped) plus the card as README.md, as one
    commit, then tag it. The repo revision becomes exactly the folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"push_model: {folder} has no config.json; pass a folder written by save_pretrained")
    files: dict[str, Path | bytes] = {
        p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    }
    if card is not None:
        files["README.md"] = scrub_text(str(card)).encode()
    message = commit_message or f"Push model from {folder.name}" + (f" ({tag})" if tag else "")
    return _push("model", repo_id, files, branch=branch, tag=tag, message=message,
                 description=_description(config_hash, f"model folder {folder.name}, {len(files)} files"),
                 dry_run=dry_run, token=token, private=private)


def _description(config_hash: str | None, lineage: str) -> str:
    return f"Config-Hash: {config_hash or 'none'}\nLineage: {' '.join(lineage.split())}\n"


def _extra(extra_files) -> dict[str, Path | bytes]:
    out = {}
    for path, src in (extra_files or {}).items():
        if isinstance(src, bytes):
            out[path] = src
        elif Path(src).is_file():
            out[path] = Path(src)
        else:
            raise FileNotFoundError(f"extra file for {path!r} not found: {src}")
    return out


def _sha256(src: Path | bytes) -> str:
    if isinstance(src, bytes):
        return hashlib.sha256(src).hexdigest()
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git_sha1(src: Path | bytes) -> str:
    data = src if isinstance(src, bytes) else src.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _unchanged(remote, src: Path | bytes) -> bool:
    size = len(src) if isinstance(src, bytes) else src.stat().st_size
    if remote is None or remote.size != size:
        return False
    return remote.lfs.sha256 == _sha256(src) if remote.lfs else remote.blob_id == _git_sha1(src)


def _push(repo_type, repo_id, files, *, branch, tag, message, description, dry_run, token, private) -> PushResult:
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    _plain_lfs_for_local_hub(api.endpoint)
    head, remote = _branch_state(api, repo_type, repo_id, branch, dry_run, private)
    ops, lines, deleted = _operations(files, remote)
    changed = bool(ops)
    existing_tags = {}
    if tag is not None and head is not None:
        existing_tags = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type=repo_type).tags}
        if tag in existing_tags and (changed or existing_tags[tag] != head):
            raise PushError(f"tag {tag!r} already exists in {repo_id} at {existing_tags[tag][:12]}: tags are never "
                            "moved; push under a new tag, or delete the old one first (nothing was written)")
    result = PushResult(repo_id, None, branch, tag, sorted(files), deleted, lines, dry_run, changed)
    if dry_run:
        logger.info("dry run: would commit to %s %s@%s:\n  %s", repo_type, repo_id, branch, "\n  ".join(lines))
        return result
    if changed:
        result.commit_sha = _commit(api, repo_type, repo_id, ops, branch, head, message, description)
    else:
        result.commit_sha = head
        logger.info("%s@%s already holds exactly these files (%s)", repo_id, branch, head[:12])
    if tag is not None and not (tag in existing_tags and existing_tags[tag] == result.commit_sha):
        _tag(api, repo_type, repo_id, tag, result.commit_sha, message)
    logger.info("pushed %s %s@%s -> %s%s (%d files, %d deleted)", repo_type, repo_id, branch, result.commit_sha[:12],
                f" tag {tag}" if tag else "", len(files), len(deleted))
    return result


def _branch_state(api, repo_type, repo_id, branch, dry_run, private) -> tuple[str | None, dict]:
    """The branch head (None for a dry run of a new repo) and the files of the revision the push replaces (main for
    a new branch); creates the repo and the branch unless ``dry_run``."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    head = base = None
    try:
        head = base = api.repo_info(repo_id, repo_type=repo_type, revision=branch).sha
    except RepositoryNotFoundError:
        if not dry_run:
            api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
    except RevisionNotFoundError:  # a new branch starts from main
        base = api.repo_info(repo_id, repo_type=repo_type).sha
    if head is None and not dry_run:
        if branch != "main":
            api.create_branch(repo_id, repo_type=repo_type, branch=branch, exist_ok=True)
        head = base = api.repo_info(repo_id, repo_type=repo_type, revision=branch).sha
    if base is None:
        return head, {}
    tree = api.list_repo_tree(repo_id, repo_type=repo_type, revision=base, recursive=True)
    return head, {f.path: f for f in tree if getattr(f, "blob_id", None) is not None}


def _operations(files: dict, remote: dict) -> tuple[list, list[str], list[str]]:
    """The commit operations that turn ``remote`` into ``files`` (unchanged files are kept, not re-uploaded), a line
    per file, and the deleted paths."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    ops, lines = [], []
    for path, src in sorted(files.items()):
        size = len(src) if isinstance(src, bytes) else src.stat().st_size
        if _unchanged(remote.get(path), src):
            lines.append(f"keep {path} ({size:,} bytes)")
        else:
            ops.append(CommitOperationAdd(path_in_repo=path, path_or_fileobj=src if isinstance(src, bytes) else str(src)))
            lines.append(f"add {path} ({size:,} bytes)")
    deleted = sorted(set(remote) - set(files) - _KEEP)
    ops += [CommitOperationDelete(path_in_repo=p) for p in deleted]
    return ops, lines + [f"delete {p}" for p in deleted], deleted


def _commit(api, repo_type, repo_id, ops, branch, head, message, description) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        info = api.create_commit(repo_id, ops, commit_message=message, commit_description=description,
                                 repo_type=repo_type, revision=branch, parent_commit=head)
    except HfHubHTTPError as e:
        if e.response is not None and e.response.status_code == 412:
            raise PushError(f"{repo_id}@{branch} changed while pushing (its head is no longer {head[:12]}); "
                            "nothing was written. Re-run the push on top of the new head.") from e
        raise
    return info.oid


def _plain_lfs_for_local_hub(endpoint: str) -> None:
    """The local hub (`mathgenie.hub`) has no Xet storage: uploads to a loopback endpoint go through plain LFS, as
    if HF_HUB_DISABLE_XET=1 had been exported (huggingface_hub reads the flag on every upload)."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if urlparse(endpoint).hostname in ("127.0.0.1", "localhost", "::1") and not constants.HF_HUB_DISABLE_XET:
        logger.info("local hub at %s: uploading with plain LFS (HF_HUB_DISABLE_XET)", endpoint)
        constants.HF_HUB_DISABLE_XET = True


def _tag(api, repo_type: str, repo_id: str, tag: str, sha: str, message: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(repo_id, repo_type=repo_type, tag=tag, revision=sha, tag_message=message)
    except HfHubHTTPError as e:
        if e.response is None or e.response.status_code != 409:
            raise
        existing = {t.name: t.target_commit for t in api.list_repo_refs(repo_id, repo_type=repo_type).tags}
        if existing.get(tag) != sha:
            raise PushError(f"commit {sha[:12]} was pushed, but tag {tag!r} was created meanwhile at "
                            f"{existing.get(tag, '?')[:12]}; tag the commit under another name") from e
