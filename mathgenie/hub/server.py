"""A local server speaking enough of the Hugging Face Hub HTTP API for ``huggingface_hub``, ``datasets`` and
``transformers``: create repos, commit (regular files and LFS uploads), branches and tags, listings, and file
downloads with ranges, at any revision. Point clients at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` and
``HF_HUB_DISABLE_XET=1`` (set both before importing huggingface_hub/datasets).

Storage: see `mathgenie.hub.store`. Writes need ``Authorization: Bearer <token>`` when the server has a token; the
LFS upload link handed out by the batch endpoint is signed instead (clients send it no token, as to a presigned URL).
Not implemented: pull requests, Xet, multipart LFS, pagination (listings come back in one page).

Every request is checked against the API's shape (`mathgenie.hub.validate`): a malformed one gets a 4xx
``{"error": ...}`` and the server keeps serving. The same server has pages for people and the dataset-viewer API
(`mathgenie.hub.viewer`, `mathgenie.hub.dataset_api`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from urllib.parse import unquote

import yaml
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from mathgenie.hub.files import LFS_THRESHOLD, URL_PREFIX, FileEndpoints, json_response
from mathgenie.hub.metadata import split_front_matter, validate_readme
from mathgenie.hub.refs import RefEndpoints
from mathgenie.hub.store import DEFAULT_BRANCH, HubStore, Repo, StoreError, check_name, lfs_pointer
from mathgenie.hub.validate import (
    MAX_COMMIT_BYTES, MAX_HEADER_BYTES, MAX_JSON_BYTES, get_bool, get_str, header_bytes, json_body, read_body,
    jsonable, sanitize_header, small_enough, truthy,
)
from mathgenie.hub.viewer import Viewer

logger = logging.getLogger(__name__)

_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_BAD_CREDENTIALS = "Invalid credentials in Authorization header"  # huggingface_hub maps exactly this to a plain 401


def _error_response(e: StoreError) -> Response:
    headers = {"X-Error-Message": sanitize_header(e.message)}
    if e.code:
        headers["X-Error-Code"] = e.code
    if e.commit:
        headers["X-Repo-Commit"] = e.commit
    return json_response({"error": e.message}, e.status, headers=headers)


class HubApp(FileEndpoints, RefEndpoints):
    """The ASGI app. ``token``: required on writes when set (and on reads of private repos)."""

    def __init__(self, root: str | Path, token: str | None = None, lfs_threshold: int = LFS_THRESHOLD):
        self.store = HubStore(root)
        self.token = token or None
        self.lfs_threshold = lfs_threshold
        self._signing_key = secrets.token_bytes(32)
        self.viewer = Viewer(self)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":  # lifespan is off; websockets are not part of the Hub API
            return
        if header_bytes(scope) > MAX_HEADER_BYTES:
            error = StoreError(431, f"request headers are over this hub's limit of {MAX_HEADER_BYTES:,} bytes")
            response = _error_response(error)
        else:  # every path goes to dispatch: a router's pattern would answer some (a %0A in a name) with a bare 404
            response = await self.dispatch(Request(scope, receive))
        await response(scope, receive, send)

    # -- auth ------------------------------------------------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else ""
        return hmac.compare_digest(given.encode(), self.token.encode())

    def _require_write(self, request: Request) -> None:
        if not self._authorized(request):
            raise StoreError(401, _BAD_CREDENTIALS)

    def _repo(self, request: Request, repo_type: str, repo_id: str, write: bool = False) -> Repo:
        if write:
            self._require_write(request)
        repo = self.store.repo(repo_type, repo_id)
        if repo is None or (repo.private and not self._authorized(request)):
            raise StoreError(404, f"Repository Not Found: {repo_type} {repo_id!r} does not exist on this hub",
                             "RepoNotFound")
        return repo

    def _sign(self, oid: str, size: int) -> str:
        return hmac.new(self._signing_key, f"{oid}:{size}".encode(), hashlib.sha256).hexdigest()

    # -- routing ---------------------------------------------------------------------------------------------------
    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segs = raw.decode("latin-1").split("?", 1)[0].strip("/").split("/")
        try:
            return await self._route(request, request.method, segs)
        except StoreError as e:
            return _error_response(e)
        except Exception:  # a bug of ours: logged with its traceback, answered as JSON, and the server keeps serving
            logger.exception("%s %s failed", request.method, request.url.path)
            return _error_response(StoreError(500, "internal error of the local hub (see its log)"))

    async def _route(self, request: Request, method: str, segs: list[str]) -> Response:
        sync = run_in_threadpool
        if segs[0] == "api" and len(segs) >= 2:
            head = segs[1]
            if head == "whoami-v2" and method == "GET":
                return self.whoami(request)
            if head == "validate-yaml" and method == "POST":
                body = await json_body(request)
                return self.validate_yaml(body)
            if head == "repos" and len(segs) == 3:
                body = await json_body(request)
                if segs[2] == "create" and method == "POST":
                    return await sync(self.create_repo, request, body)
                if segs[2] == "delete" and method == "DELETE":
                    return await sync(self.delete_repo, request, body)
            if head in _TYPES:
                repo_type = _TYPES[head]
                if len(segs) == 2 and method == "GET":
                    return await sync(self.list_repos, request, repo_type)
                if len(segs) < 4:
                    raise StoreError(404, f"Repository Not Found: {'/'.join(segs[2:])!r} (repo ids are "
                                          "'namespace/name')", "RepoNotFound")
                repo_id = f"{unquote(segs[2])}/{unquote(segs[3])}"
                action, rest = (segs[4] if len(segs) > 4 else ""), [unquote(s) for s in segs[5:]]
                return await self._route_repo(request, method, repo_type, repo_id, action, rest)
        if segs[0] == "_lfs" and len(segs) == 3:
            if segs[1] == "upload" and method == "PUT":
                return await self.lfs_upload(request, segs[2])
            if segs[1] == "verify" and method == "POST":
                return self.lfs_verify(await json_body(request))
        repo_type, s = "model", segs
        if s[0] in _TYPES and s[0] != "models":
            repo_type, s = _TYPES[s[0]], s[1:]
        if len(s) == 6 and s[1].endswith(".git") and s[2:] == ["info", "lfs", "objects", "batch"] and method == "POST":
            repo_id = f"{unquote(s[0])}/{unquote(s[1][:-4])}"
            return await sync(self.lfs_batch, request, repo_type, repo_id, await json_body(request))
        if len(s) >= 5 and s[2] in ("resolve", "raw") and method in ("GET", "HEAD"):
            repo_id = f"{unquote(s[0])}/{unquote(s[1])}"
            path = "/".join(unquote(p) for p in s[4:])
            return await sync(self.resolve, request, repo_type, repo_id, unquote(s[3]), path, s[2] == "raw")
        if method in ("GET", "HEAD"):  # the pages for people, and the dataset-viewer API
            page = await sync(self.viewer.route, request, [unquote(p) for p in segs])
            if page is not None:
                return page
        raise StoreError(404, f"{method} /{'/'.join(segs)} is not an endpoint of this local hub")

    async def _route_repo(self, request, method, repo_type, repo_id, action, rest) -> Response:
        sync = run_in_threadpool
        one = rest[0] if len(rest) == 1 else None
        if method == "GET" and action == "":
            return await sync(self.repo_info, request, repo_type, repo_id, DEFAULT_BRANCH)
        if method == "GET" and action == "revision" and one:
            return await sync(self.repo_info, request, repo_type, repo_id, one)
        if method == "GET" and action == "tree" and rest:
            return await sync(self.tree, request, repo_type, repo_id, rest[0], "/".join(rest[1:]))
        if method == "GET" and action == "refs":
            return await sync(self.refs, request, repo_type, repo_id)
        if method == "GET" and action == "commits" and one:
            return await sync(self.commits, request, repo_type, repo_id, one)
        if method == "GET" and action == "auth-check":
            self._repo(request, repo_type, repo_id)
            return json_response({})
        if method == "POST" and action == "paths-info" and one:
            await read_body(request, MAX_JSON_BYTES)
            form = await request.form()
            paths, expand = form.getlist("paths"), truthy(form.get("expand"))
            return await sync(self.paths_info, request, repo_type, repo_id, one, paths, expand)
        if method == "POST" and action == "preupload" and one:
            return await sync(self.preupload, request, repo_type, repo_id, one, await json_body(request))
        if method == "POST" and action == "commit" and one:
            if truthy(request.query_params.get("create_pr")):
                raise StoreError(400, "pull requests are not supported by the local hub; commit to a branch")
            body = await read_body(request, MAX_COMMIT_BYTES, "commit payload")
            return await sync(self.commit, request, repo_type, repo_id, one, body)
        if action == "branch" and one and method in ("POST", "DELETE"):
            body = await json_body(request) if method == "POST" else {}
            return await sync(self.branch, request, method, repo_type, repo_id, one, body)
        if action == "tag" and one and method in ("POST", "DELETE"):
            body = await json_body(request) if method == "POST" else {}
            return await sync(self.tag, request, method, repo_type, repo_id, one, body)
        if action == "settings" and method == "PUT":
            return await sync(self.settings, request, repo_type, repo_id, await json_body(request))
        if action in ("xet-write-token", "xet-read-token"):
            raise StoreError(501, "this local hub has no Xet storage: set HF_HUB_DISABLE_XET=1 before importing "
                                  "huggingface_hub so uploads use plain LFS")
        raise StoreError(404, f"{method} {action!r} is not an endpoint of this local hub")

    # -- account and metadata --------------------------------------------------------------------------------------
    def whoami(self, request: Request) -> Response:
        self._require_write(request)
        user = self.store.user
        return json_response({"type": "user", "id": user, "name": user, "fullname": "Local hub user", "email": None,
                      "emailVerified": False, "isPro": False, "orgs": [],
                      "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}})

    def validate_yaml(self, body: dict) -> Response:
        content = get_str(body, "content", "validate-yaml", max_len=MAX_JSON_BYTES) or ""
        repo_type = get_str(body, "repoType", "validate-yaml") or "model"
        errors, warnings = validate_readme(content, repo_type)
        payload = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
        if errors:
            return json_response({**payload, "error": "Invalid metadata in README.md: " + "; ".join(errors)}, 400)
        return json_response(payload)

    # -- repos -----------------------------------------------------------------------------------------------------
    def _repo_from_body(self, body: dict, where: str) -> tuple[str, str]:
        """``(repo_type, repo_id)`` of a ``{name, organization, type}`` body, each part checked before use."""
        repo_type = get_str(body, "type", where) or "model"
        if repo_type not in URL_PREFIX:
            raise StoreError(400, f"{where}: invalid repo type {repo_type!r}: expected model, dataset or space")
        name = get_str(body, "name", where, required=True, max_len=200)
        namespace = get_str(body, "organization", where, max_len=200) or self.store.user
        check_name(namespace, "namespace")
        check_name(name, "repo name")
        return repo_type, f"{namespace}/{name}"

    def create_repo(self, request: Request, body: dict) -> Response:
        self._require_write(request)
        repo_type, repo_id = self._repo_from_body(body, "create repo")
        private = body.get("visibility") == "private" or bool(get_bool(body, "private", "create repo"))
        url = f"{request.base_url}{URL_PREFIX[repo_type]}{repo_id}"
        try:
            self.store.create_repo(repo_type, repo_id, private=private)
        except StoreError as e:
            if e.status == 409:
                return json_response({"error": e.message, "url": url}, 409, headers={"X-Error-Message": e.message})
            raise
        logger.info("created %s repo %s%s", repo_type, repo_id, " (private)" if private else "")
        return json_response({"url": url, "name": repo_id, "id": repo_id})

    def delete_repo(self, request: Request, body: dict) -> Response:
        self._require_write(request)
        repo_type, repo_id = self._repo_from_body(body, "delete repo")
        self.store.delete_repo(self._repo(request, repo_type, repo_id, write=True))
        logger.info("deleted %s repo %s", repo_type, repo_id)
        return json_response({})

    def settings(self, request: Request, repo_type: str, repo_id: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        private = get_bool(body, "private", "repo settings")
        with repo.locked():
            if private is not None:
                repo.set_meta(private=private)
        return json_response({})

    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if entry is None:
            return None
        try:
            text = split_front_matter(self.store.blobs.path(entry["sha256"]).read_text(encoding="utf-8"))
            data = yaml.safe_load(text) if text else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError):
            return None
        return jsonable(data) if isinstance(data, dict) and small_enough(data) else None

    def _info(self, request: Request, repo: Repo, sha: str, blobs: bool) -> dict:
        commit = repo.commit(sha)
        tree = commit["tree"]
        siblings = []
        for path in sorted(tree):
            sib = {"rfilename": path}
            if blobs:
                entry = tree[path]
                sib.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sib["lfs"] = {"sha256": entry["sha256"], "size": entry["size"],
                                  "pointerSize": len(lfs_pointer(entry["sha256"], entry["size"]))}
            siblings.append(sib)
        card = self._card_data(tree)
        info = {"_id": hashlib.sha1(f"{repo.type}/{repo.id}".encode()).hexdigest()[:24], "id": repo.id,
                "author": repo.id.split("/")[0], "sha": sha, "lastModified": commit["date"],
                "createdAt": repo.meta.get("createdAt"), "private": repo.private, "gated": False, "disabled": False,
                "downloads": 0, "likes": 0, "tags": list((card or {}).get("tags") or []), "siblings": siblings,
                "usedStorage": sum(e["size"] for e in tree.values())}
        if card is not None:
            info["cardData"] = card
        if repo.type == "model":
            info.update(modelId=repo.id, library_name=(card or {}).get("library_name"),
                        pipeline_tag=(card or {}).get("pipeline_tag"))
        return info

    def repo_info(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        return json_response(self._info(request, repo, sha, truthy(request.query_params.get("blobs"))))

    def list_repos(self, request: Request, repo_type: str) -> Response:
        author, search = request.query_params.get("author"), request.query_params.get("search")
        out = []
        for repo in self.store.list_repos(repo_type):
            if (author and repo.id.split("/")[0] != author) or (search and search.lower() not in repo.id.lower()):
                continue
            if repo.private and not self._authorized(request):
                continue
            info = self._info(request, repo, repo.head(DEFAULT_BRANCH), False)
            out.append({k: v for k, v in info.items() if k != "siblings"})
        return json_response(out)


# h11 (not httptools) because it bounds what it buffers before the headers end: an oversized header block is refused
# while it arrives, not after it sat in memory; the app's own check then answers 431 for anything under that bound.
UVICORN_OPTIONS = {"http": "h11", "h11_max_incomplete_event_size": 2 * MAX_HEADER_BYTES}


class ServerHandle:
    """A server running in a background thread: ``.url``, ``.root``, ``.token``, ``.stop()``."""

    def __init__(self, server, thread: threading.Thread, url: str, root: Path, token: str | None):
        self._server, self._thread = server, thread
        self.url, self.root, self.token = url, root, token

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:  # no token here: handles end up in logs and test reports
        return f"ServerHandle(url={self.url!r}, root={str(self.root)!r})"


def serve_in_thread(root: str | Path, *, sock=None, host: str = "127.0.0.1", port: int = 0,
                    token: str | None = None, log_level: str = "warning") -> ServerHandle:
    """Start the local hub on ``sock`` (an already bound socket) or ``host:port`` (0 = any free port) in a daemon
    thread and return once it accepts connections."""
    import socket

    import uvicorn

    root = Path(root)
    token = token if token is not None else os.environ.get("MATHGENIE_HUB_TOKEN") or None
    if sock is None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(HubApp(root, token=token), log_level=log_level, lifespan="off", **UVICORN_OPTIONS)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mathgenie-hub")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"local hub failed to start on {host}:{port}")
        time.sleep(0.01)
    return ServerHandle(server, thread, f"http://{host}:{port}", root, token)
