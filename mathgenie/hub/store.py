"""On-disk storage of the local Hub: a content-addressed blob store and, per repo, immutable commits plus a refs file.

Layout under ``root``::

    blobs/ab/abcdef...            file contents, named by sha256 (shared by all repos)
    tmp/                          uploads in flight (renamed into blobs/ once their sha256 is checked)
    repos/{type}s/{ns}/{name}/
        repo.json                 {"private": bool, "createdAt": ...}
        refs.json                 {"branches": {name: sha}, "tags": {name: {"commit": sha, "message": ...}}}
        commits/{sha}.json        {id, parents, tree: {path: entry}, title, message, date, author}

A tree entry is ``{"sha256", "size", "oid", "lfs"}`` where ``oid`` is the git blob sha1 (of the content, or of the LFS
pointer for LFS files), so ETags and tree listings look like the real Hub's. Commits are never rewritten: a listing
cached by commit sha (``HfFileSystem`` does that) stays valid forever. Writers take the repo's lock (a thread lock plus
``flock`` on ``.lock``, so two server processes on one root do not interleave); readers need none because commit
files and ``refs.json`` are written to a temp file and renamed into place.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

REPO_TYPES = ("model", "dataset", "space")
DEFAULT_BRANCH = "main"
_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")
_REF_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,199}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA_PREFIX_RE = re.compile(r"^[0-9a-f]{7,40}$")

GITATTRIBUTES = "\n".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text"
    for pattern in ("*.parquet", "*.arrow", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.ckpt", "*.h5",
                    "*.onnx", "*.msgpack", "*.npy", "*.npz", "*.zip", "*.gz", "*.tar", "*.zst", "*.jsonl.gz")
) + "\n"


class StoreError(Exception):
    """A request the store refuses. ``code`` is the Hub's ``X-Error-Code`` (or None), ``status`` the HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def valid_name(part: str) -> bool:
    return bool(_NAME_RE.match(part)) and "--" not in part and ".." not in part and not part.endswith(".git")


def valid_repo_id(repo_id: str) -> bool:
    parts = repo_id.split("/")
    return len(parts) == 2 and all(valid_name(p) for p in parts)


def check_name(part: str, what: str) -> None:
    if not valid_name(part):
        raise StoreError(400, f"invalid {what} {part!r}: use letters, digits, '-', '_', '.' (max 96 characters, no "
                              "'--' or '..', not ending in '.git')")


def check_ref_name(name: str) -> None:
    if not _REF_RE.match(name) or ".." in name or name.endswith((".lock", "/")) or "//" in name or _SHA1_RE.match(name):
        raise StoreError(400, f"invalid branch/tag name {name!r}: use letters, digits, '-', '_', '.', '/'")


