"""Commit trees: applying the ``/commit`` endpoint's ndjson operations and listing files/folders like the Hub API."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from mathgenie.hub.store import BlobStore, StoreError, check_path, git_blob_sha1, lfs_pointer
from mathgenie.hub.validate import get_int, get_str

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def apply_operations(tree: dict, operations: list[dict], blobs: BlobStore) -> dict:
    """A new tree: ``tree`` with the commit's operations applied in order. Raises `StoreError` on the first bad one,
    before anything is referenced (blobs written for regular files are content-addressed and harmless if unused)."""
    tree = dict(tree)
    for n, op in enumerate(operations, start=1):
        key, value = op.get("key"), op.get("value")
        where = f"commit operation {n}"
        if not isinstance(key, str) or not isinstance(value, dict):
            raise StoreError(400, f"{where} must be {{'key': str, 'value': {{'path': ...}}}}")
        path = get_str(value, "path", where, required=True)
        if key == "file":
            check_path(path)
            encoding = get_str(value, "encoding", where) or "base64"
            if encoding != "base64":
                raise StoreError(400, f"{path}: unsupported encoding {encoding!r} (use base64)")
            try:
                data = base64.b64decode(get_str(value, "content", where, max_len=1 << 31) or "", validate=True)
            except (binascii.Error, ValueError):
                raise StoreError(400, f"{path}: 'content' is not valid base64") from None
            tree[path] = {"sha256": blobs.put_bytes(data), "size": len(data), "oid": git_blob_sha1(data), "lfs": False}
        elif key == "lfsFile":
            check_path(path)
            oid, size = get_str(value, "oid", where, required=True, max_len=64), get_int(value, "size", where)
            if (get_str(value, "algo", where) or "sha256") != "sha256" or not _SHA256_RE.match(oid):
                raise StoreError(400, f"{path}: LFS oid must be a sha256 hex digest, got {oid!r}")
            if size is None or not blobs.has(oid, size):
                raise StoreError(422, f"{path}: LFS object {oid} ({size} bytes) was never uploaded; upload it through "
                                      "the LFS batch endpoint before committing")
            tree[path] = {"sha256": oid, "size": size, "oid": git_blob_sha1(lfs_pointer(oid, size)), "lfs": True}
        elif key == "deletedFile":
            if path not in tree:
                raise StoreError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            del tree[path]
        elif key == "deletedFolder":
            prefix = path.rstrip("/") + "/"
            doomed = [p for p in tree if p.startswith(prefix)]
            if not doomed:
                raise StoreError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del tree[p]
        else:
            raise StoreError(400, f"commit operation {n}: unsupported key {key!r} (expected file, lfsFile, "
                                  "deletedFile or deletedFolder)")
    _check_no_file_folder_clash(tree)
    return tree


def _check_no_file_folder_clash(tree: dict) -> None:
    for path in tree:
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in tree:
                raise StoreError(400, f"{path!r} needs {'/'.join(parts[:i])!r} to be a folder, but it is a file")


def _folder_oid(tree: dict, folder: str) -> str:
    prefix = folder + "/" if folder else ""
    h = hashlib.sha1()
    for p in sorted(p for p in tree if p.startswith(prefix)):
        h.update(f"{p}\0{tree[p]['oid']}\n".encode())
    return h.hexdigest()


def file_json(path: str, entry: dict, last_commit: dict | None = None) -> dict:
    out = {"type": "file", "path": path, "size": entry["size"], "oid": entry["oid"]}
    if entry["lfs"]:
        out["lfs"] = {"oid": entry["sha256"], "size": entry["size"],
                      "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
    if last_commit is not None:
        out["lastCommit"] = last_commit
    return out


def folder_json(tree: dict, path: str) -> dict:
    return {"type": "directory", "path": path, "oid": _folder_oid(tree, path)}


def folders(tree: dict) -> set[str]:
    return {"/".join(p.split("/")[:i]) for p in tree for i in range(1, p.count("/") + 1)}


def list_tree(tree: dict, path: str, recursive: bool) -> list[dict] | None:
    """Entries under ``path`` ('' for the root), folders first like the Hub; None if ``path`` is not a folder."""
    path = path.strip("/")
    all_folders = folders(tree)
    if path and path not in all_folders:
        return None
    prefix = path + "/" if path else ""

    def wanted(p: str) -> bool:
        return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

    dirs = [folder_json(tree, d) for d in sorted(all_folders) if wanted(d)]
    files = [file_json(p, tree[p]) for p in sorted(tree) if wanted(p)]
    return dirs + files


def paths_info(tree: dict, paths: list[str]) -> list[dict]:
    all_folders = folders(tree)
    out = []
    for p in paths:
        p = p.strip("/")
        if p in tree:
            out.append(file_json(p, tree[p]))
        elif p in all_folders:
            out.append(folder_json(tree, p))
    return out


def last_commits(history, paths: set[str]) -> dict[str, dict]:
    """``{path: {id, title, date}}``: the newest commit (on the first-parent chain) that changed each path."""
    found: dict[str, dict] = {}
    commits = list(history)
    for i, c in enumerate(commits):
        parent_tree = commits[i + 1]["tree"] if i + 1 < len(commits) else {}
        for p in paths - found.keys():
            if c["tree"].get(p) != parent_tree.get(p):
                found[p] = {"id": c["id"], "title": c["title"], "date": c["date"]}
        if len(found) == len(paths):
            break
    return found
