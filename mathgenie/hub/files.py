"""The file-moving endpoints of the local hub: downloads (``resolve``/``raw`` with ranges) and uploads (preupload,
LFS batch, the signed LFS PUT and verify, and the ndjson commit)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import mimetypes
import re

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from mathgenie.hub import tree as trees
from mathgenie.hub.metadata import validate_readme
from mathgenie.hub.store import StoreError, check_path, lfs_pointer
from mathgenie.hub.validate import get_int, get_object, get_objects, get_str, parse_json

logger = logging.getLogger("mathgenie.hub.server")

# Files the preupload endpoint sends through LFS (by suffix), plus any file over LFS_THRESHOLD bytes.
LFS_SUFFIXES = (".parquet", ".arrow", ".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".onnx",
                ".msgpack", ".npy", ".npz", ".zip", ".gz", ".tar", ".zst")
LFS_THRESHOLD = 10 * 1024 * 1024
URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def json_response(obj, status: int = 200, **kw) -> JSONResponse:
    return JSONResponse(obj, status_code=status, **kw)


class FileEndpoints:
    """Mixed into `mathgenie.hub.server.HubApp`, which provides ``store``, ``_repo``, ``_sign``, ``lfs_threshold``."""

    # -- downloads -------------------------------------------------------------------------------------------------
    def resolve(self, request: Request, repo_type, repo_id, rev, path, raw: bool) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        entry = repo.commit(sha)["tree"].get(path)
        if entry is None:
            raise StoreError(404, f"Entry Not Found: {path!r} is not in {repo_id} at {rev}", "EntryNotFound", sha)
        oid, sha256 = entry["oid"], entry["sha256"]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes",
                   "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream"}
        if raw and entry["lfs"]:  # /raw/ shows what git stores: the pointer
            pointer = lfs_pointer(entry["sha256"], entry["size"])
            headers.update({"ETag": f'"{oid}"', "Content-Length": str(len(pointer))})
            return Response(b"" if request.method == "HEAD" else pointer, headers=headers)
        if entry["lfs"]:
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(entry["size"])})
        else:
            headers["ETag"] = f'"{oid}"'
        size, status = entry["size"], 200
        start, end = 0, size - 1
        m = _RANGE_RE.match(request.headers.get("range", "").strip())
        if m and (m.group(1) or m.group(2)):  # one range; anything else gets the whole file, as RFC 9110 allows
            if m.group(1):
                start, end = int(m.group(1)), min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
            else:
                start = max(size - int(m.group(2)), 0)
            if start >= size or start > end:
                return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        headers["Content-Length"] = str(length)
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        return StreamingResponse(self._read(entry["sha256"], start, length), status_code=status, headers=headers)

    def _read(self, sha256: str, start: int, length: int):
        with open(self.store.blobs.path(sha256), "rb") as f:
            f.seek(start)
            while length > 0:
                chunk = f.read(min(length, 1 << 20))
                if not chunk:
                    break
                length -= len(chunk)
                yield chunk

    # -- uploads ---------------------------------------------------------------------------------------------------
    def preupload(self, request: Request, repo_type: str, repo_id: str, rev: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        sha = repo.resolve_or_raise(rev)
        tree = repo.commit(sha)["tree"]
        out = []
        for i, f in enumerate(get_objects(body, "files", "preupload")):
            path = get_str(f, "path", f"preupload files[{i}]", required=True)
            size = get_int(f, "size", f"preupload files[{i}]", required=True)
            get_str(f, "sample", f"preupload files[{i}]", max_len=1 << 20)
            check_path(path)
            lfs = path.lower().endswith(LFS_SUFFIXES) or size > self.lfs_threshold
            remote = tree.get(path)
            oid = None if remote is None else (remote["sha256"] if lfs else remote["oid"])
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        return json_response({"files": out, "commitOid": sha})

    def lfs_batch(self, request: Request, repo_type: str, repo_id: str, body: dict) -> Response:
        self._repo(request, repo_type, repo_id, write=True)
        operation = get_str(body, "operation", "LFS batch")
        if operation != "upload":
            raise StoreError(400, f"LFS batch: only 'upload' is supported (downloads go through /resolve/), got "
                                  f"{operation!r}")
        objects = []
        for obj in get_objects(body, "objects", "LFS batch"):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not _SHA256_RE.fullmatch(oid) or isinstance(size, bool) \
                    or not isinstance(size, int) or size < 0:
                objects.append({"oid": str(oid)[:64], "size": size if isinstance(size, int) else 0,
                                "error": {"code": 422, "message": "oid must be a sha256 hex digest, size an int"}})
                continue
            item = {"oid": oid, "size": size, "authenticated": True}
            if not self.store.blobs.has(oid, size):
                base = str(request.base_url)
                item["actions"] = {
                    "upload": {"href": f"{base}_lfs/upload/{oid}?size={size}&sig={self._sign(oid, size)}"},
                    "verify": {"href": f"{base}_lfs/verify/{oid}"},
                }
            objects.append(item)
        return json_response({"transfer": "basic", "objects": objects}, media_type="application/vnd.git-lfs+json")

    async def lfs_upload(self, request: Request, oid: str) -> Response:
        try:
            size = int(request.query_params.get("size", ""))
        except ValueError:
            raise StoreError(400, "LFS upload link without a valid 'size'") from None
        if not hmac.compare_digest(request.query_params.get("sig", "").encode(), self._sign(oid, size).encode()):
            raise StoreError(403, "LFS upload link is not valid: ask the batch endpoint for a new one")
        tmp = self.store.blobs.new_upload()
        digest, written = hashlib.sha256(), 0
        try:
            with open(tmp, "wb") as f:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > size:  # the signed size is the cap: stop reading, do not fill the disk
                        raise StoreError(413, f"LFS upload of {oid} is longer than its declared {size} bytes")
                    digest.update(chunk)
                    f.write(chunk)
            if digest.hexdigest() != oid or written != size:
                raise StoreError(400, f"LFS upload of {oid} ({size} bytes) got {written} bytes with sha256 "
                                      f"{digest.hexdigest()}")
            self.store.blobs.adopt_upload(tmp, oid)
        finally:
            tmp.unlink(missing_ok=True)
        return Response(status_code=200)

    def lfs_verify(self, body: dict) -> Response:
        oid = get_str(body, "oid", "LFS verify", required=True, max_len=64)
        size = get_int(body, "size", "LFS verify")
        if not _SHA256_RE.fullmatch(oid) or not self.store.blobs.has(oid, size):
            raise StoreError(404, f"LFS object {oid} ({size} bytes) was not uploaded")
        return json_response({"oid": oid, "size": size})

    def commit(self, request: Request, repo_type: str, repo_id: str, rev: str, body: bytes) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        header, operations = _parse_commit(body)
        summary = (get_str(header, "summary", "commit header") or "").strip()
        if not summary:
            raise StoreError(400, "commit summary (the commit message) must not be empty")
        description = get_str(header, "description", "commit header", max_len=1 << 20) or ""
        parent = get_str(header, "parentCommit", "commit header", max_len=40)
        branch = rev[len("refs/heads/"):] if rev.startswith("refs/heads/") else rev
        with repo.locked():
            if branch not in repo.refs()["branches"] and repo.resolve(branch):
                raise StoreError(400, f"cannot commit to {rev!r}: it is a tag or a commit, not a branch")
            head = repo.head(branch)
            if parent and not head.startswith(parent):
                raise StoreError(412, f"A commit has happened since. Please refresh and try again. (parentCommit "
                                      f"{parent} is not the head of {branch!r}, which is {head})")
            old_tree = repo.commit(head)["tree"]
            tree = trees.apply_operations(old_tree, operations, self.store.blobs)
            readme = tree.get("README.md")
            if readme is not None and readme != old_tree.get("README.md"):
                content = self.store.blobs.path(readme["sha256"]).read_text(encoding="utf-8", errors="replace")
                errors, _ = validate_readme(content, repo_type)
                if errors:
                    raise StoreError(400, "Invalid metadata in README.md: " + "; ".join(errors))
            sha = repo.write_commit(branch, head, tree, summary, description)
        logger.info("commit %s on %s %s@%s (%d operations)", sha[:10], repo_type, repo_id, branch, len(operations))
        url = f"{request.base_url}{URL_PREFIX[repo_type]}{repo_id}/commit/{sha}"
        return json_response({"success": True, "commitOid": sha, "commitUrl": url, "pullRequestUrl": None})


def _parse_commit(body: bytes) -> tuple[dict, list[dict]]:
    """The ndjson commit payload: ``(header value, [operation objects])``, every line checked to be an object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StoreError(400, f"commit payload is not UTF-8 text: {e}") from None
    lines = []
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            value = parse_json(line, f"commit payload line {n}")
            if not isinstance(value, dict):
                raise StoreError(400, f"commit payload line {n} must be a JSON object "
                                      "{'key': ..., 'value': {...}}, got " + type(value).__name__)
            lines.append(value)
    if not lines or lines[0].get("key") != "header":
        raise StoreError(400, "commit payload must start with a {'key': 'header', 'value': {...}} line")
    return get_object(lines[0], "value", "commit header line"), lines[1:]
