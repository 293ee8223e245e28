"""A local server speaking enough of the Hugging Face Hub HTTP API for ``huggingface_hub``, ``datasets`` and
``transformers``: create repos, commit (regular files and LFS uploads), branches and tags, listings, and file
downloads with ranges, at any revision. Point clients at it with ``HF_ENDPOINT=http://127.0.0.1:PORT`` and
``HF_HUB_DISABLE_XET=1`` (set both before importing huggingface_hub/datasets).

Storage: see `mathgenie.hub.store`. Writes need ``Authorization: Bearer <token>`` when the server has a token; the
LFS upload link handed out by the batch endpoint is signed instead (clients send it no token, as to a presigned URL).
Not implemented: pull requests, Xet, multipart LFS, pagination (listings come back in one page).
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

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from mathgenie.hub import tree as trees
from mathgenie.hub.files import LFS_THRESHOLD, URL_PREFIX, FileEndpoints, json_response
from mathgenie.hub.metadata import split_front_matter, validate_readme
from mathgenie.hub.routes import Routes, _truthy
from mathgenie.hub.store import DEFAULT_BRANCH, HubStore, Repo, StoreError, lfs_pointer

logger = logging.getLogger(__name__)

_BAD_CREDENTIALS = "Invalid credentials in Authorization header"  # huggingface_hub maps exactly this to a plain 401


def _error_response(e: StoreError) -> Response:
    headers = {"X-Error-Message": e.message.encode("ascii", "replace").decode().replace("\n", " ")}
    if e.code:
        headers["X-Error-Code"] = e.code
    if e.commit:
        headers["X-Repo-Commit"] = e.commit
    return json_response({"error": e.message}, e.status, headers=headers)


class HubApp(Routes, FileEndpoints):
    """The ASGI app. ``token``: required on writes when set (and on reads of private repos)."""

    def __init__(self, root: str | Path, token: str | None = None, lfs_threshold: int = LFS_THRESHOLD):
        self.store = HubStore(root)
        self.token = token or None
        self.lfs_threshold = lfs_threshold
        self._signing_key = secrets.token_bytes(32)
        methods = ["GET", "HEAD", "POST", "PUT", "DELETE"]
        self.app = Starlette(routes=[Route("/{path:path}", self.dispatch, methods=methods)])

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)

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

    async def dispatch(self, request: Request) -> Response:
        raw = request.scope.get("raw_path") or request.url.path.encode()
        segs = raw.decode("latin-1").split("?", 1)[0].strip("/").split("/")
        try:
            return await self._route(request, request.method, segs)
        except StoreError as e:
            return _error_response(e)

    # -- account and metadata --------------------------------------------------------------------------------------
    def whoami(self, request: Request) -> Response:
        self._require_write(request)
        user = self.store.user
        return json_response({"type": "user", "id": user, "name": user, "fullname": "Local hub user", "email": None,
                      "emailVerified": False, "isPro": False, "orgs": [],
                      "auth": {"type": "access_token", "accessToken": {"displayName": "local", "role": "write"}}})

    def validate_yaml(self, body: dict) -> Response:
        errors, warnings = validate_readme(str(body.get("content", "")), body.get("repoType") or "model")
        payload = {"errors": [{"message": m} for m in errors], "warnings": [{"message": m} for m in warnings]}
        if errors:
            return json_response({**payload, "error": "Invalid metadata in README.md: " + "; ".join(errors)}, 400)
        return json_response(payload)

    # -- repos -----------------------------------------------------------------------------------------------------
    def create_repo(self, request: Request, body: dict) -> Response:
        self._require_write(request)
        repo_type = body.get("type") or "model"
        if repo_type not in URL_PREFIX:
            raise StoreError(400, f"invalid repo type {repo_type!r}: expected model, dataset or space")
        name = str(body.get("name") or "")
        repo_id = f"{body.get('organization') or self.store.user}/{name}"
        private = body.get("visibility") == "private" or bool(body.get("private"))
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
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.store.user}/{body.get('name')}"
        self.store.delete_repo(self._repo(request, repo_type, repo_id, write=True))
        logger.info("deleted %s repo %s", repo_type, repo_id)
        return json_response({})

    def settings(self, request: Request, repo_type: str, repo_id: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        with repo.locked():
            if "private" in body:
                repo.set_meta(private=bool(body["private"]))
        return json_response({})

    def _card_data(self, tree: dict) -> dict | None:
        entry = tree.get("README.md")
        if entry is None:
            return None
        try:
            text = split_front_matter(self.store.blobs.path(entry["sha256"]).read_text(encoding="utf-8"))
            data = yaml.safe_load(text) if text else None
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            return None
        return data if isinstance(data, dict) else None

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
        return json_response(self._info(request, repo, sha, _truthy(request.query_params.get("blobs"))))

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

    def branch(self, request: Request, method: str, repo_type, repo_id, name: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        with repo.locked():
            if method == "DELETE":
                repo.delete_branch(name)
            else:
                start = body.get("startingPoint") or DEFAULT_BRANCH
                repo.create_branch(name, repo.resolve_or_raise(start))
        return json_response({})

    def tag(self, request: Request, method: str, repo_type, repo_id, rev_or_tag: str, body: dict) -> Response:
        repo = self._repo(request, repo_type, repo_id, write=True)
        with repo.locked():
            if method == "DELETE":
                repo.delete_tag(rev_or_tag)
            else:
                name = body.get("tag")
                if not isinstance(name, str) or not name:
                    raise StoreError(400, "create tag: the body needs a 'tag' name")
                repo.create_tag(name, repo.resolve_or_raise(rev_or_tag), body.get("message"))
        return json_response({})

    # -- listings --------------------------------------------------------------------------------------------------
    def refs(self, request: Request, repo_type: str, repo_id: str) -> Response:
        refs = self._repo(request, repo_type, repo_id).refs()
        out = {"branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": sha}
                            for n, sha in sorted(refs["branches"].items())],
               "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": t["commit"]}
                        for n, t in sorted(refs["tags"].items())],
               "converts": []}
        if _truthy(request.query_params.get("include_prs")):
            out["pullRequests"] = []
        return json_response(out)

    def tree(self, request: Request, repo_type: str, repo_id: str, rev: str, path: str) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        tree = repo.commit(sha)["tree"]
        entries = trees.list_tree(tree, path, _truthy(request.query_params.get("recursive")))
        if entries is None:
            raise StoreError(404, f"{path!r} is not a folder of {repo_id} at {rev}", "EntryNotFound", sha)
        if _truthy(request.query_params.get("expand")):
            self._add_last_commits(repo, sha, entries)
        return json_response(entries)

    def paths_info(self, request, repo_type, repo_id, rev, paths, expand) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        entries = trees.paths_info(repo.commit(sha)["tree"], paths)
        if expand:
            self._add_last_commits(repo, sha, entries)
        return json_response(entries)

    def _add_last_commits(self, repo: Repo, sha: str, entries: list[dict]) -> None:
        files = {e["path"] for e in entries if e["type"] == "file"}
        found = trees.last_commits(repo.history(sha), files)
        for e in entries:
            if e["path"] in found:
                e["lastCommit"] = found[e["path"]]

    def commits(self, request: Request, repo_type: str, repo_id: str, rev: str) -> Response:
        repo = self._repo(request, repo_type, repo_id)
        sha = repo.resolve_or_raise(rev)
        return json_response([{"id": c["id"], "title": c["title"], "message": c["message"], "date": c["date"],
                       "authors": [{"user": c["author"], "avatar": None}]} for c in repo.history(sha)])


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
    config = uvicorn.Config(HubApp(root, token=token), log_level=log_level, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="mathgenie-hub")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"local hub failed to start on {host}:{port}")
        time.sleep(0.01)
    return ServerHandle(server, thread, f"http://{host}:{port}", root, token)