def check_path(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise StoreError(400, f"invalid path in repo {path!r}: must be relative, without empty, '.' or '..' parts")
    if parts[0] == ".git":
        raise StoreError(400, f"invalid path in repo {path!r}: '.git' is reserved")


def _write_json_atomic(path: Path, obj) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class BlobStore:
    def __init__(self, root: Path):
        self.dir, self.tmp = root / "blobs", root / "tmp"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.dir / sha256[:2] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        p = self.path(sha256)
        return p.is_file() and (size is None or p.stat().st_size == size)

    def put_bytes(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        if not self.has(sha):
            fd, tmp = tempfile.mkstemp(dir=self.tmp)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self._adopt(tmp, sha)
        return sha

    def new_upload(self) -> Path:
        fd, tmp = tempfile.mkstemp(dir=self.tmp, prefix="upload-")
        os.close(fd)
        return Path(tmp)

    def adopt_upload(self, tmp: Path, sha256: str) -> None:
        """Move a fully written and checked upload into the store."""
        self._adopt(str(tmp), sha256)

    def _adopt(self, tmp: str, sha256: str) -> None:
        dest = self.path(sha256)
        dest.parent.mkdir(exist_ok=True)
        os.replace(tmp, dest)


class Repo:
    """One repository: refs plus immutable commits. Methods that change it must run under `locked()`."""

    _thread_locks: dict[Path, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, store: "HubStore", repo_type: str, repo_id: str):
        self.store, self.type, self.id = store, repo_type, repo_id
        self.dir = store.root / "repos" / f"{repo_type}s" / repo_id

    # -- metadata ------------------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict:
        return json.loads((self.dir / "repo.json").read_text())

    def set_meta(self, **changes) -> None:
        _write_json_atomic(self.dir / "repo.json", {**self.meta, **changes})

    @property
    def private(self) -> bool:
        return bool(self.meta.get("private"))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with Repo._guard:
            lock = Repo._thread_locks.setdefault(self.dir, threading.Lock())
        with lock, open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- refs ----------------------------------------------------------------------------------------------------
    def refs(self) -> dict:
        return json.loads((self.dir / "refs.json").read_text())

    def _set_refs(self, refs: dict) -> None:
        _write_json_atomic(self.dir / "refs.json", refs)

    def resolve(self, rev: str) -> str | None:
        """Branch, tag, ``refs/heads/x``, ``refs/tags/x``, a full commit sha or an unambiguous prefix (≥ 7)."""
        refs = self.refs()
        if rev.startswith("refs/heads/"):
            return refs["branches"].get(rev[len("refs/heads/"):])
        if rev.startswith("refs/tags/"):
            tag = refs["tags"].get(rev[len("refs/tags/"):])
            return tag["commit"] if tag else None
        if rev in refs["branches"]:
            return refs["branches"][rev]
        if rev in refs["tags"]:
            return refs["tags"][rev]["commit"]
        if _SHA1_RE.match(rev):
            return rev if (self.dir / "commits" / f"{rev}.json").is_file() else None
        if _SHA_PREFIX_RE.match(rev):
            found = [p.stem for p in (self.dir / "commits").glob(f"{rev}*.json")]
            return found[0] if len(found) == 1 else None
        return None

    def resolve_or_raise(self, rev: str) -> str:
        sha = self.resolve(rev)
        if sha is None:
            raise StoreError(404, f"Invalid rev id: {rev} (no branch, tag or commit of {self.id} has that name)",
                             "RevisionNotFound")
        return sha

    def head(self, branch: str) -> str:
        sha = self.refs()["branches"].get(branch)
        if sha is None:
            raise StoreError(404, f"Branch {branch!r} not found in {self.id}; commits go to an existing branch "
                                  "(create it with create_branch)", "RevisionNotFound")
        return sha

    def commit(self, sha: str) -> dict:
        return json.loads((self.dir / "commits" / f"{sha}.json").read_text())

    def history(self, sha: str) -> Iterator[dict]:
        """Commits from ``sha`` back to the first one (first-parent chain)."""
        while sha:
            c = self.commit(sha)
            yield c
            sha = c["parents"][0] if c["parents"] else None

    # -- writes (call under locked()) ------------------------------------------------------------------------------
    def write_commit(self, branch: str, parent: str | None, tree: dict, title: str, message: str) -> str:
        body = {"parents": [parent] if parent else [], "tree": tree, "title": title, "message": message,
                "date": now_iso(), "author": self.store.user}
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode()).hexdigest()
        _write_json_atomic(self.dir / "commits" / f"{sha}.json", {"id": sha, **body})
        refs = self.refs()
        refs["branches"][branch] = sha
        self._set_refs(refs)
        return sha

    def create_branch(self, name: str, start: str) -> None:
        check_ref_name(name)
        refs = self.refs()
        if name in refs["branches"]:
            raise StoreError(409, f"Branch {name!r} already exists in {self.id}")
        refs["branches"][name] = start
        self._set_refs(refs)

    def delete_branch(self, name: str) -> None:
        refs = self.refs()
        if name not in refs["branches"]:
            raise StoreError(404, f"Branch {name!r} not found in {self.id}", "RevisionNotFound")
        if name == DEFAULT_BRANCH:
            raise StoreError(403, f"Cannot delete the default branch {name!r}")
        del refs["branches"][name]
        self._set_refs(refs)

    def create_tag(self, name: str, sha: str, message: str | None) -> None:
        check_ref_name(name)
        refs = self.refs()
        if name in refs["tags"]:
            raise StoreError(409, f"Tag {name!r} already exists in {self.id} (at {refs['tags'][name]['commit']})")
        refs["tags"][name] = {"commit": sha, "message": message or "", "date": now_iso()}
        self._set_refs(refs)

    def delete_tag(self, name: str) -> None:
        refs = self.refs()
        if name not in refs["tags"]:
            raise StoreError(404, f"Tag {name!r} not found in {self.id}", "RevisionNotFound")
        del refs["tags"][name]
        self._set_refs(refs)


class HubStore:
    def __init__(self, root: str | Path, user: str = "local"):
        self.root = Path(root)
        self.user = user
        self.blobs = BlobStore(self.root)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        if repo_type not in REPO_TYPES or not valid_repo_id(repo_id):
            return None
        repo = Repo(self, repo_type, repo_id)
        return repo if (repo.dir / "refs.json").is_file() else None

    def create_repo(self, repo_type: str, repo_id: str, *, private: bool = False) -> Repo:
        if repo_type not in REPO_TYPES:
            raise StoreError(400, f"invalid repo type {repo_type!r}: expected one of {', '.join(REPO_TYPES)}")
        if repo_id.count("/") != 1:
            raise StoreError(400, f"invalid repo id {repo_id!r}: expected 'namespace/name'")
        ns, name = repo_id.split("/")
        check_name(ns, "namespace")
        check_name(name, "repo name")
        repo = Repo(self, repo_type, repo_id)
        repo.dir.mkdir(parents=True, exist_ok=True)
        with repo.locked():
            if (repo.dir / "refs.json").is_file():
                raise StoreError(409, f"You already created this {repo_type} repo: {repo_id}")
            (repo.dir / "commits").mkdir(exist_ok=True)
            _write_json_atomic(repo.dir / "repo.json", {"private": private, "createdAt": now_iso()})
            _write_json_atomic(repo.dir / "refs.json", {"branches": {}, "tags": {}})
            data = GITATTRIBUTES.encode()
            tree = {".gitattributes": {"sha256": self.blobs.put_bytes(data), "size": len(data),
                                       "oid": git_blob_sha1(data), "lfs": False}}
            repo.write_commit(DEFAULT_BRANCH, None, tree, "initial commit", "")
        return repo

    def delete_repo(self, repo: Repo) -> None:
        with repo.locked():
            (repo.dir / "refs.json").unlink()
        shutil.rmtree(repo.dir, ignore_errors=True)  # blobs stay: other repos may share them

    def list_repos(self, repo_type: str) -> list[Repo]:
        base = self.root / "repos" / f"{repo_type}s"
        return [Repo(self, repo_type, f"{p.parent.parent.name}/{p.parent.name}")
                for p in sorted(base.glob("*/*/refs.json"))]
