"""The dataset-viewer JSON API (the Hub's ``datasets-server``), served by the local hub under the same paths and
query parameters: ``/splits?dataset=``, ``/first-rows?dataset=&config=&split=``, ``/rows?...&offset=&length=``,
``/info?dataset=[&config=]``, ``/size?dataset=[&config=]``, ``/is-valid?dataset=``, ``/parquet?dataset=``.

Answers have the datasets-server's shapes; errors are ``{"error": message}`` (422 for a bad parameter, 404 for a
dataset, config or split that does not exist). ``revision=`` (a branch, tag or sha) is an extension: default main.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from mathgenie.hub.files import json_response
from mathgenie.hub.rows import Split, dataset_splits, find_split
from mathgenie.hub.store import DEFAULT_BRANCH, Repo, StoreError, valid_repo_id
from mathgenie.hub.validate import jsonable

MAX_ROWS_PER_PAGE = 100  # the datasets-server's cap on ``length``
ENDPOINTS = ("splits", "first-rows", "rows", "info", "size", "is-valid", "parquet")


@dataclass
class Revision:
    """A dataset repo at one commit, with its splits."""
    repo: Repo
    rev: str
    sha: str
    tree: dict
    card: dict | None
    splits: list[Split]

    def split(self, config: str | None, split: str | None) -> Split:
        return find_split(self.splits, config, split)


def open_revision(hub, request: Request, repo_type: str, repo_id: str, rev: str | None) -> Revision:
    repo = hub._repo(request, repo_type, repo_id)
    rev = rev or DEFAULT_BRANCH
    sha = repo.resolve_or_raise(rev)
    tree = repo.commit(sha)["tree"]
    card = hub._card_data(tree)
    splits = dataset_splits(tree, card, hub.store.blobs.path) if repo_type == "dataset" else []
    return Revision(repo, rev, sha, tree, card, splits)


def _param_error(message: str) -> StoreError:
    return StoreError(422, message, "InvalidParameter")


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _param_error(f"Parameter '{name}' must be an integer from {low} to {high:,}, got {raw[:40]!r}")
    return int(raw)


def features_json(split: Split) -> list[dict]:
    features = split.features().to_dict()
    return [{"feature_idx": i, "name": name, "type": features[name]} for i, name in enumerate(features)]


def rows_json(split: Split, offset: int, length: int) -> list[dict]:
    table = split.read(offset, length)
    return [{"row_idx": offset + i, "row": jsonable(row), "truncated_cells": []}
            for i, row in enumerate(table.to_pylist())]


class DatasetViewerAPI:
    def __init__(self, hub):
        self.hub = hub

    def handle(self, request: Request, endpoint: str) -> Response:
        params = request.query_params
        dataset = params.get("dataset")
        if not dataset:
            raise _param_error("Parameter 'dataset' is required")
        if not valid_repo_id(dataset):
            raise _param_error(f"Parameter 'dataset' must be a repo id 'namespace/name', got {dataset[:100]!r}")
        revision = open_revision(self.hub, request, "dataset", dataset, params.get("revision"))
        config, split = params.get("config"), params.get("split")
        if endpoint in ("first-rows", "rows") and not (config and split):
            raise _param_error("Parameters 'config' and 'split' are required")
        return getattr(self, endpoint.replace("-", "_"))(request, revision, dataset, config, split)

    def splits(self, request, revision, dataset, config, split) -> Response:
        rows = [{"dataset": dataset, "config": s.config, "split": s.name} for s in revision.splits
                if config in (None, s.config)]
        if config and not rows:
            revision.split(config, None)  # raises with the list of what exists
        return json_response({"splits": rows, "pending": [], "failed": []})

    def first_rows(self, request, revision, dataset, config, split) -> Response:
        s = revision.split(config, split)
        rows = rows_json(s, 0, MAX_ROWS_PER_PAGE)
        return json_response({"dataset": dataset, "config": config, "split": split, "features": features_json(s),
                              "rows": rows, "truncated": s.num_rows > len(rows)})

    def rows(self, request, revision, dataset, config, split) -> Response:
        s = revision.split(config, split)
        offset = _int_param(request, "offset", 0, 0, 10**12)
        length = _int_param(request, "length", MAX_ROWS_PER_PAGE, 0, MAX_ROWS_PER_PAGE)
        return json_response({"features": features_json(s), "rows": rows_json(s, offset, length),
                              "num_rows_total": s.num_rows, "num_rows_per_page": MAX_ROWS_PER_PAGE,
                              "partial": False})

    def _config_info(self, revision: Revision, dataset: str, config: str) -> dict:
        splits = [s for s in revision.splits if s.config == config]
        if not splits:
            revision.split(config, None)
        card = revision.card or {}
        size = sum(s.num_bytes for s in splits)
        return {"description": "", "citation": "", "homepage": "", "license": card.get("license") or "",
                "features": splits[0].features().to_dict(), "builder_name": "parquet", "dataset_name": dataset,
                "config_name": config, "version": {"version_str": "0.0.0", "major": 0, "minor": 0, "patch": 0},
                "splits": {s.name: {"name": s.name, "num_bytes": _memory_bytes(s), "num_examples": s.num_rows,
                                    "dataset_name": dataset} for s in splits},
                "download_size": size, "dataset_size": sum(_memory_bytes(s) for s in splits)}

    def info(self, request, revision, dataset, config, split) -> Response:
        if config:
            return json_response({"dataset_info": self._config_info(revision, dataset, config), "partial": False})
        configs = dict.fromkeys(s.config for s in revision.splits)
        return json_response({"dataset_info": {c: self._config_info(revision, dataset, c) for c in configs},
                              "pending": [], "failed": [], "partial": False})

    def size(self, request, revision, dataset, config, split) -> Response:
        splits = [s for s in revision.splits if config in (None, s.config)]
        if config and not splits:
            revision.split(config, None)
        split_rows = [{"dataset": dataset, "config": s.config, "split": s.name, "num_bytes_parquet_files": s.num_bytes,
                       "num_bytes_memory": _memory_bytes(s), "num_rows": s.num_rows,
                       "num_columns": len(s.schema.names)} for s in splits]

        def total(rows: list[dict], **keys) -> dict:
            return {**keys, "num_bytes_original_files": sum(r["num_bytes_parquet_files"] for r in rows),
                    **{k: sum(r[k] for r in rows) for k in ("num_bytes_parquet_files", "num_bytes_memory",
                                                            "num_rows")}}

        configs = [{**total([r for r in split_rows if r["config"] == c], dataset=dataset, config=c),
                    "num_columns": max(r["num_columns"] for r in split_rows if r["config"] == c)}
                   for c in dict.fromkeys(r["config"] for r in split_rows)]
        if config:
            return json_response({"size": {"config": configs[0], "splits": split_rows}, "partial": False})
        return json_response({"size": {"dataset": total(split_rows, dataset=dataset), "configs": configs,
                                       "splits": split_rows}, "pending": [], "failed": [], "partial": False})

    def is_valid(self, request, revision, dataset, config, split) -> Response:
        ok = bool(revision.splits)
        return json_response({"preview": ok, "viewer": ok, "search": False, "filter": False, "statistics": False})

    def parquet(self, request, revision, dataset, config, split) -> Response:
        base = str(request.base_url).rstrip("/")
        files = [{"dataset": dataset, "config": s.config, "split": s.name, "filename": sh.path.rsplit("/", 1)[-1],
                  "size": sh.size, "url": f"{base}/datasets/{dataset}/resolve/{revision.sha}/{quote(sh.path)}"}
                 for s in revision.splits if config in (None, s.config) for sh in s.shards]
        return json_response({"parquet_files": files, "pending": [], "failed": [], "partial": False})


def _memory_bytes(split: Split) -> int:
    return sum(sh.meta.row_group(i).total_byte_size for sh in split.shards for i in range(sh.meta.num_row_groups))
